// What the trainer reads: the token cache seen as rows (packed or one sample per row). The row plan is
// computed from the sample offsets alone, identically on every rank, so a rank can read any set of rows
// without the others. (Training reads all rows on every rank today, train/training_rows.cpp.)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/packing.h"
#include "data/token_cache.h"

namespace qft::data {

class PackedDataset {
 public:
  PackedDataset(const std::string& cache_path, int64_t max_tokens, bool packing);

  int64_t num_rows() const { return static_cast<int64_t>(rows_.size()); }
  int64_t num_samples() const { return reader_.num_samples(); }
  const std::vector<int64_t>& row_samples(int64_t row) const;
  int64_t row_tokens(int64_t row) const;
  // Pad id recorded by prepare ("<|endoftext|>").
  int64_t pad_token_id() const { return pad_token_id_; }

  // Rows [begin, end), reading the span of samples they cover in one read.
  std::vector<RowData> read_rows(int64_t begin, int64_t end) const;
  // Any set of rows (e.g. this rank's), each read separately.
  std::vector<RowData> read_rows(const std::vector<int64_t>& rows) const;

 private:
  TokenCacheReader reader_;
  std::vector<int64_t> lengths_;
  std::vector<std::vector<int64_t>> rows_;
  int64_t pad_token_id_ = 0;
};

}  // namespace qft::data
