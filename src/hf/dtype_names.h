// The dtype spellings users and config.json files use: bf16/fp16/fp32 on the command line and in YAML,
// bfloat16/float16/float32 in Hugging Face config.json ("torch_dtype").
#pragma once

#include <string>

#include <c10/core/ScalarType.h>

namespace qft::hf {

// Accepts bf16|fp16|fp32|bfloat16|float16|float32; `context` names the option in errors.
at::ScalarType parse_dtype(const std::string& name, const std::string& context);
// "bfloat16", "float16", "float32" (config.json's torch_dtype).
std::string torch_dtype_name(at::ScalarType type);

}  // namespace qft::hf
