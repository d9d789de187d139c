// The Qwen3 training path: an explicit forward and backward over the decoder stack (no autograd),
// with the causal-LM loss fused into the last step so that fp32 logits never exist for all tokens at
// once. The model knows nothing about parallelism: a distributed step wraps calls to this class.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

#include <ATen/ATen.h>

#include "model/activation_offload.h"
#include "model/decoder_layer.h"
#include "model/lora.h"
#include "model/ops/cross_entropy.h"
#include "model/qwen3_config.h"
#include "model/qwen3_weights.h"

namespace qft::model {

// One micro-batch. Rows may be packed: tokens attend only to earlier tokens of the same segment.
struct Batch {
  at::Tensor input_ids;     // [B, T] int64
  at::Tensor labels;        // [B, T] int64, unshifted as in HF (position t is predicted by t-1); -100 ignored
  at::Tensor position_ids;  // [B, T] int64, restarting at 0 for each packed sample
  at::Tensor segment_ids;   // [B, T] int64, sample index within its row; -1 marks padding
  // Causal rows 0..T-1 with one segment and no padding: segment_ids may be left undefined.
  static Batch causal(at::Tensor input_ids, at::Tensor labels);
};

// Points in a step where a sharded data-parallel run (ZeRO, src/parallel/zero.h) meets each decoder layer:
// it gathers a layer's weights just before they are used (and prefetches the next layer's) and takes a
// layer's gradients away as soon as its backward finished, overlapping both with compute. The model
// only calls them; unset (one GPU, ZeRO 0 and 1 without overlap), nothing happens.
enum class LayerPass { forward, backward };
struct LayerHooks {
  // Before layer `layer`'s forward, or before its backward (and the recompute that precedes it).
  std::function<void(int64_t layer, LayerPass pass)> before_layer;
  // Layer `layer`'s gradients (LoRA or weights) of this micro-batch are complete.
  std::function<void(int64_t layer)> after_backward;
};

struct StepOptions {
  bool gradient_checkpointing = false;  // save only each layer's input, recompute in backward
  // Without gradient_checkpointing: save each layer's activations but drop the cheap ones, made again in
  // backward (decoder_layer.h drop_recomputable / recompute_cheap).
  bool selective_recompute = false;
  // With gradient_checkpointing: only layers [0, recompute_num_layers) keep just their input and re-run
  // their forward in backward; the later ones keep their activations but the cheap ones, as under
  // selective_recompute (Megatron's recompute_method: block). The last layers' backward comes first, so
  // their activations are held the shortest. -1: every layer.
  int64_t recompute_num_layers = -1;
  // With gradient_checkpointing: a checkpointed layer keeps its residual after attention beside its input
  // (twice the kept [tokens, hidden] tensors, offloaded alike), so that its recompute skips o's GEMM.
  bool checkpoint_residuals = false;
  // Loss and gradients are sums over target tokens divided by this: the number of target tokens in
  // the whole optimizer step (all micro-batches, later all ranks), so accumulation == one big batch.
  double loss_denominator = 1.0;
  bool train_lora_dropout = true;  // apply lora_dropout (training) or not (evaluation)
  uint64_t dropout_seed = 0;       // dropout masks are a pure function of (seed, layer, projection)
  int64_t loss_chunk_tokens = ops::kDefaultLossChunkTokens;  // tokens per lm_head/cross-entropy chunk
  bool flash_attention = true;  // use flash attention where it applies (CUDA, bf16/fp16); else the math path
  // The adapters passed with this step cast for compute, LoraCompute::make(*lora, activation dtype): the
  // trainer makes it once per optimizer step for all its micro-batches. Null: made at the start of
  // each call (still once for all of its layers, recomputes and backward).
  const LoraCompute* lora_compute = nullptr;
  // Tiled MLP (model/ops/tiled_mlp.h): the MLP block in chunks of rows; tiled_mlp_num_shards chunks, 0 =
  // ALST's ceil(tokens / hidden_size).
  bool tiled_mlp = false;
  int64_t tiled_mlp_num_shards = 0;
  // With gradient_checkpointing: where the offloaded layer inputs go (model/activation_offload.h); null:
  // all stay on the device. Owned by the caller, which keeps its host buffers from step to step.
  ActivationOffload* activation_offload = nullptr;
  LayerHooks hooks;
  // false: forward_backward leaves LossSum::loss_sum unread (NaN) and returns the sum in LossSum::loss, on
  // the device, so that the caller can queue more work (the optimizer's update) before waiting for the GPU.
  bool read_loss = true;
};

// How a layer keeps what its backward reads: everything, everything but the cheap activations (made again
// before its backward), or only its input (its forward made again).
enum class LayerRecompute { none, cheap, full };
LayerRecompute layer_recompute(const StepOptions& options, int64_t layer);

// A checkpointed layer (LayerRecompute::full): its forward, keeping in `acts` only its input (and with
// options.checkpoint_residuals its mid residual), each moved to host memory where `offload` says; returns
// the layer's output. Then, before its backward, the recompute that brings them back and refills `acts`.
at::Tensor checkpointed_layer_forward(const LayerContext& ctx, const at::Tensor& x, LayerActivations& acts,
                                      const StepOptions& options, ActivationOffload* offload);
void checkpointed_layer_recompute(const LayerContext& ctx, LayerActivations& acts, const StepOptions& options,
                                  ActivationOffload* offload);

// The number of MLP chunks (LayerContext::mlp_shards) for a micro-batch of `rows` tokens.
int64_t tiled_mlp_shards(const StepOptions& options, int64_t rows, int64_t hidden_size);

// Loss of one micro-batch, as sums (the trainer divides by the token count of the whole step).
struct LossSum {
  double loss_sum = 0.0;       // sum of per-token losses over targets in this micro-batch (unscaled)
  int64_t target_tokens = 0;   // number of labels != -100 after the shift
  at::Tensor loss;             // loss_sum as a 0-dim tensor on the weights' device (forward_backward)
};

// Trainable state: either LoRA adapters (base frozen) or the base weights themselves (full fine-tune).
struct Gradients {
  std::optional<LoraWeights> lora;      // same structure as the adapters, accumulated (+=)
  std::optional<Qwen3Weights> weights;  // full fine-tuning; accumulated (+=)
};

// A batch's tensors on the weights' device (ids and labels checked against the vocabulary), with what
// every layer shares. Public for the tensor-parallel step (src/parallel/tp_model.h), which runs the same
// stack on shards with a local config. A batch on the host (the trainer's) is checked and indexed there
// and sent with non-blocking copies, so preparing it never waits for the GPU's queued work.
struct PreparedBatch {
  int64_t B = 0, T = 0;
  at::Tensor ids;         // [B*T]
  at::Tensor cos, sin;    // [B*T, D]
  ops::AttentionLayout attention;
  ops::LossTargets loss;  // when the batch has labels
};
PreparedBatch prepare_batch(const Batch& batch, const Qwen3Config& config, const Qwen3Weights& weights,
                            bool flash = true);

// The adapters `lora` (null: none) cast for a step whose activations are `dtype`: `given` when the caller
// made them (checked against `lora` and `dtype`), else made into `own`. Null without adapters.
const LoraCompute* lora_for_compute(const LoraWeights* lora, const LoraCompute* given, at::ScalarType dtype,
                                    std::optional<LoraCompute>& own);

// Layer `layer`'s context for one micro-batch: its projections with the adapters of `lora` (null: none)
// attached, the LoRA dropout on or off, masks seeded from `dropout_seed`, its MLP in `mlp_shards` chunks of
// rows (1: whole; tiled_mlp_shards below).
LayerContext layer_context(const PreparedBatch& batch, const Qwen3Config& config, const Qwen3Weights& weights,
                           const LoraCompute* lora, int64_t layer, bool dropout, uint64_t dropout_seed,
                           int64_t mlp_shards = 1);

class Qwen3Model {
 public:
  // `weights` in the compute dtype (fp32 on CPU, bf16/fp16 on GPU); `lora` (may be null) in fp32
  // masters, cast to the compute dtype once per call (or per step: StepOptions::lora_compute).
  Qwen3Model(Qwen3Config config, Qwen3Weights weights);

  const Qwen3Config& config() const { return config_; }
  Qwen3Weights& weights() { return weights_; }
  const Qwen3Weights& weights() const { return weights_; }

  // Forward + loss + backward for one micro-batch; adds (grad / loss_denominator) into `grads`.
  LossSum forward_backward(const Batch& batch, const LoraWeights* lora, Gradients& grads,
                              const StepOptions& options);

  // Loss only (no gradients, no dropout). `hooks.before_layer` is called as in forward_backward.
  LossSum forward_loss(const Batch& batch, const LoraWeights* lora,
                      int64_t loss_chunk_tokens = ops::kDefaultLossChunkTokens, const LayerHooks& hooks = {});

  // Full logits [B, T, V] in fp32 (small inputs: tests, chat, eval).
  at::Tensor logits(const Batch& batch, const LoraWeights* lora);

 private:
  Qwen3Config config_;
  Qwen3Weights weights_;
};

}  // namespace qft::model
