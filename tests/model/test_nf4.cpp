// The NF4 CPU reference (src/model/nf4.h) against the NF4 definition (formats.md §4): nearest code-book
// value, bitsandbytes' nibble order on hand-made inputs, the double-quantization map and round-trip bounds.
// Byte-for-byte equality with bitsandbytes itself is checked on the GPU machine (kernels/dev/nf4_check.cu
// with kernels/dev/nf4_bnb_dump.py): bitsandbytes' quantizer needs CUDA.
#include "model/nf4.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

namespace nf4 = qft::model::nf4;

namespace {

float bf16_round(float x) { return nf4::bf16_bits_to_float(nf4::float_to_bf16_bits(x)); }

std::vector<float> random_bf16(size_t n, double stddev, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = bf16_round(static_cast<float>(dist(gen)));
  return v;
}

// Distance from x to the nearest of `count` grid values.
double nearest_distance(const float* grid, int count, double x) {
  double best = INFINITY;
  for (int j = 0; j < count; ++j) best = std::min(best, std::fabs(x - grid[j]));
  return best;
}

int code_at(const nf4::Quantized& q, int64_t i) {
  const uint8_t b = q.packed[static_cast<size_t>(i / 2)];
  return i % 2 == 0 ? b >> 4 : b & 0x0f;
}

}  // namespace

TEST(Nf4, EachCodebookValueMapsToItsOwnCode) {
  for (int q = 0; q < 16; ++q) EXPECT_EQ(nf4::nf4_code(nf4::kCodebook[q]), q) << "code " << q;
}

TEST(Nf4, CodeIsTheNearestCodebookValue) {
  std::mt19937_64 gen(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int i = 0; i < 200000; ++i) {
    const float x = dist(gen);
    const int q = nf4::nf4_code(x);
    EXPECT_LE(std::fabs(x - nf4::kCodebook[q]), nearest_distance(nf4::kCodebook, 16, x) + 1e-7) << "x = " << x;
  }
}

TEST(Nf4, PacksFirstElementIntoHighNibble) {
  // absmax 2: scaled values -1, 1, 0, 0.25 -> codes 0, 15, 7, 10 (0.2461 is the nearest of 0.1609 / 0.2461 / 0.3379).
  const std::vector<float> v = {-2.0f, 2.0f, 0.0f, 0.5f};
  const nf4::Quantized q = nf4::quantize(v.data(), 4, false);
  ASSERT_EQ(q.packed.size(), 2u);
  EXPECT_EQ(q.packed[0], 0x0F);
  EXPECT_EQ(q.packed[1], 0x7A);
  ASSERT_EQ(q.absmax.size(), 1u);
  EXPECT_EQ(q.absmax[0], 2.0f);
}

TEST(Nf4, OddCountPadsTheLastLowNibbleWithTheCodeOfZero) {
  const std::vector<float> v = {-2.0f, 2.0f, -2.0f};
  const nf4::Quantized q = nf4::quantize(v.data(), 3, false);
  ASSERT_EQ(q.packed.size(), 2u);
  EXPECT_EQ(q.packed[0], 0x0F);
  EXPECT_EQ(q.packed[1], 0x07);  // code 0 for -1.0 in the high nibble, 7 (0.0) as padding
  const std::vector<uint16_t> back = nf4::dequantize_bf16(q);
  ASSERT_EQ(back.size(), 3u);
  EXPECT_EQ(nf4::bf16_bits_to_float(back[2]), -2.0f);
}

TEST(Nf4, BlocksHaveTheirOwnAbsmaxAndAShortLastBlock) {
  std::vector<float> v(64 + 64 + 10);
  std::fill(v.begin(), v.begin() + 64, 1.0f);         // block 0: all at +absmax -> code 15
  std::fill(v.begin() + 64, v.begin() + 128, -3.0f);  // block 1: all at -absmax -> code 0
  std::fill(v.begin() + 128, v.end(), 0.0f);          // block 2 (10 elements): all zero
  const nf4::Quantized q = nf4::quantize(v.data(), static_cast<int64_t>(v.size()), false);
  ASSERT_EQ(q.absmax, (std::vector<float>{1.0f, 3.0f, 0.0f}));
  for (int i = 0; i < 32; ++i) EXPECT_EQ(q.packed[i], 0xFF);
  for (int i = 32; i < 64; ++i) EXPECT_EQ(q.packed[i], 0x00);
  // An all-zero block: 0 * (1/0) is NaN, which bitsandbytes' comparison tree sends to code 0; it dequantizes to 0.
  for (int i = 64; i < 69; ++i) EXPECT_EQ(q.packed[i], 0x00);
  const std::vector<float> back = nf4::dequantize_float(q);
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(back[i], v[i]) << "element " << i;
}

TEST(Nf4, RoundTripPicksTheNearestGridValueOfEachBlock) {
  const int64_t n = 64 * 1000 + 37;
  const std::vector<float> v = random_bf16(n, 1.0, 11);
  const nf4::Quantized q = nf4::quantize(v.data(), n, false);
  const std::vector<float> back = nf4::dequantize_float(q);
  const std::vector<uint16_t> bits = nf4::dequantize_bf16(q);
  for (int64_t i = 0; i < n; ++i) {
    const float a = q.absmax[i / 64];
    float grid[16];
    for (int j = 0; j < 16; ++j) grid[j] = nf4::kCodebook[j] * a;
    ASSERT_LE(std::fabs(double(v[i]) - back[i]), nearest_distance(grid, 16, v[i]) + 1e-6 * a) << "element " << i;
    // The widest code-book gap is 0.3038 (-1.0 to -0.696), so the error is at most 0.152 of the block's absmax.
    ASSERT_LE(std::fabs(double(v[i]) - back[i]), 0.1520 * a) << "element " << i;
    ASSERT_EQ(bits[i], nf4::float_to_bf16_bits(back[i]));
  }
}

TEST(Nf4, DynamicMapIsBitsandbytesRecipe) {
  // create_dynamic_map(signed=True): for i in 0..6, 2^i + 1 boundaries linspace(0.1, 1); the midpoints scaled
  // by +-10^(i-6); plus 0 and 1; sorted. Recomputed in double, the stored fp32 table agrees to fp32 rounding.
  std::vector<double> expected = {0.0, 1.0};
  for (int i = 0; i < 7; ++i) {
    const int items = (1 << i) + 1;
    for (int j = 0; j + 1 < items; ++j) {
      const double b0 = 0.1 + 0.9 * j / (items - 1), b1 = 0.1 + 0.9 * (j + 1) / (items - 1);
      const double m = std::pow(10.0, i - 6) * (b0 + b1) / 2;
      expected.push_back(m);
      expected.push_back(-m);
    }
  }
  std::sort(expected.begin(), expected.end());
  ASSERT_EQ(expected.size(), 256u);
  for (int k = 0; k < 256; ++k) {
    EXPECT_NEAR(nf4::kDynamicMap[k], expected[k], 1e-6 * std::fabs(expected[k])) << "entry " << k;
    if (k > 0) EXPECT_LT(nf4::kDynamicMap[k - 1], nf4::kDynamicMap[k]) << "entry " << k;
  }
  EXPECT_EQ(nf4::kDynamicMap[127], 0.0f);
  EXPECT_EQ(nf4::kDynamicMap[255], 1.0f);
}

TEST(Nf4, DynamicCodeIsTheNearestMapValue) {
  std::mt19937_64 gen(3);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int i = 0; i < 200000; ++i) {
    // Spread over the map's decades: x = +-u * 10^-e.
    const float x = dist(gen) * std::pow(10.0f, -static_cast<float>(i % 7));
    const int q = nf4::dynamic_code(nf4::kDynamicMap, x);
    EXPECT_LE(std::fabs(x - nf4::kDynamicMap[q]), nearest_distance(nf4::kDynamicMap, 256, x) + 1e-12) << "x = " << x;
  }
}

TEST(Nf4, DoubleQuantizationOfTheAbsmax) {
  const int64_t n = 64 * 256 * 3 + 64 * 17 + 5;  // three full chunks of 256 blocks and a short one
  std::vector<float> v = random_bf16(n, 0.02, 5);
  for (int64_t i = 0; i < n; i += 997) v[i] *= 20.0f;  // outliers spread the absmax
  const nf4::Quantized q = nf4::quantize(v.data(), n, true);
  ASSERT_TRUE(q.nested);
  const size_t blocks = q.absmax.size();
  ASSERT_EQ(blocks, static_cast<size_t>((n + 63) / 64));
  ASSERT_EQ(q.absmax2.size(), (blocks + 255) / 256);
  double mean = 0;
  for (float a : q.absmax) mean += a;
  EXPECT_EQ(q.offset, static_cast<float>(mean / blocks));
  const std::vector<float> rebuilt = nf4::dequantize_absmax(q);
  float max_gap = 0;
  for (int k = 1; k < 256; ++k) max_gap = std::max(max_gap, nf4::kDynamicMap[k] - nf4::kDynamicMap[k - 1]);
  for (size_t c = 0; c < q.absmax2.size(); ++c) {
    float m = 0;
    for (size_t b = c * 256; b < std::min(blocks, c * 256 + 256); ++b) m = std::max(m, std::fabs(q.absmax[b] - q.offset));
    EXPECT_EQ(q.absmax2[c], m) << "chunk " << c;
  }
  for (size_t b = 0; b < blocks; ++b) {
    const float s = q.absmax2[b / 256];
    const double x = (q.absmax[b] - q.offset) / s;
    EXPECT_LE(std::fabs(x - nf4::kDynamicMap[q.absmax_codes[b]]), nearest_distance(nf4::kDynamicMap, 256, x) + 1e-6);
    // Nearest map value: the rebuilt absmax is off by at most half the map's widest gap times absmax2.
    EXPECT_LE(std::fabs(rebuilt[b] - q.absmax[b]), 0.5f * max_gap * s * 1.0001f + 1e-7f) << "block " << b;
  }
  // The weights round-trip through the rebuilt absmax: nearest grid value of each block's rebuilt scale.
  const std::vector<float> back = nf4::dequantize_float(q);
  for (int64_t i = 0; i < n; ++i) {
    const float a = rebuilt[i / 64];
    EXPECT_FLOAT_EQ(back[i], nf4::kCodebook[code_at(q, i)] * a);
  }
}

TEST(Nf4, Bf16RoundsToNearestEven) {
  EXPECT_EQ(nf4::float_to_bf16_bits(1.0f), 0x3F80);
  EXPECT_EQ(nf4::float_to_bf16_bits(1.0f + 1.0f / 256), 0x3F80);      // tie -> even (down)
  EXPECT_EQ(nf4::float_to_bf16_bits(1.0f + 3.0f / 256), 0x3F82);      // tie -> even (up)
  EXPECT_EQ(nf4::float_to_bf16_bits(1.0f + 1.5f / 256), 0x3F81);      // above the tie
  EXPECT_EQ(nf4::float_to_bf16_bits(-2.0f), 0xC000);
  EXPECT_TRUE(std::isnan(nf4::bf16_bits_to_float(nf4::float_to_bf16_bits(NAN))));
}

TEST(Nf4, RejectsBadArguments) {
  const std::vector<float> v(64, 1.0f);
  try {
    nf4::quantize(v.data(), 64, false, 48);
    FAIL() << "blocksize 48 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("blocksize must be a power of two in [32, 4096], got 48"), std::string::npos);
  }
  EXPECT_THROW(nf4::quantize(v.data(), 0, false), std::invalid_argument);
}
