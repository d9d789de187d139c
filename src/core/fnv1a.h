// 64-bit FNV-1a: the one content hash of the project (cache keys, config fingerprints). Not
// cryptographic; it only has to change when the bytes change.
#pragma once

#include <cstdint>
#include <string_view>

namespace qft {

inline uint64_t fnv1a64(std::string_view bytes) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (const char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

}  // namespace qft
