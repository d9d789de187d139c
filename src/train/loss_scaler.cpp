#include "train/loss_scaler.h"

#include <cmath>

#include "core/error.h"
#include "core/json_reader.h"

namespace qft::train {

LossScaler::LossScaler(LossScalerOptions options)
    : options_(options),
      scale_(at::full({1}, options.init_scale, at::TensorOptions().dtype(at::kFloat))),
      growth_tracker_(at::zeros({1}, at::TensorOptions().dtype(at::kInt))) {}

float LossScaler::scale() const { return scale_.item<float>(); }

int64_t LossScaler::growth_tracker() const { return growth_tracker_.item<int64_t>(); }

float LossScaler::inverse_scale() const {
  // torch: `self._scale.double().reciprocal().float()`.
  return static_cast<float>(1.0 / static_cast<double>(scale()));
}

bool LossScaler::unscale_and_check(const std::vector<at::Tensor>& gradients) const {
  if (gradients.empty()) return false;
  const auto options = gradients.front().options().dtype(at::kFloat);
  at::Tensor found_inf = at::zeros({1}, options);
  const at::Tensor inv_scale = at::full({1}, inverse_scale(), options);
  at::_amp_foreach_non_finite_check_and_unscale_(gradients, found_inf, inv_scale);
  return found_inf.item<float>() != 0.0f;
}

void LossScaler::update(bool found_inf) {
  const at::Tensor flag = at::full({1}, found_inf ? 1.0f : 0.0f, at::TensorOptions().dtype(at::kFloat));
  at::_amp_update_scale_(scale_, growth_tracker_, flag, options_.growth_factor, options_.backoff_factor,
                         options_.growth_interval);
  if (found_inf) ++skipped_steps_;
}

nlohmann::json LossScaler::to_json() const {
  return {{"scale", scale()}, {"growth_tracker", growth_tracker()}, {"skipped_steps", skipped_steps_}};
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
  const int64_t tracker = state["growth_tracker"].get<int64_t>();
  QFT_CHECK(tracker < options_.growth_interval, "{}: \"loss_scaler.growth_tracker\" {} is not below growth_interval {}",
            source, tracker, options_.growth_interval);
  scale_.fill_(scale.get<float>());
  growth_tracker_.fill_(tracker);
  skipped_steps_ = state["skipped_steps"].get<int64_t>();
}

}  // namespace qft::train
