#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace qft::train {

namespace {

constexpr double kPi = 3.14159265358979323846;

// The formulas of transformers/optimization.py, term for term (Python float = double).
double warmup_factor(int64_t step, int64_t warmup) {
  return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
}

}  // namespace

LrSchedule::LrSchedule(std::string type, double base_lr, int64_t warmup_steps, int64_t num_training_steps)
    : type_(std::move(type)), base_lr_(base_lr), warmup_steps_(warmup_steps), num_training_steps_(num_training_steps) {
  QFT_CHECK(type_ == "linear" || type_ == "cosine" || type_ == "constant" || type_ == "constant_with_warmup",
            "lr_scheduler_type '{}' is not one of linear, cosine, constant, constant_with_warmup", type_);
  QFT_CHECK(warmup_steps_ >= 0 && num_training_steps_ >= 1, "bad schedule: warmup {} of {} steps", warmup_steps_,
            num_training_steps_);
}

int64_t LrSchedule::warmup_steps_for(int64_t warmup_steps, double warmup_ratio, int64_t num_training_steps) {
  if (warmup_steps > 0) return warmup_steps;
  return static_cast<int64_t>(std::ceil(static_cast<double>(num_training_steps) * warmup_ratio));
}

double LrSchedule::lambda(int64_t step) const {
  if (type_ == "constant") return 1.0;
  if (step < warmup_steps_) return warmup_factor(step, warmup_steps_);
  if (type_ == "constant_with_warmup") return 1.0;
  const double remaining_span = static_cast<double>(std::max<int64_t>(1, num_training_steps_ - warmup_steps_));
  if (type_ == "linear") {
    return std::max(0.0, static_cast<double>(num_training_steps_ - step) / remaining_span);
  }
  // cosine with num_cycles = 0.5: one half cosine from 1 down to 0.
  const double progress = static_cast<double>(step - warmup_steps_) / remaining_span;
  const double num_cycles = 0.5;
  return std::max(0.0, 0.5 * (1.0 + std::cos(kPi * num_cycles * 2.0 * progress)));
}

}  // namespace qft::train
