#include "model/ops/rope.h"

namespace qft::model::ops {

std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& position_ids, int64_t D, double theta,
                                              at::ScalarType dtype) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(position_ids.device());
  const at::Tensor exponent = at::arange(0, D, 2, f32.dtype(at::kLong)).to(at::kFloat) / static_cast<double>(D);
  const at::Tensor inv_freq = 1.0 / at::pow(theta, exponent);                         // [D/2]
  const at::Tensor freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inv_freq;       // [..., D/2]
  const at::Tensor emb = at::cat({freqs, freqs}, -1);                                  // [..., D]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

// Written half by half: y1 = x1*c - x2*s, y2 = x2*c + x1*s (cos and sin repeat across the halves),
// which is x*cos + rotate_half(x)*sin without materialising rotate_half.
at::Tensor rope_forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t h = x.size(-1) / 2;
  const at::Tensor c = cos.narrow(-1, 0, h).unsqueeze(-2), s = sin.narrow(-1, 0, h).unsqueeze(-2);
  const at::Tensor x1 = x.narrow(-1, 0, h), x2 = x.narrow(-1, h, h);
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor y1 = y.narrow(-1, 0, h), y2 = y.narrow(-1, h, h);
  at::mul_out(y1, x1, c).addcmul_(x2, s, -1);
  at::mul_out(y2, x2, c).addcmul_(x1, s, 1);
  return y;
}

// The transpose of the rotation (rotate_half^T = -rotate_half): dx1 = dy1*c + dy2*s, dx2 = dy2*c - dy1*s.
at::Tensor rope_backward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t h = dy.size(-1) / 2;
  const at::Tensor c = cos.narrow(-1, 0, h).unsqueeze(-2), s = sin.narrow(-1, 0, h).unsqueeze(-2);
  const at::Tensor d1 = dy.narrow(-1, 0, h), d2 = dy.narrow(-1, h, h);
  at::Tensor dx = at::empty_like(dy, at::MemoryFormat::Contiguous);
  at::Tensor dx1 = dx.narrow(-1, 0, h), dx2 = dx.narrow(-1, h, h);
  at::mul_out(dx1, d1, c).addcmul_(d2, s, 1);
  at::mul_out(dx2, d2, c).addcmul_(d1, s, -1);
  return dx;
}

}  // namespace qft::model::ops
