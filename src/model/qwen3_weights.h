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
#include "model/nf4_weight.h"
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
  // checks every name and shape against `config`, converts to `dtype` on `device`. Projections stored
  // in bitsandbytes' 4-bit layout (a `*-bnb-4bit` checkpoint) load as Nf4Weight without requantizing;
  // with `load_in_4bit` the dense projections are quantized to NF4 as they are read (embeddings, norms
  // and lm_head stay dense, as transformers/bitsandbytes leave them).
  // `take_part` (optional) picks the part of each dense tensor to keep, given its name and a view of the
  // whole memory-mapped tensor (tensor parallelism: the rank's slice), so only that part is read and copied.
  static Qwen3Weights load(const std::string& model_dir, const Qwen3Config& config, at::ScalarType dtype,
                           at::Device device, const std::optional<Nf4Options>& load_in_4bit = std::nullopt,
                           const std::function<at::Tensor(const std::string& name, const at::Tensor& whole)>&
                               take_part = {});
  // Random init as transformers does for a fresh model (normal(0, initializer_range), norms = 1).
  static Qwen3Weights random(const Qwen3Config& config, uint64_t seed, double initializer_range = 0.02,
                             at::ScalarType dtype = at::kFloat);
  // The tensors random() makes (same seed, same values), one at a time in checkpoint order (named_tensors'
  // names, lm_head only when untied) without holding the model: init-model --save-4bit quantizes each
  // projection as it comes, so a model too large for memory or disk in bf16 can still be written 4-bit.
  // On a CUDA `device` each tensor is drawn there by torch's CUDA generator seeded with `seed`: the same
  // walk, deterministic per seed, but other values than the CPU generator's.
  static void for_each_random(const Qwen3Config& config, uint64_t seed, double initializer_range, at::ScalarType dtype,
                              const std::function<void(const std::string& name, const at::Tensor& tensor)>& visit,
                              at::Device device = at::kCPU);
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

// Every dense projection quantized to NF4 on its device (keeping its tensor-parallel shard), all sharing
// one dequantization scratch: load_in_4bit after tensor-parallel sharding, where each shard quantizes
// independently. NF4 projections are left as they are.
void quantize_projections(Qwen3Weights& weights, const Nf4Options& options, at::ScalarType compute_dtype);
// Every NF4 projection replaced by its dequantized weight in `dtype` (merge: bitsandbytes' values, rounded
// through the stored dtype).
void dequantize_projections(Qwen3Weights& weights, at::ScalarType dtype);
// True when some projection is stored as NF4.
bool has_nf4_projections(const Qwen3Weights& weights);

}  // namespace qft::model
