// A .safetensors file (8-byte length, JSON header, data) through SafetensorsFile: header parsing and
// every bound check, then each tensor viewed.
#include "fuzz_support.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qft::fuzz::write_scratch("model.safetensors", qft::fuzz::as_text(data, size));
  try {
    const qft::io::SafetensorsFile file(path);
    for (const auto& name : file.names()) {
      if (qft::io::safetensors_to_scalar_type(file.info(name).dtype, "fuzz") != at::ScalarType::Undefined)
        (void)file.tensor(name).sum();
    }
  } catch (const qft::Error&) {
  }
  return 0;
}
