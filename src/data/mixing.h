// Deterministic selection and shuffling of samples from several data sets. Everything is a pure
// function of (data set sizes, ratios/counts, seed): the same on every run, every machine and for any
// number of ranks (ranks read slices of the result later). Uses its own generator, because the
// distributions of <random> are implementation-defined and would differ between standard libraries.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace qft::data {

// SplitMix64: tiny, fast, and fully specified.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [0, bound), without modulo bias. bound > 0.
  uint64_t below(uint64_t bound);

 private:
  uint64_t state_;
};

// 0..n-1 in a seeded random order (Fisher-Yates).
std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed);

struct MixSource {
  int64_t available = 0;
  std::optional<double> ratio;
  std::optional<int64_t> count;
};

struct MixEntry {
  int32_t source = 0;
  int64_t index = 0;  // sample index within its source
};

// How many samples each source contributes:
//  - count: exactly that many (repeating the data set when it is smaller);
//  - ratio (all sources then have one): shares of `total`; without `total`, the largest mixture that
//    repeats no sample (limited by the source that runs out first);
//  - neither: every sample once.
std::vector<int64_t> mixture_counts(const std::vector<MixSource>& sources, std::optional<int64_t> total);

// The mixture in training order: each source's picks (a seeded random subset, or whole passes plus a
// subset when repeating), then all of them shuffled together.
std::vector<MixEntry> plan_mixture(const std::vector<MixSource>& sources, std::optional<int64_t> total, uint64_t seed);

}  // namespace qft::data
