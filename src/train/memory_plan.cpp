#include "train/memory_plan.h"

#include <algorithm>

#include <fmt/format.h>

namespace qft::train {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The residual stream's elements per token (sequence parallelism: 1/T of the rows).
int64_t residual_width(const ActivationShape& s) {
  return s.sequence_parallel ? s.config.hidden_size / s.tensor_parallel_size : s.config.hidden_size;
}

int64_t checkpointed(const ActivationShape& s) {
  const int64_t L = s.config.num_hidden_layers;
  if (!s.gradient_checkpointing) return 0;
  return s.recompute_num_layers < 0 ? L : std::min(s.recompute_num_layers, L);
}

int64_t offloaded(const ActivationShape& s) { return std::clamp<int64_t>(s.offloaded_layers, 0, checkpointed(s)); }

// The [tokens, hidden] tensors a checkpointed layer keeps: its input, and its mid residual.
int64_t kept_per_layer(const ActivationShape& s) { return s.checkpoint_residuals ? 2 : 1; }

}  // namespace

int64_t estimate_offloaded_bytes(const ActivationShape& s) {
  return offloaded(s) * kept_per_layer(s) * s.tokens * residual_width(s) * s.activation_bytes;
}

int64_t estimate_activation_bytes(const ActivationShape& s) {
  const model::Qwen3Config& c = s.config;
  const int64_t h = c.hidden_size, i = c.intermediate_size, L = c.num_hidden_layers;
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  const int64_t b = s.activation_bytes;
  // The residual stream (x, x_mid) holds 1/T of the rows under sequence parallelism; the norms' outputs
  // as q/k/v and gate/up read them (h_in, h_post) hold all rows.
  const int64_t residual = residual_width(s);
  // A tiled MLP keeps none of gate, up, act, nor the LoRA x·Aᵀ of gate, up and down, for any row.
  const int64_t mlp = s.tiled_mlp ? 0 : 3 * i;
  const int64_t lora_kept = s.tiled_mlp ? 4 : 7;
  // LayerActivations per token: x, h_in, q_pre, k_pre, v, q, k, attn, x_mid, h_post, gate, up, act (compute
  // dtype), the attention's log-sum-exp (fp32 per head) and the LoRA x·Aᵀ of seven projections.
  const int64_t per_layer = (2 * residual + 2 * h + 3 * q + 3 * kv + mlp) * b + c.num_attention_heads * 4 +
                            (s.lora_r > 0 ? lora_kept * s.lora_r * b : 0);
  // Selective recompute drops h_in, h_post, q, k (after norm and RoPE) and act from every layer but the
  // one being recomputed.
  const int64_t dropped = (2 * h + q + kv + (s.tiled_mlp ? 0 : i)) * b;
  // Offloaded layer inputs leave the GPU; one of them is on its way back during the backward of the layer
  // above it.
  const int64_t K = offloaded(s);
  // Checkpointing keeps the inputs of its layers; the layers above them recompute selectively, and are
  // all released by the time the first checkpointed layer is recomputed.
  const int64_t C = checkpointed(s);
  const int64_t inputs_on_device = C - K + (K > 0 ? 1 : 0);
  // Besides the kept inputs: the layers above the checkpointed ones, or the one layer being recomputed.
  const int64_t layer_activations =
      C < L ? std::max(per_layer, (L - C) * (per_layer - dropped) + dropped) : per_layer;
  const int64_t kept_inputs = inputs_on_device * kept_per_layer(s) * residual * b;
  const int64_t saved = s.gradient_checkpointing ? kept_inputs + layer_activations
                        : s.selective_recompute  ? L * (per_layer - dropped) + dropped
                                                 : L * per_layer;
  // Backward of one layer: the MLP gradients and a few hidden-size ones, flash attention's fp32 dq.
  const int64_t transient = (s.tiled_mlp ? 0 : 3 * i) * b + 4 * h * b + q * 4;
  // A tiled MLP's backward holds one chunk's gate, up, act (made again) and their gradients.
  const int64_t mlp_chunk_rows =
      s.tiled_mlp ? std::min(s.tokens, ceil_div(s.tokens, s.tiled_mlp_num_shards > 0
                                                              ? s.tiled_mlp_num_shards
                                                              : std::max<int64_t>(1, ceil_div(s.tokens, h))))
                  : 0;
  const int64_t mlp_chunk = mlp_chunk_rows * 6 * i * b;
  const int64_t loss_chunk = s.loss_chunk_tokens * c.vocab_size * 4 * 2;  // fp32 logits and their gradient
  return s.tokens * (saved + transient) + mlp_chunk + loss_chunk;
}

std::string describe(const MemoryPlan& p) {
  constexpr double GiB = 1024.0 * 1024.0 * 1024.0;
  std::string out = fmt::format("memory per {}: model state {:.1f} GiB + activations ~{:.1f} GiB ({} tokens per "
                                "micro-batch) = ~{:.1f} GiB",
                                p.device_total_bytes > 0 ? "GPU" : "process", p.state_bytes / GiB,
                                p.activation_bytes / GiB, p.tokens, p.total() / GiB);
  if (p.device_total_bytes > 0)
    out += fmt::format(" of {:.1f} GiB ({:.1f} GiB free after loading)", p.device_total_bytes / GiB,
                       p.device_free_bytes / GiB);
  if (p.host_bytes > 0) {
    out += fmt::format("; {:.1f} GiB of layer inputs offloaded to host memory", p.host_bytes / GiB);
    if (p.host_ranks > 1) out += fmt::format(" (x {} ranks on the node)", p.host_ranks);
    if (p.host_total_bytes > 0) out += fmt::format(" of {:.1f} GiB", p.host_total_bytes / GiB);
  }
  return out;
}

bool clearly_too_large(const MemoryPlan& p) {
  return p.device_total_bytes > 0 && static_cast<double>(p.total()) * 0.85 > static_cast<double>(p.device_total_bytes);
}

bool host_too_large(const MemoryPlan& p) {
  return p.host_total_bytes > 0 &&
         static_cast<double>(p.host_bytes) * static_cast<double>(p.host_ranks) > static_cast<double>(p.host_total_bytes);
}

}  // namespace qft::train
