#include "model/lora.h"

#include <cmath>

#include "core/error.h"

namespace qft::model {

const char* projection_name(Projection p) {
  static const char* names[kNumProjections] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                               "gate_proj", "up_proj", "down_proj"};
  return names[static_cast<int>(p)];
}

const char* projection_module(Projection p) {
  static const char* modules[kNumProjections] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                 "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                 "mlp.down_proj"};
  return modules[static_cast<int>(p)];
}

std::optional<Projection> projection_from_name(const std::string& name) {
  for (int i = 0; i < kNumProjections; ++i) {
    const auto p = static_cast<Projection>(i);
    if (name == projection_name(p) || name == projection_module(p)) return p;
  }
  return std::nullopt;
}

std::array<int64_t, 2> projection_shape(const Qwen3Config& c, Projection p) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  switch (p) {
    case Projection::q: return {c.q_size(), H};
    case Projection::k: return {c.kv_size(), H};
    case Projection::v: return {c.kv_size(), H};
    case Projection::o: return {H, c.q_size()};
    case Projection::gate: return {I, H};
    case Projection::up: return {I, H};
    case Projection::down: return {H, I};
  }
  fail("invalid projection {}", static_cast<int>(p));
}

double LoraConfig::scaling() const {
  QFT_CHECK(r > 0, "LoRA rank r must be positive, got {}", r);
  return use_rslora ? lora_alpha / std::sqrt(static_cast<double>(r)) : lora_alpha / static_cast<double>(r);
}

bool LoraConfig::targets(Projection p) const {
  for (Projection t : target_modules)
    if (t == p) return true;
  return false;
}

LoraWeights LoraWeights::init(const Qwen3Config& model, const LoraConfig& config, uint64_t seed, at::Device device) {
  QFT_CHECK(config.r > 0, "LoRA rank r must be positive, got {}", config.r);
  QFT_CHECK(config.lora_dropout >= 0.0 && config.lora_dropout < 1.0, "lora_dropout must be in [0, 1), got {}",
            config.lora_dropout);
  LoraWeights w;
  w.config = config;
  w.layers.resize(model.num_hidden_layers);
  // Drawn on the CPU in a fixed order (layer, projection) so the result does not depend on the device.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (int64_t i = 0; i < model.num_hidden_layers; ++i) {
    for (int p = 0; p < kNumProjections; ++p) {
      if (!config.targets(static_cast<Projection>(p))) continue;
      const auto [out, in] = projection_shape(model, static_cast<Projection>(p));
      // kaiming_uniform_(a=sqrt(5)) on [r, in]: gain sqrt(2/(1+5)), bound = gain*sqrt(3/in) = 1/sqrt(in).
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      at::Tensor A = at::empty({config.r, in}, f32).uniform_(-bound, bound, gen);
      w.layers[i][p].A = A.to(device);
      w.layers[i][p].B = at::zeros({out, config.r}, f32.device(device));
    }
  }
  return w;
}

LoraWeights LoraWeights::zeros_like() const {
  LoraWeights z;
  z.config = config;
  z.layers.resize(layers.size());
  for (size_t i = 0; i < layers.size(); ++i)
    for (int p = 0; p < kNumProjections; ++p)
      if (layers[i][p].defined()) {
        z.layers[i][p].A = at::zeros_like(layers[i][p].A);
        z.layers[i][p].B = at::zeros_like(layers[i][p].B);
      }
  return z;
}

std::vector<std::pair<std::string, at::Tensor>> LoraWeights::named_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < layers.size(); ++i)
    for (int p = 0; p < kNumProjections; ++p) {
      if (!layers[i][p].defined()) continue;
      const std::string prefix = "base_model.model.model.layers." + std::to_string(i) + "." +
                                 projection_module(static_cast<Projection>(p));
      out.emplace_back(prefix + ".lora_A.weight", layers[i][p].A);
      out.emplace_back(prefix + ".lora_B.weight", layers[i][p].B);
    }
  return out;
}

}  // namespace qft::model
