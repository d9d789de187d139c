// LoRA, all of it in one place: the adapter config (PEFT's LoraConfig fields qft supports), the adapters
// of a model (A [r, in] and B [out, r] per targeted projection, fp32 masters), their compute-dtype copy for
// a step (LoraCompute), PEFT's initialisations, PEFT's tensor names, and merging into the base weights.
// Which projections are targeted comes from PEFT's `target_modules` rules in lora_targets.h; the math of
// one branch is ops::linear_forward/backward, of the branches of projections sharing an input
// ops::lora_group_forward/backward; the PEFT file format (adapter_config.json, adapter_model.safetensors)
// is src/hf/peft_adapter.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "model/projection.h"
#include "model/qwen3_config.h"

namespace qft::model {

// PEFT's LoraConfig defaults (r 8, lora_alpha 8, dropout 0, targets q_proj and v_proj for Qwen3).
struct LoraConfig {
  int64_t r = 8;
  double lora_alpha = 8.0;
  double lora_dropout = 0.0;
  bool use_rslora = false;
  std::vector<Projection> target_modules = {Projection::q, Projection::v};  // sorted, unique
  double scaling() const;                  // alpha / r, or alpha / sqrt(r) with rsLoRA
  bool targets(Projection p) const;
};

// PEFT's init_lora_weights: true (A kaiming-uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in))) or
// "gaussian" (A ~ N(0, 1/r)); B is zero in both.
enum class LoraInit { kaiming_uniform, gaussian };
// "true" | "gaussian" as written in configs and adapter_config.json; an error names the accepted values.
LoraInit parse_lora_init(const std::string& text);
const char* lora_init_name(LoraInit init);  // "true" | "gaussian"

struct LoraPair {
  at::Tensor A;  // [r, in]
  at::Tensor B;  // [out, r]
  bool defined() const { return A.defined(); }
};

// "base_model.model.model.layers.{layer}.self_attn.q_proj.lora_A.weight" (and lora_B).
std::string peft_lora_key(int64_t layer, Projection p, char which /* 'A' or 'B' */);

struct LoraWeights {
  LoraConfig config;
  // layers[i][p]: undefined pair where projection p is not targeted.
  std::vector<std::array<LoraPair, kNumProjections>> layers;

  // PEFT's init on `device` in fp32, reproducible from `seed` (drawn on the CPU in a fixed order, so the
  // result does not depend on the device).
  static LoraWeights init(const Qwen3Config& model, const LoraConfig& config, uint64_t seed,
                          at::Device device = at::kCPU, LoraInit init = LoraInit::kaiming_uniform);
  // Same structure, all zeros (gradient buffers).
  LoraWeights zeros_like() const;
  // Every defined tensor with its PEFT key, layer by layer, A before B, projections in table order.
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() const;
  // The same structure whose i-th tensor (named_tensors order) is tensor_of(i): views of a flat buffer.
  LoraWeights with_tensors(const std::function<at::Tensor(size_t index)>& tensor_of) const;
};

// The adapters as the GEMMs of one optimizer step read them: A and B cast once from the fp32 masters to
// the compute dtype (the masters change only in the optimizer update, so every micro-batch, recompute and
// backward of the step can share one copy), and per layer and input group (projection.h: q/k/v, gate/up)
// the A factors of the adapted members stacked into one [sum of their r, in] tensor whose row blocks the
// members' A are (views: no second copy). The gradients stay in fp32 buffers shaped as the masters.
struct LoraCompute {
  LoraConfig config;
  at::ScalarType dtype = at::kFloat;
  std::vector<std::array<LoraPair, kNumProjections>> layers;       // as the masters, in `dtype`
  std::vector<std::array<at::Tensor, kNumInputGroups>> stacked_A;  // undefined where no member is adapted

  static LoraCompute make(const LoraWeights& masters, at::ScalarType dtype);
  // The casts made again, into the same buffers, from the same master tensors `make` read (their values
  // after an optimizer step): one multi-tensor copy, without make's per-tensor set-up (~3 ms a step at
  // 8B). False, and nothing done, when `masters` are not those tensors.
  bool refresh(const LoraWeights& masters);

 private:
  std::vector<at::Tensor> cast_into_, cast_from_;  // refresh() copies cast_from_ into cast_into_
  std::vector<const void*> master_storage_;       // storage_of(masters) at make
};

struct Qwen3Weights;

// W += scaling * B A for every adapted projection (PEFT's merge_and_unload), computed in fp32 and rounded
// once to the weight's dtype.
void merge_lora_into(Qwen3Weights& weights, const LoraWeights& lora);

}  // namespace qft::model
