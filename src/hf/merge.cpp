#include "hf/merge.h"

#include <filesystem>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "hf/dtype_names.h"
#include "hf/model_dir.h"
#include "hf/peft_adapter.h"

namespace qft::hf {

namespace fs = std::filesystem;

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
  model::merge_lora_into(weights, lora);
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

}  // namespace qft::hf
