// Inference forward of Qwen3 with a KV cache: prefill a prompt block, then one token per step. Built from
// the training path's ops (embedding, rms_norm, ops::linear_forward on the layer's Linear values with the
// adapter attached, q/k norm, RoPE, swiglu); only attention differs, because new queries attend to cached
// keys (query length != key length). No gradients, nothing saved for backward.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "model/lora.h"
#include "model/qwen3_config.h"
#include "model/qwen3_weights.h"

namespace qft::generate {

// Keys and values of every layer for B rows, preallocated to `capacity` positions. Row b holds
// lengths[b] tokens at positions 0..lengths[b]-1; rows grow independently (prompts of different
// lengths, no padding inside the cache). Heads come before positions so that the first L positions of
// every (row, head) are a strided view the attention GEMMs read without a copy.
struct KvCache {
  std::vector<at::Tensor> k, v;  // per layer [B, nKV, capacity, D]
  std::vector<int64_t> lengths;  // [B], on the host: positions and masks are built from it
  int64_t capacity = 0;

  // All zeros: masked keys beyond a row's length are read (weight 0) and must be finite.
  static KvCache allocate(const model::Qwen3Config& config, int64_t batch, int64_t capacity, at::ScalarType dtype,
                          at::Device device);
  int64_t batch() const { return static_cast<int64_t>(lengths.size()); }
  int64_t bytes() const;
};

// Which cached keys each of T new queries per row sees: query i of row b sits at position starts[b] + i
// and sees keys 0..starts[b] + i (causal inside the new block, nothing of the row's unused cache).
// bool [B, T, L] with L = max(starts) + T: keys beyond are not read at all.
at::Tensor visible_keys(const std::vector<int64_t>& starts, int64_t T, at::Device device);

// Attention of new queries against cached keys. q [B, T, nH, D]; k/v caches [B, nKV, C, D] (C >= L);
// `visible` from visible_keys. Returns [B, T, nH, D]. The math path (GQA as grouped GEMMs, softmax in
// fp32, as the training path) runs on every device; `use_sdpa` calls at::scaled_dot_product_attention
// with the same mask instead (checked equal on the CPU; not the default).
at::Tensor cached_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                            const at::Tensor& visible, bool use_sdpa = false);

class Decoder {
 public:
  // `weights` in the compute dtype on the compute device; `lora` (may be null) is cast to that dtype once
  // and attached to every layer's projections (no dropout), so a step does no casts.
  Decoder(const model::Qwen3Config& config, const model::Qwen3Weights& weights, const model::LoraWeights* lora);

  const model::Qwen3Config& config() const { return config_; }
  at::Device device() const { return weights_.embed_tokens.device(); }
  at::ScalarType dtype() const { return weights_.embed_tokens.scalar_type(); }
  KvCache allocate_cache(int64_t batch, int64_t capacity) const;

  // Appends ids [B, T] to the cache: row b's first new_lengths[b] ids are real (1..T), the rest are
  // right padding whose keys are written but never seen (the row's next block overwrites them).
  // Returns fp32 logits at each row's last real new token [B, V], or at every new position [B, T, V]
  // when `all_positions` (tests).
  at::Tensor forward(KvCache& cache, const at::Tensor& ids, const std::vector<int64_t>& new_lengths,
                     bool all_positions = false);

 private:
  model::Qwen3Config config_;
  const model::Qwen3Weights& weights_;
  std::vector<std::array<model::Linear, model::kNumProjections>> projections_;  // per layer, adapters attached
};

}  // namespace qft::generate
