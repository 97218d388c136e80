// The CPU backend's AVX2 + F16C fp8, KIVI and low-rank paths
// (detail/cpu/codec_simd.hpp, low_rank_simd.hpp) against the scalar row math
// they replace (Fp8Rows, KiviRows, LowRankRows): the same
// codes, scales, decoded values and non-finite counts, bit for bit, on fresh
// random rows with the cases that take the branches (every fp16 bit pattern
// for fp8; zeros of either sign, constant and subnormal groups, values at the
// fp16 limit and non-finite values for KIVI; sums past fp16's range, subnormal
// and zero rows, non-finite rows and a NaN in the basis for low-rank).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/codec/codecs.hpp"
#include "kvcache/detail/cpu/codec_kernels.hpp"
#include "kvcache/detail/cpu/codec_simd.hpp"
#include "kvcache/detail/cpu/low_rank_simd.hpp"

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

// ---- low-rank --------------------------------------------------------------

// Rows of `dim` fp16 values of one of the kinds the low-rank path branches on.
std::vector<std::uint16_t> low_rank_row(std::mt19937_64& rng, std::int32_t dim, int kind) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::uint16_t> row(static_cast<std::size_t>(dim));
  for (auto& x : row) {
    switch (kind) {
      case 1:  // large: sums past fp16's range (the coefficient clamp)
        x = float_to_half_bits(normal(rng) * 60000.0f);
        break;
      case 2:  // subnormal fp16
        x = static_cast<std::uint16_t>(rng() % 0x400 | (rng() % 2 ? 0x8000u : 0u));
        break;
      case 3:  // zeros of both signs
        x = rng() % 2 ? 0x8000 : 0;
        break;
      default:
        x = float_to_half_bits(normal(rng));
        break;
    }
  }
  if (kind == 4) row[rng() % row.size()] = rng() % 2 ? 0x7e00 : 0xfc00;  // NaN or -Inf
  return row;
}

// Encode (one and two rows at a time) and decode, against LowRankRows.
template <std::int32_t R, std::int32_t C>
void check_low_rank(std::mt19937_64& rng) {
  using Rows = LowRankRows<R, C>;
  namespace simd = detail::cpu::simd;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const std::int32_t dim : {64, 136, 256}) {
    if (R > dim) continue;
    std::vector<float> basis(static_cast<std::size_t>(dim) * R), basis_t(basis.size());
    for (auto& b : basis)
      b = normal(rng) / std::sqrt(static_cast<float>(dim));
    simd::transpose_basis<R>(basis.data(), dim, basis_t.data());
    for (int trial = 0; trial < 40; ++trial) {
      const int kinds[2] = {trial % 5, static_cast<int>(rng() % 5)};
      SCOPED_TRACE(::testing::Message() << "R " << R << " C " << C << " dim " << dim << " kinds "
                                        << kinds[0] << ", " << kinds[1]);
      std::vector<std::uint16_t> rows[2] = {low_rank_row(rng, dim, kinds[0]),
                                            low_rank_row(rng, dim, kinds[1])};
      std::vector<std::uint8_t> expected[2];
      std::int32_t bad[2];
      for (int n = 0; n < 2; ++n) {
        expected[n].assign(static_cast<std::size_t>(R) * C, 0);
        bad[n] = Rows::encode(
            dim, [&](std::int32_t i) { return half_bits_to_float(rows[n][i]); }, expected[n].data(),
            nullptr, basis.data());
      }
      std::vector<float> floats[2] = {std::vector<float>(dim), std::vector<float>(dim)};
      bool finite[2];
      for (int n = 0; n < 2; ++n) {
        finite[n] = simd::finite_halves_to_floats(rows[n].data(), dim, floats[n].data());
        ASSERT_EQ(finite[n], bad[n] == 0) << "row " << n;
      }
      if (!finite[0] || !finite[1]) continue;
      const float* in[2] = {floats[0].data(), floats[1].data()};
      for (const int count : {1, 2}) {
        std::vector<std::uint8_t> got[2] = {std::vector<std::uint8_t>(expected[0].size(), 0xaa),
                                            std::vector<std::uint8_t>(expected[1].size(), 0xaa)};
        std::uint8_t* out[2] = {got[0].data(), got[1].data()};
        bool written[2] = {false, false};
        if (count == 1) simd::low_rank_encode_rows<R, C, 1>(in, dim, basis.data(), out, written);
        if (count == 2) simd::low_rank_encode_rows<R, C, 2>(in, dim, basis.data(), out, written);
        for (int n = 0; n < count; ++n) {
          ASSERT_TRUE(written[n]);
          ASSERT_EQ(got[n], expected[n]) << count << " rows at a time, row " << n;
        }
      }
      // Decoded: the stored coefficients, and random fp16 / fp32 patterns.
      std::vector<std::uint8_t> codes = expected[0];
      if (trial % 3 == 2) {
        for (auto& byte : codes)
          byte = static_cast<std::uint8_t>(rng());
      }
      std::vector<float> want(static_cast<std::size_t>(dim)), have(want.size(), 7.0f);
      Rows::decode(dim, codes.data(), nullptr, basis.data(),
                   [&](std::int32_t i, float value) { want[i] = value; });
      simd::low_rank_decode_f32<R, C>(codes.data(), basis_t.data(), dim, have.data());
      for (std::int32_t i = 0; i < dim; ++i) {
        if (std::isnan(want[i])) {
          ASSERT_TRUE(std::isnan(have[i])) << "value " << i;
        } else {
          ASSERT_EQ(float_bits_of({have[i]}), float_bits_of({want[i]})) << "value " << i;
        }
      }
    }
    // A NaN in the basis: the sums are not numbers, the row is not written.
    basis[static_cast<std::size_t>(rng() % basis.size())] = std::numeric_limits<float>::quiet_NaN();
    const std::vector<std::uint16_t> row = low_rank_row(rng, dim, 0);
    std::vector<float> floats(static_cast<std::size_t>(dim));
    ASSERT_TRUE(simd::finite_halves_to_floats(row.data(), dim, floats.data()));
    const float* in[1] = {floats.data()};
    std::vector<std::uint8_t> got(static_cast<std::size_t>(R) * C);
    std::uint8_t* out[1] = {got.data()};
    bool written[1] = {true};
    simd::low_rank_encode_rows<R, C, 1>(in, dim, basis.data(), out, written);
    ASSERT_FALSE(written[0]);
  }
}

TEST(LowRankVector, RowsAreTheScalarCodecs) {
  KVCACHE_REQUIRE_AVX2();
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  check_low_rank<32, 2>(rng);
  check_low_rank<32, 4>(rng);
  check_low_rank<8, 2>(rng);
  check_low_rank<24, 2>(rng);
  check_low_rank<64, 4>(rng);
  check_low_rank<72, 2>(rng);
}

// The CPU backend's low-rank append and gather (detail/cpu/codec_kernels.hpp),
// which pair tokens, skip padding slots and hand non-finite rows to the scalar
// codec, against LowRankRows row by row: an odd number of tokens, slots
// shuffled over the pages, padding, and rows with NaN / Inf.
TEST(LowRankVector, AppendAndGatherAreTheScalarCodecs) {
  KVCACHE_REQUIRE_AVX2();
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  constexpr std::int32_t kR = 32, kC = 2, kHeads = 3, kDim = 128, kPage = 8, kPages = 4;
  using Rows = LowRankRows<kR, kC>;
  using Codec = LowRankCodec<kR, kC>;
  const ModelShape shape = ModelShape::gqa(1, kHeads, kDim, DType::kF16);
  CodecPageView view;
  view.page_size = kPage;
  view.num_heads = kHeads;
  view.head_dim = kDim;
  view.num_layers = 1;
  view.num_pages = kPages;
  view.region[0] = view.region[1] = Codec::region(shape, kPage, 0);
  view.layer_bytes = 2 * view.region[0].bytes;
  view.page_bytes = view.layer_bytes;
  std::vector<std::byte> pages(static_cast<std::size_t>(view.page_bytes * kPages));
  std::vector<std::byte> expected_pages(pages.size());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> bases(static_cast<std::size_t>(2 * kHeads * kDim * kR));
  for (auto& b : bases)
    b = normal(rng) / std::sqrt(static_cast<float>(kDim));
  // 27 tokens into 32 slots (shuffled), 4 of them padding.
  constexpr std::int32_t kTokens = 27;
  std::vector<std::int64_t> slots(kPage * kPages);
  for (std::size_t i = 0; i < slots.size(); ++i)
    slots[i] = static_cast<std::int64_t>(i);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(kTokens);
  for (int i = 0; i < 4; ++i)
    slots[rng() % kTokens] = -1;
  std::vector<std::uint16_t> k(static_cast<std::size_t>(kTokens) * kHeads * kDim);
  std::vector<std::uint16_t> v(k.size());
  for (std::int32_t t = 0; t < kTokens; ++t) {
    for (std::int32_t h = 0; h < kHeads; ++h) {
      for (auto* tensor : {&k, &v}) {
        const auto row = low_rank_row(rng, kDim, rng() % 6 == 0 ? 4 : static_cast<int>(rng() % 4));
        std::copy(row.begin(), row.end(), tensor->begin() + (t * kHeads + h) * kDim);
      }
    }
  }
  kernels::CodecAppendParams<Rows> append;
  append.cache = view;
  append.cache.data = pages.data();
  append.source = {k.data(), v.data(), kHeads * kDim * 2, kDim * 2};
  append.slots = {slots.data(), kTokens};
  append.state = bases.data();
  unsigned long long nonfinite = 0;
  append.nonfinite = &nonfinite;
  detail::cpu::codec_append<Rows, Half>(append);
  // Expected, row by row.
  CodecPageView expected_view = append.cache;
  expected_view.data = expected_pages.data();
  unsigned long long expected_nonfinite = 0;
  for (std::int32_t t = 0; t < kTokens; ++t) {
    if (slots[t] < 0) continue;
    for (std::int32_t kv = 0; kv < 2; ++kv) {
      for (std::int32_t h = 0; h < kHeads; ++h) {
        const std::uint16_t* row = (kv == 0 ? k : v).data() + (t * kHeads + h) * kDim;
        expected_nonfinite += static_cast<unsigned long long>(Rows::encode(
            kDim, [&](std::int32_t i) { return half_bits_to_float(row[i]); },
            expected_view.row_codes(slots[t] / kPage, 0, kv, slots[t] % kPage, h), nullptr,
            kernels::row_state<Rows>(bases.data(), expected_view, 0, kv, h)));
      }
    }
  }
  ASSERT_GT(expected_nonfinite, 0u);
  ASSERT_EQ(nonfinite, expected_nonfinite);
  ASSERT_EQ(0, std::memcmp(pages.data(), expected_pages.data(), pages.size()));
  // Gather the four pages (shuffled) as one sequence of 29 tokens.
  std::vector<std::int32_t> indices = {2, 0, 3, 1};
  std::shuffle(indices.begin(), indices.end(), rng);
  const std::vector<std::int32_t> indptr = {0, kPages}, last = {5};
  const std::vector<std::int64_t> offsets = {0, 3 * kPage + 5};
  kernels::CodecGatherParams<Rows> gather;
  gather.cache = append.cache;
  gather.table = {indptr.data(), indices.data(), last.data(), offsets.data(), 1, kPages};
  gather.state = bases.data();
  const std::size_t out_size = static_cast<std::size_t>(offsets[1]) * kHeads * kDim;
  std::vector<std::uint16_t> out_k(out_size, 7), out_v(out_size, 7);
  gather.out = {out_k.data(), out_v.data()};
  detail::cpu::codec_gather<Rows, Half>(gather);
  for (std::int64_t row = 0; row < offsets[1]; ++row) {
    const std::int32_t page = indices[static_cast<std::size_t>(row / kPage)];
    for (std::int32_t kv = 0; kv < 2; ++kv) {
      for (std::int32_t h = 0; h < kHeads; ++h) {
        const std::uint16_t* got = (kv == 0 ? out_k : out_v).data() + (row * kHeads + h) * kDim;
        Rows::decode(kDim, expected_view.row_codes(page, 0, kv, row % kPage, h), nullptr,
                     kernels::row_state<Rows>(bases.data(), expected_view, 0, kv, h),
                     [&](std::int32_t i, float value) {
                       ASSERT_EQ(got[i], float_to_half_bits(value))
                           << "row " << row << " kv " << kv << " head " << h << " value " << i;
                     });
      }
    }
  }
}

#else

TEST(CodecVector, NotBuilt) {
  GTEST_SKIP() << "no AVX2 + F16C path on this architecture: only the scalar codecs run";
}

#endif

}  // namespace
}  // namespace kvcache::testing
