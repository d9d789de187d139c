#include "data/packing.h"

#include <algorithm>
#include <map>

#include "core/error.h"

namespace qft::data {

std::vector<std::vector<int64_t>> plan_rows(const std::vector<int64_t>& lengths, int64_t max_tokens, bool packing,
                                            int64_t window) {
  QFT_CHECK(window > 0, "packing window must be > 0");
  std::vector<std::vector<int64_t>> rows;
  // Free room -> rows with that much room, for best fit in O(log rows).
  std::multimap<int64_t, size_t> rows_by_room;
  for (size_t i = 0; i < lengths.size(); ++i) {
    const int64_t length = lengths[i];
    if (static_cast<int64_t>(i) % window == 0) rows_by_room.clear();
    QFT_CHECK(length > 0 && length <= max_tokens, "sample {} has {} tokens; rows hold 1 to {}", i, length, max_tokens);
    if (!packing) {
      rows.push_back({static_cast<int64_t>(i)});
      continue;
    }
    const auto best = rows_by_room.lower_bound(length);
    size_t row = rows.size();
    int64_t room = max_tokens;
    if (best != rows_by_room.end()) {
      row = best->second;
      room = best->first;
      rows_by_room.erase(best);
    } else {
      rows.emplace_back();
    }
    rows[row].push_back(static_cast<int64_t>(i));
    if (room - length > 0) rows_by_room.emplace(room - length, row);
  }
  return rows;
}

int64_t RowData::target_tokens() const {
  return static_cast<int64_t>(std::count_if(labels.begin() + (labels.empty() ? 0 : 1), labels.end(),
                                            [](int64_t label) { return label != kIgnoreLabel; }));
}

RowData build_row(const std::vector<const TokenizedSample*>& samples) {
  RowData row;
  for (size_t segment = 0; segment < samples.size(); ++segment) {
    const TokenizedSample& sample = *samples[segment];
    QFT_CHECK(sample.ids.size() == sample.targets.size(), "sample has {} ids but {} target flags", sample.ids.size(),
              sample.targets.size());
    for (size_t t = 0; t < sample.ids.size(); ++t) {
      row.input_ids.push_back(sample.ids[t]);
      row.labels.push_back(t > 0 && sample.targets[t] ? sample.ids[t] : kIgnoreLabel);
      row.position_ids.push_back(static_cast<int64_t>(t));
      row.segment_ids.push_back(static_cast<int64_t>(segment));
    }
  }
  return row;
}

}  // namespace qft::data
