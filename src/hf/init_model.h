// Random-init Hugging Face Qwen3 model directories: presets with the shapes of every dense Qwen3 size
// (formats.md §2) and tiny ones for tests and demos, or any config.json. The output loads with
// transformers' AutoModelForCausalLM.from_pretrained.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "model/qwen3_config.h"

namespace qft::hf {

// "0.6B", "1.7B", "4B", "8B", "14B", "32B", "tiny", "tiny-gqa4", "tiny-untied".
std::vector<std::string> init_model_preset_names();
// The preset's config (with the HF keys transformers expects); unknown names list the presets.
model::Qwen3Config init_model_preset(const std::string& name);

struct InitModelOptions {
  model::Qwen3Config config;
  std::string output_dir;
  uint64_t seed = 0;
  at::ScalarType dtype = at::kBFloat16;
  double initializer_range = 0.02;
  std::string tokenizer_dir;  // copy tokenizer files from here ("" = none)
  uint64_t max_shard_bytes = 5000000000ULL;
  // Write the projections as NF4 4-bit in bitsandbytes' layout with config.json's quantization_config,
  // as merge --save-4bit does: the values of the `dtype` model of the same seed, quantized. The model is
  // generated, quantized and written one tensor at a time (at most one shard held), so a model whose
  // bf16 checkpoint fits neither memory nor disk (Qwen3-32B: 64 GB) can be made as a QLoRA base.
  bool save_4bit = false;
  bool double_quant = true;  // with save_4bit: bnb_4bit_use_double_quant
  // Where the values are drawn (and, with save_4bit, quantized); only the results come to the host to be
  // written. CUDA draws with torch's CUDA generator: deterministic per seed, but not the CPU init's values.
  at::Device device = at::kCPU;
};

// Writes config.json + safetensors (+ tokenizer files) through a temporary directory; refuses to
// overwrite an existing output directory, and a device other than the CPU or an available CUDA device.
void init_model(const InitModelOptions& options);

}  // namespace qft::hf
