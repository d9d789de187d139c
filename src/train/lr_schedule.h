// Learning-rate schedules with Hugging Face `get_scheduler` semantics. HF wraps each schedule in a
// torch LambdaLR, so the update at optimizer step k (k = 0 for the first update) uses
// learning_rate * lambda(k); the logged learning_rate of a step is the one its update used.
#pragma once

#include <cstdint>
#include <string>

namespace qft::train {

class LrSchedule {
 public:
  // `type`: linear | cosine | constant | constant_with_warmup (HF SchedulerType names).
  LrSchedule(std::string type, double base_lr, int64_t warmup_steps, int64_t num_training_steps);

  // HF TrainingArguments.get_warmup_steps: warmup_steps when > 0, else ceil(warmup_ratio * total).
  static int64_t warmup_steps_for(int64_t warmup_steps, double warmup_ratio, int64_t num_training_steps);

  // The multiplier lambda(k) and the learning rate of the update at 0-based optimizer step k.
  double lambda(int64_t step) const;
  double learning_rate(int64_t step) const { return base_lr_ * lambda(step); }

  int64_t warmup_steps() const { return warmup_steps_; }
  int64_t num_training_steps() const { return num_training_steps_; }

 private:
  std::string type_;
  double base_lr_;
  int64_t warmup_steps_;
  int64_t num_training_steps_;
};

}  // namespace qft::train
