#include "data/packed_dataset.h"

#include <algorithm>

#include "core/error.h"

namespace qft::data {

PackedDataset::PackedDataset(const std::string& cache_path, int64_t max_tokens, bool packing)
    : reader_(cache_path), lengths_(reader_.sample_lengths()), rows_(plan_rows(lengths_, max_tokens, packing)) {
  pad_token_id_ = reader_.metadata().value("pad_token_id", int64_t{0});
}

const std::vector<int64_t>& PackedDataset::row_samples(int64_t row) const {
  QFT_CHECK(row >= 0 && row < num_rows(), "row {} is outside [0, {})", row, num_rows());
  return rows_[static_cast<size_t>(row)];
}

int64_t PackedDataset::row_tokens(int64_t row) const {
  int64_t tokens = 0;
  for (const int64_t sample : row_samples(row)) tokens += lengths_[static_cast<size_t>(sample)];
  return tokens;
}

std::vector<RowData> PackedDataset::read_rows(int64_t begin, int64_t end) const {
  QFT_CHECK(0 <= begin && begin <= end && end <= num_rows(), "rows [{}, {}) are outside [0, {})", begin, end, num_rows());
  if (begin == end) return {};
  int64_t first = num_samples(), last = -1;
  for (int64_t row = begin; row < end; ++row) {
    for (const int64_t sample : rows_[static_cast<size_t>(row)]) {
      first = std::min(first, sample);
      last = std::max(last, sample);
    }
  }
  const std::vector<TokenizedSample> samples = reader_.read(first, last + 1);
  std::vector<RowData> out;
  for (int64_t row = begin; row < end; ++row) {
    std::vector<const TokenizedSample*> members;
    for (const int64_t sample : rows_[static_cast<size_t>(row)]) members.push_back(&samples[static_cast<size_t>(sample - first)]);
    out.push_back(build_row(members));
  }
  return out;
}

std::vector<RowData> PackedDataset::read_rows(const std::vector<int64_t>& rows) const {
  std::vector<RowData> out;
  for (const int64_t row : rows) out.push_back(std::move(read_rows(row, row + 1).front()));
  return out;
}

}  // namespace qft::data
