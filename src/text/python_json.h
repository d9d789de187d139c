// JSON text exactly as Python's `json.dumps(value, ensure_ascii=False)` writes it, which is what the
// `tojson` filter of transformers' chat templates produces: ", " and ": " separators, keys in insertion
// order, non-ASCII characters raw, floats as Python `repr` ("1e-05", "100.0", "1e+16").
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace qft::text {

std::string python_json_dumps(const nlohmann::ordered_json& value);

// Python `repr(float)`: shortest round-trip digits, exponent form when the decimal exponent is < -4
// or >= 16, ".0" appended to integral values; "Infinity"/"-Infinity"/"NaN" as json.dumps writes them.
std::string python_float_repr(double value);

// What Jinja prints for a value, `str(value)` in Python: a string as it is, anything else as `repr`
// ("[{'type': 'text', 'text': 'hi'}]", "True", "None", "inf", "1.5"). The Qwen3 template prints a tool
// message's non-string content this way.
std::string python_str(const nlohmann::ordered_json& value);
// Python `repr`: strings quoted and escaped as Python does (its str.isprintable() decides which
// characters are escaped), lists and dicts with ", " and ": ", floats as repr ("inf", "nan").
std::string python_repr(const nlohmann::ordered_json& value);

}  // namespace qft::text
