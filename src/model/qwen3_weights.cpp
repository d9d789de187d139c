#include "model/qwen3_weights.h"

#include <map>
#include <memory>
#include <set>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/nf4_weight.h"
#include "model/shape_string.h"

namespace qft::model {
namespace {

// The tensors of a layer in checkpoint order: the four norms by member, the projections by the table.
struct LayerNorm {
  const char* name;
  at::Tensor LayerWeights::*member;
};
constexpr LayerNorm kInputNorm = {"input_layernorm.weight", &LayerWeights::input_layernorm};
constexpr LayerNorm kQueryNorm = {"self_attn.q_norm.weight", &LayerWeights::q_norm};
constexpr LayerNorm kKeyNorm = {"self_attn.k_norm.weight", &LayerWeights::k_norm};
constexpr LayerNorm kPostNorm = {"post_attention_layernorm.weight", &LayerWeights::post_attention_layernorm};

// f(HF key, tensor slot, expected shape) for every tensor of layer i, in checkpoint order (that of
// transformers' state_dict: input norm, q k v o, q/k norms, post norm, gate up down). A projection's
// slot is the dense tensor of its storage.
template <typename LW, typename F>
void for_each_layer_tensor(LW& w, const Qwen3Config& c, int64_t i, F&& f) {
  const std::string prefix = "model.layers." + std::to_string(i) + ".";
  const int64_t H = c.hidden_size, D = c.head_dim;
  auto norm = [&](const LayerNorm& n, int64_t size) { f(prefix + n.name, w.*n.member, std::vector<int64_t>{size}); };
  auto projection = [&](Projection p) {
    const auto [out, in] = projection_shape(c, p);
    f(projection_module_path(i, p) + ".weight", w[p].trainable_weight(), std::vector<int64_t>{out, in});
  };
  norm(kInputNorm, H);
  for (Projection p : {Projection::q, Projection::k, Projection::v, Projection::o}) projection(p);
  norm(kQueryNorm, D);
  norm(kKeyNorm, D);
  norm(kPostNorm, H);
  for (Projection p : {Projection::gate, Projection::up, Projection::down}) projection(p);
}

// Visits every tensor of the model (lm_head only when untied) with its name and expected shape.
template <typename W, typename F>
void for_each_tensor(W& w, const Qwen3Config& c, bool tied, F&& f) {
  const int64_t V = c.vocab_size, H = c.hidden_size;
  f(std::string("model.embed_tokens.weight"), w.embed_tokens, std::vector<int64_t>{V, H});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) for_each_layer_tensor(w.layers[i], c, i, f);
  f(std::string("model.norm.weight"), w.norm, std::vector<int64_t>{H});
  if (!tied) f(std::string("lm_head.weight"), w.lm_head, std::vector<int64_t>{V, H});
}

// The same structure with f applied to every defined tensor; a tied lm_head stays tied to the result, and a
// projection holding a tensor-parallel shard stays that shard.
template <typename F>
Qwen3Weights map_tensors(const Qwen3Weights& src, F&& f) {
  auto map = [&](const at::Tensor& t) { return t.defined() ? f(t) : t; };
  Qwen3Weights w;
  w.embed_tokens = map(src.embed_tokens);
  w.layers.resize(src.layers.size());
  for (size_t i = 0; i < src.layers.size(); ++i) {
    const LayerWeights& s = src.layers[i];
    LayerWeights& d = w.layers[i];
    for (const LayerNorm* n : {&kInputNorm, &kQueryNorm, &kKeyNorm, &kPostNorm}) d.*(n->member) = map(s.*(n->member));
    for (const ProjectionInfo& info : projection_table()) {
      const Linear& from = s[info.projection];
      d[info.projection].projection = info.projection;
      d[info.projection].weight = std::make_shared<DenseWeight>(map(from.trainable_weight()), from.weight->shard());
    }
  }
  w.norm = map(src.norm);
  w.lm_head = src.tied() ? w.embed_tokens : map(src.lm_head);
  return w;
}

// Layers whose projections are dense storages with no tensor yet, for for_each_tensor to fill.
std::vector<LayerWeights> empty_layers(int64_t n) {
  std::vector<LayerWeights> layers(static_cast<size_t>(n));
  for (LayerWeights& layer : layers)
    for (const ProjectionInfo& info : projection_table()) layer[info.projection] = Linear::dense(info.projection, {});
  return layers;
}


bool is_norm(const std::string& name) { return name.find("norm.weight") != std::string::npos; }

}  // namespace

bool Qwen3Weights::tied() const { return lm_head.defined() && lm_head.is_same(embed_tokens); }

Qwen3Weights Qwen3Weights::load(const std::string& model_dir, const Qwen3Config& config, at::ScalarType dtype,
                                at::Device device, const std::optional<Nf4Options>& load_in_4bit,
                                const std::function<at::Tensor(const std::string&, const at::Tensor&)>& take_part) {
  if (config.raw.contains("quantization_config")) {
    check_bnb_quantization_config(config.raw["quantization_config"], model_dir + "/config.json");
  }
  io::SafetensorsCheckpoint ckpt(model_dir);
  const bool has_lm_head = ckpt.contains("lm_head.weight");
  QFT_CHECK(has_lm_head || config.tie_word_embeddings,
            "{}: missing tensor \"lm_head.weight\" and the config does not set tie_word_embeddings", ckpt.source());
  // transformers ties whenever the config says so, ignoring a stored lm_head.
  const bool tied = config.tie_word_embeddings;

  Qwen3Weights w;
  w.layers = empty_layers(config.num_hidden_layers);
  std::set<std::string> used;
  // 4-bit projections: read packed (a bitsandbytes checkpoint) or quantized as each is read (load_in_4bit),
  // so the dense model never exists on the device; they replace their dense slots after the walk. All
  // share one dequantization scratch (nf4_weight.h says why that is safe).
  std::map<std::string, Linear*> projection_of;
  for (int64_t i = 0; i < config.num_hidden_layers; ++i)
    for (const ProjectionInfo& info : projection_table())
      projection_of[projection_module_path(i, info.projection) + ".weight"] = &w.layers[i][info.projection];
  std::vector<std::pair<Linear*, std::shared_ptr<WeightStorage>>> packed;
  std::shared_ptr<Nf4Scratch> scratch;
  auto nf4_scratch = [&] { return scratch ? scratch : (scratch = std::make_shared<Nf4Scratch>()); };
  for_each_tensor(w, config, tied, [&](const std::string& name, at::Tensor& t, const std::vector<int64_t>& shape) {
    const auto projection = projection_of.find(name);
    if (projection != projection_of.end() && is_bnb_4bit(ckpt, name)) {
      std::vector<std::string> names;
      Nf4Tensors stored = read_bnb_4bit(ckpt, name, shape, names).to(device);
      packed.emplace_back(projection->second, std::make_shared<Nf4Weight>(std::move(stored), dtype, nf4_scratch()));
      used.insert(names.begin(), names.end());
      return;
    }
    QFT_CHECK(ckpt.contains(name), "{}: missing tensor \"{}\"", ckpt.source(), name);
    const io::TensorInfo& info = ckpt.info(name);
    QFT_CHECK(info.shape == shape, "{}: tensor \"{}\" has shape {} but the config needs {}",
              ckpt.file_of(name).path(), name, shape_string(info.shape), shape_string(shape));
    at::Tensor src = ckpt.tensor(name);
    QFT_CHECK(at::isFloatingType(src.scalar_type()), "{}: tensor \"{}\" has dtype {}, expected a floating type",
              ckpt.file_of(name).path(), name, info.dtype);
    if (take_part) src = take_part(name, src);
    // copy=true: the result owns its memory instead of viewing the mapping.
    t = src.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
    used.insert(name);
    if (projection != projection_of.end() && load_in_4bit) {
      // Quantized in the dtype the model is loaded in, as transformers' from_pretrained(torch_dtype=...,
      // quantization_config=...) does; the dense copy is dropped at once.
      packed.emplace_back(projection->second, Nf4Weight::quantize(t, *load_in_4bit, dtype, nf4_scratch()));
      t = at::Tensor();
    }
  });
  for (auto& [linear, storage] : packed) linear->weight = std::move(storage);
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

namespace {

// One tensor of a random init, drawn from `gen` in checkpoint order: norms are ones; the rest are drawn in
// fp32 so that a model is the same whatever dtype it is then stored in.
at::Tensor random_tensor(const std::string& name, const std::vector<int64_t>& shape, at::Generator& gen,
                         double initializer_range, at::ScalarType dtype, at::Device device = at::kCPU) {
  if (is_norm(name)) return at::ones(shape, at::TensorOptions().dtype(dtype).device(device));
  return at::normal(0.0, initializer_range, shape, gen, at::TensorOptions().dtype(at::kFloat).device(device))
      .to(dtype);
}

// A fresh generator of `device`'s type seeded with `seed` (the CPU one is mt19937, CUDA's Philox).
at::Generator random_generator(at::Device device, uint64_t seed) {
  if (device.is_cpu()) return at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Generator gen = at::globalContext().getAcceleratorHooksInterface(device.type()).getNewGenerator(device.index());
  gen.set_current_seed(seed);
  return gen;
}

}  // namespace

Qwen3Weights Qwen3Weights::random(const Qwen3Config& config, uint64_t seed, double initializer_range,
                                  at::ScalarType dtype) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  Qwen3Weights w;
  w.layers = empty_layers(config.num_hidden_layers);
  const bool tied = config.tie_word_embeddings;
  for_each_tensor(w, config, tied, [&](const std::string& name, at::Tensor& t, const std::vector<int64_t>& shape) {
    t = random_tensor(name, shape, gen, initializer_range, dtype);
  });
  if (tied) w.lm_head = w.embed_tokens;
  return w;
}

void Qwen3Weights::for_each_random(const Qwen3Config& config, uint64_t seed, double initializer_range,
                                   at::ScalarType dtype,
                                   const std::function<void(const std::string&, const at::Tensor&)>& visit,
                                   at::Device device) {
  // The same walk and draws as random() (on the CPU); each tensor is dropped once visited.
  at::Generator gen = random_generator(device, seed);
  Qwen3Weights slots;
  slots.layers = empty_layers(config.num_hidden_layers);
  for_each_tensor(slots, config, config.tie_word_embeddings,
                  [&](const std::string& name, at::Tensor&, const std::vector<int64_t>& shape) {
                    visit(name, random_tensor(name, shape, gen, initializer_range, dtype, device));
                  });
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

Qwen3Weights Qwen3Weights::with_tensors(const Qwen3Config& config,
                                        const std::function<at::Tensor(size_t index)>& tensor_of) const {
  Qwen3Weights w;
  w.layers = empty_layers(config.num_hidden_layers);
  size_t index = 0;
  const bool tie = tied() || !lm_head.defined();
  for_each_tensor(w, config, tie, [&](const std::string& name, at::Tensor& t, const std::vector<int64_t>& shape) {
    t = tensor_of(index++);
    QFT_CHECK(t.sizes().vec() == shape, "{} is {}, the config needs {}", name, shape_string(t.sizes()),
              shape_string(shape));
  });
  if (tie) w.lm_head = w.embed_tokens;
  return w;
}

Qwen3Weights Qwen3Weights::zeros_like(std::optional<at::ScalarType> dtype) const {
  return map_tensors(*this, [&](const at::Tensor& t) {
    return at::zeros_like(t, dtype ? t.options().dtype(*dtype) : t.options());
  });
}

void quantize_projections(Qwen3Weights& weights, const Nf4Options& options, at::ScalarType compute_dtype) {
  auto scratch = std::make_shared<Nf4Scratch>();
  for (LayerWeights& layer : weights.layers)
    for (Linear& linear : layer.projections) {
      at::Tensor* dense = linear.weight->trainable();
      if (dense == nullptr) continue;
      linear.weight = Nf4Weight::quantize(*dense, options, compute_dtype, scratch, linear.weight->shard());
    }
}

void dequantize_projections(Qwen3Weights& weights, at::ScalarType dtype) {
  for (LayerWeights& layer : weights.layers)
    for (Linear& linear : layer.projections)
      if (const auto* nf4 = dynamic_cast<const Nf4Weight*>(linear.weight.get()))
        linear.weight = std::make_shared<DenseWeight>(nf4->dequantize(dtype), nf4->shard());
}

bool has_nf4_projections(const Qwen3Weights& weights) {
  for (const LayerWeights& layer : weights.layers)
    for (const Linear& linear : layer.projections)
      if (dynamic_cast<const Nf4Weight*>(linear.weight.get()) != nullptr) return true;
  return false;
}

}  // namespace qft::model
