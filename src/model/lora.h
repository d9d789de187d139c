// LoRA adapters in PEFT's layout: for each targeted projection, A [r, in] and B [out, r], fp32 master
// weights, y = base(x) + scaling * B(A(dropout(x))). Init as PEFT: A kaiming-uniform(a=sqrt(5)),
// i.e. U(-1/sqrt(in), 1/sqrt(in)), B zeros.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "model/qwen3_config.h"

namespace qft::model {

// The seven linear projections of a Qwen3 decoder layer, in a fixed order.
enum class Projection : int { q = 0, k, v, o, gate, up, down };
constexpr int kNumProjections = 7;
// "q_proj", "k_proj", ..., "down_proj".
const char* projection_name(Projection p);
// HF module path inside a layer: "self_attn.q_proj", ..., "mlp.down_proj".
const char* projection_module(Projection p);
std::optional<Projection> projection_from_name(const std::string& name);
// [out_features, in_features] of a projection for this config.
std::array<int64_t, 2> projection_shape(const Qwen3Config& config, Projection p);

struct LoraConfig {
  int64_t r = 8;
  double lora_alpha = 8.0;
  double lora_dropout = 0.0;
  bool use_rslora = false;
  std::vector<Projection> target_modules;  // sorted, unique
  double scaling() const;                  // alpha / r, or alpha / sqrt(r) with rsLoRA
  bool targets(Projection p) const;
};

struct LoraPair {
  at::Tensor A;  // [r, in]
  at::Tensor B;  // [out, r]
  bool defined() const { return A.defined(); }
};

struct LoraWeights {
  LoraConfig config;
  // layers[i][p]: undefined pair where projection p is not targeted.
  std::vector<std::array<LoraPair, kNumProjections>> layers;

  // PEFT-compatible init on `device` in fp32, reproducible from `seed`.
  static LoraWeights init(const Qwen3Config& model, const LoraConfig& config, uint64_t seed,
                          at::Device device = at::kCPU);
  // Same structure, all zeros (gradient buffers).
  LoraWeights zeros_like() const;
  // Every defined tensor with its PEFT key (base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight).
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() const;
};

}  // namespace qft::model
