// The whole Qwen3 step under tensor parallelism: Qwen3Model::forward_backward's stack (embedding →
// layers → final norm → chunked lm_head + cross-entropy → backward) on this rank's shards, with the
// vocab-parallel embedding and loss (vocab_parallel.h) and tensor-parallel layers (tensor_parallel.h).
// The trainer calls it instead of Qwen3Model::forward_backward when tensor_parallel_size > 1.
#pragma once

#include <vector>

#include "model/qwen3_model.h"
#include "parallel/communicator.h"

namespace qft::parallel {

// Collective over `tp`. `config` is the whole model's; `weights` this rank's shard_weights(…, tp.rank(),
// tp.size()), `lora` (may be null) its shard_lora, `grads` buffers shaped as those shards. Every rank of
// the group passes the same batch and options and gets the same loss. Gradients are accumulated (+=)
// as Qwen3Model's; the partial ones (partial_gradients) still need sum_partial_gradients over `tp` once
// per optimizer step. With `sequence_parallel` (tensor_parallel.h) the residual stream between the
// layers holds N/T rows per rank; the micro-batch's token count must be a multiple of tp.size().
model::LossSum tensor_parallel_forward_backward(const model::Qwen3Config& config, const model::Qwen3Weights& weights,
                                                const model::Batch& batch, const model::LoraWeights* lora,
                                                model::Gradients& grads, const model::StepOptions& options,
                                                Communicator& tp, bool sequence_parallel = false);

// Loss only (no gradients, no dropout), as Qwen3Model::forward_loss.
model::LossSum tensor_parallel_forward_loss(const model::Qwen3Config& config, const model::Qwen3Weights& weights,
                                            const model::Batch& batch, const model::LoraWeights* lora,
                                            int64_t loss_chunk_tokens, Communicator& tp);

// Every gradient in `grads` that each rank holds as a partial sum (tp_sharding.h): the replicated LoRA
// factors and, in full fine-tuning, every layer's q_norm and k_norm (with sequence parallelism also
// every norm: each rank normalises its own rows).
std::vector<at::Tensor> partial_gradients(const model::Gradients& grads, bool sequence_parallel = false);

// The gradients of replicated parameters (the same on every rank once sum_partial_gradients has run):
// the replicated LoRA factors and, in full fine-tuning, every norm. Every other gradient is a shard.
std::vector<at::Tensor> replicated_gradients(const model::Gradients& grads);

// The squared L2 norm of the whole model's gradient from this rank's shards, for clipping (collective
// over `tp`; call after sum_partial_gradients): the shards' squares summed over the group, the
// replicated gradients counted once.
double tensor_parallel_grad_norm_squared(const model::Gradients& grads, Communicator& tp);

}  // namespace qft::parallel
