// The MLP block down(swiglu(gate(h), up(h))) (each projection with its LoRA branch) processed a chunk of
// rows at a time, so that no [N, intermediate] tensor exists for the whole sequence (Arctic ALST's /
// axolotl's TiledMLP): forward keeps only each chunk's output; backward makes gate/up/act of one chunk
// again and runs that chunk's backward, summing the weight and LoRA gradients over the chunks. At long
// sequences these [N, intermediate] buffers (gate, up, act and, in backward, their gradients) are the
// largest activations of a layer; tiled, they are [rows of one chunk, intermediate].
//
// Rows are independent in the MLP, so every output row is computed as in the whole-sequence op; only
// the weight-gradient sums are split over the chunks (a different summation order). LoRA dropout: each
// chunk draws its own mask from a seed derived from the projection's seed and the chunk's first row
// (dropout_keep_mask is a function of (seed, shape), and a chunk's shape differs from the whole's), so
// the masks are as deterministic as the whole-sequence ones but not the same draws.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "model/linear.h"
#include "model/ops/linear.h"
#include "model/ops/lora_group.h"

namespace qft::model::ops {

// ALST's default number of chunks when none is given: ceil(rows / hidden), so one chunk's [rows,
// intermediate] buffers are about the size of one MLP weight.
int64_t tiled_mlp_auto_shards(int64_t rows, int64_t hidden);

// Rows per chunk for `num_shards` chunks of `rows` rows (the last chunk may be shorter).
int64_t tiled_mlp_chunk_rows(int64_t rows, int64_t num_shards);

// h [N, H] (as gate/up read it: after the column hook) -> down's output [N, H] (before the row hook).
// `gate_up` is the group {gate, up} (lora_group.h: their LoRA A stacked), run on each chunk as the
// untiled layer runs it on all rows. Nothing is kept: backward makes each chunk again, down's LoRA
// product dropout(act) A^T included.
at::Tensor tiled_mlp_forward(const LinearGroup& gate_up, const Linear& down, const at::Tensor& h,
                             int64_t num_shards);

struct TiledMlpGrads {
  LinearGrads gate, up, down;  // their need_dx is ignored: dh is always made
};

// dh [N, H] (before the column hook) for dy, the gradient at down's output (after the row hook),
// accumulating the requested weight and LoRA gradients.
at::Tensor tiled_mlp_backward(const LinearGroup& gate_up, const Linear& down, const at::Tensor& dy, const at::Tensor& h,
                              int64_t num_shards, const TiledMlpGrads& grads);

}  // namespace qft::model::ops
