#include "hf/peft_adapter.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include <fmt/ranges.h>

#include "core/error.h"
#include "core/files.h"
#include "core/json_reader.h"
#include "io/safetensors.h"
#include "hf/model_dir.h"
#include "model/lora_targets.h"

namespace qft::hf {

namespace {

namespace fs = std::filesystem;
using model::Projection;

// PEFT writes lora_alpha as an int when it is one (LoraConfig.lora_alpha: int).
nlohmann::json number_json(double value) {
  if (std::floor(value) == value && std::fabs(value) < 1e15) return static_cast<int64_t>(value);
  return value;
}

// A key that must be absent, null, false, empty or equal to `neutral` for qft to load the adapter.
void require_neutral(const nlohmann::json& config, const std::string& key, const nlohmann::json& neutral,
                     const std::string& file, const char* what) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null() || *it == neutral) return;
  if ((it->is_object() || it->is_array()) && it->empty()) return;
  fail("{}: \"{}\" = {} is not supported ({})", file, key, json::excerpt(*it), what);
}

template <typename T>
T read_value(const nlohmann::json& config, const std::string& key, T fallback, const std::string& file,
             const char* expected) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  try {
    if constexpr (std::is_same_v<T, bool>) {
      QFT_CHECK(it->is_boolean(), "not a bool");
    } else if constexpr (std::is_same_v<T, int64_t>) {
      QFT_CHECK(it->is_number_integer(), "not an integer");
    } else {
      QFT_CHECK(it->is_number(), "not a number");
    }
    return it->get<T>();
  } catch (const std::exception&) {
    fail("{}: \"{}\" must be {}, got {}", file, key, expected, json::excerpt(*it));
  }
}

}  // namespace

nlohmann::json peft_adapter_config(const model::LoraConfig& config, const std::string& base_model_name_or_path,
                                   const std::string& init_lora_weights) {
  std::vector<std::string> targets;
  for (Projection p : config.target_modules) targets.push_back(model::projection_name(p));
  std::sort(targets.begin(), targets.end());
  const nlohmann::json null;
  // nlohmann::json objects are std::map-backed, so dump() writes the keys sorted as PEFT does
  // (json.dumps(..., sort_keys=True)).
  nlohmann::json j = nlohmann::json::object();
  j["alora_invocation_tokens"] = null;
  j["alpha_pattern"] = nlohmann::json::object();
  j["arrow_config"] = null;
  j["auto_mapping"] = null;
  j["base_model_name_or_path"] = base_model_name_or_path;
  j["bias"] = "none";
  j["corda_config"] = null;
  j["ensure_weight_tying"] = false;
  j["eva_config"] = null;
  j["exclude_modules"] = null;
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = init_lora_weights == "gaussian" ? nlohmann::json("gaussian") : nlohmann::json(true);
  j["layer_replication"] = null;
  j["layers_pattern"] = null;
  j["layers_to_transform"] = null;
  j["loftq_config"] = nlohmann::json::object();
  j["lora_alpha"] = number_json(config.lora_alpha);
  j["lora_bias"] = false;
  j["lora_dropout"] = config.lora_dropout;
  j["megatron_config"] = null;
  j["megatron_core"] = "megatron.core";
  j["modules_to_save"] = null;
  j["peft_type"] = "LORA";
  // The PEFT release whose key set this file reproduces; PEFT only uses it for a version warning.
  j["peft_version"] = "0.18.1";
  j["qalora_group_size"] = 16;
  j["r"] = config.r;
  j["rank_pattern"] = nlohmann::json::object();
  j["revision"] = null;
  j["target_modules"] = targets;
  j["target_parameters"] = null;
  j["task_type"] = "CAUSAL_LM";
  j["trainable_token_indices"] = null;
  j["use_dora"] = false;
  j["use_qalora"] = false;
  j["use_rslora"] = config.use_rslora;
  return j;
}

void save_peft_adapter(const std::string& dir, const model::LoraWeights& lora,
                       const std::string& base_model_name_or_path, const std::string& init_lora_weights) {
  fs::create_directories(dir);
  io::NamedTensors tensors;
  for (const auto& [name, tensor] : lora.named_tensors()) {
    tensors.emplace_back(name, tensor.to(at::kCPU, at::kFloat).contiguous());
  }
  QFT_CHECK(!tensors.empty(), "{}: the adapter has no tensors", dir);
  io::save_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), tensors);
  // A local base is written as an absolute path and its tokenizer files travel with the adapter, so
  // AutoPeftModelForCausalLM.from_pretrained(dir) and AutoTokenizer work from any working directory.
  std::string base = base_model_name_or_path;
  if (fs::is_directory(base)) {
    base = fs::absolute(base).lexically_normal().string();
    copy_tokenizer_files(base, dir);
  }
  const nlohmann::json config = peft_adapter_config(lora.config, base, init_lora_weights);
  // ensure_ascii = true, as Python's json.dumps.
  write_file_atomic((fs::path(dir) / "adapter_config.json").string(), config.dump(2, ' ', true) + "\n");
}

model::LoraConfig read_peft_adapter_config(const std::string& dir, const model::Qwen3Config& base) {
  const std::string file = (fs::path(dir) / "adapter_config.json").string();
  const nlohmann::json j = json::parse_file(file);
  QFT_CHECK(j.is_object(), "{}: expected a JSON object", file);
  const auto peft_type = j.find("peft_type");
  QFT_CHECK(peft_type != j.end() && *peft_type == "LORA", "{}: \"peft_type\" must be \"LORA\", got {}", file,
            peft_type == j.end() ? "nothing" : json::excerpt(*peft_type));

  require_neutral(j, "use_dora", false, file, "DoRA adapters");
  require_neutral(j, "bias", "none", file, "only bias: \"none\"");
  require_neutral(j, "lora_bias", false, file, "LoRA bias terms");
  require_neutral(j, "fan_in_fan_out", false, file, "Conv1D-style transposed weights");
  require_neutral(j, "modules_to_save", nullptr, file, "fully trained extra modules");
  require_neutral(j, "rank_pattern", nlohmann::json::object(), file, "per-module ranks");
  require_neutral(j, "alpha_pattern", nlohmann::json::object(), file, "per-module alphas");
  require_neutral(j, "layers_to_transform", nullptr, file, "adapting only some layers");
  require_neutral(j, "exclude_modules", nullptr, file, "excluded modules");
  require_neutral(j, "layer_replication", nullptr, file, "layer replication");
  require_neutral(j, "target_parameters", nullptr, file, "LoRA on raw parameters");
  require_neutral(j, "trainable_token_indices", nullptr, file, "trainable token embeddings");
  require_neutral(j, "use_qalora", false, file, "QA-LoRA");
  require_neutral(j, "alora_invocation_tokens", nullptr, file, "activated LoRA");

  // Keys PEFT leaves out take PEFT's defaults.
  model::LoraConfig config;
  config.r = read_value<int64_t>(j, "r", config.r, file, "a positive integer");
  QFT_CHECK(config.r >= 1, "{}: \"r\" must be positive, got {}", file, config.r);
  config.lora_alpha = read_value<double>(j, "lora_alpha", config.lora_alpha, file, "a number");
  config.lora_dropout = read_value<double>(j, "lora_dropout", config.lora_dropout, file, "a number");
  config.use_rslora = read_value<bool>(j, "use_rslora", config.use_rslora, file, "true or false");
  const auto targets = j.find("target_modules");
  // Absent: model::LoraConfig's default, PEFT's for model_type qwen3 (q_proj, v_proj).
  if (targets != j.end() && !targets->is_null()) {
    config.target_modules = model::resolve_target_modules_json(*targets, base.num_hidden_layers, file);
  }
  return config;
}

model::LoraWeights load_peft_adapter(const std::string& dir, const model::Qwen3Config& base, at::Device device) {
  const model::LoraConfig config = read_peft_adapter_config(dir, base);
  const std::string file = (fs::path(dir) / "adapter_model.safetensors").string();
  if (!file_exists(file) && file_exists((fs::path(dir) / "adapter_model.bin").string())) {
    fail("{}: only adapter_model.bin (pickle) is there; qft reads safetensors adapters "
         "(re-save with PEFT's save_pretrained(safe_serialization=True))",
         dir);
  }
  QFT_CHECK(file_exists(file), "{}: missing adapter_model.safetensors", dir);
  io::SafetensorsFile tensors(file);

  model::LoraWeights lora;
  lora.config = config;
  lora.layers.resize(base.num_hidden_layers);
  std::set<std::string> expected;
  for (int64_t i = 0; i < base.num_hidden_layers; ++i) {
    for (Projection p : config.target_modules) {
      const auto [out, in] = model::projection_shape(base, p);
      auto load = [&](const std::string& name, std::vector<int64_t> shape) {
        expected.insert(name);
        QFT_CHECK(tensors.contains(name), "{}: missing tensor \"{}\" (adapter_config.json targets {} with r = {})",
                  file, name, model::projection_name(p), config.r);
        const io::TensorInfo& info = tensors.info(name);
        QFT_CHECK(info.shape == shape, "{}: tensor \"{}\" has shape [{}], expected [{}] for this base model and r",
                  file, name, fmt::join(info.shape, ", "), fmt::join(shape, ", "));
        at::Tensor t = tensors.tensor(name);
        QFT_CHECK(at::isFloatingType(t.scalar_type()), "{}: tensor \"{}\" has dtype {}, expected a float type", file,
                  name, info.dtype);
        return t.to(device, at::kFloat, /*non_blocking=*/false, /*copy=*/true);
      };
      auto& pair = lora.layers[i][static_cast<int>(p)];
      pair.A = load(model::peft_lora_key(i, p, 'A'), {config.r, in});
      pair.B = load(model::peft_lora_key(i, p, 'B'), {out, config.r});
    }
  }
  for (const auto& name : tensors.names()) {
    QFT_CHECK(expected.count(name), "{}: unexpected tensor \"{}\" (not a lora_A/lora_B weight of the targets in "
              "adapter_config.json; DoRA, biases, embeddings and modules_to_save are not supported)",
              file, name);
  }
  return lora;
}

}  // namespace qft::hf
