// The `data:` section of a training config (docs/CONFIG.md). Key names follow LLaMA-Factory / TRL where
// they exist (max_seq_length, train_on_prompt, mask_history, packing, enable_thinking).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/config_reader.h"
#include "data/formats.h"

namespace qft::data {

enum class Truncation {
  truncate_prompt,  // cut the oldest context first, then the end of the last answer
  drop,             // skip samples longer than max_seq_length
};

const char* truncation_name(Truncation truncation);

struct DatasetSpec {
  std::string path;  // .jsonl or .json; relative paths are relative to the working directory
  DataFormat format = DataFormat::auto_detect;
  ColumnMap columns;
  // At most one of these: a share of the mixture, or an exact number of samples (repeats when larger
  // than the data set). Neither: every sample once.
  std::optional<double> ratio;
  std::optional<int64_t> count;
};

struct DataConfig {
  std::vector<DatasetSpec> datasets;
  std::optional<int64_t> num_samples;  // total size of a ratio mixture (default: largest without repeats)
  int64_t max_seq_length = 2048;
  Truncation truncation = Truncation::truncate_prompt;
  bool train_on_prompt = false;
  bool mask_history = false;
  bool packing = true;
  bool enable_thinking = true;
  bool strict = false;
  uint64_t seed = 42;
  std::string cache_dir = "cache";
  std::string tokenizer;  // tokenizer.json or a directory holding one; "" = take it from the model
  int threads = 0;        // tokenization threads (0 = all cores)
};

// Reads and validates the keys of `section` (the `data:` mapping) and finishes each data set entry; the
// caller calls section.finish() after reading any keys of its own (e.g. the trainer's).
DataConfig read_data_config(ConfigReader& section);

// A tokenizer.json path from a file or a model directory.
std::string resolve_tokenizer_path(const std::string& path);

}  // namespace qft::data
