#include "text/utf8.h"

#include <cstring>

#include "core/error.h"

namespace qft::text::utf8 {
namespace {

// Length of the well-formed sequence starting at s[pos] (Unicode Table 3-7), or, when it is
// ill-formed, 0 with `maximal_subpart` set to the bytes that belong to the broken sequence.
size_t well_formed_length(const unsigned char* s, size_t size, size_t pos, size_t& maximal_subpart) {
  const unsigned char lead = s[pos];
  size_t length = 0;
  unsigned char second_low = 0x80, second_high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) second_low = 0xA0;   // no overlong forms
    if (lead == 0xED) second_high = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) second_low = 0x90;   // no overlong forms
    if (lead == 0xF4) second_high = 0x8F;  // nothing above U+10FFFF
  } else {
    maximal_subpart = 1;
    return 0;
  }
  for (size_t k = 1; k < length; ++k) {
    const unsigned char low = k == 1 ? second_low : 0x80;
    const unsigned char high = k == 1 ? second_high : 0xBF;
    if (pos + k >= size || s[pos + k] < low || s[pos + k] > high) {
      maximal_subpart = k;
      return 0;
    }
  }
  return length;
}

}  // namespace

size_t find_invalid(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t size = text.size();
  size_t pos = 0;
  while (pos < size) {
    // ASCII runs dominate real text: test eight bytes at once.
    if (pos + 8 <= size) {
      uint64_t word;
      std::memcpy(&word, s + pos, 8);
      if ((word & 0x8080808080808080ULL) == 0) {
        pos += 8;
        continue;
      }
    }
    if (s[pos] < 0x80) {
      ++pos;
      continue;
    }
    size_t subpart = 0;
    const size_t length = well_formed_length(s, size, pos, subpart);
    if (length == 0) return pos;
    pos += length;
  }
  return std::string_view::npos;
}

void check_valid(std::string_view text, std::string_view what) {
  const size_t bad = find_invalid(text);
  if (bad == std::string_view::npos) return;
  const auto byte = static_cast<unsigned>(static_cast<unsigned char>(text[bad]));
  fail("{}: invalid UTF-8 at byte offset {} (byte 0x{:02X}); the tokenizer accepts valid UTF-8 only", what, bad,
       byte);
}

std::string from_bytes_lossy(std::string_view bytes) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t size = bytes.size();
  std::string out;
  out.reserve(size);
  size_t pos = 0;
  while (pos < size) {
    if (s[pos] < 0x80) {
      out.push_back(static_cast<char>(s[pos++]));
      continue;
    }
    size_t subpart = 0;
    const size_t length = well_formed_length(s, size, pos, subpart);
    if (length > 0) {
      out.append(bytes.data() + pos, length);
      pos += length;
    } else {
      out.append("\xEF\xBF\xBD");
      pos += subpart;
    }
  }
  return out;
}

bool is_white_space(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

}  // namespace qft::text::utf8
