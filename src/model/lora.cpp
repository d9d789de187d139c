#include "model/lora.h"

#include <cmath>

#include <fmt/format.h>

#include "core/error.h"
#include "model/qwen3_weights.h"
#include "model/shape_string.h"

namespace qft::model {

double LoraConfig::scaling() const {
  QFT_CHECK(r > 0, "LoRA rank r must be positive, got {}", r);
  return use_rslora ? lora_alpha / std::sqrt(static_cast<double>(r)) : lora_alpha / static_cast<double>(r);
}

bool LoraConfig::targets(Projection p) const {
  for (Projection t : target_modules)
    if (t == p) return true;
  return false;
}

LoraInit parse_lora_init(const std::string& text) {
  if (text == "true") return LoraInit::kaiming_uniform;
  if (text == "gaussian") return LoraInit::gaussian;
  fail("init_lora_weights '{}' is not supported (true or gaussian)", text);
}

const char* lora_init_name(LoraInit init) { return init == LoraInit::gaussian ? "gaussian" : "true"; }

std::string peft_lora_key(int64_t layer, Projection p, char which) {
  return fmt::format("base_model.model.{}.lora_{}.weight", projection_module_path(layer, p), which);
}

LoraWeights LoraWeights::init(const Qwen3Config& model, const LoraConfig& config, uint64_t seed, at::Device device,
                              LoraInit init) {
  QFT_CHECK(config.r > 0, "LoRA rank r must be positive, got {}", config.r);
  QFT_CHECK(config.lora_dropout >= 0.0 && config.lora_dropout < 1.0, "lora_dropout must be in [0, 1), got {}",
            config.lora_dropout);
  LoraWeights w;
  w.config = config;
  w.layers.resize(model.num_hidden_layers);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (int64_t i = 0; i < model.num_hidden_layers; ++i) {
    for (const ProjectionInfo& info : projection_table()) {
      if (!config.targets(info.projection)) continue;
      const auto [out, in] = projection_shape(model, info.projection);
      // kaiming_uniform_(a=sqrt(5)) on [r, in]: gain sqrt(2/(1+5)), bound = gain*sqrt(3/in) = 1/sqrt(in).
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      at::Tensor A = at::empty({config.r, in}, f32).uniform_(-bound, bound, gen);
      LoraPair& pair = w.layers[i][static_cast<int>(info.projection)];
      pair.A = A.to(device);
      pair.B = at::zeros({out, config.r}, f32.device(device));
    }
  }
  if (init == LoraInit::gaussian) {
    // PEFT reset_lora_parameters("gaussian"): nn.init.normal_(lora_A, std=1 / r), from a generator
    // seeded afresh (the uniform draws above only fix the structure).
    at::Generator normal_gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    const double std_dev = 1.0 / static_cast<double>(config.r);
    for (auto& layer : w.layers) {
      for (LoraPair& pair : layer) {
        if (!pair.defined()) continue;
        pair.A = at::normal(0.0, std_dev, pair.A.sizes(), normal_gen, f32).to(device);
      }
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

namespace {

// Where each master factor's values live, in a fixed order: what refresh() checks it was made from.
std::vector<const void*> storage_of(const LoraWeights& masters) {
  std::vector<const void*> out;
  for (const auto& pairs : masters.layers)
    for (const LoraPair& pair : pairs)
      if (pair.defined()) {
        out.push_back(pair.A.const_data_ptr());
        out.push_back(pair.B.const_data_ptr());
      }
  return out;
}

}  // namespace

bool LoraCompute::refresh(const LoraWeights& masters) {
  if (masters.layers.size() != layers.size() || storage_of(masters) != master_storage_) return false;
  if (!cast_into_.empty()) at::_foreach_copy_(cast_into_, cast_from_);
  return true;
}

LoraCompute LoraCompute::make(const LoraWeights& masters, at::ScalarType dtype) {
  LoraCompute out;
  out.config = masters.config;
  out.dtype = dtype;
  out.layers.resize(masters.layers.size());
  out.stacked_A.resize(masters.layers.size());
  // Every cast is one multi-tensor copy at the end (_foreach_copy_: a few launches on CUDA, not two per
  // adapter pair, which at 0.6B cost more than the copies themselves).
  std::vector<at::Tensor> into, from;
  auto cast_into = [&](at::Tensor destination, const at::Tensor& source) {
    into.push_back(destination);
    from.push_back(source);
    return destination;
  };
  for (size_t i = 0; i < masters.layers.size(); ++i) {
    const auto& pairs = masters.layers[i];
    auto& cast = out.layers[i];
    for (int g = 0; g < kNumInputGroups; ++g) {
      std::vector<Projection> adapted;
      int64_t rows = 0;
      for (Projection p : input_group_info(static_cast<InputGroup>(g)).members) {
        const at::Tensor& A = pairs[static_cast<int>(p)].A;
        if (!A.defined()) continue;
        if (!adapted.empty()) {
          const at::Tensor& first = pairs[static_cast<int>(adapted[0])].A;
          QFT_CHECK(A.size(1) == first.size(1), "layer {}: LoRA A of {} is {} but that of {} is {}: projections "
                    "reading one input have as many input features", i, projection_name(p),
                    shape_string(A.sizes()), projection_name(adapted[0]), shape_string(first.sizes()));
        }
        adapted.push_back(p);
        rows += A.size(0);
      }
      if (adapted.empty()) continue;
      // Each factor is cast straight into its row block (one copy), which becomes the member's A.
      const at::Tensor& first = pairs[static_cast<int>(adapted[0])].A;
      at::Tensor stacked = at::empty({rows, first.size(1)}, first.options().dtype(dtype));
      int64_t row = 0;
      for (Projection p : adapted) {
        const at::Tensor& A = pairs[static_cast<int>(p)].A;
        cast[static_cast<int>(p)].A = cast_into(stacked.narrow(0, row, A.size(0)), A);
        row += A.size(0);
      }
      out.stacked_A[i][g] = stacked;
    }
    // A factor already in `dtype` is used as it is (as .to(dtype) would).
    auto cast_of = [&](const at::Tensor& master) {
      return master.scalar_type() == dtype ? master
                                           : cast_into(at::empty_like(master, master.options().dtype(dtype)), master);
    };
    for (int p = 0; p < kNumProjections; ++p) {
      if (!pairs[p].defined()) continue;
      if (!cast[p].A.defined()) cast[p].A = cast_of(pairs[p].A);  // o and down: in no group
      cast[p].B = cast_of(pairs[p].B);
    }
  }
  if (!into.empty()) at::_foreach_copy_(into, from);
  out.cast_into_ = std::move(into);
  out.cast_from_ = std::move(from);
  out.master_storage_ = storage_of(masters);
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> LoraWeights::named_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < layers.size(); ++i)
    for (const ProjectionInfo& info : projection_table()) {
      const LoraPair& pair = layers[i][static_cast<int>(info.projection)];
      if (!pair.defined()) continue;
      out.emplace_back(peft_lora_key(static_cast<int64_t>(i), info.projection, 'A'), pair.A);
      out.emplace_back(peft_lora_key(static_cast<int64_t>(i), info.projection, 'B'), pair.B);
    }
  return out;
}

LoraWeights LoraWeights::with_tensors(const std::function<at::Tensor(size_t index)>& tensor_of) const {
  LoraWeights out;
  out.config = config;
  out.layers.resize(layers.size());
  size_t index = 0;
  auto take = [&](const at::Tensor& like) {
    at::Tensor t = tensor_of(index++);
    QFT_CHECK(t.sizes() == like.sizes(), "LoRA tensor {} is {}, expected {}", index - 1, shape_string(t.sizes()),
              shape_string(like.sizes()));
    return t;
  };
  for (size_t i = 0; i < layers.size(); ++i)
    for (const ProjectionInfo& info : projection_table()) {
      const LoraPair& pair = layers[i][static_cast<int>(info.projection)];
      if (!pair.defined()) continue;
      LoraPair& dst = out.layers[i][static_cast<int>(info.projection)];
      dst.A = take(pair.A);
      dst.B = take(pair.B);
    }
  return out;
}

void merge_lora_into(Qwen3Weights& weights, const LoraWeights& lora) {
  QFT_CHECK(weights.layers.size() == lora.layers.size(), "merge: the adapter has {} layers, the model {}",
            lora.layers.size(), weights.layers.size());
  const double scaling = lora.config.scaling();
  for (size_t i = 0; i < lora.layers.size(); ++i) {
    for (const ProjectionInfo& info : projection_table()) {
      const LoraPair& pair = lora.layers[i][static_cast<int>(info.projection)];
      if (!pair.defined()) continue;
      at::Tensor& w = weights.layers[i][info.projection].trainable_weight();
      const at::Tensor delta = at::matmul(pair.B.to(w.device(), at::kFloat), pair.A.to(w.device(), at::kFloat));
      QFT_CHECK(delta.sizes() == w.sizes(), "merge: layer {} {}: the adapter's B A is {} but the weight is {}", i,
                info.name, shape_string(delta.sizes()), shape_string(w.sizes()));
      w = (w.to(at::kFloat) + delta * scaling).to(w.scalar_type());
    }
  }
}

}  // namespace qft::model
