// Merging a PEFT LoRA adapter into its base model: W += scaling * B @ A for every adapted projection,
// computed in fp32 and cast to the output dtype (PEFT get_delta_weight / merge_and_unload).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <c10/core/ScalarType.h>

#include "model/lora.h"
#include "model/qwen3_weights.h"

namespace qft::hf {

struct MergeOptions {
  std::string base_dir;
  std::string adapter_dir;
  std::string output_dir;
  std::optional<at::ScalarType> dtype;     // default: the base config's torch_dtype
  uint64_t max_shard_bytes = 5000000000ULL;  // huggingface_hub's default "5GB"
  bool force = false;  // replace an existing output model directory (swapped in only once complete)
  // QLoRA. A base whose config.json has a bitsandbytes quantization_config is read 4-bit and always
  // dequantized before merging (PEFT's merge_and_unload on a bnb model). load_in_4bit quantizes a dense
  // base to NF4 first, as a run with model.load_in_4bit saw it, so the merge adds the adapter to the
  // weights it was trained against. save_4bit writes the merged model requantized in bitsandbytes'
  // layout with its quantization_config (what transformers + bitsandbytes and qft load 4-bit).
  bool load_in_4bit = false;
  bool save_4bit = false;
  bool double_quant = true;  // for load_in_4bit and save_4bit (bnb_4bit_use_double_quant)
};

// Writes the merged model directory (config.json, safetensors, tokenizer files). Everything goes to a
// temporary sibling directory that is renamed at the end, so a failure leaves no partial output.
void merge_adapter(const MergeOptions& options);

}  // namespace qft::hf
