#include "hf/merge.h"

#include <filesystem>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/remove_tree.h"
#include "hf/dtype_names.h"
#include "hf/model_dir.h"
#include "hf/peft_adapter.h"

namespace qft::hf {

namespace fs = std::filesystem;

void merge_adapter(const MergeOptions& options) {
  const bool replace = fs::exists(options.output_dir);
  QFT_CHECK(!replace || options.force,
            "merge: --output {} already exists; choose a new directory or pass --force to replace it",
            options.output_dir);
  if (replace) {
    // --force deletes the old output: never an input, and only something that is a model directory.
    for (const std::string* input : {&options.base_dir, &options.adapter_dir}) {
      QFT_CHECK(fs::weakly_canonical(*input) != fs::weakly_canonical(options.output_dir),
                "merge: --output {} is the input directory {}; choose another output", options.output_dir, *input);
    }
    QFT_CHECK(fs::is_directory(options.output_dir) &&
                  (fs::exists(fs::path(options.output_dir) / "config.json") || fs::is_empty(options.output_dir)),
              "merge --force: {} is not a model directory (no config.json) and not empty; it is left alone",
              options.output_dir);
  }
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

  // With --force the old directory is renamed aside and deleted only after the new one is in place.
  const std::string old_dir = (fs::path(options.output_dir).parent_path() /
                               ("." + fs::path(options.output_dir).filename().string() + ".merge-old"))
                                  .string();
  write_directory_atomically(options.output_dir, "merge", [&](const std::string& tmp_dir) {
    write_hf_model_dir(tmp_dir, config, tensors, options.max_shard_bytes);
    copy_tokenizer_files(options.base_dir, tmp_dir);
    if (replace) {
      remove_tree(old_dir);
      std::error_code ec;
      fs::rename(options.output_dir, old_dir, ec);
      QFT_CHECK(!ec, "merge --force: cannot move {} aside ({})", options.output_dir, ec.message());
    }
  });
  if (replace) remove_tree(old_dir);
  spdlog::info("merged {} (r={}, scaling {}) into {} -> {} ({})", options.adapter_dir, lora.config.r,
               lora.config.scaling(), options.base_dir, options.output_dir, config.torch_dtype);
}

}  // namespace qft::hf
