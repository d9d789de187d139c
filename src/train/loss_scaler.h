// Dynamic loss scaling for fp16 compute, with the semantics of torch.amp.GradScaler (the scaler HF
// Trainer uses through accelerate when `fp16: true`): the loss gradient is multiplied by `scale` so that
// small activation gradients do not underflow in fp16; the fp32 gradients are divided by it again
// (unscaled) before the norm, clipping and the optimizer. A step whose unscaled gradients hold an inf
// or NaN is skipped (no optimizer update) and the scale is multiplied by `backoff_factor`; after
// `growth_interval` consecutive clean steps the scale is multiplied by `growth_factor`.
//
// Nothing of the rule is written here: the update is ATen's own _amp_update_scale_ (the kernel
// GradScaler.update calls; the scale is an fp32 number, a grown scale that is not finite is not taken)
// and the unscale is _amp_foreach_non_finite_check_and_unscale_ (GradScaler.unscale_'s kernel).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

namespace qft::train {

struct LossScalerOptions {
  // torch.amp.GradScaler's defaults (also accelerate's and HF Trainer's).
  double init_scale = 65536.0;  // 2**16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

class LossScaler {
 public:
  explicit LossScaler(LossScalerOptions options = {});

  // The factor the loss (its gradient) is multiplied by this step.
  float scale() const;
  // What torch's unscale_ multiplies the gradients by: 1/scale in double, rounded to fp32.
  float inverse_scale() const;
  // Multiplies `gradients` (fp32, one device) by inverse_scale() and says whether any held an inf or
  // NaN before (one pass, one host sync).
  bool unscale_and_check(const std::vector<at::Tensor>& gradients) const;
  // Ends a step: backs off on `found_inf` (the step is skipped), else counts towards growth.
  void update(bool found_inf);

  // Clean steps since the last growth or backoff (torch's `_growth_tracker`).
  int64_t growth_tracker() const;
  // Optimizer steps skipped so far: the LR scheduler and AdamW's step count lag the global step by this.
  int64_t skipped_steps() const { return skipped_steps_; }

  // {"scale", "growth_tracker", "skipped_steps"}: the state a checkpoint keeps (the options come from
  // the config). restore() names `source` and the key on bad values.
  nlohmann::json to_json() const;
  void restore(const nlohmann::json& state, const std::string& source);

 private:
  LossScalerOptions options_;
  at::Tensor scale_;           // [1] fp32 on the CPU, as GradScaler's _scale
  at::Tensor growth_tracker_;  // [1] int32 on the CPU, as GradScaler's _growth_tracker
  int64_t skipped_steps_ = 0;
};

}  // namespace qft::train
