// UTF-8 helpers shared by the tokenizer pieces: strict validation (the tokenizer, like Hugging Face
// `tokenizers`, only accepts valid UTF-8), decoding/encoding of single code points and the lossy
// conversion that byte-level decoding needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace qft::text::utf8 {

// Byte offset of the first ill-formed sequence (overlong forms, surrogates, code points above
// U+10FFFF and truncated sequences are ill-formed), or std::string_view::npos when `text` is valid.
size_t find_invalid(std::string_view text);

// Throws qft::Error naming `what` and the byte offset of the first ill-formed sequence.
void check_valid(std::string_view text, std::string_view what);

// Decodes the code point starting at text[pos] (which must be valid UTF-8) and advances pos.
inline uint32_t decode(std::string_view text, size_t& pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const uint32_t lead = s[pos];
  if (lead < 0x80) {
    pos += 1;
    return lead;
  }
  if (lead < 0xE0) {
    const uint32_t cp = ((lead & 0x1F) << 6) | (s[pos + 1] & 0x3F);
    pos += 2;
    return cp;
  }
  if (lead < 0xF0) {
    const uint32_t cp = ((lead & 0x0F) << 12) | ((s[pos + 1] & 0x3F) << 6) | (s[pos + 2] & 0x3F);
    pos += 3;
    return cp;
  }
  const uint32_t cp =
      ((lead & 0x07) << 18) | ((s[pos + 1] & 0x3F) << 12) | ((s[pos + 2] & 0x3F) << 6) | (s[pos + 3] & 0x3F);
  pos += 4;
  return cp;
}

inline void append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Converts arbitrary bytes to valid UTF-8 the way Rust's String::from_utf8_lossy does (which is what
// `tokenizers` decoding uses): every maximal subpart of an ill-formed sequence becomes one U+FFFD.
std::string from_bytes_lossy(std::string_view bytes);

// Unicode White_Space (what Rust's char::is_whitespace tests).
bool is_white_space(uint32_t cp);

}  // namespace qft::text::utf8
