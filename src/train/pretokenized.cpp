#include "train/pretokenized.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_reader.h"

namespace qft::train {

namespace {

std::vector<int64_t> read_int_list(const nlohmann::json& row, const char* key, const std::string& where) {
  const auto it = row.find(key);
  QFT_CHECK(it != row.end(), "{}: missing \"{}\"", where, key);
  QFT_CHECK(it->is_array(), "{}: \"{}\" must be a list of integers", where, key);
  std::vector<int64_t> out;
  out.reserve(it->size());
  for (const auto& v : *it) {
    QFT_CHECK(v.is_number_integer(), "{}: \"{}\" must be a list of integers, found {}", where, key, json::excerpt(v));
    out.push_back(v.get<int64_t>());
  }
  return out;
}

// Positions restart at 0 at each change of segment id, as for packed samples.
std::vector<int64_t> positions_from_segments(const std::vector<int64_t>& segments) {
  std::vector<int64_t> positions(segments.size());
  for (size_t t = 0; t < segments.size(); ++t) {
    positions[t] = (t > 0 && segments[t] == segments[t - 1]) ? positions[t - 1] + 1 : 0;
  }
  return positions;
}

TokenRow parse_row(const std::string& line, int64_t vocab_size, int64_t max_positions, const std::string& where) {
  const nlohmann::json row = json::parse(line, where);
  QFT_CHECK(row.is_object(), "{}: expected an object with input_ids and labels", where);
  for (const auto& item : row.items()) {
    const std::string& key = item.key();
    QFT_CHECK(key == "input_ids" || key == "labels" || key == "position_ids" || key == "segment_ids",
              "{}: unknown field \"{}\" (expected input_ids, labels, position_ids, segment_ids)", where, key);
  }
  TokenRow r;
  r.input_ids = read_int_list(row, "input_ids", where);
  r.labels = read_int_list(row, "labels", where);
  const size_t length = r.input_ids.size();
  QFT_CHECK(length >= 1, "{}: input_ids is empty", where);
  QFT_CHECK(r.labels.size() == length, "{}: labels has {} entries, input_ids {}", where, r.labels.size(), length);
  if (row.contains("segment_ids")) {
    r.segment_ids = read_int_list(row, "segment_ids", where);
    QFT_CHECK(r.segment_ids.size() == length, "{}: segment_ids has {} entries, input_ids {}", where,
              r.segment_ids.size(), length);
  }
  if (row.contains("position_ids")) {
    r.position_ids = read_int_list(row, "position_ids", where);
    QFT_CHECK(r.position_ids.size() == length, "{}: position_ids has {} entries, input_ids {}", where,
              r.position_ids.size(), length);
  } else if (!r.segment_ids.empty()) {
    r.position_ids = positions_from_segments(r.segment_ids);
  }
  // Positions 0..T-1 when none are given: a row longer than the model's context is refused here, before
  // anything is sized by it (a row of a million tokens asks for terabytes of attention scores).
  QFT_CHECK(!r.position_ids.empty() || static_cast<int64_t>(length) <= max_positions,
            "{}: the row has {} tokens but the model takes at most {} (max_position_embeddings in its config.json)",
            where, length, max_positions);
  for (size_t t = 0; t < length; ++t) {
    QFT_CHECK(r.input_ids[t] >= 0 && r.input_ids[t] < vocab_size, "{}: input_ids[{}] = {} is outside the vocabulary [0, {})",
              where, t, r.input_ids[t], vocab_size);
    QFT_CHECK(r.labels[t] == -100 || (r.labels[t] >= 0 && r.labels[t] < vocab_size),
              "{}: labels[{}] = {} is neither -100 nor in the vocabulary [0, {})", where, t, r.labels[t], vocab_size);
    if (!r.position_ids.empty())
      QFT_CHECK(r.position_ids[t] >= 0 && r.position_ids[t] < max_positions,
                "{}: position_ids[{}] = {} is outside [0, {}) (the model's max_position_embeddings)", where, t,
                r.position_ids[t], max_positions);
    if (!r.segment_ids.empty()) QFT_CHECK(r.segment_ids[t] >= -1, "{}: segment_ids[{}] < -1", where, t);
  }
  for (size_t t = 1; t < length; ++t) r.target_tokens += r.labels[t] != -100 ? 1 : 0;
  return r;
}

}  // namespace

std::vector<TokenRow> read_pretokenized_jsonl(const std::string& path, int64_t vocab_size, int64_t max_positions) {
  std::ifstream in(path);
  QFT_CHECK(in.good(), "{}: cannot open the pretokenized data file", path);
  std::vector<TokenRow> rows;
  std::string line;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines (e.g. a final newline)
    rows.push_back(parse_row(line, vocab_size, max_positions, path + ":" + std::to_string(line_number)));
  }
  QFT_CHECK(!rows.empty(), "{}: no rows", path);
  return rows;
}

model::Batch collate_rows(const std::vector<const TokenRow*>& rows, int64_t length_multiple) {
  QFT_CHECK(!rows.empty(), "collate_rows: empty micro-batch");
  size_t max_length = 0;
  bool uniform = true;
  bool packed = false;
  for (const TokenRow* r : rows) {
    max_length = std::max(max_length, r->input_ids.size());
    uniform = uniform && r->input_ids.size() == rows.front()->input_ids.size();
    packed = packed || !r->segment_ids.empty() || !r->position_ids.empty();
  }
  const int64_t batch = static_cast<int64_t>(rows.size());
  QFT_CHECK(length_multiple >= 1, "collate_rows: length multiple {}", length_multiple);
  const int64_t length = (static_cast<int64_t>(max_length) + length_multiple - 1) / length_multiple * length_multiple;
  uniform = uniform && length == static_cast<int64_t>(max_length);
  at::Tensor input_ids = at::zeros({batch, length}, at::kLong);
  at::Tensor labels = at::full({batch, length}, -100, at::kLong);
  at::Tensor position_ids = at::zeros({batch, length}, at::kLong);
  at::Tensor segment_ids = at::full({batch, length}, -1, at::kLong);
  auto ids_a = input_ids.accessor<int64_t, 2>();
  auto labels_a = labels.accessor<int64_t, 2>();
  auto positions_a = position_ids.accessor<int64_t, 2>();
  auto segments_a = segment_ids.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const TokenRow& r = *rows[b];
    for (size_t t = 0; t < r.input_ids.size(); ++t) {
      ids_a[b][t] = r.input_ids[t];
      labels_a[b][t] = r.labels[t];
      positions_a[b][t] = r.position_ids.empty() ? static_cast<int64_t>(t) : r.position_ids[t];
      segments_a[b][t] = r.segment_ids.empty() ? 0 : r.segment_ids[t];
    }
  }
  if (uniform && !packed) return model::Batch::causal(input_ids, labels);
  model::Batch out;
  out.input_ids = input_ids;
  out.labels = labels;
  out.position_ids = position_ids;
  out.segment_ids = segment_ids;
  return out;
}

model::Batch filler_batch(int64_t tokens) {
  return model::Batch::causal(at::zeros({1, tokens}, at::kLong), at::full({1, tokens}, -100, at::kLong));
}

}  // namespace qft::train
