// The causal-LM loss fused with lm_head: logits exist in fp32 for one chunk of target rows at a time,
// and the loss, dlogits, dh (and dW) are all produced in the same pass over that chunk.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace qft::model::ops {

// HF's shift: target[b, t] = labels[b, t+1], the last position predicts nothing (-100). With packed
// rows (segment_ids defined) a position whose next token starts another segment or is padding
// predicts nothing either. Returns [B*T] int64.
at::Tensor shift_targets(const at::Tensor& labels, const at::Tensor& segment_ids);

struct CrossEntropyResult {
  double loss_sum = 0.0;     // sum over targets of -log p(target), unscaled
  int64_t target_tokens = 0; // number of targets != -100
};

// Target tokens per chunk unless a config says otherwise: 1024 x 151,936 fp32 logits = 0.6 GB.
constexpr int64_t kDefaultLossChunkTokens = 1024;

// h [N, H] (after the final norm), W [V, H], targets [N] (-100 = none). Rows are processed in chunks of
// `chunk_tokens` targets; rows without a target are skipped entirely (their dh is 0). When dh is given
// it is overwritten with the gradient of loss_sum / denominator; dW (if given) accumulates it.
CrossEntropyResult lm_head_cross_entropy(const at::Tensor& h, const at::Tensor& W, const at::Tensor& targets,
                                         int64_t chunk_tokens, double denominator, at::Tensor* dh, at::Tensor* dW);

}  // namespace qft::model::ops
