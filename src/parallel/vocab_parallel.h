// The vocabulary dimension under tensor parallelism: rank i holds rows [begin, end) of embed_tokens and
// lm_head (tp_sharding.h: vocab_shard), and no rank ever holds logits for the whole vocabulary.
//
// Embedding: forward looks up the ids in the own range (zeros elsewhere) and reduce_from_tp sums the
// ranks' rows; backward (reduce_from_tp backward: identity) scatter-adds into the own rows only.
//
// lm_head + cross-entropy (as ops::lm_head_cross_entropy, chunk by chunk): each rank computes its
// logits [n, V/T]; one all-gather of 2n numbers per chunk brings every rank's row log-sum-exp and the
// target logit (from the rank that owns the target, 0 from the others); the loss is the target logit
// minus the log-sum-exp over ranks, and each rank's dlogits = softmax - onehot on its own columns. The
// input gradient dh is a partial sum (h is replicated): copy_to_tp backward sums it once at the end.
#pragma once

#include <ATen/ATen.h>

#include "model/ops/cross_entropy.h"
#include "parallel/communicator.h"
#include "parallel/tp_sharding.h"

namespace qft::parallel {

// W_shard [V/T, H], ids [...] int64 in [0, V) -> [numel(ids), H], the same on every rank; with
// `sequence_parallel`, this rank's rows of it (reduce_scatter_to_sp instead of reduce_from_tp).
at::Tensor vocab_parallel_embedding_forward(const at::Tensor& W_shard, const VocabShard& shard, const at::Tensor& ids,
                                            Communicator& tp, bool sequence_parallel = false);
// dW_shard[ids[n] - begin] += dy[n] for the ids in the own range; with `sequence_parallel` dy holds this
// rank's rows and is all-gathered first.
void vocab_parallel_embedding_backward(const at::Tensor& dy, const VocabShard& shard, const at::Tensor& ids,
                                       at::Tensor& dW_shard, Communicator& tp, bool sequence_parallel = false);

// ops::lm_head_cross_entropy's contract with W_shard [V/T, H] (collective over `tp`): the same loss and
// target count on every rank, *dh the whole input gradient, *dW_shard the own rows' gradient.
model::ops::CrossEntropyResult vocab_parallel_cross_entropy(const at::Tensor& h, const at::Tensor& W_shard,
                                                            const VocabShard& shard,
                                                            const model::ops::LossTargets& targets,
                                                            int64_t chunk_tokens, double denominator, at::Tensor* dh,
                                                            at::Tensor* dW_shard, Communicator& tp);

}  // namespace qft::parallel
