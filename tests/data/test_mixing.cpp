// Mixing and shuffling are pure functions of sizes, ratios/counts and the seed.
#include <algorithm>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "core/error.h"
#include "data/mixing.h"

namespace qft::data {
namespace {

TEST(SplitMix64, MatchesTheReferenceSequence) {
  // First outputs of the published SplitMix64 for seed 0 (Vigna's splitmix64.c).
  SplitMix64 rng(0);
  EXPECT_EQ(rng.next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(rng.next(), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(rng.next(), 0x06c45d188009454fULL);
}

TEST(SplitMix64, BelowStaysInRange) {
  SplitMix64 rng(7);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(rng.below(3), 3u);
}

TEST(ShuffledIndices, IsASeededPermutation) {
  const auto a = shuffled_indices(100, 1);
  const auto b = shuffled_indices(100, 1);
  const auto c = shuffled_indices(100, 2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
}

TEST(MixtureCounts, EverythingOnceWithoutRatioOrCount) {
  EXPECT_EQ(mixture_counts({{10, {}, {}}, {5, {}, {}}}, std::nullopt), (std::vector<int64_t>{10, 5}));
}

TEST(MixtureCounts, CountsAreExactAndMayRepeat) {
  EXPECT_EQ(mixture_counts({{10, {}, 3}, {5, {}, 12}}, std::nullopt), (std::vector<int64_t>{3, 12}));
}

TEST(MixtureCounts, RatiosUseTheLargestMixtureWithoutRepeats) {
  // 25% reasoning / 75% chat: 100 reasoning samples would allow 400, 600 chat samples allow 800.
  EXPECT_EQ(mixture_counts({{100, 0.25, {}}, {600, 0.75, {}}}, std::nullopt), (std::vector<int64_t>{100, 300}));
  // Ratios need not sum to one.
  EXPECT_EQ(mixture_counts({{100, 1.0, {}}, {600, 3.0, {}}}, std::nullopt), (std::vector<int64_t>{100, 300}));
}

TEST(MixtureCounts, RatiosWithATotalRepeatWhenNeeded) {
  EXPECT_EQ(mixture_counts({{10, 0.5, {}}, {10, 0.5, {}}}, 40), (std::vector<int64_t>{20, 20}));
}

TEST(PlanMixture, DeterministicShuffledAndProportional) {
  const std::vector<MixSource> sources = {{100, 0.25, {}}, {600, 0.75, {}}};
  const auto a = plan_mixture(sources, std::nullopt, 42);
  EXPECT_EQ(a.size(), 400u);
  const auto b = plan_mixture(sources, std::nullopt, 42);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].source, b[i].source);
    EXPECT_EQ(a[i].index, b[i].index);
  }
  std::map<int, int64_t> per_source;
  std::set<std::pair<int, int64_t>> distinct;
  for (const auto& e : a) {
    ++per_source[e.source];
    distinct.insert({e.source, e.index});
  }
  EXPECT_EQ(per_source[0], 100);
  EXPECT_EQ(per_source[1], 300);
  EXPECT_EQ(distinct.size(), 400u);  // no repeats when the mixture fits
  // Shuffled: the first 100 are not all from one source.
  int first_hundred_from_0 = 0;
  for (size_t i = 0; i < 100; ++i) first_hundred_from_0 += a[i].source == 0;
  EXPECT_GT(first_hundred_from_0, 5);
  EXPECT_LT(first_hundred_from_0, 60);
  const auto other_seed = plan_mixture(sources, std::nullopt, 43);
  EXPECT_FALSE(std::equal(a.begin(), a.end(), other_seed.begin(),
                          [](const MixEntry& x, const MixEntry& y) { return x.source == y.source && x.index == y.index; }));
}

TEST(PlanMixture, RepeatsUseWholePassesFirst) {
  const auto plan = plan_mixture({{3, {}, 7}}, std::nullopt, 1);
  std::map<int64_t, int> uses;
  for (const auto& e : plan) ++uses[e.index];
  ASSERT_EQ(uses.size(), 3u);
  for (const auto& [index, count] : uses) {
    EXPECT_GE(count, 2);
    EXPECT_LE(count, 3);
  }
}

TEST(PlanMixture, RequestingSamplesFromAnEmptySourceIsAnError) {
  EXPECT_THROW(plan_mixture({{0, {}, 5}}, std::nullopt, 1), Error);
}

}  // namespace
}  // namespace qft::data
