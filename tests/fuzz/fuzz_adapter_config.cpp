// adapter_config.json of a PEFT adapter directory, read against a small Qwen3 base config.
#include "core/json_reader.h"
#include "fuzz_support.h"
#include "hf/peft_adapter.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  qft::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const qft::model::Qwen3Config base = qft::model::Qwen3Config::from_json(
      qft::json::parse(R"({"model_type": "qwen3", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
                          "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8})",
                       "base"),
      "base");
  qft::fuzz::write_scratch("adapter_config.json", qft::fuzz::as_text(data, size));
  try {
    (void)qft::hf::read_peft_adapter_config(qft::fuzz::scratch_dir().string(), base);
  } catch (const qft::Error&) {
  }
  return 0;
}
