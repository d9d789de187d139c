// qft-dist inspect PATH: summarises a Hugging Face model directory, a PEFT adapter directory, one
// .safetensors file (tensor names, dtypes, shapes, parameter counts) or a token cache (.h5 from
// `prepare`: counts, a length histogram and one decoded sample with its target tokens marked).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli/commands.h"
#include "core/error.h"
#include "core/files.h"
#include "data/token_cache.h"
#include "core/json_reader.h"
#include "io/safetensors.h"
#include "model/qwen3_config.h"
#include "text/tokenizer.h"

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

// Target tokens are shown between these marks in the decoded sample.
constexpr const char* kTargetOpen = "[[";
constexpr const char* kTargetClose = "]]";

void inspect_token_cache(const std::string& path, int64_t sample_index, const std::string& tokenizer_override) {
  const data::TokenCacheReader cache(path);
  const nlohmann::ordered_json meta = cache.metadata();
  std::printf("token cache %s\n", path.c_str());
  std::printf("  samples: %lld  tokens: %lld", static_cast<long long>(cache.num_samples()),
              static_cast<long long>(cache.num_tokens()));
  for (const char* key : {"target_tokens", "truncated", "text_chunks"}) {
    if (meta.contains(key)) std::printf("  %s: %s", key, meta[key].dump().c_str());
  }
  std::printf("\n");
  for (const char* key : {"cache_key", "tokenizer_path", "skipped"}) {
    if (meta.contains(key)) std::printf("  %s: %s\n", key, meta[key].dump().c_str());
  }
  if (meta.contains("datasets")) {
    for (const auto& d : meta["datasets"]) std::printf("  dataset: %s\n", d.dump().c_str());
  }
  const std::vector<int64_t> lengths = cache.sample_lengths();
  if (lengths.empty()) return;
  const auto [min_it, max_it] = std::minmax_element(lengths.begin(), lengths.end());
  constexpr int64_t kBins = 10;
  const int64_t lo = *min_it, width = std::max<int64_t>(1, (*max_it - lo + kBins) / kBins);
  std::vector<int64_t> counts(kBins, 0);
  for (int64_t n : lengths) counts[std::min<int64_t>(kBins - 1, (n - lo) / width)] += 1;
  const int64_t most = *std::max_element(counts.begin(), counts.end());
  std::printf("  sample length histogram (tokens):\n");
  for (int64_t b = 0; b < kBins && lo + b * width <= *max_it; ++b) {
    const int bar = static_cast<int>(40 * counts[b] / std::max<int64_t>(1, most));
    std::printf("    %7lld-%-7lld %7lld %s\n", static_cast<long long>(lo + b * width),
                static_cast<long long>(std::min(*max_it, lo + (b + 1) * width - 1)), static_cast<long long>(counts[b]),
                std::string(bar, '#').c_str());
  }

  QFT_CHECK(sample_index >= 0 && sample_index < cache.num_samples(), "inspect: --sample {} is not in [0, {})",
            sample_index, cache.num_samples());
  const data::TokenizedSample sample = cache.read(sample_index, sample_index + 1).at(0);
  int64_t targets = 0;
  for (uint8_t t : sample.targets) targets += t;
  const std::string tokenizer_path =
      !tokenizer_override.empty() ? tokenizer_override : meta.value("tokenizer_path", std::string());
  std::printf("sample %lld: %zu tokens, %lld targets (target tokens between %s and %s)\n",
              static_cast<long long>(sample_index), sample.ids.size(), static_cast<long long>(targets), kTargetOpen,
              kTargetClose);
  if (tokenizer_path.empty() || !fs::exists(tokenizer_path)) {
    std::printf("(tokenizer '%s' not found: token ids shown; pass --tokenizer PATH to decode)\n",
                tokenizer_path.c_str());
    for (size_t i = 0; i < sample.ids.size(); ++i) {
      std::printf("%s%d%s ", sample.targets[i] ? kTargetOpen : "", sample.ids[i], sample.targets[i] ? kTargetClose : "");
    }
    std::printf("\n");
    return;
  }
  const std::string json_path =
      fs::is_directory(tokenizer_path) ? (fs::path(tokenizer_path) / "tokenizer.json").string() : tokenizer_path;
  const text::Tokenizer tokenizer = text::Tokenizer::from_file(json_path);
  // Decode each run of equal target flags on its own, so a mark never splits a multi-token character
  // differently from how the run decodes.
  std::string out;
  size_t start = 0;
  for (size_t i = 1; i <= sample.ids.size(); ++i) {
    if (i < sample.ids.size() && sample.targets[i] == sample.targets[start]) continue;
    const std::vector<int32_t> run(sample.ids.begin() + static_cast<std::ptrdiff_t>(start),
                                   sample.ids.begin() + static_cast<std::ptrdiff_t>(i));
    const std::string text = tokenizer.decode(run);
    out += sample.targets[start] ? kTargetOpen + text + kTargetClose : text;
    start = i;
  }
  std::printf("%s\n", out.c_str());
}

void print_inspect_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: qft-dist inspect PATH [--sample N] [--tokenizer PATH]\n\n"
               "PATH: a Hugging Face model directory, a PEFT adapter directory, a .safetensors file or a token\n"
               "cache (.h5, written by `qft-dist prepare`). For a token cache: counts, a sample length histogram\n"
               "and sample N (default 0) decoded with its target tokens between [[ and ]]; --tokenizer replaces\n"
               "the tokenizer the cache was made with (recorded in the cache) for decoding.\n");
}

}  // namespace

int cmd_inspect(const Args& all_args) {
  Args args;
  int64_t sample_index = 0;
  std::string tokenizer;
  for (size_t i = 0; i < all_args.size(); ++i) {
    const std::string& a = all_args[i];
    if (a == "--help" || a == "-h") {
      print_inspect_usage(stdout);
      return 0;
    }
    if (a == "--sample" || a == "--tokenizer") {
      QFT_CHECK(i + 1 < all_args.size(), "inspect: {} needs a value (see qft-dist inspect --help)", a);
      const std::string& value = all_args[++i];
      if (a == "--tokenizer") {
        tokenizer = value;
      } else {
        try {
          size_t used = 0;
          sample_index = std::stoll(value, &used);
          QFT_CHECK(used == value.size(), "");
        } catch (const std::exception&) {
          fail("inspect: --sample '{}' is not an integer", value);
        }
      }
    } else if (a.rfind("--", 0) == 0) {
      fail("inspect: unknown option '{}' (see qft-dist inspect --help)", a);
    } else {
      args.push_back(a);
    }
  }
  if (args.size() != 1) {
    print_inspect_usage(stderr);
    return 2;
  }
  const std::string& path = args[0];
  std::error_code ec;  // non-throwing: a path too long to exist is reported as not existing
  if (fs::is_regular_file(path, ec) && (fs::path(path).extension() == ".h5" || fs::path(path).extension() == ".hdf5")) {
    inspect_token_cache(path, sample_index, tokenizer);
    return 0;
  }
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
            "inspect: {} is not a directory, a .safetensors file or a token cache .h5 (model dirs, adapter dirs, "
            ".safetensors files and token caches are understood)",
            path);
  const io::SafetensorsFile file(path);
  std::printf("safetensors file %s\n", path.c_str());
  for (const auto& [key, value] : file.metadata()) std::printf("  metadata %s = %s\n", key.c_str(), value.c_str());
  print_tensors(rows_of_file(file));
  return 0;
}

}  // namespace qft::cli
