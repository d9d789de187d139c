// Rows for the trainer. With packing, several samples share a row of at most max_seq_length tokens;
// position ids restart at 0 for each sample and segment ids tell the model where the block-diagonal
// causal attention blocks are. Labels follow the trainer contract (src/model/qwen3_model.h): unshifted
// HF labels, id where target else -100, and -100 on each sample's FIRST token so that no sample is
// trained to predict across a boundary. Torch-free: the trainer pads a micro-batch of rows into tensors
// (src/train/pretokenized.h, collate_rows).
#pragma once

#include <cstdint>
#include <vector>

#include "data/tokenize_sample.h"

namespace qft::data {

constexpr int64_t kIgnoreLabel = -100;

// Which samples go into which row, from sample lengths only (so every rank computes the same plan from
// the cache's offsets without reading tokens). Best fit in the given order: each sample goes to the
// open row with the least room that still fits it, otherwise a new row. Rows are closed every `window`
// samples, so a row's samples lie close together in the cache and a slice of rows is one short read.
// Without packing, one sample per row. Samples longer than `max_tokens` are an error (prepare fits them).
constexpr int64_t kPackingWindow = 4096;
std::vector<std::vector<int64_t>> plan_rows(const std::vector<int64_t>& lengths, int64_t max_tokens, bool packing,
                                            int64_t window = kPackingWindow);

struct RowData {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;
  std::vector<int64_t> position_ids;
  std::vector<int64_t> segment_ids;  // 0, 1, ... per sample in the row
  int64_t target_tokens() const;     // labels that will be trained on after the shift (labels[1:] != -100)
};

RowData build_row(const std::vector<const TokenizedSample*>& samples);

}  // namespace qft::data
