// tokenizer.json through Tokenizer::from_file, then a few encodes and decodes with whatever loaded.
#include "fuzz_support.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  qft::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qft::fuzz::write_scratch("tokenizer.json", qft::fuzz::as_text(data, size));
  try {
    const qft::text::Tokenizer tokenizer = qft::text::Tokenizer::from_file(path);
    for (const char* text : {"Hello world", "<|im_start|>user\ncafe\xCC\x81 \xE4\xBD\xA0\xE5\xA5\xBD<think>\xCC\x81 123",
                             "  \n\n\t x"}) {
      const auto encoding = tokenizer.encode_with_offsets(text);
      if (encoding.ids.size() != encoding.offsets.size()) __builtin_trap();
      (void)tokenizer.decode(encoding.ids);
    }
  } catch (const qft::Error&) {
  }
  return 0;
}
