// Hints for keys users bring from other trainers (LLaMA-Factory, TRL, axolotl) and for qft keys put
// in the wrong section. ConfigReader::finish() asks for a hint before its generic "did you mean"; the
// train config checks its top level first, so a flat LLaMA-Factory file gets "qft's config is nested"
// instead of "missing key model.model_name_or_path".
#pragma once

#include <string>

#include <yaml-cpp/yaml.h>

namespace qft {

// `section` is the key path of the mapping holding `key` ("" for the top level, "training", ...).
// Returns "" when there is nothing better to say than the generic suggestion, else a sentence such as
// "LLaMA-Factory's 'lora_rank' is qft's 'lora.r'".
std::string config_key_hint(const std::string& section, const std::string& key);

// Throws for the first top-level key of a train config that is not a section but has a hint.
void check_top_level_key_hints(const YAML::Node& root, const std::string& file);

// For a model path that does not exist: when it looks like a Hugging Face Hub id ("Qwen/Qwen3-8B"),
// a sentence saying that qft reads local directories and how to download one; else "".
std::string hub_id_hint(const std::string& path);

}  // namespace qft
