#include "hf/dtype_names.h"

#include "core/error.h"

namespace qft::hf {

at::ScalarType parse_dtype(const std::string& name, const std::string& context) {
  if (name == "bf16" || name == "bfloat16") return at::kBFloat16;
  if (name == "fp16" || name == "float16") return at::kHalf;
  if (name == "fp32" || name == "float32") return at::kFloat;
  fail("{}: dtype '{}' is not one of bf16, fp16, fp32", context, name);
}

std::string torch_dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kFloat: return "float32";
    default: fail("dtype {} has no config.json name here (expected bf16, fp16 or fp32)", c10::toString(type));
  }
}

}  // namespace qft::hf
