// The Qwen3 MLP activation: silu(gate) * up.
#pragma once

#include <utility>

#include <ATen/ATen.h>

namespace qft::model::ops {

at::Tensor swiglu_forward(const at::Tensor& gate, const at::Tensor& up);
// (dgate, dup) for dh; computed in the accumulation dtype, returned in the input dtype.
std::pair<at::Tensor, at::Tensor> swiglu_backward(const at::Tensor& dh, const at::Tensor& gate, const at::Tensor& up);

}  // namespace qft::model::ops
