#include "model/ops/rms_norm.h"

#include "model/ops/common.h"
#include "model/ops/fused_kernels.h"

namespace qft::model::ops {

at::Tensor rms_norm_forward(const at::Tensor& x, const at::Tensor& w, double eps, at::Tensor* rstd) {
  if (at::Tensor y = fused::rms_norm_forward(x, w, eps, rstd); y.defined()) return y;
  // mean(x^2) as |x|^2 / C: one pass over x in the accumulation dtype, no fp32 copy of x.
  const at::Tensor norm = at::linalg_vector_norm(x, 2, {-1}, /*keepdim=*/true, acc_type(x.scalar_type()));
  at::Tensor r = at::rsqrt(norm.square().div_(static_cast<double>(x.size(-1))).add_(eps));
  at::Tensor y = w * (x * r).to(x.scalar_type());
  if (rstd != nullptr) *rstd = r.squeeze(-1);
  return y;
}

at::Tensor rms_norm_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w,
                             const at::Tensor& rstd, at::Tensor* dw) {
  if (at::Tensor dx = fused::rms_norm_backward(dy, x, w, rstd, dw); dx.defined()) return dx;
  const int64_t C = x.size(-1);
  const at::ScalarType acc = acc_type(x.scalar_type());
  const at::Tensor r = rstd.unsqueeze(-1);
  if (dw != nullptr) accumulate(*dw, (x * r).mul_(dy).reshape({-1, C}).sum(0));  // sum of dy * normalised x
  // With g = dy*w and n = x*r: dx = r * (g - n * mean(g*n)) = r * (g - x * r^2 * mean(g*x)); the r^2 term
  // comes from mean(x^2) inside rstd. Mixed-dtype products promote to `acc` without extra copies.
  const at::Tensor g = dy * w.to(acc);
  const at::Tensor k = r.square().mul_((g * x).mean(-1, /*keepdim=*/true));
  return g.addcmul(x, k, -1.0).mul_(r).to(x.scalar_type());
}

}  // namespace qft::model::ops
