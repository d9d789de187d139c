#include "train/adamw.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/ops/fused_kernels.h"

namespace qft::train {

AdamW::AdamW(AdamWOptions options, parallel::Range owned, std::vector<parallel::Range> no_decay, at::Device device)
    : options_(options), owned_(owned) {
  QFT_CHECK(owned.begin >= 0 && owned.begin <= owned.end, "AdamW: invalid range [{}, {})", owned.begin, owned.end);
  std::sort(no_decay.begin(), no_decay.end(),
            [](const parallel::Range& a, const parallel::Range& b) { return a.begin < b.begin; });
  int64_t cursor = owned.begin;
  for (const parallel::Range& r : no_decay) {
    QFT_CHECK(r.begin >= cursor && r.end <= owned.end, "AdamW: no-decay range [{}, {}) overlaps or leaves [{}, {})",
              r.begin, r.end, owned.begin, owned.end);
    if (r.begin > cursor) decay_ranges_.push_back({cursor, r.begin});
    cursor = r.end;
  }
  if (cursor < owned.end) decay_ranges_.push_back({cursor, owned.end});
  // The same split as the fused kernel's table, relative to the owned range: where each run of decaying
  // or non-decaying elements ends.
  std::vector<int64_t> ends;
  std::vector<uint8_t> decays;
  cursor = owned.begin;
  for (const parallel::Range& r : decay_ranges_) {
    if (r.begin > cursor) {
      ends.push_back(r.begin - owned.begin);
      decays.push_back(0);
    }
    ends.push_back(r.end - owned.begin);
    decays.push_back(1);
    cursor = r.end;
  }
  if (cursor < owned.end) {
    ends.push_back(owned.end - owned.begin);
    decays.push_back(0);
  }
  const auto n_ranges = static_cast<int64_t>(ends.size());
  range_end_ = at::from_blob(ends.data(), {n_ranges}, at::kLong).to(device);
  range_decay_ = at::from_blob(decays.data(), {n_ranges}, at::kByte).to(device);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  exp_avg_ = at::zeros({owned.size()}, f32);
  exp_avg_sq_ = at::zeros({owned.size()}, f32);
}

void AdamW::step(at::Tensor& params, const at::Tensor& grads, double lr) {
  QFT_CHECK(params.dim() == 1 && grads.dim() == 1 && params.numel() == grads.numel() && params.numel() >= owned_.end,
            "AdamW: flat buffers of {} parameters and {} gradients for the range [{}, {})", params.numel(),
            grads.numel(), owned_.begin, owned_.end);
  step_owned(params.narrow(0, owned_.begin, owned_.size()), grads.narrow(0, owned_.begin, owned_.size()), lr);
}

void AdamW::step_owned(at::Tensor p, const at::Tensor& grads_owned, double lr) {
  QFT_CHECK(p.dim() == 1 && grads_owned.dim() == 1 && p.numel() == owned_.size() &&
                grads_owned.numel() == owned_.size(),
            "AdamW: {} parameters and {} gradients for the range [{}, {})", p.numel(), grads_owned.numel(),
            owned_.begin, owned_.end);
  QFT_CHECK(p.scalar_type() == at::kFloat, "AdamW: the parameters must be fp32 masters");
  ++step_count_;
  const double step = static_cast<double>(step_count_);
  const double bias_correction1 = 1.0 - std::pow(options_.beta1, step);
  const double bias_correction2 = 1.0 - std::pow(options_.beta2, step);
  const double step_size = lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  // CUDA: one memory-bound kernel over the whole range (kernels/adamw.cu), the same formulas in fp32.
  if (model::ops::fused::adamw_step(p, grads_owned, exp_avg_, exp_avg_sq_, range_end_, range_decay_, lr,
                                    options_.beta1, options_.beta2, options_.eps, options_.weight_decay, step_count_))
    return;
  if (options_.weight_decay != 0.0) {
    for (const parallel::Range& r : decay_ranges_)
      p.narrow(0, r.begin - owned_.begin, r.size()).mul_(1.0 - lr * options_.weight_decay);
  }
  // A slice at a time, so the temporaries (the denominator) stay small next to a ZeRO shard of a large
  // full fine-tune; every operation is element-wise, so slicing changes no result.
  constexpr int64_t kSlice = int64_t{1} << 26;
  for (int64_t begin = 0; begin < p.numel(); begin += kSlice) {
    const int64_t n = std::min(kSlice, p.numel() - begin);
    at::Tensor g = grads_owned.narrow(0, begin, n);
    if (g.scalar_type() != at::kFloat) g = g.to(at::kFloat);
    at::Tensor m = exp_avg_.narrow(0, begin, n), v = exp_avg_sq_.narrow(0, begin, n);
    m.lerp_(g, 1.0 - options_.beta1);
    v.mul_(options_.beta2).addcmul_(g, g, 1.0 - options_.beta2);
    const at::Tensor denom = (v.sqrt() / bias_correction2_sqrt).add_(options_.eps);
    p.narrow(0, begin, n).addcdiv_(m, denom, -step_size);
  }
}

at::Tensor clip_grad_norm(const std::vector<at::Tensor>& grads, double max_norm) {
  if (grads.empty()) return at::zeros({}, at::kFloat);
  // torch.nn.utils.clip_grad_norm_ as HF calls it (foreach): one multi-tensor kernel for the norms and one
  // for the scaling on CUDA, the per-tensor loop it falls back to on the CPU — not two launches per
  // adapter factor, which at 0.6B cost more than the kernels themselves.
  const at::Tensor total = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads, 2)), 2);
  if (max_norm > 0) {
    const at::Tensor clip_coef = max_norm / (total + 1e-6);
    at::_foreach_mul_(grads, at::clamp_max(clip_coef, 1.0));
  }
  return total;
}

}  // namespace qft::train
