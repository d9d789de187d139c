// The `data.pretokenized` escape hatch: already tokenized rows in a JSONL file, one row per line,
// {"input_ids": [...], "labels": [...]} with optional "position_ids" and "segment_ids" for packed rows.
// Labels are unshifted as in Hugging Face (the model predicts labels[t] from tokens < t; -100 = no
// loss). Reference tests feed the same rows to transformers, so nothing here changes a row.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "model/qwen3_model.h"

namespace qft::train {

struct TokenRow {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;
  std::vector<int64_t> position_ids;  // empty: 0..T-1, or restarting per segment when segment_ids given
  std::vector<int64_t> segment_ids;   // empty: one sample; -1 marks padding
  int64_t target_tokens = 0;          // labels[1:] != -100: the tokens this row contributes to the loss
};

// Reads and validates every row (ids in [0, vocab_size), equal lengths, at most `max_positions` tokens
// and positions below it: the model's max_position_embeddings); errors name file:line.
std::vector<TokenRow> read_pretokenized_jsonl(const std::string& path, int64_t vocab_size, int64_t max_positions);

// Stacks rows into one micro-batch in host memory (the model sends it to its device without waiting for
// the GPU), padding shorter rows at the end (segment -1, label -100). Rows of one length without packing
// information become a plain causal batch.
// `length_multiple`: the padded length is rounded up to a multiple of it (sequence parallelism splits the
// tokens evenly over the tensor-parallel ranks); the extra positions are padding (segment -1, label -100).
model::Batch collate_rows(const std::vector<const TokenRow*>& rows, int64_t length_multiple = 1);
// One token and no target: a micro-batch that contributes nothing to losses or gradients. Under ZeRO-2/3
// every data-parallel rank must run as many micro-batches as the others (each runs the per-layer
// collectives), so a rank with fewer rows runs these.
// `tokens`: its length (sequence parallelism needs a multiple of the tensor-parallel size).
model::Batch filler_batch(int64_t tokens = 1);

}  // namespace qft::train
