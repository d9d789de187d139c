// SplitMix64 (Vigna, splitmix64.c): fully specified, so a seed gives the same numbers with every
// compiler and standard library (the distributions of <random> do not). Shared by the data mixing
// and the LoRA dropout seeds.
#pragma once

#include <cstdint>

namespace qft {

constexpr uint64_t kSplitMix64Increment = 0x9e3779b97f4a7c15ULL;

// The generator's output once its state has advanced to `z`; also a strong 64-bit hash finaliser.
constexpr uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace qft
