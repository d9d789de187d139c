#include "model/ops/rope.h"

#include <algorithm>
#include <cmath>

namespace qft::model::ops {

namespace {

// YaRN (https://arxiv.org/abs/2309.00071) as transformers' _compute_yarn_parameters: dimensions that
// rotate more than beta_fast times over the original context keep their frequency (extrapolation),
// those rotating fewer than beta_slow times are divided by `factor` (interpolation), and a linear ramp
// blends the dimensions in between. The bounds are computed in double (Python floats there), the
// tensors in fp32 with the same operations in the same order, so the frequencies agree bit for bit.
at::Tensor yarn_inv_freq(const at::Tensor& pos_freqs, int64_t D, double theta, const RopeScaling& s) {
  const double pi = 3.14159265358979323846;
  auto correction_dim = [&](double rotations) {
    return (static_cast<double>(D) * std::log(static_cast<double>(s.original_max_position_embeddings) /
                                              (rotations * 2 * pi))) /
           (2 * std::log(theta));
  };
  double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
  if (s.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(D - 1));
  if (low == high) high += 0.001;  // transformers: "Prevent singularity"
  const at::Tensor ramp =
      ((at::arange(D / 2, pos_freqs.options()) - low) / (high - low)).clamp(0, 1);
  const at::Tensor extrapolation_factor = 1 - ramp;
  const at::Tensor extrapolated = 1.0 / pos_freqs;
  const at::Tensor interpolated = 1.0 / (s.factor * pos_freqs);
  return interpolated * (1 - extrapolation_factor) + extrapolated * extrapolation_factor;
}

}  // namespace

at::Tensor rope_inv_freq(int64_t D, double theta, const RopeScaling& scaling, at::Device device) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  const at::Tensor exponent = at::arange(0, D, 2, f32.dtype(at::kLong)).to(at::kFloat) / static_cast<double>(D);
  const at::Tensor pos_freqs = at::pow(theta, exponent);  // [D/2]
  switch (scaling.type) {
    case RopeScaling::Type::none: return 1.0 / pos_freqs;
    case RopeScaling::Type::linear: return (1.0 / pos_freqs) / scaling.factor;
    case RopeScaling::Type::yarn: return yarn_inv_freq(pos_freqs, D, theta, scaling);
  }
  return 1.0 / pos_freqs;
}

std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& position_ids, int64_t D, double theta,
                                              at::ScalarType dtype, const RopeScaling& scaling) {
  const at::Tensor inv_freq = rope_inv_freq(D, theta, scaling, position_ids.device());  // [D/2]
  const at::Tensor freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inv_freq;       // [..., D/2]
  const at::Tensor emb = at::cat({freqs, freqs}, -1);                                  // [..., D]
  if (scaling.attention_factor == 1.0) return {emb.cos().to(dtype), emb.sin().to(dtype)};
  // transformers multiplies in fp32 before the cast to the compute dtype.
  return {(emb.cos() * scaling.attention_factor).to(dtype), (emb.sin() * scaling.attention_factor).to(dtype)};
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
