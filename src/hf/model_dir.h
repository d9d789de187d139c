// Writing Hugging Face model directories (init-model, merge, full fine-tuning output): safetensors
// shards + index, config.json, and the tokenizer files copied from a source directory.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "io/safetensors.h"
#include "model/qwen3_config.h"

namespace qft::hf {

// Tensors first (sharded above max_shard_bytes), config.json last, so a directory with a config.json
// is complete. `dir` is created when missing.
void write_hf_model_dir(const std::string& dir, const model::Qwen3Config& config, const io::NamedTensors& tensors,
                        uint64_t max_shard_bytes);
// config.json alone (write_hf_model_dir's last step), for a writer that streams its tensors itself.
void write_hf_config(const std::string& dir, const model::Qwen3Config& config);

// Copies tokenizer.json, tokenizer_config.json, vocab.json, merges.txt, generation_config.json,
// special_tokens_map.json and added_tokens.json where `from_dir` has them; returns how many.
int copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir);

// "5GB" (10^9, as huggingface_hub), "500MB", "2GiB" (2^30), "1000" (bytes).
uint64_t parse_byte_size(const std::string& text, const std::string& context);

// Turns a finished temporary directory into `final_dir` (which must not exist or is replaced).
void move_into_place(const std::string& tmp_dir, const std::string& final_dir);

// Runs `write(tmp_dir)` on a fresh hidden sibling of `final_dir` (".NAME.<purpose>-tmp") and moves it into
// place only when `write` returns: a failure leaves no half-written directory that looks complete.
void write_directory_atomically(const std::string& final_dir, const std::string& purpose,
                                const std::function<void(const std::string& tmp_dir)>& write);

}  // namespace qft::hf
