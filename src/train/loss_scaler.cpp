#include "train/loss_scaler.h"

#include <cmath>
#include <string>

#include "core/error.h"
#include "core/json_reader.h"

namespace qft::train {

LossScaler::LossScaler(LossScalerOptions options)
    : options_(options), scale_(static_cast<float>(options.init_scale)) {}

float LossScaler::inverse_scale() const {
  // torch: `self._scale.double().reciprocal().float()`.
  return static_cast<float>(1.0 / static_cast<double>(scale_));
}

void LossScaler::update(bool found_inf) {
  // ATen's kernel multiplies the fp32 scale by the double factor and stores the fp32 result.
  if (found_inf) {
    scale_ = static_cast<float>(static_cast<double>(scale_) * options_.backoff_factor);
    growth_tracker_ = 0;
    ++skipped_steps_;
    return;
  }
  const int64_t successful = growth_tracker_ + 1;
  if (successful == options_.growth_interval) {
    const float grown = static_cast<float>(static_cast<double>(scale_) * options_.growth_factor);
    if (std::isfinite(grown)) scale_ = grown;
    growth_tracker_ = 0;
  } else {
    growth_tracker_ = successful;
  }
}

nlohmann::json LossScaler::to_json() const {
  return {{"scale", scale_}, {"growth_tracker", growth_tracker_}, {"skipped_steps", skipped_steps_}};
}

void LossScaler::restore(const nlohmann::json& state, const std::string& source) {
  QFT_CHECK(state.is_object(), "{}: \"loss_scaler\" must be an object, got {}", source, json::excerpt(state));
  auto field = [&](const char* key) -> const nlohmann::json& {
    QFT_CHECK(state.contains(key), "{}: \"loss_scaler\" has no \"{}\"", source, key);
    return state[key];
  };
  const nlohmann::json& scale = field("scale");
  QFT_CHECK(scale.is_number() && std::isfinite(scale.get<double>()) && scale.get<double>() > 0,
            "{}: \"loss_scaler.scale\" must be a positive finite number, got {}", source, json::excerpt(scale));
  for (const char* key : {"growth_tracker", "skipped_steps"}) {
    const nlohmann::json& v = field(key);
    QFT_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0,
              "{}: \"loss_scaler.{}\" must be a non-negative integer, got {}", source, key, json::excerpt(v));
  }
  scale_ = scale.get<float>();
  growth_tracker_ = state["growth_tracker"].get<int64_t>();
  skipped_steps_ = state["skipped_steps"].get<int64_t>();
}

}  // namespace qft::train
