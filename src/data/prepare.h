// `prepare`: the whole text pipeline as one function. Reads every data set, renders and tokenizes each
// sample once, applies the mask and truncation rules, mixes the data sets by ratio or count with the
// seed, and writes the HDF5 token cache in training order. The cache file name is a hash of everything
// that decides its content (file contents, formats, columns, tokenizer.json, template and mask
// options, max_seq_length, truncation, mixing, seed), so an unchanged config reuses it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "data/data_config.h"

namespace qft::data {

struct DatasetReport {
  std::string path;
  std::string format;
  int64_t records = 0;      // non-blank records (lines or list items) seen
  int64_t usable = 0;       // samples left after parsing, fitting and masking checks
  int64_t selected = 0;     // samples of this data set in the mixture (repeats included)
};

struct PrepareReport {
  std::string cache_path;
  bool reused = false;  // an existing cache with the same key was found; nothing was recomputed
  std::string cache_key;
  std::vector<DatasetReport> datasets;
  int64_t samples = 0;        // in the cache
  int64_t tokens = 0;         // in the cache
  int64_t target_tokens = 0;  // in the cache
  int64_t truncated = 0;      // samples shortened by truncation: truncate_prompt
  int64_t text_chunks = 0;    // extra samples made by splitting long pre-training texts
  std::map<std::string, int64_t> skipped;  // reason -> count (too_long, malformed_json, ...)
};

// `tokenizer_path`: tokenizer.json or a model directory holding one (overrides config.tokenizer when
// non-empty). `force`: rebuild even when a cache with the same key exists.
PrepareReport prepare_dataset(const DataConfig& config, const std::string& tokenizer_path = "", bool force = false);

// The cache file `prepare_dataset` would use for this config and tokenizer (cache_dir/tokens-KEY.h5).
std::string token_cache_path(const DataConfig& config, const std::string& tokenizer_path = "");

// 64-bit FNV-1a, as 16 hex digits (cache keys).
std::string fnv1a_hex(const std::string& bytes);

}  // namespace qft::data
