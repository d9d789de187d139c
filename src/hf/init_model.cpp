#include "hf/init_model.h"

#include <unistd.h>

#include <filesystem>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "model/qwen3_weights.h"
#include "hf/dtype_names.h"
#include "hf/model_dir.h"
#include "io/safetensors.h"
#include "model/nf4_weight.h"
#include "model/projection.h"

namespace qft::hf {

namespace {

namespace fs = std::filesystem;

struct Preset {
  const char* name;
  int64_t hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;
  bool tied;
};

// Dense Qwen3 sizes from the released config.json files; the tiny ones keep the real vocabulary so the
// Qwen3 tokenizer's ids (chat demo, data pipeline) stay valid.
constexpr Preset kPresets[] = {
    {"0.6B", 1024, 3072, 28, 16, 8, 128, 151936, true},
    {"1.7B", 2048, 6144, 28, 16, 8, 128, 151936, true},
    {"4B", 2560, 9728, 36, 32, 8, 128, 151936, true},
    {"8B", 4096, 12288, 36, 32, 8, 128, 151936, false},
    {"14B", 5120, 17408, 40, 40, 8, 128, 151936, false},
    {"32B", 5120, 25600, 64, 64, 8, 128, 151936, false},
    {"tiny", 64, 192, 2, 4, 2, 16, 151936, true},
    {"tiny-gqa4", 64, 192, 2, 8, 2, 16, 151936, true},
    {"tiny-untied", 64, 192, 2, 4, 4, 16, 151936, false},
};

}  // namespace

std::vector<std::string> init_model_preset_names() {
  std::vector<std::string> names;
  for (const auto& p : kPresets) names.push_back(p.name);
  return names;
}

model::Qwen3Config init_model_preset(const std::string& name) {
  for (const auto& p : kPresets) {
    if (name != p.name) continue;
    // Keys of a released Qwen3 config.json that Qwen3Config does not interpret itself.
    nlohmann::json raw = {{"architectures", {"Qwen3ForCausalLM"}},
                          {"attention_bias", false},
                          {"attention_dropout", 0.0},
                          {"hidden_act", "silu"},
                          {"initializer_range", 0.02},
                          {"max_window_layers", p.layers},
                          {"model_type", "qwen3"},
                          {"rope_scaling", nullptr},
                          {"sliding_window", nullptr},
                          {"use_cache", true},
                          {"use_sliding_window", false}};
    model::Qwen3Config c;
    c.raw = raw;
    c.vocab_size = p.vocab;
    c.hidden_size = p.hidden;
    c.intermediate_size = p.intermediate;
    c.num_hidden_layers = p.layers;
    c.num_attention_heads = p.heads;
    c.num_key_value_heads = p.kv_heads;
    c.head_dim = p.head_dim;
    c.rms_norm_eps = 1e-6;
    c.rope_theta = 1000000.0;
    c.max_position_embeddings = 40960;
    c.tie_word_embeddings = p.tied;
    c.bos_token_id = 151643;
    c.eos_token_id = 151645;
    c.torch_dtype = "bfloat16";
    // Round-trip through the validating reader so a preset is exactly what a file would give.
    return model::Qwen3Config::from_json(c.to_json(), std::string("preset ") + p.name);
  }
  fail("init-model: unknown preset '{}' (presets: {})", name, fmt::join(init_model_preset_names(), ", "));
}

namespace {

// Physical memory of this machine in bytes (0 when unknown).
long double physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  return pages > 0 && page_size > 0 ? static_cast<long double>(pages) * page_size : 0.0L;
}

// The weights are allocated at once: a config whose weights cannot fit in this machine's memory is
// refused before the allocation, naming the keys that make it large (long double: no overflow).
void check_weights_fit(const model::Qwen3Config& c, at::ScalarType dtype) {
  const long double hidden = c.hidden_size, layers = c.num_hidden_layers;
  const long double embedding = static_cast<long double>(c.vocab_size) * hidden * (c.tie_word_embeddings ? 1 : 2);
  const long double attention = hidden * (2.0L * c.q_size() + 2.0L * c.kv_size()) * layers;
  const long double mlp = 3.0L * hidden * c.intermediate_size * layers;
  const long double parameters = embedding + attention + mlp + layers * (2 * hidden + 2.0L * c.head_dim) + hidden;
  const long double bytes = parameters * static_cast<long double>(at::elementSize(dtype));
  const long double memory = physical_memory_bytes();
  if (memory == 0 || bytes <= memory) return;
  const char* keys = embedding >= attention && embedding >= mlp ? "vocab_size x hidden_size"
                     : mlp >= attention ? "hidden_size x intermediate_size x num_hidden_layers"
                                        : "hidden_size x num_attention_heads x head_dim x num_hidden_layers";
  fail("init-model: the config's weights need {:.3g} GB ({:.3g} parameters in {}), mostly from {}, but this machine "
       "has {:.3g} GB of memory",
       bytes / 1e9L, parameters, torch_dtype_name(dtype), keys, memory / 1e9L);
}

}  // namespace

namespace {

// init-model --save-4bit: each tensor drawn on options.device (the same draws as the dense init), its
// projection weights quantized there as merge --save-4bit quantizes them, and only the results copied to
// the host for a streaming shard writer, so host memory holds one shard and one tensor, never the model.
// Returns the parameter count.
int64_t write_4bit_model_dir(const std::string& dir, const model::Qwen3Config& config, const InitModelOptions& options) {
  model::Nf4Options nf4;
  nf4.double_quant = options.double_quant;
  io::ShardedSafetensorsWriter writer(dir, options.max_shard_bytes);
  int64_t parameters = 0;
  model::Qwen3Weights::for_each_random(
      config, options.seed, options.initializer_range, options.dtype,
      [&](const std::string& name, const at::Tensor& t) {
        parameters += t.numel();
        if (!model::is_projection_weight_key(name)) {
          writer.add(name, t.cpu());
          return;
        }
        // bnb_4bit_tensors copies each part to the host; the offset is a host float already.
        for (const auto& [key, part] : model::bnb_4bit_tensors(name, model::nf4_quantize(t, nf4)))
          writer.add(key, part.cpu());
      },
      options.device);
  writer.finish();
  write_hf_config(dir, config);
  return parameters;
}

// CPU, or a CUDA device this process can use; anything else is refused before any file is made.
void check_init_device(at::Device device) {
  QFT_CHECK(device.is_cpu() || device.is_cuda(), "init-model: --device {} is not supported; use cpu or cuda",
            device.str());
  if (device.is_cpu()) return;
  QFT_CHECK(at::hasCUDA(),
            "init-model: --device {}: no CUDA device is available here (this libtorch has no CUDA, or no GPU is "
            "visible); use --device cpu",
            device.str());
  const auto gpus = static_cast<int64_t>(at::getNumGPUs());
  QFT_CHECK(!device.has_index() || device.index() < gpus, "init-model: --device {}: this machine has {} CUDA device{}",
            device.str(), gpus, gpus == 1 ? "" : "s");
}

}  // namespace

void init_model(const InitModelOptions& options) {
  QFT_CHECK(!options.output_dir.empty(), "init-model: --output is required");
  QFT_CHECK(!fs::exists(options.output_dir), "init-model: --output {} already exists; choose a new directory",
            options.output_dir);
  check_init_device(options.device);
  model::Qwen3Config config = options.config;
  config.torch_dtype = torch_dtype_name(options.dtype);
  if (options.save_4bit) {
    config.raw["quantization_config"] = model::bnb_quantization_config(options.double_quant, options.dtype);
  } else {
    // The 4-bit path streams (one shard in memory), so only the dense one must fit at once.
    check_weights_fit(config, options.dtype);
  }
  int64_t parameters = 0;
  write_directory_atomically(options.output_dir, "init", [&](const std::string& tmp_dir) {
    if (options.save_4bit) {
      parameters = write_4bit_model_dir(tmp_dir, config, options);
    } else {
      // for_each_random gives random()'s tensors in named_tensors' order; each comes to the host as drawn.
      io::NamedTensors tensors;
      model::Qwen3Weights::for_each_random(
          config, options.seed, options.initializer_range, options.dtype,
          [&](const std::string& name, const at::Tensor& t) {
            tensors.emplace_back(name, t.cpu());
            parameters += t.numel();
          },
          options.device);
      write_hf_model_dir(tmp_dir, config, tensors, options.max_shard_bytes);
    }
    if (!options.tokenizer_dir.empty()) {
      const int copied = copy_tokenizer_files(options.tokenizer_dir, tmp_dir);
      QFT_CHECK(copied > 0, "init-model: --tokenizer {} has no tokenizer files (tokenizer.json, ...)",
                options.tokenizer_dir);
    }
  });
  spdlog::info("wrote {} ({} parameters, {}{}, seed {}{})", options.output_dir, parameters, config.torch_dtype,
               options.save_4bit ? ", projections NF4 4-bit" : "", options.seed,
               options.device.is_cpu() ? "" : ", drawn on " + options.device.str());
}

}  // namespace qft::hf
