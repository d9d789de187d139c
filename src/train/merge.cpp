#include "train/merge.h"

#include <filesystem>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "train/dtype_names.h"
#include "train/hf_model_dir.h"
#include "train/peft_adapter.h"
#include "train/shape_string.h"

namespace qft::train {

namespace {

namespace fs = std::filesystem;
using model::Projection;

at::Tensor& projection_weight(model::LayerWeights& layer, Projection p) {
  switch (p) {
    case Projection::q: return layer.q_proj;
    case Projection::k: return layer.k_proj;
    case Projection::v: return layer.v_proj;
    case Projection::o: return layer.o_proj;
    case Projection::gate: return layer.gate_proj;
    case Projection::up: return layer.up_proj;
    case Projection::down: return layer.down_proj;
  }
  fail("invalid projection {}", static_cast<int>(p));
}

}  // namespace

void merge_lora_into(model::Qwen3Weights& weights, const model::LoraWeights& lora) {
  QFT_CHECK(weights.layers.size() == lora.layers.size(), "merge: the adapter has {} layers, the model {}",
            lora.layers.size(), weights.layers.size());
  const double scaling = lora.config.scaling();
  for (size_t i = 0; i < lora.layers.size(); ++i) {
    for (int p = 0; p < model::kNumProjections; ++p) {
      const model::LoraPair& pair = lora.layers[i][p];
      if (!pair.defined()) continue;
      at::Tensor& w = projection_weight(weights.layers[i], static_cast<Projection>(p));
      const at::Tensor delta = at::matmul(pair.B.to(w.device(), at::kFloat), pair.A.to(w.device(), at::kFloat));
      QFT_CHECK(delta.sizes() == w.sizes(), "merge: layer {} {} delta {} vs weight {}", i,
                model::projection_name(static_cast<Projection>(p)), shape_string(delta.sizes()), shape_string(w.sizes()));
      w = (w.to(at::kFloat) + delta * scaling).to(w.scalar_type());
    }
  }
}

void merge_adapter(const MergeOptions& options) {
  QFT_CHECK(!fs::exists(options.output_dir),
            "merge: --output {} already exists; choose a new directory (merge never overwrites)", options.output_dir);
  model::Qwen3Config config =
      model::Qwen3Config::from_file((fs::path(options.base_dir) / "config.json").string());
  const at::ScalarType dtype =
      options.dtype ? *options.dtype : parse_dtype(config.torch_dtype, options.base_dir + "/config.json torch_dtype");
  const model::LoraWeights lora = load_peft_adapter(options.adapter_dir, config, at::kCPU);
  // The base stays in its stored dtype (no copy wider than the checkpoint); each adapted projection is
  // upcast to fp32 only while merging, and every tensor is rounded once to the output dtype.
  const at::ScalarType stored = parse_dtype(config.torch_dtype, options.base_dir + "/config.json torch_dtype");
  model::Qwen3Weights weights = model::Qwen3Weights::load(options.base_dir, config, stored, at::kCPU);
  merge_lora_into(weights, lora);
  config.torch_dtype = torch_dtype_name(dtype);
  io::NamedTensors tensors;
  for (auto& [name, tensor] : weights.named_tensors(config)) tensors.emplace_back(name, tensor.to(dtype));

  write_directory_atomically(options.output_dir, "merge", [&](const std::string& tmp_dir) {
    write_hf_model_dir(tmp_dir, config, tensors, options.max_shard_bytes);
    copy_tokenizer_files(options.base_dir, tmp_dir);
  });
  spdlog::info("merged {} (r={}, scaling {}) into {} -> {} ({})", options.adapter_dir, lora.config.r,
               lora.config.scaling(), options.base_dir, options.output_dir, config.torch_dtype);
}

}  // namespace qft::train
