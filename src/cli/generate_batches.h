// What `generate` and `eval --generate` share: a JSONL line's prompt rendered to token ids, and the
// batched generation of many prompts (sorted by length, each sampling from its own stream).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "generate/generator.h"
#include "text/tokenizer.h"

namespace qft::cli {

// The prompt of a line object with exactly one of "messages" (+ optional "tools"), "prompt" or "text",
// and an optional "enable_thinking" (else `enable_thinking`). Errors start with `where` (FILE:LINE).
std::vector<int32_t> prompt_ids_from_json(const nlohmann::ordered_json& line, const std::string& where,
                                          const text::Tokenizer& tokenizer, bool enable_thinking);

// Generates every prompt with `decoder`, `batch_size` at a time in order of length; completion i belongs
// to prompts[i] and samples from stream i. Logs each batch's speed, prefixed by `command`.
std::vector<generate::Completion> generate_in_batches(const std::string& command, const generate::LoadedModel& model,
                                                      generate::Decoder& decoder, const generate::ModelFlags& flags,
                                                      const std::vector<std::vector<int32_t>>& prompts,
                                                      int64_t batch_size, bool ignore_eos);

// The text of a completion, without its stop token.
std::string completion_text(const generate::LoadedModel& model, const generate::Completion& completion);

// --batch-size's value; an error naming `command` unless a positive integer.
int64_t parse_batch_size(const std::string& command, const std::string& value);

}  // namespace qft::cli
