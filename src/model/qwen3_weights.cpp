#include "model/qwen3_weights.h"

#include <set>

#include "core/error.h"
#include "io/safetensors.h"

namespace qft::model {
namespace {

// Every tensor of a layer: HF name inside the layer and member, in checkpoint order.
struct LayerTensor {
  const char* name;
  at::Tensor LayerWeights::*member;
};
constexpr LayerTensor kLayerTensors[] = {
    {"input_layernorm.weight", &LayerWeights::input_layernorm},
    {"self_attn.q_proj.weight", &LayerWeights::q_proj},
    {"self_attn.k_proj.weight", &LayerWeights::k_proj},
    {"self_attn.v_proj.weight", &LayerWeights::v_proj},
    {"self_attn.o_proj.weight", &LayerWeights::o_proj},
    {"self_attn.q_norm.weight", &LayerWeights::q_norm},
    {"self_attn.k_norm.weight", &LayerWeights::k_norm},
    {"post_attention_layernorm.weight", &LayerWeights::post_attention_layernorm},
    {"mlp.gate_proj.weight", &LayerWeights::gate_proj},
    {"mlp.up_proj.weight", &LayerWeights::up_proj},
    {"mlp.down_proj.weight", &LayerWeights::down_proj},
};

// (HF key, member) for every tensor of layer i, in checkpoint order.
template <typename LW, typename F>
void for_each_layer_tensor(LW& w, int64_t i, F&& f) {
  const std::string p = "model.layers." + std::to_string(i) + ".";
  for (const LayerTensor& t : kLayerTensors) f(p + t.name, w.*t.member);
}

// Expected shapes, in the same order as kLayerTensors.
std::vector<std::vector<int64_t>> layer_shapes(const Qwen3Config& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  return {{H}, {c.q_size(), H}, {c.kv_size(), H}, {c.kv_size(), H}, {H, c.q_size()}, {D}, {D}, {H},
          {I, H}, {I, H}, {H, I}};
}

// Visits every tensor of the model (lm_head only when untied) with its name and expected shape.
template <typename W, typename F>
void for_each_tensor(W& w, const Qwen3Config& c, bool tied, F&& f) {
  const int64_t V = c.vocab_size, H = c.hidden_size;
  f(std::string("model.embed_tokens.weight"), w.embed_tokens, std::vector<int64_t>{V, H});
  const auto shapes = layer_shapes(c);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    size_t k = 0;
    for_each_layer_tensor(w.layers[i], i, [&](const std::string& name, auto& t) { f(name, t, shapes[k++]); });
  }
  f(std::string("model.norm.weight"), w.norm, std::vector<int64_t>{H});
  if (!tied) f(std::string("lm_head.weight"), w.lm_head, std::vector<int64_t>{V, H});
}

// The same structure with f applied to every defined tensor; a tied lm_head stays tied to the result.
template <typename F>
Qwen3Weights map_tensors(const Qwen3Weights& src, F&& f) {
  auto map = [&](const at::Tensor& t) { return t.defined() ? f(t) : t; };
  Qwen3Weights w;
  w.embed_tokens = map(src.embed_tokens);
  w.layers.resize(src.layers.size());
  for (size_t i = 0; i < src.layers.size(); ++i) {
    for (const LayerTensor& t : kLayerTensors) w.layers[i].*t.member = map(src.layers[i].*t.member);
  }
  w.norm = map(src.norm);
  w.lm_head = src.tied() ? w.embed_tokens : map(src.lm_head);
  return w;
}

std::string shape_str(at::IntArrayRef s) { return "[" + fmt::format("{}", fmt::join(s, ", ")) + "]"; }

bool is_norm(const std::string& name) { return name.find("norm.weight") != std::string::npos; }

}  // namespace

bool Qwen3Weights::tied() const { return lm_head.defined() && lm_head.is_same(embed_tokens); }

Qwen3Weights Qwen3Weights::load(const std::string& model_dir, const Qwen3Config& config, at::ScalarType dtype,
                                at::Device device) {
  io::SafetensorsCheckpoint ckpt(model_dir);
  const bool has_lm_head = ckpt.contains("lm_head.weight");
  QFT_CHECK(has_lm_head || config.tie_word_embeddings,
            "{}: missing tensor \"lm_head.weight\" and the config does not set tie_word_embeddings", ckpt.source());
  // transformers ties whenever the config says so, ignoring a stored lm_head.
  const bool tied = config.tie_word_embeddings;

  Qwen3Weights w;
  w.layers.resize(config.num_hidden_layers);
  std::set<std::string> used;
  for_each_tensor(w, config, tied, [&](const std::string& name, at::Tensor& t, const std::vector<int64_t>& shape) {
    QFT_CHECK(ckpt.contains(name), "{}: missing tensor \"{}\"", ckpt.source(), name);
    const io::TensorInfo& info = ckpt.info(name);
    QFT_CHECK(info.shape == shape, "{}: tensor \"{}\" has shape {} but the config needs {}",
              ckpt.file_of(name).path(), name, shape_str(info.shape), shape_str(shape));
    at::Tensor src = ckpt.tensor(name);
    QFT_CHECK(at::isFloatingType(src.scalar_type()), "{}: tensor \"{}\" has dtype {}, expected a floating type",
              ckpt.file_of(name).path(), name, info.dtype);
    // copy=true: the result owns its memory instead of viewing the mapping.
    t = src.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
    used.insert(name);
  });
  if (tied) {
    w.lm_head = w.embed_tokens;
    used.insert("lm_head.weight");
  }
  // Leftover tensors mean the config does not describe this checkpoint (e.g. more layers, MoE).
  for (const auto& name : ckpt.names()) {
    if (used.count(name) || name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    fail("{}: unexpected tensor \"{}\" not described by the Qwen3 config (num_hidden_layers = {})",
         ckpt.file_of(name).path(), name, config.num_hidden_layers);
  }
  return w;
}

Qwen3Weights Qwen3Weights::random(const Qwen3Config& config, uint64_t seed, double initializer_range,
                                  at::ScalarType dtype) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  Qwen3Weights w;
  w.layers.resize(config.num_hidden_layers);
  const bool tied = config.tie_word_embeddings;
  // Values drawn in fp32 so that a model is the same whatever dtype it is then stored in.
  for_each_tensor(w, config, tied, [&](const std::string& name, at::Tensor& t, const std::vector<int64_t>& shape) {
    if (is_norm(name)) {
      t = at::ones(shape, at::TensorOptions().dtype(dtype));
    } else {
      t = at::normal(0.0, initializer_range, shape, gen, at::TensorOptions().dtype(at::kFloat)).to(dtype);
    }
  });
  if (tied) w.lm_head = w.embed_tokens;
  return w;
}

std::vector<std::pair<std::string, at::Tensor>> Qwen3Weights::named_tensors(const Qwen3Config& config) const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  QFT_CHECK(static_cast<int64_t>(layers.size()) == config.num_hidden_layers,
            "Qwen3Weights has {} layers but the config has {}", layers.size(), config.num_hidden_layers);
  for_each_tensor(*this, config, tied() || !lm_head.defined(),
                  [&](const std::string& name, const at::Tensor& t, const std::vector<int64_t>&) {
                    out.emplace_back(name, t);
                  });
  return out;
}

Qwen3Weights Qwen3Weights::to(at::ScalarType dtype, at::Device device) const {
  return map_tensors(*this, [&](const at::Tensor& t) { return t.to(device, dtype); });
}

Qwen3Weights Qwen3Weights::zeros_like(std::optional<at::ScalarType> dtype) const {
  return map_tensors(*this, [&](const at::Tensor& t) {
    return at::zeros_like(t, dtype ? t.options().dtype(*dtype) : t.options());
  });
}

}  // namespace qft::model
