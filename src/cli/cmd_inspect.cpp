// qft-dist inspect PATH: summarises a Hugging Face model directory, a PEFT adapter directory or one
// .safetensors file (tensor names, dtypes, shapes, parameter counts).
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli/commands.h"
#include "core/error.h"
#include "core/files.h"
#include "core/json_reader.h"
#include "io/safetensors.h"
#include "model/qwen3_config.h"

namespace qft::cli {

namespace {

namespace fs = std::filesystem;

struct TensorRow {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string file;
};

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string human_count(int64_t n) {
  if (n >= 1000000000) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1000000) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1000) return fmt::format("{:.1f}K", n / 1e3);
  return std::to_string(n);
}

void print_tensors(const std::vector<TensorRow>& rows) {
  size_t width = 0;
  for (const auto& r : rows) width = std::max(width, r.name.size());
  int64_t parameters = 0, bytes = 0;
  std::map<std::string, int64_t> per_dtype;
  for (const auto& r : rows) {
    std::printf("  %-*s %-5s [%s]\n", static_cast<int>(width), r.name.c_str(), r.dtype.c_str(),
                fmt::format("{}", fmt::join(r.shape, ", ")).c_str());
    const int64_t n = numel(r.shape);
    parameters += n;
    per_dtype[r.dtype] += n;
    bytes += n * static_cast<int64_t>(c10::elementSize(io::safetensors_to_scalar_type(r.dtype, r.name)));
  }
  std::string dtypes;
  for (const auto& [dtype, n] : per_dtype) dtypes += fmt::format("{}{} {}", dtypes.empty() ? "" : ", ", dtype, human_count(n));
  std::printf("%zu tensors, %s parameters (%lld), %.2f MiB; by dtype: %s\n", rows.size(), human_count(parameters).c_str(),
              static_cast<long long>(parameters), static_cast<double>(bytes) / (1 << 20), dtypes.c_str());
}

std::vector<TensorRow> rows_of_file(const io::SafetensorsFile& file) {
  std::vector<TensorRow> rows;
  for (const auto& name : file.names()) {
    const io::TensorInfo& info = file.info(name);
    rows.push_back({name, info.dtype, info.shape, file.path()});
  }
  return rows;
}

void inspect_model_dir(const std::string& dir) {
  const model::Qwen3Config c = model::Qwen3Config::from_file((fs::path(dir) / "config.json").string());
  std::printf("Hugging Face Qwen3 model directory %s\n", dir.c_str());
  std::printf("  layers %lld, hidden %lld, intermediate %lld, heads %lld (kv %lld, head_dim %lld), vocab %lld, "
              "tied embeddings %s, rope_theta %g, torch_dtype %s\n",
              static_cast<long long>(c.num_hidden_layers), static_cast<long long>(c.hidden_size),
              static_cast<long long>(c.intermediate_size), static_cast<long long>(c.num_attention_heads),
              static_cast<long long>(c.num_key_value_heads), static_cast<long long>(c.head_dim),
              static_cast<long long>(c.vocab_size), c.tie_word_embeddings ? "yes" : "no", c.rope_theta,
              c.torch_dtype.c_str());
  const io::SafetensorsCheckpoint checkpoint(dir);
  std::vector<TensorRow> rows;
  for (const auto& name : checkpoint.names()) {
    const io::TensorInfo& info = checkpoint.info(name);
    rows.push_back({name, info.dtype, info.shape, checkpoint.file_of(name).path()});
  }
  std::printf("weights from %s\n", checkpoint.source().c_str());
  print_tensors(rows);
}

void inspect_adapter_dir(const std::string& dir) {
  const nlohmann::json config = json::parse_file((fs::path(dir) / "adapter_config.json").string());
  QFT_CHECK(config.is_object(), "{}/adapter_config.json: expected a JSON object", dir);
  std::printf("PEFT adapter directory %s\n", dir.c_str());
  for (const char* key : {"peft_type", "base_model_name_or_path", "r", "lora_alpha", "lora_dropout", "use_rslora",
                          "target_modules", "init_lora_weights", "task_type"}) {
    if (config.contains(key)) std::printf("  %s: %s\n", key, json::excerpt(config[key], 200).c_str());
  }
  const std::string file = (fs::path(dir) / "adapter_model.safetensors").string();
  QFT_CHECK(file_exists(file), "inspect: {} has no adapter_model.safetensors", dir);
  print_tensors(rows_of_file(io::SafetensorsFile(file)));
}

}  // namespace

int cmd_inspect(const Args& args) {
  if (args.size() != 1 || args[0] == "--help" || args[0] == "-h") {
    std::fprintf(stderr,
                 "usage: qft-dist inspect PATH\n\n"
                 "PATH: a Hugging Face model directory, a PEFT adapter directory or a .safetensors file.\n");
    return args.size() == 1 ? 0 : 2;
  }
  const std::string& path = args[0];
  std::error_code ec;  // non-throwing: a path too long to exist is reported as not existing
  if (fs::is_directory(path, ec)) {
    if (fs::exists(fs::path(path) / "adapter_config.json", ec)) {
      inspect_adapter_dir(path);
    } else if (fs::exists(fs::path(path) / "config.json", ec)) {
      inspect_model_dir(path);
    } else {
      fail("inspect: {} has neither config.json (model) nor adapter_config.json (adapter)", path);
    }
    return 0;
  }
  QFT_CHECK(fs::exists(path, ec), "inspect: {} does not exist", path);
  QFT_CHECK(fs::path(path).extension() == ".safetensors",
            "inspect: {} is not a directory or a .safetensors file (model dirs, adapter dirs and .safetensors "
            "files are understood)",
            path);
  const io::SafetensorsFile file(path);
  std::printf("safetensors file %s\n", path.c_str());
  for (const auto& [key, value] : file.metadata()) std::printf("  metadata %s = %s\n", key.c_str(), value.c_str());
  print_tensors(rows_of_file(file));
  return 0;
}

}  // namespace qft::cli
