// A training YAML config through load_train_config (YAML syntax, duplicate keys, types, NaN, unknown
// keys, cross-key checks). The harness runs in a scratch directory holding a model directory `model/`
// (config.json only) and `rows.jsonl`, so that configs naming them (seeds/in-scratch.yaml) get past the
// file checks and into every section. It changes into that directory, so corpus directories must be
// given as absolute paths (run_fuzz.sh does).
#include <unistd.h>

#include "fuzz_support.h"
#include "train/train_config.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  qft::fuzz::quiet_logs();
  std::filesystem::create_directories(qft::fuzz::scratch_dir() / "model");
  qft::fuzz::write_scratch("model/config.json",
                           R"({"model_type": "qwen3", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
                               "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                               "head_dim": 8})");
  qft::fuzz::write_scratch("rows.jsonl", "{\"input_ids\": [1, 2], \"labels\": [1, 2]}\n");
  if (chdir(qft::fuzz::scratch_dir().c_str()) != 0) return 1;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qft::fuzz::write_scratch("config.yaml", qft::fuzz::as_text(data, size));
  try {
    (void)qft::train::load_train_config(path);
  } catch (const qft::Error&) {
  }
  return 0;
}
