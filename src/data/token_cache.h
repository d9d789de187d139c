// The HDF5 token cache that `prepare` writes and training reads. Layout (all 1-D, chunked, deflate):
//   /input_ids       int32   all samples' token ids, concatenated in training order
//   /target_mask     uint8   1 where the token is a target (same length as input_ids)
//   /sample_offsets  int64   num_samples + 1 offsets into input_ids; sample i = [off[i], off[i+1])
//   attribute "qft_metadata" on the root: JSON text (format version, cache key, options, counts)
// Serial HDF5: one writer; any number of readers, each reading only the samples it needs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/tokenize_sample.h"

namespace qft::data {

constexpr int kTokenCacheFormatVersion = 1;

class TokenCacheWriter {
 public:
  // Writes to `path + ".tmp"`; finish() renames it to `path`, so a cache file is always complete.
  explicit TokenCacheWriter(std::string path);
  TokenCacheWriter(const TokenCacheWriter&) = delete;
  TokenCacheWriter& operator=(const TokenCacheWriter&) = delete;
  ~TokenCacheWriter();

  void append(const TokenizedSample& sample);
  void finish(const std::string& metadata_json);
  int64_t samples_written() const { return static_cast<int64_t>(offsets_.size()) - 1; }

 private:
  void flush();
  struct Handles;
  std::string path_;
  std::unique_ptr<Handles> handles_;
  std::vector<int32_t> pending_ids_;
  std::vector<uint8_t> pending_targets_;
  std::vector<int64_t> offsets_{0};
  int64_t tokens_on_disk_ = 0;
  bool finished_ = false;
};

class TokenCacheReader {
 public:
  explicit TokenCacheReader(const std::string& path);
  TokenCacheReader(TokenCacheReader&&) noexcept;
  TokenCacheReader& operator=(TokenCacheReader&&) noexcept;
  ~TokenCacheReader();

  int64_t num_samples() const { return num_samples_; }
  int64_t num_tokens() const;
  std::string metadata_json() const;
  // metadata_json() parsed; throws qft::Error naming the file when it is not JSON.
  nlohmann::ordered_json metadata() const;
  // Token count of every sample (reads only the offsets), for planning packed rows.
  std::vector<int64_t> sample_lengths() const;
  // Samples [begin, end) in order; reads only their tokens.
  std::vector<TokenizedSample> read(int64_t begin, int64_t end) const;

 private:
  std::vector<int64_t> read_offsets(int64_t begin, int64_t count) const;
  struct Handles;
  std::string path_;
  std::unique_ptr<Handles> handles_;
  int64_t num_samples_ = 0;
};

}  // namespace qft::data
