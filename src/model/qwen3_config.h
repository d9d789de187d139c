// Qwen3 architecture hyper-parameters, read from a Hugging Face config.json. Every shape in the model
// comes from here; nothing is hard-coded per model size.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "model/rope_scaling.h"

namespace qft::model {

struct Qwen3Config {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // explicit in Qwen3 configs; never hidden/heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 1000000.0;  // from `rope_theta` or `rope_parameters.rope_theta`
  int64_t max_position_embeddings = 40960;
  // rope_scaling / rope_parameters: "default" (none), "linear" or "yarn"; other rope_types are errors.
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 151643;
  int64_t eos_token_id = 151645;
  std::string torch_dtype = "bfloat16";
  // The file as read, so that writing a merged model keeps keys we do not interpret.
  nlohmann::json raw = nlohmann::json::object();

  // Validates types and values; errors name `source` (a path) and the key.
  static Qwen3Config from_json(const nlohmann::json& json, const std::string& source);
  static Qwen3Config from_file(const std::string& config_json_path);
  // config.json contents (raw keys kept, interpreted keys written back with their current values).
  nlohmann::json to_json() const;

  int64_t q_size() const { return num_attention_heads * head_dim; }
  int64_t kv_size() const { return num_key_value_heads * head_dim; }
};

}  // namespace qft::model
