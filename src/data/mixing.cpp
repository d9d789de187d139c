#include "data/mixing.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/splitmix64.h"

namespace qft::data {

uint64_t SplitMix64::next() { return splitmix64_mix(state_ += kSplitMix64Increment); }

uint64_t SplitMix64::below(uint64_t bound) {
  // Rejection sampling: discard the top partial block of the 64-bit range.
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % bound;
  uint64_t value = next();
  while (value >= limit) value = next();
  return value % bound;
}

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  SplitMix64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

std::vector<int64_t> mixture_counts(const std::vector<MixSource>& sources, std::optional<int64_t> total) {
  std::vector<int64_t> counts(sources.size(), 0);
  double ratio_sum = 0.0;
  for (const auto& source : sources) ratio_sum += source.ratio.value_or(0.0);
  const bool by_ratio = ratio_sum > 0.0;

  if (by_ratio && !total) {
    // Largest total for which no source needs more samples than it has.
    double largest = std::numeric_limits<double>::infinity();
    for (const auto& source : sources) {
      if (source.ratio) largest = std::min(largest, static_cast<double>(source.available) * ratio_sum / *source.ratio);
    }
    total = static_cast<int64_t>(std::floor(largest + 1e-9));
  }
  for (size_t i = 0; i < sources.size(); ++i) {
    const MixSource& source = sources[i];
    if (source.count) {
      counts[i] = *source.count;
    } else if (source.ratio) {
      counts[i] = static_cast<int64_t>(std::llround(*source.ratio / ratio_sum * static_cast<double>(*total)));
    } else {
      counts[i] = source.available;
    }
    QFT_CHECK(source.available > 0 || counts[i] == 0, "data set {} has no usable samples but {} were requested", i, counts[i]);
  }
  return counts;
}

std::vector<MixEntry> plan_mixture(const std::vector<MixSource>& sources, std::optional<int64_t> total, uint64_t seed) {
  const std::vector<int64_t> counts = mixture_counts(sources, total);
  std::vector<MixEntry> mixture;
  for (size_t s = 0; s < sources.size(); ++s) {
    const int64_t available = sources[s].available;
    if (available == 0) continue;
    // Each source has its own stream, so its picks do not depend on the other sources.
    const uint64_t source_seed = SplitMix64(seed ^ (0x5851f42d4c957f2dULL * (s + 1))).next();
    int64_t remaining = counts[s];
    for (uint64_t pass = 0; remaining > 0; ++pass) {
      const std::vector<int64_t> order = shuffled_indices(available, source_seed + pass);
      const int64_t take = std::min(remaining, available);
      for (int64_t k = 0; k < take; ++k) mixture.push_back({static_cast<int32_t>(s), order[static_cast<size_t>(k)]});
      remaining -= take;
    }
  }
  const std::vector<int64_t> order = shuffled_indices(static_cast<int64_t>(mixture.size()), seed);
  std::vector<MixEntry> shuffled(mixture.size());
  for (size_t i = 0; i < order.size(); ++i) shuffled[i] = mixture[static_cast<size_t>(order[i])];
  return shuffled;
}

}  // namespace qft::data
