// core/json_reader, the one JSON reader: never a crash, and what it reads, python_json_dumps writes
// back so that reading it again gives the same text (tojson round trip).
#include "core/json_reader.h"
#include "fuzz_support.h"
#include "text/python_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = qft::fuzz::as_text(data, size);
  for (const bool python : {false, true}) {
    qft::json::ReadOptions options;
    options.allow_non_finite = python;
    options.reject_duplicate_keys = !python;
    nlohmann::ordered_json value;
    try {
      value = qft::json::parse_ordered(text, "fuzz", options);
    } catch (const qft::Error&) {
      continue;
    }
    const std::string dumped = qft::text::python_json_dumps(value);
    const std::string again = qft::text::python_json_dumps(qft::json::parse_ordered(dumped, "round trip", options));
    if (again != dumped) __builtin_trap();
    (void)qft::text::python_repr(value);
    if (qft::json::excerpt(value).size() > 80 + 3) __builtin_trap();
  }
  return 0;
}
