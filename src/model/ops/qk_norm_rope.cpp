#include "model/ops/qk_norm_rope.h"

#include "model/ops/fused_kernels.h"
#include "model/ops/rms_norm.h"
#include "model/ops/rope.h"

namespace qft::model::ops {

at::Tensor qk_norm_rope_forward(const at::Tensor& x, const at::Tensor& w, double eps, const at::Tensor& cos,
                                const at::Tensor& sin, at::Tensor* rstd) {
  if (at::Tensor y = fused::qk_norm_rope_forward(x, w, eps, cos, sin, rstd); y.defined()) return y;
  return rope_forward(rms_norm_forward(x, w, eps, rstd), cos, sin);
}

at::Tensor qk_norm_rope_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w,
                                 const at::Tensor& rstd, const at::Tensor& cos, const at::Tensor& sin, at::Tensor* dw) {
  if (at::Tensor dx = fused::qk_norm_rope_backward(dy, x, w, rstd, cos, sin, dw); dx.defined()) return dx;
  return rms_norm_backward(rope_backward(dy, cos, sin), x, w, rstd, dw);
}

}  // namespace qft::model::ops
