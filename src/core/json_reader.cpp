#include "core/json_reader.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#include "core/files.h"
#include "text/utf8.h"

namespace qft::json {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Length of the UTF-8 sequence starting at s[i] when it is well formed (no overlongs, no surrogates,
// at most U+10FFFF), else 0.
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return 1;
  const auto cont = [&](size_t k) { return k < s.size() && (byte(k) & 0xC0) == 0x80; };
  if (b0 >= 0xC2 && b0 <= 0xDF) return cont(i + 1) ? 2 : 0;
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (!cont(i + 1) || !cont(i + 2)) return 0;
    const unsigned char b1 = byte(i + 1);
    if (b0 == 0xE0 && b1 < 0xA0) return 0;   // overlong
    if (b0 == 0xED && b1 >= 0xA0) return 0;  // surrogate
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (!cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    const unsigned char b1 = byte(i + 1);
    if (b0 == 0xF0 && b1 < 0x90) return 0;  // overlong
    if (b0 == 0xF4 && b1 >= 0x90) return 0;  // beyond U+10FFFF
    return 4;
  }
  return 0;
}

}  // namespace

std::string excerpt(const nlohmann::json& value, size_t max_chars);
std::string excerpt(const nlohmann::ordered_json& value, size_t max_chars);

namespace {

template <typename Json>
class Parser {
 public:
  Parser(std::string_view text, std::string_view source, const ReadOptions& options)
      : text_(text), source_(source), options_(options) {}

  Json parse() {
    skip_space();
    // Containers being filled; the innermost is at the back. Iterative, so depth costs heap, not stack.
    struct Frame {
      Json value;
      std::string key;  // objects: the key whose value is being read
      size_t key_at = 0;
    };
    std::vector<Frame> stack;
    Json root;
    for (;;) {
      // Read one value; containers push a frame and continue with their first element.
      Json value;
      bool have_value = true;
      const char c = peek("a value");
      if (c == '{' || c == '[') {
        if (static_cast<int>(stack.size()) >= options_.max_depth)
          error(pos_, fmt::format("nested deeper than {} levels", options_.max_depth));
        ++pos_;
        skip_space();
        Frame frame;
        frame.value = c == '{' ? Json::object() : Json::array();
        const char close = c == '{' ? '}' : ']';
        if (peek(c == '{' ? "a key or '}'" : "a value or ']'") == close) {
          ++pos_;
          value = std::move(frame.value);
        } else {
          if (c == '{') {
            frame.key_at = pos_;
            frame.key = read_key();
          }
          stack.push_back(std::move(frame));
          have_value = false;
        }
      } else {
        value = read_scalar();
      }
      if (!have_value) continue;
      // Store the value; close every container that ends here.
      for (;;) {
        if (stack.empty()) {
          root = std::move(value);
          skip_space();
          if (pos_ != text_.size()) error(pos_, "extra data after the JSON value");
          return root;
        }
        Frame& top = stack.back();
        const bool is_object = top.value.is_object();
        if (is_object) {
          if (options_.reject_duplicate_keys && top.value.contains(top.key))
            error(top.key_at, fmt::format("duplicate key {}", excerpt(Json(top.key), 60)));
          top.value[top.key] = std::move(value);
        } else {
          top.value.push_back(std::move(value));
        }
        skip_space();
        const char next = peek(is_object ? "',' or '}'" : "',' or ']'");
        if (next == ',') {
          ++pos_;
          skip_space();
          if (is_object) {
            top.key_at = pos_;
            top.key = read_key();
          }
          break;  // read the next element
        }
        if (next != (is_object ? '}' : ']')) error(pos_, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
        ++pos_;
        value = std::move(top.value);
        stack.pop_back();
      }
    }
  }

 private:
  [[noreturn]] void error(size_t byte, const std::string& reason) const {
    size_t line = 1, line_start = 0;
    for (size_t i = 0; i < byte && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        line_start = i + 1;
      }
    }
    const size_t column = byte - line_start + 1;
    throw JsonSyntaxError(fmt::format("{}: line {} column {}: malformed JSON: {}", source_, line, column, reason),
                          reason, byte, line, column);
  }

  void skip_space() {
    while (pos_ < text_.size() && is_space(text_[pos_])) ++pos_;
  }

  char peek(const char* expected) const {
    if (pos_ >= text_.size()) error(pos_, fmt::format("unexpected end of text, expected {}", expected));
    return text_[pos_];
  }

  bool consume_literal(std::string_view literal) {
    if (text_.substr(pos_, literal.size()) != literal) return false;
    pos_ += literal.size();
    return true;
  }

  std::string read_key() {
    if (peek("a key") != '"') error(pos_, "expected a key in double quotes");
    std::string key = read_string();
    skip_space();
    if (peek("':'") != ':') error(pos_, "expected ':' after the key");
    ++pos_;
    skip_space();
    return key;
  }

  Json read_scalar() {
    const char c = text_[pos_];
    if (c == '"') return Json(read_string());
    if (c == '-' || is_digit(c)) {
      if (c == '-' && text_.substr(pos_, 9) == "-Infinity") return non_finite(9, -std::numeric_limits<double>::infinity());
      return read_number();
    }
    if (consume_literal("true")) return Json(true);
    if (consume_literal("false")) return Json(false);
    if (consume_literal("null")) return Json(nullptr);
    if (text_.substr(pos_, 3) == "NaN") return non_finite(3, std::numeric_limits<double>::quiet_NaN());
    if (text_.substr(pos_, 8) == "Infinity") return non_finite(8, std::numeric_limits<double>::infinity());
    error(pos_, "expected a value (object, list, string, number, true, false or null)");
  }

  Json non_finite(size_t length, double value) {
    if (!options_.allow_non_finite)
      error(pos_, fmt::format("'{}' is not a finite number", text_.substr(pos_, length)));
    pos_ += length;
    return Json(value);
  }

  // Python's NUMBER_RE: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?
  Json read_number() {
    const size_t start = pos_;
    const bool negative = text_[pos_] == '-';
    if (negative) ++pos_;
    if (pos_ >= text_.size() || !is_digit(text_[pos_])) error(pos_, "expected a digit");
    if (text_[pos_] == '0') {
      ++pos_;
    } else {
      while (pos_ < text_.size() && is_digit(text_[pos_])) ++pos_;
    }
    bool is_float = false;
    if (pos_ < text_.size() && text_[pos_] == '.' && pos_ + 1 < text_.size() && is_digit(text_[pos_ + 1])) {
      is_float = true;
      ++pos_;
      while (pos_ < text_.size() && is_digit(text_[pos_])) ++pos_;
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      size_t p = pos_ + 1;
      if (p < text_.size() && (text_[p] == '+' || text_[p] == '-')) ++p;
      if (p < text_.size() && is_digit(text_[p])) {
        is_float = true;
        while (p < text_.size() && is_digit(text_[p])) ++p;
        pos_ = p;
      }
    }
    const std::string literal(text_.substr(start, pos_ - start));
    if (!is_float) {
      errno = 0;
      char* end = nullptr;
      if (negative) {
        const long long v = std::strtoll(literal.c_str(), &end, 10);
        if (errno != ERANGE) return Json(static_cast<int64_t>(v));
      } else {
        const unsigned long long v = std::strtoull(literal.c_str(), &end, 10);
        if (errno != ERANGE) {
          if (v <= static_cast<unsigned long long>(std::numeric_limits<int64_t>::max())) return Json(static_cast<int64_t>(v));
          return Json(static_cast<uint64_t>(v));
        }
      }
      // "-0" and the like never get here; beyond 64 bits: keep the digits.
      return Json::binary(typename Json::binary_t::container_type(literal.begin(), literal.end()), kBigIntegerSubtype);
    }
    errno = 0;
    const double v = std::strtod(literal.c_str(), nullptr);
    if (std::isinf(v) && !options_.allow_non_finite) error(start, fmt::format("the number {} overflows a double", literal.size() > 40 ? literal.substr(0, 40) + "…" : literal));
    return Json(v);  // underflow: strtod already gives 0 or the nearest subnormal, as Python does
  }

  uint32_t read_hex4() {
    if (pos_ + 4 > text_.size()) error(pos_, "expected 4 hex digits after \\u");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = text_[pos_ + k];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= static_cast<uint32_t>(h - '0');
      else if (h >= 'a' && h <= 'f') v |= static_cast<uint32_t>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= static_cast<uint32_t>(h - 'A' + 10);
      else error(pos_ + k, "expected 4 hex digits after \\u");
    }
    pos_ += 4;
    return v;
  }

  std::string read_string() {
    const size_t start = pos_;
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (pos_ >= text_.size()) error(start, "unterminated string");
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) error(pos_, "control character in a string (write it as an escape)");
      if (c == '\\') {
        if (pos_ + 1 >= text_.size()) error(pos_, "unterminated string");
        const char e = text_[pos_ + 1];
        pos_ += 2;
        switch (e) {
          case '"': out.push_back('"'); break;
          case '\\': out.push_back('\\'); break;
          case '/': out.push_back('/'); break;
          case 'b': out.push_back('\b'); break;
          case 'f': out.push_back('\f'); break;
          case 'n': out.push_back('\n'); break;
          case 'r': out.push_back('\r'); break;
          case 't': out.push_back('\t'); break;
          case 'u': {
            const size_t escape_at = pos_ - 2;
            uint32_t cp = read_hex4();
            if (cp >= 0xD800 && cp <= 0xDBFF && text_.substr(pos_, 2) == "\\u") {
              const size_t saved = pos_;
              pos_ += 2;
              const uint32_t low = read_hex4();
              if (low >= 0xDC00 && low <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
              } else {
                pos_ = saved;
              }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF)
              error(escape_at, fmt::format("lone surrogate \\u{:04x} (it cannot be written as UTF-8 text)", cp));
            text::utf8::append(out, cp);
            break;
          }
          default: error(pos_ - 2, "invalid escape in a string");
        }
        continue;
      }
      const size_t length = utf8_sequence_length(text_, pos_);
      if (length == 0) error(pos_, "invalid UTF-8 in a string");
      out.append(text_.data() + pos_, length);
      pos_ += length;
    }
  }

  std::string_view text_;
  std::string_view source_;
  ReadOptions options_;
  size_t pos_ = 0;
};

template <typename Json>
void append_excerpt(const Json& value, size_t depth, size_t max_chars, std::string& out) {
  if (out.size() >= max_chars) return;
  if (value.is_object() || value.is_array()) {
    if (value.empty()) {
      out += value.is_object() ? "{}" : "[]";
      return;
    }
    if (depth >= 3) {
      out += value.is_object() ? "{…}" : "[…]";
      return;
    }
    out += value.is_object() ? "{" : "[";
    bool first = true;
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (out.size() >= max_chars) return;
      if (!first) out += ", ";
      first = false;
      if (value.is_object()) out += Json(it.key()).dump() + ": ";
      append_excerpt(*it, depth + 1, max_chars, out);
    }
    out += value.is_object() ? "}" : "]";
  } else if (is_big_integer(value)) {
    out += big_integer_digits(value);
  } else if (value.is_string()) {
    const std::string& s = value.template get_ref<const typename Json::string_t&>();
    // A string is cut before dumping, so a 1 GB string costs nothing; invalid UTF-8 is replaced.
    const std::string head = s.size() > max_chars ? s.substr(0, max_chars) : s;
    out += Json(head).dump(-1, ' ', false, Json::error_handler_t::replace);
  } else if (value.is_number_float() && !std::isfinite(value.template get<double>())) {
    const double v = value.template get<double>();
    out += std::isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
  } else if (value.is_binary()) {
    out += "<binary>";
  } else {
    out += value.dump();
  }
}

template <typename Json>
std::string excerpt_of(const Json& value, size_t max_chars) {
  std::string out;
  append_excerpt(value, 0, max_chars, out);
  if (out.size() > max_chars) {
    // Cut at a character boundary.
    size_t cut = max_chars;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
    out += "…";
  }
  return out;
}

}  // namespace

nlohmann::ordered_json parse_ordered(std::string_view text, std::string_view source, const ReadOptions& options) {
  return Parser<nlohmann::ordered_json>(text, source, options).parse();
}

nlohmann::json parse(std::string_view text, std::string_view source, const ReadOptions& options) {
  return Parser<nlohmann::json>(text, source, options).parse();
}

nlohmann::json parse_file(const std::string& path, const ReadOptions& options) {
  return parse(read_file(path), path, options);
}

nlohmann::ordered_json parse_ordered_file(const std::string& path, const ReadOptions& options) {
  return parse_ordered(read_file(path), path, options);
}

std::string excerpt(const nlohmann::json& value, size_t max_chars) { return excerpt_of(value, max_chars); }
std::string excerpt(const nlohmann::ordered_json& value, size_t max_chars) { return excerpt_of(value, max_chars); }

}  // namespace qft::json
