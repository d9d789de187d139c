// The seven linear projections of a Qwen3 decoder layer, and the one table that says everything about
// each: its PEFT name, its module path in Hugging Face keys, its shape for a config, and how it splits
// under tensor parallelism. Weight loading, LoRA (init, targets, PEFT keys, merge) and the decoder
// layer all read this table; nothing else maps projections to names or shapes.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/qwen3_config.h"

namespace qft::model {

enum class Projection : int { q = 0, k, v, o, gate, up, down };
constexpr int kNumProjections = 7;

// Megatron's split of a projection y = x W^T across tensor-parallel ranks. Column: W's rows (output
// features) are split, each rank computes its heads / MLP columns from the whole input (q, k, v, gate,
// up). Row: W's columns (input features) are split, each rank's partial output is summed (o, down).
enum class ParallelStyle { column, row };

struct ProjectionInfo {
  Projection projection;
  const char* name;    // "q_proj": the name PEFT's target_modules uses
  const char* module;  // "self_attn.q_proj": the module path inside a decoder layer
  ParallelStyle style;
};

// Rows in Projection order (q, k, v, o, gate, up, down).
const std::array<ProjectionInfo, kNumProjections>& projection_table();

// Projections of a decoder layer that read one and the same input: q, k and v read input_layernorm's
// output, gate and up post_attention_layernorm's. x A^T of a group's LoRA branches is one GEMM
// (ops/lora_group.h) over their A factors stacked in this order (LoraCompute).
enum class InputGroup : int { attention = 0, mlp };
constexpr int kNumInputGroups = 2;
struct InputGroupInfo {
  InputGroup group;
  std::vector<Projection> members;
};
const InputGroupInfo& input_group_info(InputGroup g);
const ProjectionInfo& projection_info(Projection p);
inline const char* projection_name(Projection p) { return projection_info(p).name; }

// "q_proj" or "self_attn.q_proj" -> q.
std::optional<Projection> projection_from_name(const std::string& name);

// [out_features, in_features] of the whole (unsharded) projection for this config.
std::array<int64_t, 2> projection_shape(const Qwen3Config& config, Projection p);

// "model.layers.{layer}.self_attn.q_proj": the module path in a Hugging Face checkpoint; the weight
// is this + ".weight", a PEFT tensor is "base_model.model." + this + ".lora_A.weight".
std::string projection_module_path(int64_t layer, Projection p);
// True for a projection's weight key in a Hugging Face checkpoint ("model.layers.3.mlp.up_proj.weight"):
// the tensors bitsandbytes stores 4-bit (embeddings, norms and lm_head stay dense).
bool is_projection_weight_key(const std::string& key);

}  // namespace qft::model
