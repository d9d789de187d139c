#include "text/python_json.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <iterator>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "core/json_reader.h"

namespace qft::text {

namespace {

void append_string(std::string& out, const std::string& text) {
  // json.dumps(ensure_ascii=False) escapes only '"', '\\' and the C0 controls; everything else is raw.
  out.push_back('"');
  for (const char ch : text) {
    const auto byte = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (byte < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", byte);
          out += escaped;
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
}

}  // namespace

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  if (value == 0.0) return std::signbit(value) ? "-0.0" : "0.0";

  // Shortest round-trip digits in scientific form ("d.ddde[+-]x"), then laid out by Python's rules.
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
  const std::string scientific(buffer, result.ptr);
  const size_t e_pos = scientific.find('e');
  std::string mantissa = scientific.substr(0, e_pos);
  const int exponent = std::stoi(scientific.substr(e_pos + 1));
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (const char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  // Python's decpt: value = 0.DIGITS * 10^decpt.
  const int decpt = exponent + 1;
  std::string out = negative ? "-" : "";
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out += "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
    } else if (static_cast<size_t>(decpt) >= digits.size()) {
      out += digits + std::string(static_cast<size_t>(decpt) - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(decpt)) + "." + digits.substr(static_cast<size_t>(decpt));
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char exponent_text[16];
    std::snprintf(exponent_text, sizeof exponent_text, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += exponent_text;
  }
  return out;
}

namespace {

#include "text/python_printable.inc"

bool python_printable(uint32_t cp) {
  const auto* begin = std::begin(kPythonUnprintableRanges);
  const auto* end = std::end(kPythonUnprintableRanges);
  const auto* it = std::upper_bound(begin, end, cp, [](uint32_t value, const uint32_t (&range)[2]) { return value < range[0]; });
  if (it == begin) return true;
  --it;
  return cp > (*it)[1];
}

// The code point at text[pos] (valid UTF-8: every string here was checked when it was read).
uint32_t next_code_point(const std::string& text, size_t& pos) {
  const auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(text[k])); };
  const uint32_t b0 = byte(pos);
  if (b0 < 0x80 || pos + 1 >= text.size()) return byte(pos++);
  if (b0 < 0xE0) {
    const uint32_t cp = ((b0 & 0x1F) << 6) | (byte(pos + 1) & 0x3F);
    pos += 2;
    return cp;
  }
  if (b0 < 0xF0 && pos + 2 < text.size()) {
    const uint32_t cp = ((b0 & 0x0F) << 12) | ((byte(pos + 1) & 0x3F) << 6) | (byte(pos + 2) & 0x3F);
    pos += 3;
    return cp;
  }
  if (pos + 3 < text.size()) {
    const uint32_t cp = ((b0 & 0x07) << 18) | ((byte(pos + 1) & 0x3F) << 12) | ((byte(pos + 2) & 0x3F) << 6) | (byte(pos + 3) & 0x3F);
    pos += 4;
    return cp;
  }
  return byte(pos++);
}

// CPython's unicode_repr.
void append_string_repr(std::string& out, const std::string& text) {
  const bool has_single = text.find('\'') != std::string::npos;
  const bool has_double = text.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  out.push_back(quote);
  for (size_t pos = 0; pos < text.size();) {
    const size_t start = pos;
    const uint32_t cp = next_code_point(text, pos);
    char escaped[16];
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(cp));
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp < 0x20 || cp == 0x7F) {
      std::snprintf(escaped, sizeof escaped, "\\x%02x", cp);
      out += escaped;
    } else if (cp < 0x7F || python_printable(cp)) {
      out.append(text, start, pos - start);
    } else if (cp <= 0xFF) {
      std::snprintf(escaped, sizeof escaped, "\\x%02x", cp);
      out += escaped;
    } else if (cp <= 0xFFFF) {
      std::snprintf(escaped, sizeof escaped, "\\u%04x", cp);
      out += escaped;
    } else {
      std::snprintf(escaped, sizeof escaped, "\\U%08x", cp);
      out += escaped;
    }
  }
  out.push_back(quote);
}

// How json.dumps and repr spell the leaves; the structure ("[a, b]", "{k: v}") is the same for both.
struct PythonSpelling {
  const char* none;
  const char* true_;
  const char* false_;
  std::string (*number)(double);
  void (*string)(std::string&, const std::string&);
};

std::string dumps_float(double v) { return python_float_repr(v); }
std::string repr_float(double v) {
  return std::isnan(v) ? "nan" : std::isinf(v) ? (v > 0 ? "inf" : "-inf") : python_float_repr(v);
}

constexpr PythonSpelling kDumps = {"null", "true", "false", dumps_float, append_string};
constexpr PythonSpelling kRepr = {"None", "True", "False", repr_float, append_string_repr};

void append_python(std::string& out, const nlohmann::ordered_json& value, const PythonSpelling& spell) {
  using Type = nlohmann::ordered_json::value_t;
  switch (value.type()) {
    case Type::null: out += spell.none; break;
    case Type::boolean: out += value.get<bool>() ? spell.true_ : spell.false_; break;
    case Type::number_integer: out += std::to_string(value.get<int64_t>()); break;
    case Type::number_unsigned: out += std::to_string(value.get<uint64_t>()); break;
    case Type::number_float: out += spell.number(value.get<double>()); break;
    case Type::string: spell.string(out, value.get_ref<const std::string&>()); break;
    case Type::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& item : value) {
        if (!first) out += ", ";
        first = false;
        append_python(out, item, spell);
      }
      out.push_back(']');
      break;
    }
    case Type::object: {
      out.push_back('{');
      bool first = true;
      for (const auto& [key, item] : value.items()) {
        if (!first) out += ", ";
        first = false;
        spell.string(out, key);
        out += ": ";
        append_python(out, item, spell);
      }
      out.push_back('}');
      break;
    }
    case Type::binary:
      // Integers beyond 64 bits, read by core/json_reader: written back digit for digit, as Python does.
      out += json::is_big_integer(value) ? json::big_integer_digits(value) : spell.none;
      break;
    case Type::discarded: out += spell.none; break;
  }
}

}  // namespace

std::string python_repr(const nlohmann::ordered_json& value) {
  std::string out;
  append_python(out, value, kRepr);
  return out;
}

std::string python_str(const nlohmann::ordered_json& value) {
  if (value.is_string()) return value.get<std::string>();
  return python_repr(value);
}

std::string python_json_dumps(const nlohmann::ordered_json& value) {
  std::string out;
  append_python(out, value, kDumps);
  return out;
}

}  // namespace qft::text
