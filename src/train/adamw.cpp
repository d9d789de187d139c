#include "train/adamw.h"

#include <cmath>

#include "core/error.h"
#include "train/shape_string.h"

namespace qft::train {

void AdamW::add_param(std::string name, at::Tensor master, bool decay) {
  QFT_CHECK(master.scalar_type() == at::kFloat, "AdamW: parameter '{}' must be an fp32 master tensor, got {}", name,
            c10::toString(master.scalar_type()));
  Entry entry;
  entry.name = std::move(name);
  entry.exp_avg = at::zeros_like(master, at::MemoryFormat::Preserve);
  entry.exp_avg_sq = at::zeros_like(master, at::MemoryFormat::Preserve);
  entry.param = std::move(master);
  entry.decay = decay;
  entries_.push_back(std::move(entry));
}

void AdamW::step(const std::vector<at::Tensor>& grads, double lr) {
  QFT_CHECK(grads.size() == entries_.size(), "AdamW: {} gradients for {} parameters", grads.size(), entries_.size());
  ++step_count_;
  const double step = static_cast<double>(step_count_);
  const double bias_correction1 = 1.0 - std::pow(options_.beta1, step);
  const double bias_correction2 = 1.0 - std::pow(options_.beta2, step);
  const double step_size = lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  for (size_t i = 0; i < entries_.size(); ++i) {
    Entry& e = entries_[i];
    const at::Tensor& grad = grads[i];
    QFT_CHECK(grad.sizes() == e.param.sizes(), "AdamW: gradient of '{}' has shape {}, parameter {}", e.name,
              shape_string(grad.sizes()), shape_string(e.param.sizes()));
    const at::Tensor g = grad.scalar_type() == at::kFloat ? grad : grad.to(at::kFloat);
    if (e.decay && options_.weight_decay != 0.0) e.param.mul_(1.0 - lr * options_.weight_decay);
    e.exp_avg.lerp_(g, 1.0 - options_.beta1);
    e.exp_avg_sq.mul_(options_.beta2).addcmul_(g, g, 1.0 - options_.beta2);
    const at::Tensor denom = (e.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(options_.eps);
    e.param.addcdiv_(e.exp_avg, denom, -step_size);
  }
}

double clip_grad_norm(const std::vector<at::Tensor>& grads, double max_norm) {
  if (grads.empty()) return 0.0;
  std::vector<at::Tensor> norms;
  norms.reserve(grads.size());
  for (const auto& g : grads) norms.push_back(at::linalg_vector_norm(g, 2));
  const at::Tensor total = at::linalg_vector_norm(at::stack(norms), 2);
  if (max_norm > 0) {
    const at::Tensor clip_coef = max_norm / (total + 1e-6);
    const at::Tensor clip_coef_clamped = at::clamp_max(clip_coef, 1.0);
    for (const auto& g : grads) g.mul_(clip_coef_clamped.to(g.device()));
  }
  return total.item<double>();
}

}  // namespace qft::train
