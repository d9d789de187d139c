#include "model/qwen3_config.h"

#include <cmath>
#include <optional>

#include "core/error.h"
#include "core/files.h"
#include "core/json_reader.h"

namespace qft::model {
namespace {

int64_t positive_int(const nlohmann::json& json, const std::string& source, const char* key) {
  QFT_CHECK(json.contains(key), "{}: missing required key \"{}\"", source, key);
  const auto& v = json[key];
  QFT_CHECK(v.is_number_integer() && v.get<int64_t>() > 0, "{}: \"{}\" must be a positive integer, got {}", source,
            key, qft::json::excerpt(v));
  return v.get<int64_t>();
}

double positive_number(const nlohmann::json& v, const std::string& source, const std::string& key) {
  QFT_CHECK(v.is_number() && v.get<double>() > 0, "{}: \"{}\" must be a positive number, got {}", source, key,
            qft::json::excerpt(v));
  return v.get<double>();
}

bool present(const nlohmann::json& json, const char* key) { return json.contains(key) && !json[key].is_null(); }

// Token ids may be an int or (in some configs) a list whose first entry is the primary id.
int64_t token_id(const nlohmann::json& json, const std::string& source, const char* key, int64_t fallback) {
  if (!present(json, key)) return fallback;
  const auto& v = json[key];
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
  QFT_CHECK(v.is_number_integer(), "{}: \"{}\" must be an integer, got {}", source, key, qft::json::excerpt(v));
  return v.get<int64_t>();
}

// A number under `section`.`key` ("" when absent or null).
std::optional<double> optional_number(const nlohmann::json& section, const std::string& section_name, const char* key,
                                      const std::string& source) {
  if (!present(section, key)) return std::nullopt;
  const auto& v = section[key];
  QFT_CHECK(v.is_number(), "{}: \"{}.{}\" must be a number, got {}", source, section_name, key, qft::json::excerpt(v));
  return v.get<double>();
}

// transformers' get_mscale: the YaRN attention temperature for a context `scale` times longer.
double yarn_mscale(double scale, double mscale = 1.0) {
  if (scale <= 1) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

// The RoPE scaling of a config.json, read as transformers 5 does (PreTrainedConfig.standardize_rope_params
// and _compute_{linear_scaling,yarn}_parameters): the keys live in "rope_parameters" (transformers >= 5,
// which folds an old "rope_scaling" into it) or "rope_scaling" (older files); the type is "rope_type" or
// the older "type".
RopeScaling read_rope_scaling(const nlohmann::json& json, int64_t max_position_embeddings,
                                   const std::string& source) {
  std::string section_name;
  for (const char* name : {"rope_parameters", "rope_scaling"}) {
    if (!present(json, name)) continue;
    QFT_CHECK(json[name].is_object(), "{}: \"{}\" must be an object, got {}", source, name,
              qft::json::excerpt(json[name]));
    const auto& section = json[name];
    if (present(section, "rope_type") || present(section, "type")) {
      section_name = name;
      break;
    }
  }
  RopeScaling s;
  if (section_name.empty()) return s;  // no type anywhere: default RoPE
  const auto& section = json[section_name];
  const char* type_key = present(section, "rope_type") ? "rope_type" : "type";
  const auto& type = section[type_key];
  const bool known = type.is_string() && (type == "default" || type == "linear" || type == "yarn");
  QFT_CHECK(known,
            "{}: \"{}.{}\" {} is not supported (qft implements the rope types \"default\", \"linear\" and \"yarn\")",
            source, section_name, type_key, qft::json::excerpt(type));
  if (type == "default") return s;
  const std::string where = section_name;
  auto positive = [&](const char* key) {
    const std::optional<double> v = optional_number(section, where, key, source);
    if (v) QFT_CHECK(*v > 0, "{}: \"{}.{}\" must be positive, got {}", source, where, key, *v);
    return v;
  };
  const std::optional<double> factor = positive("factor");
  if (type == "linear") {
    QFT_CHECK(factor.has_value(), "{}: \"{}\" of type \"linear\" needs a \"factor\"", source, where);
    s.type = RopeScaling::Type::linear;
    s.factor = *factor;
    return s;
  }
  s.type = RopeScaling::Type::yarn;
  // standardize_rope_params: a top-level original_max_position_embeddings wins (Phi3 writes it there),
  // else the section's, else max_position_embeddings.
  s.original_max_position_embeddings = max_position_embeddings;
  if (present(json, "original_max_position_embeddings")) {
    s.original_max_position_embeddings = positive_int(json, source, "original_max_position_embeddings");
  } else if (present(section, "original_max_position_embeddings")) {
    const auto& v = section["original_max_position_embeddings"];
    QFT_CHECK(v.is_number_integer() && v.get<int64_t>() > 0,
              "{}: \"{}.original_max_position_embeddings\" must be a positive integer, got {}", source, where,
              qft::json::excerpt(v));
    s.original_max_position_embeddings = v.get<int64_t>();
  }
  // No factor: the ratio of the two context lengths (as transformers, for DeepSeek-V3 style configs).
  s.factor = factor ? *factor
                    : static_cast<double>(max_position_embeddings) / static_cast<double>(s.original_max_position_embeddings);
  // `get("beta_fast") or 32`: absent, null and 0 all mean the default.
  const std::optional<double> beta_fast = optional_number(section, where, "beta_fast", source);
  const std::optional<double> beta_slow = optional_number(section, where, "beta_slow", source);
  if (beta_fast && *beta_fast != 0) s.beta_fast = *beta_fast;
  if (beta_slow && *beta_slow != 0) s.beta_slow = *beta_slow;
  QFT_CHECK(s.beta_fast > 0 && s.beta_slow > 0 && s.beta_fast >= s.beta_slow,
            "{}: \"{}.beta_fast\" ({}) and \"beta_slow\" ({}) must be positive with beta_fast >= beta_slow", source,
            where, s.beta_fast, s.beta_slow);
  if (present(section, "truncate")) {
    QFT_CHECK(section["truncate"].is_boolean(), "{}: \"{}.truncate\" must be a boolean, got {}", source, where,
              qft::json::excerpt(section["truncate"]));
    s.truncate = section["truncate"].get<bool>();
  }
  const std::optional<double> attention_factor = positive("attention_factor");
  const std::optional<double> mscale = optional_number(section, where, "mscale", source);
  const std::optional<double> mscale_all_dim = optional_number(section, where, "mscale_all_dim", source);
  if (attention_factor) {
    s.attention_factor = *attention_factor;
  } else if (mscale && *mscale != 0 && mscale_all_dim && *mscale_all_dim != 0) {  // `if mscale and mscale_all_dim`
    s.attention_factor = yarn_mscale(s.factor, *mscale) / yarn_mscale(s.factor, *mscale_all_dim);
  } else {
    s.attention_factor = yarn_mscale(s.factor);
  }
  return s;
}

}  // namespace

Qwen3Config Qwen3Config::from_json(const nlohmann::json& json, const std::string& source) {
  QFT_CHECK(json.is_object(), "{}: config must be a JSON object", source);
  Qwen3Config c;
  c.raw = json;
  if (present(json, "model_type")) {
    QFT_CHECK(json["model_type"] == "qwen3", "{}: \"model_type\" must be \"qwen3\" (dense Qwen3), got {}", source,
              qft::json::excerpt(json["model_type"]));
  }
  c.vocab_size = positive_int(json, source, "vocab_size");
  c.hidden_size = positive_int(json, source, "hidden_size");
  c.intermediate_size = positive_int(json, source, "intermediate_size");
  c.num_hidden_layers = positive_int(json, source, "num_hidden_layers");
  c.num_attention_heads = positive_int(json, source, "num_attention_heads");
  // transformers' defaults: kv heads = attention heads; head_dim = hidden / heads only when absent.
  c.num_key_value_heads =
      present(json, "num_key_value_heads") ? positive_int(json, source, "num_key_value_heads") : c.num_attention_heads;
  if (present(json, "head_dim")) {
    c.head_dim = positive_int(json, source, "head_dim");
  } else {
    QFT_CHECK(c.hidden_size % c.num_attention_heads == 0,
              "{}: no \"head_dim\" and hidden_size {} is not divisible by num_attention_heads {}", source,
              c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  QFT_CHECK(c.num_attention_heads % c.num_key_value_heads == 0,
            "{}: \"num_attention_heads\" {} must be a multiple of \"num_key_value_heads\" {}", source,
            c.num_attention_heads, c.num_key_value_heads);
  QFT_CHECK(c.head_dim % 2 == 0, "{}: \"head_dim\" must be even for rotary embeddings, got {}", source, c.head_dim);

  if (present(json, "rms_norm_eps")) c.rms_norm_eps = positive_number(json["rms_norm_eps"], source, "rms_norm_eps");

  // transformers >= 5 keeps RoPE in rope_parameters; older files have rope_theta (+ rope_scaling).
  bool have_theta = false;
  if (present(json, "rope_parameters")) {
    const auto& rp = json["rope_parameters"];
    QFT_CHECK(rp.is_object(), "{}: \"rope_parameters\" must be an object, got {}", source, qft::json::excerpt(rp));
    if (present(rp, "rope_theta")) {
      c.rope_theta = positive_number(rp["rope_theta"], source, "rope_parameters.rope_theta");
      have_theta = true;
    }
  }
  if (!have_theta && present(json, "rope_theta")) {
    c.rope_theta = positive_number(json["rope_theta"], source, "rope_theta");
    have_theta = true;
  }
  if (!have_theta) c.rope_theta = 10000.0;  // Qwen3Config's own default
  if (present(json, "max_position_embeddings"))
    c.max_position_embeddings = positive_int(json, source, "max_position_embeddings");
  c.rope_scaling = read_rope_scaling(json, c.max_position_embeddings, source);
  if (present(json, "hidden_act"))
    QFT_CHECK(json["hidden_act"] == "silu", "{}: \"hidden_act\" must be \"silu\", got {}", source,
              qft::json::excerpt(json["hidden_act"]));
  if (present(json, "attention_bias"))
    QFT_CHECK(json["attention_bias"] == false, "{}: \"attention_bias\": true is not supported", source);
  if (present(json, "use_sliding_window"))
    QFT_CHECK(json["use_sliding_window"] == false, "{}: \"use_sliding_window\": true is not supported", source);

  if (present(json, "tie_word_embeddings")) {
    QFT_CHECK(json["tie_word_embeddings"].is_boolean(), "{}: \"tie_word_embeddings\" must be a boolean, got {}",
              source, qft::json::excerpt(json["tie_word_embeddings"]));
    c.tie_word_embeddings = json["tie_word_embeddings"].get<bool>();
  }
  c.bos_token_id = token_id(json, source, "bos_token_id", c.bos_token_id);
  c.eos_token_id = token_id(json, source, "eos_token_id", c.eos_token_id);
  // transformers >= 5 writes "dtype"; older files "torch_dtype".
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (present(json, key)) {
      QFT_CHECK(json[key].is_string(), "{}: \"{}\" must be a string, got {}", source, key, qft::json::excerpt(json[key]));
      c.torch_dtype = json[key].get<std::string>();
      break;
    }
  }
  return c;
}

Qwen3Config Qwen3Config::from_file(const std::string& config_json_path) {
  return from_json(qft::json::parse_file(config_json_path), config_json_path);
}

nlohmann::json Qwen3Config::to_json() const {
  nlohmann::json j = raw.is_object() ? raw : nlohmann::json::object();
  j["model_type"] = "qwen3";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["rms_norm_eps"] = rms_norm_eps;
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    j["rope_parameters"]["rope_theta"] = rope_theta;
    if (j.contains("rope_theta")) j["rope_theta"] = rope_theta;
  } else {
    j["rope_theta"] = rope_theta;
  }
  j["max_position_embeddings"] = max_position_embeddings;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["bos_token_id"] = bos_token_id;
  if (!(j.contains("eos_token_id") && j["eos_token_id"].is_array())) j["eos_token_id"] = eos_token_id;
  if (j.contains("dtype") && !j.contains("torch_dtype"))
    j["dtype"] = torch_dtype;
  else
    j["torch_dtype"] = torch_dtype;
  if (!j.contains("hidden_act")) j["hidden_act"] = "silu";
  if (!j.contains("architectures")) j["architectures"] = {"Qwen3ForCausalLM"};
  return j;
}

}  // namespace qft::model
