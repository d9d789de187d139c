// Rotary position embedding, half-split (NeoX) layout as transformers' Qwen3, with the rope_types
// "default", "linear" and "yarn" of transformers' modeling_rope_utils.py.
#pragma once

#include <cstdint>
#include <utility>

#include <ATen/ATen.h>

#include "model/rope_scaling.h"

namespace qft::model::ops {

// inv_freq [D/2] fp32 as transformers' ROPE_INIT_FUNCTIONS[rope_type] computes it (default: 1/theta^(2i/D)
// with the arange in int64 cast to float; linear: that / factor; yarn: _compute_yarn_parameters).
at::Tensor rope_inv_freq(int64_t D, double theta, const RopeScaling& scaling, at::Device device);

// position_ids [...] int64 -> (cos, sin) [..., D] in `dtype`. Computed in fp32 exactly as
// transformers does (cos/sin of position * inv_freq, times attention_factor), then cast.
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& position_ids, int64_t D, double theta,
                                              at::ScalarType dtype, const RopeScaling& scaling = {});

// x [..., nh, D] with cos/sin [..., D] (same leading dims): x*cos + rotate_half(x)*sin.
at::Tensor rope_forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// The transpose of the rotation: dy*cos - rotate_half(dy*sin).
at::Tensor rope_backward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace qft::model::ops
