// PEFT `target_modules` semantics for Qwen3: which of the seven projections get a LoRA adapter. A list
// entry matches a module when the module path equals it or ends with "." + entry; a plain string is a
// regular expression that must match the whole module path ("model.layers.3.self_attn.q_proj");
// "all-linear" means every linear layer except lm_head. qft adapts a projection in every layer or in
// none, so a pattern that selects only some layers is rejected rather than silently widened.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/projection.h"

namespace qft::model {

// As written in a YAML config: a list of names, ["all-linear"], or a one-element list holding a regex
// (YAML cannot tell `q_proj` from `[q_proj]`, so a lone entry is a regex only when it contains regex
// syntax such as `.*`, `(`, `|`; otherwise it is a name).
// Throws qft::Error (without location; callers prefix it) when the spec cannot be valid.
void validate_target_modules_spec(const std::vector<std::string>& spec);
std::vector<Projection> resolve_target_modules(const std::vector<std::string>& spec, int64_t num_layers);

// As stored in adapter_config.json: a JSON list of names (PEFT list semantics) or a string (regex,
// "all-linear"). `source` names the file in errors.
std::vector<Projection> resolve_target_modules_json(const nlohmann::json& value, int64_t num_layers,
                                                           const std::string& source);

}  // namespace qft::model
