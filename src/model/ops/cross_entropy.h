// The causal-LM loss fused with lm_head: logits exist in fp32 for one chunk of target rows at a time,
// and the loss, dlogits, dh (and dW) are all produced in the same pass over that chunk.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace qft::model::ops {

// HF's shift: target[b, t] = labels[b, t+1], the last position predicts nothing (-100). With packed
// rows (segment_ids defined) a position whose next token starts another segment or is padding
// predicts nothing either. Returns [B*T] int64.
at::Tensor shift_targets(const at::Tensor& labels, const at::Tensor& segment_ids);

// The loss's targets of one micro-batch, found on the host so that nothing about them waits for the GPU:
// the flattened rows that predict a token (ascending) and that token, both int64 [count] on the compute
// device, and `count` itself as a host number.
struct LossTargets {
  at::Tensor rows;
  at::Tensor tokens;
  int64_t count = 0;
};

// shift_targets of labels [B, T] and segment_ids (undefined: one sequence per row), checked to be -100 or
// in [0, vocab_size), then moved to `device`. Given host tensors (as the trainer's batches are) it never
// synchronises with the GPU; device tensors are copied to the host first.
LossTargets loss_targets(const at::Tensor& labels, const at::Tensor& segment_ids, int64_t vocab_size,
                         at::Device device);
// The same from already shifted targets [N] (-100 = none).
LossTargets loss_targets_of_shifted(const at::Tensor& targets, int64_t vocab_size, at::Device device);

struct CrossEntropyResult {
  // Sum over targets of -log p(target), unscaled: a scalar on h's device in the accumulation dtype, so
  // that reading it (a host synchronisation) can wait until the step's backward is queued.
  at::Tensor loss_sum;
  int64_t target_tokens = 0;  // number of targets != -100
};

// Target tokens per chunk unless a config says otherwise: 1024 x 151,936 fp32 logits = 0.6 GB.
constexpr int64_t kDefaultLossChunkTokens = 1024;

// h [N, H] (after the final norm), W [V, H], targets of rows of h (loss_targets). Rows are processed in
// chunks of `chunk_tokens` targets; rows without a target are skipped entirely (their dh is 0). When dh is given
// it is overwritten with the gradient of loss_sum / denominator; dW (if given) accumulates it.
CrossEntropyResult lm_head_cross_entropy(const at::Tensor& h, const at::Tensor& W, const LossTargets& targets,
                                         int64_t chunk_tokens, double denominator, at::Tensor* dh, at::Tensor* dW);

}  // namespace qft::model::ops
