// Qwen3 base weights, named and shaped as in the Hugging Face checkpoint.
#pragma once

#include <array>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "model/linear.h"
#include "model/qwen3_config.h"

namespace qft::model {

struct LayerWeights {
  at::Tensor input_layernorm;           // [H]
  at::Tensor q_norm, k_norm;            // [D]
  at::Tensor post_attention_layernorm;  // [H]
  // q, k, v, o, gate, up, down (projection.h's table), without LoRA: adapters are attached per step.
  std::array<Linear, kNumProjections> projections;

  Linear& operator[](Projection p) { return projections[static_cast<int>(p)]; }
  const Linear& operator[](Projection p) const { return projections[static_cast<int>(p)]; }
};

struct Qwen3Weights {
  at::Tensor embed_tokens;  // [V, H]
  std::vector<LayerWeights> layers;
  at::Tensor norm;     // [H]
  at::Tensor lm_head;  // [V, H]; the same tensor as embed_tokens when tied

  // Reads config.json's model from `model_dir` (model.safetensors or model.safetensors.index.json),
  // checks every name and shape against `config`, converts to `dtype` on `device`.
  // `take_part` (optional) picks the part of each tensor to keep, given its name and a view of the whole
  // memory-mapped tensor (tensor parallelism: the rank's slice), so only that part is read and copied.
  static Qwen3Weights load(const std::string& model_dir, const Qwen3Config& config, at::ScalarType dtype,
                           at::Device device,
                           const std::function<at::Tensor(const std::string& name, const at::Tensor& whole)>&
                               take_part = {});
  // Random init as transformers does for a fresh model (normal(0, initializer_range), norms = 1).
  static Qwen3Weights random(const Qwen3Config& config, uint64_t seed, double initializer_range = 0.02,
                             at::ScalarType dtype = at::kFloat);
  // HF checkpoint names -> tensors (lm_head omitted when tied).
  std::vector<std::pair<std::string, at::Tensor>> named_tensors(const Qwen3Config& config) const;
  Qwen3Weights to(at::ScalarType dtype, at::Device device) const;
  // The same structure whose i-th tensor (named_tensors order) is tensor_of(i), e.g. views of a flat
  // buffer; a tied lm_head stays tied.
  Qwen3Weights with_tensors(const Qwen3Config& config, const std::function<at::Tensor(size_t index)>& tensor_of) const;

  // lm_head is the very tensor embed_tokens (tie_word_embeddings).
  bool tied() const;
  // Same structure (and the same tying: a tied result has lm_head == embed_tokens, so a gradient
  // buffer gets both uses summed into one tensor), all zeros, optionally in another dtype.
  Qwen3Weights zeros_like(std::optional<at::ScalarType> dtype = std::nullopt) const;
};

}  // namespace qft::model
