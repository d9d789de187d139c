// PEFT LoRA adapter directories (formats.md §3): adapter_config.json (PEFT's key set, sorted keys,
// indent 2) and adapter_model.safetensors (fp32, keys base_model.model.model.layers.{i}.<module>.lora_A.weight).
// Saved adapters load with peft.PeftModel.from_pretrained; adapters trained by PEFT load here.
#pragma once

#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "model/lora.h"
#include "model/qwen3_config.h"

namespace qft::hf {

// The adapter_config.json object PEFT 0.18 writes for this LoRA config.
nlohmann::json peft_adapter_config(const model::LoraConfig& config, const std::string& base_model_name_or_path,
                                   const std::string& init_lora_weights);

// Writes adapter_config.json and adapter_model.safetensors into `dir` (created when missing); each
// file is written atomically.
void save_peft_adapter(const std::string& dir, const model::LoraWeights& lora,
                       const std::string& base_model_name_or_path, const std::string& init_lora_weights);

// Reads and validates adapter_config.json against the base model; PEFT features qft does not
// implement (DoRA, rank_pattern, modules_to_save, ...) are errors naming the key.
model::LoraConfig read_peft_adapter_config(const std::string& dir, const model::Qwen3Config& base);

// Loads a whole adapter as fp32 tensors on `device` (owning their memory). Every expected key must be
// present with its shape; unexpected keys are errors naming the file and key.
model::LoraWeights load_peft_adapter(const std::string& dir, const model::Qwen3Config& base,
                                     at::Device device = at::kCPU);

}  // namespace qft::hf
