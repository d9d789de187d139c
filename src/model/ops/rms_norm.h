// RMSNorm as transformers' Qwen3RMSNorm: normalise in fp32, cast back to the input dtype, then
// multiply by the weight. Used for input/post-attention/final norms (over H) and q_norm/k_norm (over D).
#pragma once

#include <ATen/ATen.h>

namespace qft::model::ops {

// x [..., C], w [C] -> y [..., C]; *rstd = 1/sqrt(mean(x^2) + eps) [...] in the accumulation dtype.
at::Tensor rms_norm_forward(const at::Tensor& x, const at::Tensor& w, double eps, at::Tensor* rstd);

// dx for dy; when dw != nullptr, adds the weight gradient into *dw.
at::Tensor rms_norm_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w,
                             const at::Tensor& rstd, at::Tensor* dw);

}  // namespace qft::model::ops
