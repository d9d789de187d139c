// The one way qft reads JSON text (data records, config.json, tokenizer.json, adapter_config.json,
// safetensors headers, trainer state). Written by hand rather than nlohmann::json::parse because that
// parser recurses once per nesting level (a line of 100k '[' overflows the stack), throws on a number
// that overflows a double, and rounds integers beyond 64 bits; Python's json, which transformers uses,
// does none of that. This parser is iterative, caps the nesting depth, and reads numbers as Python does:
//   - an integer literal that fits int64/uint64 is an integer; a longer one is kept exactly as its
//     digits (a "big integer", see below) so that tojson writes it back unchanged;
//   - a float literal is the nearest double; one beyond the double range is +-Infinity, one below it 0;
//   - NaN, Infinity and -Infinity are accepted (Python's json accepts them) when allow_non_finite is set;
//     otherwise they, and overflowing floats, are errors that name the line and column.
// Duplicate object keys keep the first position and the last value, as a Python dict does.
// Every error is a qft::Error "SOURCE: line L column C: what was expected"; JsonSyntaxError also carries
// the byte offset for callers that report locations their own way (the JSONL reader).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace qft::json {

struct ReadOptions {
  // Deeper nesting is an error. Python's own json gives up near 1000 levels (RecursionError).
  int max_depth = 512;
  // NaN / Infinity literals and floats beyond the double range: accepted as Python does (data records),
  // or errors (model and tokenizer files, where such a value is always a mistake).
  bool allow_non_finite = false;
  // safetensors forbids duplicate keys in its header; elsewhere the last value wins, as in Python.
  bool reject_duplicate_keys = false;
};

class JsonSyntaxError : public Error {
 public:
  JsonSyntaxError(const std::string& message, std::string reason, size_t byte, size_t line, size_t column)
      : Error(message), reason_(std::move(reason)), byte_(byte), line_(line), column_(column) {}
  const std::string& reason() const { return reason_; }  // without the source and position
  size_t byte() const { return byte_; }                  // 0-based offset in the text
  size_t line() const { return line_; }                  // 1-based
  size_t column() const { return column_; }              // 1-based, in bytes

 private:
  std::string reason_;
  size_t byte_, line_, column_;
};

// `source` names the text in messages (a path, or "path:line" for one JSONL line).
nlohmann::ordered_json parse_ordered(std::string_view text, std::string_view source, const ReadOptions& options = {});
nlohmann::json parse(std::string_view text, std::string_view source, const ReadOptions& options = {});

// read_file + parse; the messages name the path.
nlohmann::json parse_file(const std::string& path, const ReadOptions& options = {});
nlohmann::ordered_json parse_ordered_file(const std::string& path, const ReadOptions& options = {});

// Big integers (beyond int64/uint64) are stored as a binary value with this subtype holding the decimal
// digits (with a leading '-' when negative). nlohmann has no arbitrary-precision number type.
constexpr std::uint64_t kBigIntegerSubtype = 0x6269;  // "bi"
template <typename Json>
bool is_big_integer(const Json& value) {
  return value.is_binary() && value.get_binary().has_subtype() && value.get_binary().subtype() == kBigIntegerSubtype;
}
template <typename Json>
std::string big_integer_digits(const Json& value) {
  const auto& bytes = value.get_binary();
  return std::string(bytes.begin(), bytes.end());
}

// A short, bounded rendering of a value for error messages: at most `max_chars` characters and a few
// levels deep, whatever the size or depth of the value ("[1, 2, [3, …]…").
std::string excerpt(const nlohmann::json& value, size_t max_chars = 80);
std::string excerpt(const nlohmann::ordered_json& value, size_t max_chars = 80);

}  // namespace qft::json
