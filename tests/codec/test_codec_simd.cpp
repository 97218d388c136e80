// The CPU backend's AVX2 + F16C fp8 and KIVI paths (detail/cpu/codec_simd.hpp)
// against the scalar row math they replace (Fp8Rows, KiviRows): the same
// codes, scales, decoded values and non-finite counts, bit for bit, on fresh
// random rows with the cases that take the branches (every fp16 bit pattern
// for fp8; zeros of either sign, constant and subnormal groups, values at the
// fp16 limit and non-finite values for KIVI).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/codec/codecs.hpp"
#include "kvcache/detail/cpu/codec_simd.hpp"

namespace kvcache::testing {
namespace {

#if KVCACHE_INT8_SIMD

using detail::cpu::simd::available;

#define KVCACHE_REQUIRE_AVX2() \
  if (!available()) GTEST_SKIP() << "this CPU lacks AVX2 + F16C: only the scalar path runs"

std::vector<std::uint32_t> float_bits_of(const std::vector<float>& values) {
  std::vector<std::uint32_t> bits(values.size());
  std::memcpy(bits.data(), values.data(), values.size() * sizeof(float));
  return bits;
}

// Every fp16 bit pattern, as rows of `dim` (a tail shorter than 32 included
// when dim is not a multiple of 32), under scales that put values in every
// e4m3 range: subnormal, normal, saturated.
TEST(Fp8Vector, EncodesEveryHalfAsTheScalarCodec) {
  KVCACHE_REQUIRE_AVX2();
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<std::uint16_t> all(65536);
  for (std::uint32_t i = 0; i < all.size(); ++i)
    all[i] = static_cast<std::uint16_t>(i);
  std::shuffle(all.begin(), all.end(), rng);
  std::uniform_real_distribution<float> log_scale(-30.0f, 30.0f);
  std::vector<float> scales = {1.0f, 1.0f / 448.0f, 3.7f / 448.0f, kFp8MinScale, 65504.0f};
  for (int i = 0; i < 6; ++i)
    scales.push_back(std::exp2(log_scale(rng)));
  for (const std::int32_t dim : {1024, 72, 8, 3}) {
    for (const float scale : scales) {
      SCOPED_TRACE(::testing::Message() << "dim " << dim << " scale " << scale);
      for (std::size_t first = 0; first + dim <= all.size(); first += dim) {
        const std::uint16_t* row = all.data() + first;
        std::vector<std::uint8_t> scalar(dim), vector(dim, 0xaa);
        const std::int32_t bad_scalar = Fp8Rows::encode(
            dim, [&](std::int32_t i) { return half_bits_to_float(row[i]); }, scalar.data(), nullptr,
            &scale);
        const std::int32_t bad_vector = detail::cpu::simd::fp8_encode_f16(
            row, dim, codec::div_exact(1.0f, scale), vector.data());
        ASSERT_EQ(vector, scalar) << "row at " << first;
        ASSERT_EQ(bad_vector, bad_scalar) << "row at " << first;
      }
    }
  }
}

// Every code, in rows of several lengths, decoded to fp16 and to float.
TEST(Fp8Vector, DecodesEveryCodeAsTheScalarCodec) {
  KVCACHE_REQUIRE_AVX2();
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> codes(4096);
  for (std::size_t i = 0; i < codes.size(); ++i)
    codes[i] = static_cast<std::uint8_t>(i < 256 ? i : rng());
  std::shuffle(codes.begin(), codes.end(), rng);
  std::uniform_real_distribution<float> log_scale(-30.0f, 30.0f);
  std::vector<float> scales = {1.0f, kFp8MinScale, 65504.0f, 3.0e38f};
  for (int i = 0; i < 6; ++i)
    scales.push_back(std::exp2(log_scale(rng)));
  for (const std::int32_t dim : {4096, 136, 5}) {
    for (const float scale : scales) {
      SCOPED_TRACE(::testing::Message() << "dim " << dim << " scale " << scale);
      std::vector<float> scalar(dim), as_float(dim);
      std::vector<std::uint16_t> scalar_half(dim), as_half(dim);
      Fp8Rows::decode(dim, codes.data(), nullptr, &scale, [&](std::int32_t i, float value) {
        scalar[i] = value;
        scalar_half[i] = float_to_half_bits(value);
      });
      detail::cpu::simd::fp8_decode_f32(codes.data(), dim, scale, as_float.data());
      detail::cpu::simd::fp8_decode_f16(codes.data(), dim, scale, as_half.data());
      ASSERT_EQ(float_bits_of(as_float), float_bits_of(scalar));
      ASSERT_EQ(as_half, scalar_half);
    }
  }
}

// Rows whose groups take every branch of the KIVI vector path.
std::vector<std::uint16_t> kivi_row(std::mt19937_64& rng, std::int32_t dim, std::int32_t group,
                                    int kind) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::uint16_t> row(dim);
  for (auto& h : row)
    h = float_to_half_bits(normal(rng));
  auto some_group = [&] {
    return static_cast<std::size_t>(rng() % static_cast<std::uint64_t>(dim / group) * group);
  };
  const std::size_t g = some_group();
  switch (kind % 8) {
    case 1:  // zeros of both signs; the rest positive: the minimum is a zero
      for (std::size_t i = g; i < g + group; ++i)
        row[i] = rng() % 4 == 0 ? (rng() % 2 ? 0x8000 : 0x0000) : (row[i] & 0x7fff);
      break;
    case 2:  // the maximum a zero
      for (std::size_t i = g; i < g + group; ++i)
        row[i] = rng() % 4 == 0 ? (rng() % 2 ? 0x8000 : 0x0000) : (row[i] | 0x8000);
      break;
    case 3:  // a constant group (scale 0)
      for (std::size_t i = g; i < g + group; ++i)
        row[i] = row[g];
      break;
    case 4:  // subnormal halves: a range whose inverse overflows
      for (std::size_t i = g; i < g + group; ++i)
        row[i] = static_cast<std::uint16_t>(rng() % 3);
      break;
    case 5:  // the fp16 limit on both sides
      row[g] = 0x7bff;
      row[g + 1] = 0xfbff;
      break;
    case 6:  // non-finite: the scalar path's (the vector one declines)
      row[g + rng() % group] = rng() % 2 ? 0x7e00 : 0xfc00;
      break;
    default:
      break;
  }
  return row;
}

template <std::int32_t B, std::int32_t G, std::int32_t S>
void check_kivi_values(std::mt19937_64& rng) {
  using Rows = KiviRows<B, G, S>;
  for (const std::int32_t dim : {64, 128, 256}) {
    if (dim % G != 0) continue;
    for (int kind = 0; kind < 400; ++kind) {
      SCOPED_TRACE(::testing::Message() << "B " << B << " G " << G << " S " << S << " dim " << dim
                                        << " kind " << kind % 8);
      const std::vector<std::uint16_t> row = kivi_row(rng, dim, G, kind);
      const auto code_bytes = static_cast<std::size_t>(Rows::code_bytes(dim));
      const auto scale_bytes = static_cast<std::size_t>(Rows::scale_bytes(dim));
      std::vector<std::uint8_t> codes(code_bytes), scales(scale_bytes);
      std::vector<std::uint8_t> vector_codes(code_bytes, 0xaa), vector_scales(scale_bytes, 0xaa);
      Rows::encode(
          dim, [&](std::int32_t i) { return half_bits_to_float(row[static_cast<std::size_t>(i)]); },
          codes.data(), scales.data(), nullptr);
      const bool vector = detail::cpu::simd::kivi_encode_values_f16<B, G, S>(
          row.data(), dim, vector_codes.data(), vector_scales.data());
      if (kind % 8 == 6) {
        ASSERT_FALSE(vector) << "a non-finite row is the scalar codec's";
        ASSERT_EQ(vector_codes, std::vector<std::uint8_t>(code_bytes, 0xaa)) << "untouched";
        continue;
      }
      ASSERT_TRUE(vector);
      ASSERT_EQ(vector_codes, codes);
      ASSERT_EQ(vector_scales, scales);
      std::vector<float> scalar(dim), as_float(dim);
      std::vector<std::uint16_t> scalar_half(dim), as_half(dim);
      Rows::decode(dim, codes.data(), scales.data(), nullptr, [&](std::int32_t i, float value) {
        scalar[static_cast<std::size_t>(i)] = value;
        scalar_half[static_cast<std::size_t>(i)] = float_to_half_bits(value);
      });
      detail::cpu::simd::kivi_decode_values<B, G, S>(codes.data(), scales.data(), dim,
                                                     as_float.data());
      detail::cpu::simd::kivi_decode_values<B, G, S>(codes.data(), scales.data(), dim,
                                                     as_half.data());
      ASSERT_EQ(float_bits_of(as_float), float_bits_of(scalar));
      ASSERT_EQ(as_half, scalar_half);
    }
  }
}

TEST(KiviVector, ValueRowsAreTheScalarCodecs) {
  KVCACHE_REQUIRE_AVX2();
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  check_kivi_values<4, 32, 2>(rng);
  check_kivi_values<2, 32, 2>(rng);
  check_kivi_values<4, 32, 4>(rng);
  check_kivi_values<2, 16, 2>(rng);
  check_kivi_values<4, 8, 4>(rng);
  check_kivi_values<4, 64, 2>(rng);
}

// Keys: one head's group of G tokens, channel by channel, in a page laid out
// as KiviCodec lays it out (two heads, the second one written).
template <std::int32_t B, std::int32_t G, std::int32_t S>
void check_kivi_keys(std::mt19937_64& rng) {
  using Rows = KiviRows<B, G, S>;
  using Codec = KiviCodec<B, G, G, S>;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const std::int32_t dim : {64, 128, 256}) {
    CodecPageView view;
    view.page_size = G;
    view.num_heads = 2;
    view.head_dim = dim;
    view.region[0] = Codec::region(ModelShape::gqa(1, 2, dim, DType::kF16), G, 0);
    for (int kind = 0; kind < 60; ++kind) {
      SCOPED_TRACE(::testing::Message() << "B " << B << " G " << G << " S " << S << " dim " << dim
                                        << " kind " << kind % 8);
      // Token t's row is a KIVI row; channel c of the group is column c.
      std::vector<float> rows(static_cast<std::size_t>(G) * dim);
      const std::int32_t column = static_cast<std::int32_t>(rng() % dim);
      for (std::int32_t t = 0; t < G; ++t) {
        for (std::int32_t c = 0; c < dim; ++c)
          rows[static_cast<std::size_t>(t * dim + c)] = normal(rng);
      }
      switch (kind % 8) {
        case 1:  // a channel of zeros of both signs and positives
        case 2:  // ... and negatives
          for (std::int32_t t = 0; t < G; ++t) {
            float& x = rows[static_cast<std::size_t>(t * dim + column)];
            x = rng() % 3 == 0 ? (rng() % 2 ? -0.0f : 0.0f)
                               : (kind % 8 == 1 ? 1.0f : -1.0f) * std::fabs(x);
          }
          break;
        case 3:  // a constant channel
          for (std::int32_t t = 0; t < G; ++t)
            rows[static_cast<std::size_t>(t * dim + column)] =
                rows[static_cast<std::size_t>(column)];
          break;
        case 4:  // subnormal floats
          for (std::int32_t t = 0; t < G; ++t)
            rows[static_cast<std::size_t>(t * dim + column)] =
                static_cast<float>(rng() % 3) * 1e-45f;
          break;
        case 5:  // past fp16's range (the scale and zero clamp)
          rows[static_cast<std::size_t>(column)] = 1e6f;
          rows[static_cast<std::size_t>(dim + column)] = -1e6f;
          break;
        case 6:  // non-finite
          rows[static_cast<std::size_t>((rng() % G) * dim + column)] =
              rng() % 2 ? std::numeric_limits<float>::quiet_NaN()
                        : -std::numeric_limits<float>::infinity();
          break;
        default:
          break;
      }
      const auto bytes = static_cast<std::size_t>(view.region[0].bytes);
      std::vector<std::uint8_t> scalar(bytes, 0x55), vector(bytes, 0x55);
      for (std::int32_t c = 0; c < dim; ++c) {
        Rows::encode_key_channel(
            view, [&](std::int32_t t) { return rows[static_cast<std::size_t>(t * dim + c)]; },
            scalar.data(), 1, c);
      }
      const bool done =
          detail::cpu::simd::kivi_encode_keys<B, G, S>(rows.data(), dim, view, vector.data(), 1);
      if (kind % 8 == 6) {
        ASSERT_FALSE(done) << "a non-finite group is the scalar codec's";
        ASSERT_EQ(vector, std::vector<std::uint8_t>(bytes, 0x55)) << "untouched";
        continue;
      }
      ASSERT_TRUE(done);
      ASSERT_EQ(vector, scalar);
      // Decoded into a [G][2 heads][dim] tensor at head 1.
      const std::size_t out_size = static_cast<std::size_t>(G) * 2 * dim;
      std::vector<float> expected(out_size, 7.0f), as_float(out_size, 7.0f);
      std::vector<std::uint16_t> expected_half(out_size, 7), as_half(out_size, 7);
      for (std::int32_t c = 0; c < dim; ++c) {
        Rows::decode_key_channel(view, scalar.data(), 1, c, [&](std::int32_t t, float value) {
          const auto at = static_cast<std::size_t>((t * 2 + 1) * dim + c);
          expected[at] = value;
          expected_half[at] = float_to_half_bits(value);
        });
      }
      detail::cpu::simd::kivi_decode_keys<B, G, S>(view, scalar.data(), 1, dim,
                                                   as_float.data() + dim, 2 * dim);
      detail::cpu::simd::kivi_decode_keys<B, G, S>(view, scalar.data(), 1, dim,
                                                   as_half.data() + dim, 2 * dim);
      ASSERT_EQ(float_bits_of(as_float), float_bits_of(expected));
      ASSERT_EQ(as_half, expected_half);
    }
  }
}

TEST(KiviVector, KeyChannelsAreTheScalarCodecs) {
  KVCACHE_REQUIRE_AVX2();
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  check_kivi_keys<4, 32, 2>(rng);
  check_kivi_keys<2, 32, 2>(rng);
  check_kivi_keys<4, 32, 4>(rng);
  check_kivi_keys<2, 16, 2>(rng);
  check_kivi_keys<4, 8, 4>(rng);
  check_kivi_keys<2, 64, 2>(rng);
}

#else

TEST(CodecVector, NotBuilt) {
  GTEST_SKIP() << "no AVX2 + F16C path on this architecture: only the scalar codecs run";
}

#endif

}  // namespace
}  // namespace kvcache::testing
