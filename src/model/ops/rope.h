// Rotary position embedding, default rope_type, half-split (NeoX) layout as transformers' Qwen3.
#pragma once

#include <utility>

#include <ATen/ATen.h>

namespace qft::model::ops {

// position_ids [...] int64 -> (cos, sin) [..., D] in `dtype`. Computed in fp32 exactly as
// transformers does (inv_freq = 1/theta^(2i/D), arange in int64 cast to float), then cast.
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& position_ids, int64_t D, double theta,
                                              at::ScalarType dtype);

// x [..., nh, D] with cos/sin [..., D] (same leading dims): x*cos + rotate_half(x)*sin.
at::Tensor rope_forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// The transpose of the rotation: dy*cos - rotate_half(dy*sin).
at::Tensor rope_backward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace qft::model::ops
