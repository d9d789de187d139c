// Dynamic loss scaling for fp16 compute, with the semantics of torch.amp.GradScaler (the scaler HF
// Trainer uses through accelerate when `fp16: true`): the loss gradient is multiplied by `scale` so that
// small activation gradients do not underflow in fp16; the fp32 gradients are divided by it again
// (unscaled) before the norm, clipping and the optimizer. A step whose unscaled gradients hold an inf
// or NaN is skipped (no optimizer update) and the scale is multiplied by `backoff_factor`; after
// `growth_interval` consecutive clean steps the scale is multiplied by `growth_factor`.
//
// The update rule is ATen's _amp_update_scale_ (aten/src/ATen/native/cpu/AmpGradScalerKernels.cpp):
// the scale is an fp32 number; a grown scale that is not finite is not taken (the tracker still resets).
#pragma once

#include <cstdint>

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
  float scale() const { return scale_; }
  // What torch's unscale_ multiplies the gradients by: 1/scale in double, rounded to fp32.
  float inverse_scale() const;
  // Ends a step: backs off on `found_inf` (the step is skipped), else counts towards growth.
  void update(bool found_inf);

  // Clean steps since the last growth or backoff (torch's `_growth_tracker`).
  int64_t growth_tracker() const { return growth_tracker_; }
  // Optimizer steps skipped so far: the LR scheduler and AdamW's step count lag the global step by this.
  int64_t skipped_steps() const { return skipped_steps_; }

  // {"scale", "growth_tracker", "skipped_steps"}: the state a checkpoint keeps (the options come from
  // the config). restore() names `source` and the key on bad values.
  nlohmann::json to_json() const;
  void restore(const nlohmann::json& state, const std::string& source);

 private:
  LossScalerOptions options_;
  float scale_;
  int64_t growth_tracker_ = 0;
  int64_t skipped_steps_ = 0;
};

}  // namespace qft::train
