#include "data/data_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/error.h"

namespace qft::data {

const char* truncation_name(Truncation truncation) {
  return truncation == Truncation::drop ? "drop" : "truncate_prompt";
}

namespace {

DatasetSpec read_dataset(ConfigReader& reader) {
  DatasetSpec spec;
  spec.path = reader.get_string("path");
  spec.format = parse_format_name(reader.get_choice("format", {"auto", "alpaca", "sharegpt", "openai", "messages", "text"}, "auto"));
  const YAML::Node columns = reader.raw("columns");
  if (columns.IsDefined() && !columns.IsNull()) {
    QFT_CHECK(columns.IsMap(), "{}: expected a mapping of column names (e.g. {{instruction: prompt}})", reader.where("columns"));
    for (const auto& entry : columns) {
      QFT_CHECK(entry.first.IsScalar(), "{}: column names must be plain strings", reader.where("columns"));
      QFT_CHECK(entry.second.IsScalar(), "{}: column '{}' must map to a key name", reader.where("columns"),
                entry.first.Scalar());
      spec.columns.set(entry.first.Scalar(), entry.second.Scalar());
    }
    spec.columns.validate_for(spec.format, reader.where("columns"));
  }
  QFT_CHECK(!(reader.has("ratio") && reader.has("count")), "{}: give either ratio or count, not both", reader.where("ratio"));
  if (reader.has("ratio")) {
    spec.ratio = reader.get_double("ratio");
    // Finite: an infinite share would make the mixture size infinite.
    QFT_CHECK(std::isfinite(*spec.ratio) && *spec.ratio > 0.0, "{}: must be a finite number > 0", reader.where("ratio"));
  }
  if (reader.has("count")) {
    spec.count = reader.get_int("count");
    QFT_CHECK(*spec.count > 0, "{}: must be > 0", reader.where("count"));
  }
  reader.finish();
  return spec;
}

}  // namespace

DataConfig read_data_config(ConfigReader& section) {
  DataConfig config;
  std::vector<ConfigReader> datasets = section.section_list("datasets");
  QFT_CHECK(!datasets.empty(), "{}: list at least one data set (- path: FILE.jsonl)", section.where("datasets"));
  for (auto& dataset : datasets) config.datasets.push_back(read_dataset(dataset));

  const bool any_ratio = std::any_of(config.datasets.begin(), config.datasets.end(), [](const DatasetSpec& d) { return d.ratio.has_value(); });
  const bool all_ratio = std::all_of(config.datasets.begin(), config.datasets.end(), [](const DatasetSpec& d) { return d.ratio.has_value(); });
  QFT_CHECK(!any_ratio || all_ratio,
            "{}: when one data set has a ratio, all must have one (ratios are shares of the whole mixture; use "
            "count for exact sizes)", section.where("datasets"));

  if (section.has("num_samples")) {
    config.num_samples = section.get_int("num_samples");
    QFT_CHECK(*config.num_samples > 0, "{}: must be > 0", section.where("num_samples"));
    QFT_CHECK(any_ratio, "{}: only used with ratio mixing (give each data set a ratio)", section.where("num_samples"));
  } else {
    section.get_int("num_samples", 0);  // mark as known for suggestions
  }
  config.max_seq_length = section.get_int("max_seq_length", config.max_seq_length);
  QFT_CHECK(config.max_seq_length >= 2, "{}: must be at least 2", section.where("max_seq_length"));
  config.truncation = section.get_choice("truncation", {"truncate_prompt", "drop"}, "truncate_prompt") == "drop"
                          ? Truncation::drop
                          : Truncation::truncate_prompt;
  config.train_on_prompt = section.get_bool("train_on_prompt", config.train_on_prompt);
  config.mask_history = section.get_bool("mask_history", config.mask_history);
  QFT_CHECK(!(config.train_on_prompt && config.mask_history),
            "{}: mask_history (train on the last answer only) contradicts train_on_prompt (train on everything)",
            section.where("mask_history"));
  config.packing = section.get_bool("packing", config.packing);
  config.enable_thinking = section.get_bool("enable_thinking", config.enable_thinking);
  config.strict = section.get_bool("strict", config.strict);
  const int64_t seed = section.get_int("seed", static_cast<int64_t>(config.seed));
  QFT_CHECK(seed >= 0, "{}: must be >= 0", section.where("seed"));
  config.seed = static_cast<uint64_t>(seed);
  config.cache_dir = section.get_string("cache_dir", config.cache_dir);
  config.tokenizer = section.get_string("tokenizer", config.tokenizer);
  const int64_t threads = section.get_int("preprocessing_num_workers", 0);
  QFT_CHECK(threads >= 0 && threads <= 4096, "{}: must be between 0 (all cores) and 4096", section.where("preprocessing_num_workers"));
  config.threads = static_cast<int>(threads);
  return config;
}

std::string resolve_tokenizer_path(const std::string& path) {
  namespace fs = std::filesystem;
  QFT_CHECK(!path.empty(), "no tokenizer given: set data.tokenizer (a tokenizer.json or a model directory) or pass --tokenizer");
  std::error_code ec;  // non-throwing: a name too long is simply not there
  if (fs::is_directory(path, ec)) {
    const std::string file = (fs::path(path) / "tokenizer.json").string();
    QFT_CHECK(fs::exists(file, ec), "tokenizer directory '{}' has no tokenizer.json", path);
    return file;
  }
  QFT_CHECK(fs::exists(path, ec), "tokenizer '{}' does not exist", path);
  return path;
}

}  // namespace qft::data
