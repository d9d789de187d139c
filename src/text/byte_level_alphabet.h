// The byte-level alphabet of GPT-2 style BPE (`bytes_to_unicode`): every byte is shown as one
// printable character, so that token strings in tokenizer.json never contain raw control bytes
// or spaces (a space is 'Ġ', U+0120).
#pragma once

#include <array>
#include <cstdint>

namespace qft::text {

// Code point standing for each byte.
inline const std::array<uint32_t, 256>& byte_to_code_point() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next_unprintable = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = printable ? b : next_unprintable++;
    }
    return t;
  }();
  return table;
}

// Highest code point of the alphabet + 1 (256 bytes, 68 of them moved above U+00FF).
constexpr uint32_t kByteLevelCodePointLimit = 256 + 68;

// Byte for a code point of the alphabet, or -1.
inline int byte_of_code_point(uint32_t cp) {
  static const std::array<int16_t, kByteLevelCodePointLimit> table = [] {
    std::array<int16_t, kByteLevelCodePointLimit> t{};
    t.fill(-1);
    const auto& forward = byte_to_code_point();
    for (int b = 0; b < 256; ++b) t[forward[b]] = static_cast<int16_t>(b);
    return t;
  }();
  return cp < kByteLevelCodePointLimit ? table[cp] : -1;
}

}  // namespace qft::text
