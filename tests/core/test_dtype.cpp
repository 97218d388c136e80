#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

#include "kv_test_support.hpp"
#include "kvcache/dtype.hpp"

namespace kvcache {
namespace {

TEST(DType, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::kF16), 2);
  EXPECT_EQ(dtype_size(DType::kBF16), 2);
  EXPECT_EQ(dtype_size(DType::kF32), 4);
  EXPECT_EQ(dtype_name(DType::kBF16), "bf16");
}

TEST(Half, KnownValues) {
  EXPECT_EQ(float_to_half_bits(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half_bits(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half_bits(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half_bits(65519.0f), 0x7bff);  // rounds down to max
  EXPECT_EQ(float_to_half_bits(65520.0f), 0x7c00);  // rounds up to Inf
  EXPECT_EQ(float_to_half_bits(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(float_to_half_bits(5.9604644775390625e-8f), 0x0001);   // smallest subnormal
  EXPECT_EQ(float_to_half_bits(2.98023223876953125e-8f), 0x0000);  // half of it: ties to even
  EXPECT_EQ(float_to_half_bits(8.940696716308594e-8f), 0x0002);    // 1.5 ulp: ties to even
  EXPECT_EQ(float_to_half_bits(-0.0f), 0x8000);
  EXPECT_EQ(float_to_half_bits(1.0f + 1.0f / 2048.0f), 0x3c00);  // tie, even stays
  EXPECT_EQ(float_to_half_bits(1.0f + 3.0f / 2048.0f), 0x3c02);  // tie, odd rounds up
  EXPECT_TRUE(std::isnan(half_bits_to_float(float_to_half_bits(std::nanf("")))));
}

TEST(Half, EveryHalfRoundTrips) {
  for (std::uint32_t bits = 0; bits < 0x10000u; ++bits) {
    const auto half = static_cast<std::uint16_t>(bits);
    const float value = half_bits_to_float(half);
    if (std::isnan(value)) {
      EXPECT_EQ(half & 0x7c00u, 0x7c00u);
      continue;
    }
    ASSERT_EQ(float_to_half_bits(value), half) << "bits " << bits;
  }
}

#if defined(__FLT16_MAX__) && !defined(__clang__)
// GCC's _Float16 conversion (libgcc, round to nearest even) is an independent
// reference for random floats across the whole range.
TEST(Half, MatchesCompilerConversionOnRandomFloats) {
  std::mt19937_64 rng(kvcache::testing::test_seed());
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    std::uint32_t b = bits(rng);
    if (i % 2 == 0) b = (b & 0x807fffffu) | ((100u + b % 50u) << 23);  // near half's range
    float value;
    std::memcpy(&value, &b, 4);
    if (std::isnan(value)) continue;
    const _Float16 reference = static_cast<_Float16>(value);
    std::uint16_t expected;
    std::memcpy(&expected, &reference, 2);
    ASSERT_EQ(float_to_half_bits(value), expected) << "float bits " << b;
  }
}
#endif

TEST(BFloat16, RoundsToNearestEven) {
  std::mt19937_64 rng(kvcache::testing::test_seed());
  std::normal_distribution<float> normal(0.0f, 100.0f);
  for (int i = 0; i < 100000; ++i) {
    const float value = normal(rng);
    const std::uint16_t got = float_to_bfloat16_bits(value);
    // The two candidates are the truncation and the next value up (in magnitude).
    std::uint32_t bits;
    std::memcpy(&bits, &value, 4);
    const auto low = static_cast<std::uint16_t>(bits >> 16);
    const auto high = static_cast<std::uint16_t>(low + 1);
    const double error_low = std::fabs(bfloat16_bits_to_float(low) - double{value});
    const double error_high = std::fabs(bfloat16_bits_to_float(high) - double{value});
    const std::uint16_t expected =
        error_low < error_high ? low : (error_high < error_low ? high : ((low & 1) ? high : low));
    ASSERT_EQ(got, expected) << value;
  }
  EXPECT_EQ(float_to_bfloat16_bits(1.0f), 0x3f80);
  EXPECT_TRUE(std::isnan(bfloat16_bits_to_float(float_to_bfloat16_bits(std::nanf("")))));
}

TEST(DType, LoadStoreRoundTrip) {
  std::mt19937_64 rng(kvcache::testing::test_seed());
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    const auto data = kvcache::testing::random_rows(dtype, 64, rng);
    std::vector<std::byte> copy(data.size());
    for (int i = 0; i < 64; ++i)
      store_from_float(copy.data(), dtype, i, load_as_float(data.data(), dtype, i));
    EXPECT_EQ(copy, data) << dtype_name(dtype);
  }
}

}  // namespace
}  // namespace kvcache
