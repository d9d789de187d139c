// A training YAML config through load_train_config (YAML syntax, duplicate keys, types, NaN, unknown
// keys, cross-key checks).
#include "fuzz_support.h"
#include "train/train_config.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  qft::fuzz::quiet_logs();
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
