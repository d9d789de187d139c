// A model's config.json through the JSON reader and Qwen3Config::from_json.
#include "core/json_reader.h"
#include "fuzz_support.h"
#include "model/qwen3_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto config = qft::model::Qwen3Config::from_json(
        qft::json::parse(qft::fuzz::as_text(data, size), "config.json"), "config.json");
    (void)config.to_json();
  } catch (const qft::Error&) {
  }
  return 0;
}
