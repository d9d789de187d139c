#include "hf/merge.h"

#include <filesystem>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/remove_tree.h"
#include "hf/dtype_names.h"
#include "hf/model_dir.h"
#include "hf/peft_adapter.h"
#include "model/nf4_weight.h"
#include "model/projection.h"

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
  model::Nf4Options nf4;
  nf4.double_quant = options.double_quant;
  model::Qwen3Weights weights = model::Qwen3Weights::load(options.base_dir, config, stored, at::kCPU,
                                                         options.load_in_4bit ? std::optional(nf4) : std::nullopt);
  // A 4-bit base (bitsandbytes checkpoint or --load-in-4bit) is dequantized first: the values the
  // adapter was trained against, rounded through their stored dtype, as PEFT's dequantize_bnb_weight.
  const bool four_bit_base = model::has_nf4_projections(weights);
  model::dequantize_projections(weights, stored);
  model::merge_lora_into(weights, lora);
  config.torch_dtype = torch_dtype_name(dtype);
  config.raw.erase("quantization_config");
  io::NamedTensors tensors;
  for (auto& [name, tensor] : weights.named_tensors(config)) {
    if (options.save_4bit && model::is_projection_weight_key(name)) {
      // Requantized from the merged weight in the output dtype, as bnb.nn.Params4bit does after a merge.
      for (auto& t : model::bnb_4bit_tensors(name, model::nf4_quantize(tensor.to(dtype), nf4)))
        tensors.push_back(std::move(t));
    } else {
      tensors.emplace_back(name, tensor.to(dtype));
    }
  }
  if (options.save_4bit) config.raw["quantization_config"] = model::bnb_quantization_config(nf4.double_quant, dtype);

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
  spdlog::info("merged {} (r={}, scaling {}) into {}{} -> {} ({}{})", options.adapter_dir, lora.config.r,
               lora.config.scaling(), options.base_dir, four_bit_base ? " (4-bit base, dequantized)" : "",
               options.output_dir, config.torch_dtype, options.save_4bit ? ", projections NF4 4-bit" : "");
}

}  // namespace qft::hf
