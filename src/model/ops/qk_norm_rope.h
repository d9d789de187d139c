// Qwen3 normalises q and k per head (q_norm / k_norm, RMSNorm over head_dim) and then applies RoPE:
// y = rope(rms_norm(x)). On CUDA the two run as one fused kernel (kernels/qk_norm_rope.cu); elsewhere
// as the two ops, whose composition is the reference.
#pragma once

#include <ATen/ATen.h>

namespace qft::model::ops {

// x [N, heads, D], w [D], cos/sin [N, D]; *rstd = the norm's 1/rms per (row, head) [N, heads].
at::Tensor qk_norm_rope_forward(const at::Tensor& x, const at::Tensor& w, double eps, const at::Tensor& cos,
                                const at::Tensor& sin, at::Tensor* rstd);
// dx for dy (the gradient of the rotated output); when dw != nullptr, adds the norm weight's gradient.
at::Tensor qk_norm_rope_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w,
                                 const at::Tensor& rstd, const at::Tensor& cos, const at::Tensor& sin, at::Tensor* dw);

}  // namespace qft::model::ops
