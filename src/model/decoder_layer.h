// One Qwen3 decoder layer, forward and backward, composed from the ops:
//   x -> input_layernorm -> q/k/v (+LoRA) -> q_norm/k_norm per head -> RoPE -> attention -> o_proj -> +x
//     -> post_attention_layernorm -> gate/up (+LoRA) -> swiglu -> down (+LoRA) -> +residual
// Rows are flattened: every activation is [N = B*T, features].
#pragma once

#include <array>
#include <cstdint>
#include <functional>

#include <ATen/ATen.h>

#include "model/lora.h"
#include "model/ops/attention.h"
#include "model/qwen3_config.h"
#include "model/qwen3_weights.h"

namespace qft::model {

// The four points where a layer whose projections hold slices of the weights exchanges data with the
// other ranks holding the rest (tensor parallelism: src/parallel/tensor_parallel.h binds them to the
// named pairs). Unset (a whole layer): identity. Each gets a tensor it may modify in place.
struct ShardedLayerHooks {
  // Forward: a norm's output on its way into q/k/v or gate/up (sequence parallelism: all-gather rows).
  std::function<at::Tensor(at::Tensor)> column_input;
  // Forward: the o and down outputs, partial sums (all-reduce; sequence parallelism: reduce-scatter rows).
  std::function<at::Tensor(at::Tensor)> row_output;
  // Backward: the gradient arriving at the o and down outputs (sequence parallelism: all-gather rows).
  std::function<at::Tensor(at::Tensor)> row_output_grad;
  // Backward: the q+k+v and gate+up input gradients, partial sums (all-reduce; sequence parallelism:
  // reduce-scatter rows).
  std::function<at::Tensor(at::Tensor)> column_input_grad;
};

// What a layer needs besides its input, shared by forward and backward (and by a recompute).
struct LayerContext {
  const Qwen3Config* config = nullptr;
  const LayerWeights* weights = nullptr;  // the norms (the projections are below)
  // This layer's projections as used in this step: the base storages with their LoRA branches attached
  // (dropout rate and per-projection mask seed included).
  std::array<Linear, kNumProjections> projections;
  // Per input group (projection.h: q/k/v, gate/up) the A factors of its adapted projections stacked, their
  // LoraBranch::A being its row blocks (LoraCompute::stacked_A): x A^T of the group is one GEMM
  // (ops/lora_group.h). Undefined where no member is adapted; an adapted group without one runs one
  // projection at a time.
  std::array<at::Tensor, kNumInputGroups> lora_stacked_A;
  int64_t layer = 0;
  int64_t B = 0, T = 0;
  at::Tensor cos, sin;  // [N, D] RoPE tables in the activation dtype
  ops::AttentionLayout attention;  // shared by all layers of the micro-batch
  ShardedLayerHooks sharded;
  // Tiled MLP (model/ops/tiled_mlp.h): the MLP block runs in this many chunks of rows and never holds
  // gate/up/act for all rows (they are left undefined in LayerActivations); 1: the whole sequence at once.
  int64_t mlp_shards = 1;
};

// Everything backward reads. Filled by a saving forward; with gradient checkpointing the model keeps
// only `x` and re-runs the forward inside backward.
struct LayerActivations {
  at::Tensor x;                       // layer input [N, H]
  at::Tensor rstd_in, h_in;           // input_layernorm (h_in as q/k/v read it: all rows)
  at::Tensor q_pre, k_pre, v;         // projections, [N, nH|nKV, D]; q/k before their norms
  at::Tensor rstd_q, rstd_k;          // q_norm / k_norm
  at::Tensor q, k;                    // after norm and RoPE
  at::Tensor attn, lse;               // attention output [N, nH*D] and its row log-sum-exp (path-specific shape)
  at::Tensor x_mid;                   // residual after attention [N, H]
  at::Tensor rstd_post, h_post;       // post_attention_layernorm (h_post as gate/up read it)
  at::Tensor gate, up, act;           // MLP [N, I]; undefined with a tiled MLP (ctx.mlp_shards > 1)
  // LoRA dropout(x) A^T per projection [N, r]; in a stacked group a column block of the group's x A^T.
  std::array<at::Tensor, kNumProjections> xa;
  void clear() { *this = LayerActivations(); }
};

// Gradient destinations (null: not trained).
struct LayerGrads {
  LayerWeights* weights = nullptr;                        // full fine-tuning
  std::array<LoraPair, kNumProjections>* lora = nullptr;  // adapters
};

// The layer's projections with the adapters in `lora` (null: none; in the compute dtype, as LoraCompute
// holds them) attached, each with `scaling`, the dropout rate `dropout` (0 in evaluation) and a mask seed
// derived from (dropout_seed, layer, projection).
std::array<Linear, kNumProjections> layer_projections(const LayerWeights& weights,
                                                      const std::array<LoraPair, kNumProjections>* lora, double scaling,
                                                      double dropout, uint64_t dropout_seed, int64_t layer);

// y = layer(x). When `acts` is given, it is filled with what backward needs; `mid_residual`, when given,
// receives the residual after attention (x_mid), which gradient checkpointing may keep beside x.
at::Tensor decoder_layer_forward(const LayerContext& ctx, const at::Tensor& x, LayerActivations* acts,
                                 at::Tensor* mid_residual = nullptr);

// Gradient checkpointing's recompute before backward: fills `acts` as decoder_layer_forward does (the same
// values) but makes no output, which backward never reads: the MLP's last GEMM is skipped, and a tiled MLP
// (ctx.mlp_shards > 1) entirely, since its backward makes its chunks again anyway. Given the kept
// `mid_residual` (training.checkpoint_residuals), o's GEMM is skipped too: backward reads only its input.
void decoder_layer_recompute(const LayerContext& ctx, const at::Tensor& x, LayerActivations& acts,
                             const at::Tensor& mid_residual = at::Tensor());

// Selective recompute (Megatron's recompute_granularity: selective): after a saving forward, drop what is
// cheap to make again — the two norms' outputs, q/k after their norms and RoPE, the SwiGLU activation —
// and keep the outputs of the GEMMs and of attention, whose recompute would cost a forward. About 37% of
// a layer's activations on Qwen3-8B. recompute_cheap() makes them again (bitwise the same) before backward.
void drop_recomputable(LayerActivations& acts);
void recompute_cheap(const LayerContext& ctx, LayerActivations& acts);

// dx for dy (undefined when !need_dx), accumulating into `grads`. Consumes `acts`: each of its tensors is
// released once backward no longer reads it (and `dy` too, when the caller moves it in), so the layer's
// peak holds little more than attention's backward; pass a copy to run backward twice.
at::Tensor decoder_layer_backward(const LayerContext& ctx, at::Tensor dy, LayerActivations& acts,
                                  const LayerGrads& grads, bool need_dx = true);

}  // namespace qft::model
