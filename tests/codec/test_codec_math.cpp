// The codecs' math on fresh random data: fp8 conversion exactness, and the
// round-trip error of every codec against a bound the test derives (a
// uniform quantizer's RMS error is step / sqrt(12)), attention-output error,
// and per-channel against per-token int4 keys when a few channels are outliers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "codec_reference.hpp"
#include "kv_test_support.hpp"
#include "kvcache/backend/host.hpp"
#include "kvcache/codec/codecs.hpp"
#include "kvcache/detail/cpu/int8_simd.hpp"

namespace kvcache::testing {
namespace {

std::vector<float> normal_values(std::size_t count, std::mt19937_64& rng, float sigma = 1.0f) {
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> values(count);
  for (float& x : values)
    x = normal(rng);
  return values;
}

// The e4m3 value nearest to x (ties to the even code), by brute force over
// all 126 finite magnitudes: an independent reference for float_to_e4m3.
std::uint8_t nearest_e4m3(float x) {
  if (std::isnan(x)) return 0x7f;
  const std::uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 448.0) return sign | 0x7e;
  std::uint8_t best = 0;
  double best_error = 1e300;
  for (std::uint8_t code = 0; code <= 0x7e; ++code) {
    const double error = std::fabs(static_cast<double>(e4m3_to_float(code)) - a);
    if (error < best_error || (error == best_error && (code & 1) == 0)) {
      best = code;
      best_error = error;
    }
  }
  return sign | best;
}

TEST(Fp8E4M3, EveryCodeRoundTripsAndTheGridIsRight) {
  for (int code = 0; code < 256; ++code) {
    const auto c = static_cast<std::uint8_t>(code);
    const float value = e4m3_to_float(c);
    if ((code & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(value));
      continue;
    }
    EXPECT_EQ(float_to_e4m3(value), c == 0x80 ? 0x80 : c) << code;
  }
  EXPECT_EQ(e4m3_to_float(0x7e), 448.0f);
  EXPECT_EQ(e4m3_to_float(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(e4m3_to_float(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(float_to_e4m3(1000.0f), 0x7e);               // saturates
  EXPECT_EQ(float_to_e4m3(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ(float_to_e4m3(std::nanf("")), 0x7f);
}

TEST(Fp8E4M3, MatchesTheNearestValueOnRandomFloats) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> exponent(-14.0f, 10.0f);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  for (int i = 0; i < 50000; ++i) {
    const float x = unit(rng) * std::exp2(exponent(rng));
    ASSERT_EQ(float_to_e4m3(x), nearest_e4m3(x)) << x;
  }
  // Exact midpoints between neighbours round to the even code.
  for (std::uint8_t code = 0x08; code < 0x7e; ++code) {
    const float middle =
        0.5f * (e4m3_to_float(code) + e4m3_to_float(static_cast<std::uint8_t>(code + 1)));
    EXPECT_EQ(float_to_e4m3(middle), (code & 1) == 0 ? code : code + 1) << int{code};
  }
}

// For N(0, 1) rows: the measured error is what the stored scales predict for
// a uniform quantizer (sum of step^2 / 12), and lands near the published figures
// (0.53 / 0.59 / 0.64 % for groups of 32 / 64 / 128).
TEST(Int8Codec, ErrorMatchesTheUniformQuantizerPrediction) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const std::int32_t d = 128;
  const auto x = normal_values(4096 * d, rng);
  double norm = 0.0;
  for (float v : x)
    norm += static_cast<double>(v) * v;
  double previous = 0.0;
  auto check = [&]<std::int32_t group>(double design) {
    const auto y = round_trip_rows<Int8Rows<group, 4>>(d, x);  // fp32 scales: the pure quantizer
    const double error = relative_error(x, y);
    double predicted = 0.0;
    for (std::size_t g = 0; g < x.size() / group; ++g) {
      float amax = 0.0f;
      for (std::int32_t i = 0; i < group; ++i)
        amax = std::max(amax, std::fabs(x[g * group + i]));
      const double step = amax / 127.0;
      predicted += group * step * step / 12.0;
    }
    predicted = std::sqrt(predicted / norm);
    EXPECT_NEAR(error / predicted, 1.0, 0.05) << "group " << group;
    EXPECT_NEAR(error, design, 0.0008) << "group " << group;
    EXPECT_GT(error, previous);  // bigger groups, coarser steps
    previous = error;
    // fp16 scales change the figure only slightly.
    const auto y16 = round_trip_rows<Int8Rows<group, 2>>(d, x);
    EXPECT_NEAR(relative_error(x, y16), error, 0.0005);
  };
  check.template operator()<32>(0.0053);
  check.template operator()<64>(0.0059);
  check.template operator()<128>(0.0064);
}

TEST(Fp8Codec, ErrorIsAboutTwoAndAHalfPercentWhateverTheScale) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const std::int32_t d = 128;
  for (float sigma : {1.0f, 1000.0f, 0.001f}) {
    const auto x = normal_values(2048 * d, rng, sigma);
    float amax = 0.0f;
    for (float v : x)
      amax = std::max(amax, std::fabs(v));
    const float scale = amax / kFp8E4M3Max;
    const auto y = round_trip_rows<Fp8Rows>(d, x, &scale);
    // e4m3 keeps 3 mantissa bits: a relative step of 2^-3 for each binade, an
    // RMS relative error near 2^-3 / sqrt(12) / ~1.4 for these magnitudes.
    const double error = relative_error(x, y);
    EXPECT_NEAR(error, 0.026, 0.004) << "sigma " << sigma;
  }
}

TEST(KiviCodec, Int4AndInt2ErrorsMatchTheirSteps) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const std::int32_t d = 128, group = 32;
  const auto x = normal_values(2048 * d, rng);
  double norm = 0.0;
  for (float v : x)
    norm += static_cast<double>(v) * v;
  auto check = [&]<std::int32_t bits>(double design, double tolerance) {
    const auto y = round_trip_rows<KiviRows<bits, 32, 4>>(d, x);
    const double error = relative_error(x, y);
    double predicted = 0.0;
    for (std::size_t g = 0; g < x.size() / group; ++g) {
      float low = x[g * group], high = low;
      for (std::int32_t i = 1; i < group; ++i) {
        low = std::min(low, x[g * group + i]);
        high = std::max(high, x[g * group + i]);
      }
      const double step = (high - low) / ((1 << bits) - 1);
      predicted += group * step * step / 12.0;
    }
    predicted = std::sqrt(predicted / norm);
    EXPECT_NEAR(error, design, tolerance) << bits << " bits";
    if (bits == 4) {
      EXPECT_NEAR(error / predicted, 1.0, 0.1);  // 16 levels: uniform error holds
    }
  };
  check.template operator()<4>(0.08, 0.01);
  check.template operator()<2>(0.39, 0.06);
}

// Keys of real models have a few channels ~10x larger than the rest.
// Per-token groups then spend their range on the outliers; per-channel
// groups (KIVI's keys) give each channel its own range.
TEST(KiviCodec, PerChannelKeysBeatPerTokenKeysWithOutlierChannels) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const std::int32_t d = 128;
  auto keys = normal_values(1024 * d, rng);
  for (std::int32_t outlier : {3, 40, 77, 101}) {
    for (std::size_t t = 0; t < keys.size() / d; ++t)
      keys[t * d + outlier] = keys[t * d + outlier] * 10.0f + 5.0f;
  }
  const auto by_token = round_trip_rows<KiviRows<4, 32, 2>>(d, keys);
  const auto by_channel = round_trip_per_channel<4, 32>(keys, d);
  const double per_token = relative_error(keys, by_token);
  const double per_channel = relative_error(keys, by_channel);
  EXPECT_LT(per_channel, per_token) << "per channel " << per_channel << ", per token " << per_token;
  // The ordinary channels are where per-token groups lose: their values share
  // a group's range with an outlier.
  auto ordinary = [&](const std::vector<float>& values) {
    std::vector<float> out;
    for (std::size_t i = 0; i < values.size(); ++i) {
      const auto c = static_cast<std::int32_t>(i % d);
      if (c != 3 && c != 40 && c != 77 && c != 101) out.push_back(values[i]);
    }
    return out;
  };
  const double token_ordinary = relative_error(ordinary(keys), ordinary(by_token));
  const double channel_ordinary = relative_error(ordinary(keys), ordinary(by_channel));
  EXPECT_LT(channel_ordinary * 3, token_ordinary)
      << "ordinary channels: per channel " << channel_ordinary << ", per token " << token_ordinary;
  // Without outliers the two are alike.
  const auto plain = normal_values(1024 * d, rng);
  const double plain_token = relative_error(plain, round_trip_rows<KiviRows<4, 32, 2>>(d, plain));
  const double plain_channel = relative_error(plain, round_trip_per_channel<4, 32>(plain, d));
  EXPECT_NEAR(plain_channel / plain_token, 1.0, 0.15);
}

// Decode attention over a quantized cache, against float64 on the exact one.
TEST(Codecs, AttentionOutputErrorFollowsTheCacheError) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const std::int32_t d = 128, tokens = 512;
  double int8_error = 0, fp8_error = 0, int4_error = 0;
  for (int trial = 0; trial < 8; ++trial) {
    const auto q = normal_values(d, rng), k = normal_values(tokens * d, rng),
               v = normal_values(tokens * d, rng);
    const auto exact = attention(q, k, v, d);
    auto with = [&]<class Rows>(const float* state) {
      return relative_error(exact, attention(q, round_trip_rows<Rows>(d, k, state),
                                             round_trip_rows<Rows>(d, v, state), d));
    };
    int8_error += with.template operator()<Int8Rows<32, 2>>(nullptr) / 8;
    float amax = 0.0f;
    for (float x : k)
      amax = std::max(amax, std::fabs(x));
    for (float x : v)
      amax = std::max(amax, std::fabs(x));
    const float scale = amax / kFp8E4M3Max;
    fp8_error += with.template operator()<Fp8Rows>(&scale) / 8;
    const auto k4 = round_trip_per_channel<4, 32>(k, d);
    const auto v4 = round_trip_rows<KiviRows<4, 32, 2>>(d, v);
    int4_error += relative_error(exact, attention(q, k4, v4, d)) / 8;
  }
  // The output error follows the cache's round-trip error (about 1.5x of it
  // here: score errors reweight the values); a factor 2 bounds it.
  EXPECT_LT(int8_error, 2 * 0.0053);
  EXPECT_LT(fp8_error, 2 * 0.026);
  EXPECT_LT(int4_error, 2 * 0.08);
  EXPECT_LT(int8_error, fp8_error);
  EXPECT_LT(fp8_error, int4_error);
  RecordProperty("attention_error_int8", std::to_string(int8_error));
  RecordProperty("attention_error_fp8", std::to_string(fp8_error));
  RecordProperty("attention_error_int4", std::to_string(int4_error));
}

TEST(Codecs, NonFiniteInputsSaturateAndAreCounted) {
  const std::int32_t d = 32;
  std::vector<float> row(d, 0.5f);
  row[3] = std::nanf("");
  row[7] = std::numeric_limits<float>::infinity();
  row[9] = -std::numeric_limits<float>::infinity();
  row[11] = 2.0f;
  std::int32_t bad = 0;
  const auto int8 = round_trip_rows<Int8Rows<32, 2>>(d, row, nullptr, &bad);
  EXPECT_EQ(bad, 3);
  EXPECT_EQ(int8[3], 0.0f);           // NaN stored as 0
  EXPECT_NEAR(int8[7], 2.0f, 0.01);   // +Inf: the group's largest code
  EXPECT_NEAR(int8[9], -2.0f, 0.01);  // -Inf: the smallest
  EXPECT_NEAR(int8[0], 0.5f, 0.01);   // the finite values keep their scale
  bad = 0;
  const float scale = 1.0f / 64.0f;
  const auto fp8 = round_trip_rows<Fp8Rows>(d, row, &scale, &bad);
  EXPECT_EQ(bad, 3);
  EXPECT_EQ(fp8[3], 0.0f);
  EXPECT_EQ(fp8[7], 448.0f * scale);  // saturated
  bad = 0;
  const auto int4 = round_trip_rows<KiviRows<4, 32, 2>>(d, row, nullptr, &bad);
  EXPECT_EQ(bad, 3);
  for (float value : int4)
    EXPECT_TRUE(std::isfinite(value));
}

// Scales and zero points held in 2 bytes are clamped to fp16's 65504: an
// input past what they can scale saturates, like int8's codes and fp8's 448,
// instead of storing an infinite scale whose 0 x Inf decodes to NaN. Inputs
// near the fp16 limit, fresh each run.
TEST(Codecs, InputsPastTheScaleRangeSaturateInsteadOfDecodingNaN) {
  std::mt19937_64 rng(std::random_device{}());
  const float limit = 65504.0f * 127.0f;  // the largest int8 g/2-byte magnitude
  for (float top : {65519.0f * 127.0f, 65520.0f * 127.0f, 1e7f, 3e38f}) {
    SCOPED_TRACE(::testing::Message() << "group maximum " << top);
    const std::int32_t d = 64;
    std::vector<float> row = normal_values(d, rng, top / 4.0f);
    row[5] = top;
    row[40] = -top;
    row[41] = 0.0f;
    const auto int8 = round_trip_rows<Int8Rows<32, 2>>(d, row);
    for (std::int32_t i = 0; i < d; ++i) {
      const float x = row[static_cast<std::size_t>(i)], y = int8[static_cast<std::size_t>(i)];
      ASSERT_FALSE(std::isnan(y)) << "value " << i << " = " << x;
      if (std::fabs(x) >= limit) {
        EXPECT_EQ(y, std::copysign(limit, x)) << "value " << i << " saturates";
      } else {
        // The clamped scale can only be smaller than the ideal one: the
        // error of an unsaturated value stays within half its step.
        EXPECT_LE(std::fabs(y - x), std::max(65504.0f / 2, std::fabs(x) / 254)) << i;
      }
    }
    // KIVI values (per token) and keys (per channel), 2-byte scale and zero.
    const auto int4 = round_trip_rows<KiviRows<4, 32, 2>>(d, row);
    for (std::int32_t i = 0; i < d; ++i)
      ASSERT_TRUE(std::isfinite(int4[static_cast<std::size_t>(i)])) << "KIVI value " << i;
    std::vector<float> keys(static_cast<std::size_t>(32 * 8));
    for (std::size_t i = 0; i < keys.size(); ++i)
      keys[i] = row[i % row.size()];
    for (float key : round_trip_per_channel<4, 32>(keys, 8))
      ASSERT_TRUE(std::isfinite(key)) << "KIVI key";
  }
  // Low-rank coefficients in fp16 saturate too.
  std::vector<float> basis(64 * 4, 0.0f);
  for (std::int32_t i = 0; i < 64; ++i)
    basis[static_cast<std::size_t>(i * 4 + i % 4)] = 1.0f;
  std::vector<float> big(64, 1e6f);
  for (float value : round_trip_rows<LowRankRows<4, 2>>(64, big, basis.data()))
    ASSERT_FALSE(std::isnan(value));
}

// A group whose largest magnitude is a tiny subnormal has a scale whose
// inverse overflows: 0 x Inf is NaN, which must become code 0 by defined
// arithmetic (converting a NaN to an integer is undefined; the sanitizer
// build checks float-cast-overflow).
TEST(Codecs, TinySubnormalGroupsEncodeWithDefinedCasts) {
  const std::int32_t d = 32;
  for (float tiny : {1e-40f, 3e-39f, 1.4e-45f}) {
    SCOPED_TRACE(::testing::Message() << "largest magnitude " << tiny);
    std::vector<float> row(d, 0.0f);
    row[3] = tiny;
    row[17] = -tiny / 2;
    const auto int8 = round_trip_rows<Int8Rows<32, 4>>(d, row);
    const auto int4 = round_trip_rows<KiviRows<4, 32, 4>>(d, row);
    for (std::int32_t i = 0; i < d; ++i) {
      const auto at = static_cast<std::size_t>(i);
      EXPECT_FALSE(std::isnan(int8[at])) << i;
      EXPECT_FALSE(std::isnan(int4[at])) << i;
      if (row[at] == 0.0f) {
        EXPECT_EQ(int8[at], 0.0f) << i;
      }
    }
  }
}

// The CPU backend's fp32 gather stores NaN canonical too (its fp8 NaN codes
// decode with their sign).
TEST(DTypes, Fp32GathersStoreTheCanonicalNaN) {
  const std::int32_t heads = 2, d = 16, page_size = 4;
  const ModelShape shape = ModelShape::gqa(1, heads, d, DType::kF32);
  using Codec = Fp8Codec<Fp8Scale::kPerHead>;
  alignas(256) std::uint8_t page[4096];
  std::memset(page, 0xff, sizeof(page));  // every code: e4m3 -NaN
  const CodecPageView view =
      make_codec_view(reinterpret_cast<std::byte*>(page), 1, page_size, 1, heads, d, DType::kF32,
                      Codec::region(shape, page_size, 0), Codec::region(shape, page_size, 1));
  ASSERT_LE(view.page_bytes, static_cast<std::int64_t>(sizeof(page)));
  std::vector<float> state(2 * heads, 0.5f);
  const std::int32_t indptr[2] = {0, 1}, indices[1] = {0}, last[1] = {page_size};
  const std::int64_t offsets[2] = {0, page_size};
  alignas(16) std::uint32_t k[page_size * heads * d], v[page_size * heads * d];
  kernels::CodecGatherParams<Fp8Rows> p;
  p.cache = view;
  p.table = {indptr, indices, last, offsets, 1, 1};
  p.out = {k, v};
  p.state = state.data();
  HostBackend backend;
  launch(backend, p);
  for (std::uint32_t bits : k)
    ASSERT_EQ(bits, 0x7fc00000u);
  for (std::uint32_t bits : v)
    ASSERT_EQ(bits, 0x7fc00000u);
}

// Every stored NaN is the canonical one of its dtype, whatever NaN came in:
// arithmetic makes 0x7fffffff on the GPU and 0xffc00000 on x86.
TEST(DTypes, NaNIsStoredAsTheCanonicalNaN) {
  for (std::uint32_t bits : {0x7fffffffu, 0xffc00000u, 0x7fc00001u, 0xff800001u, 0x7f800001u}) {
    float nan;
    std::memcpy(&nan, &bits, 4);
    SCOPED_TRACE(::testing::Message() << std::hex << "0x" << bits);
    EXPECT_EQ(float_to_half_bits(nan), 0x7e00u);
    EXPECT_EQ(float_to_bfloat16_bits(nan), 0x7fc0u);
    std::uint16_t half = 0, bf16 = 0;
    float single = 0;
    store_element<Half>(&half, 0, nan);
    store_element<BFloat16>(&bf16, 0, nan);
    store_element<float>(&single, 0, nan);
    std::uint32_t single_bits;
    std::memcpy(&single_bits, &single, 4);
    EXPECT_EQ(half, 0x7e00u);
    EXPECT_EQ(bf16, 0x7fc0u);
    EXPECT_EQ(single_bits, 0x7fc00000u);
    for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
      std::uint32_t out = 0;
      store_from_float(&out, dtype, 0, nan);
      EXPECT_EQ(out,
                dtype == DType::kF32 ? 0x7fc00000u : (dtype == DType::kF16 ? 0x7e00u : 0x7fc0u));
    }
  }
  // Infinities keep their sign.
  EXPECT_EQ(float_to_half_bits(-std::numeric_limits<float>::infinity()), 0xfc00u);
  EXPECT_EQ(float_to_half_bits(-1e9f), 0xfc00u);
  // fp8's NaN codes (both signs) decode to NaN and are stored canonical.
  for (std::uint8_t code : {std::uint8_t{0x7f}, std::uint8_t{0xff}}) {
    const float scale = 0.5f;
    std::uint16_t out[16];
    std::uint8_t codes[16];
    std::memset(codes, code, sizeof(codes));
    Fp8Rows::decode(16, codes, nullptr, &scale,
                    [&](std::int32_t i, float v) { store_element<Half>(out, i, v); });
    for (std::uint16_t h : out)
      EXPECT_EQ(h, 0x7e00u);
  }
}

}  // namespace
}  // namespace kvcache::testing

namespace kvcache::testing {
namespace {

// The CPU's AVX2 + F16C int8 path must give the scalar codec's bits.
TEST(Int8Codec, VectorPathIsBitIdenticalToTheScalarCodec) {
  if (!detail::cpu::simd::available())
    GTEST_SKIP() << "this CPU lacks AVX2 + F16C: only the scalar path runs";
#if KVCACHE_INT8_SIMD
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  // Each (group, scale bytes) against the scalar row codec Int8Rows.
  auto check = [&]<std::int32_t group, std::int32_t scale_bytes>() {
    for (std::int32_t d : {64, 128, 256, 1024}) {
      if (group > d) continue;
      for (int row = 0; row < 200; ++row) {
        std::vector<std::uint16_t> x(d);
        for (auto& h : x)
          h = float_to_half_bits(normal(rng) * (row % 7 == 0 ? 1000.0f : 1.0f));
        if (row % 5 == 0) x[static_cast<std::size_t>(rng() % d)] = 0x7e00;  // NaN
        if (row % 6 == 0) x[static_cast<std::size_t>(rng() % d)] = 0xfc00;  // -Inf
        if (row % 9 == 0)
          std::fill(x.begin(), x.begin() + group, std::uint16_t{0});  // an all-zero group
        std::vector<std::uint8_t> codes_scalar(d), scales_scalar(512), scales_vector(512);
        std::vector<std::int8_t> codes_vector(d);
        using Rows = Int8Rows<group, scale_bytes>;
        const std::int32_t bad_scalar = Rows::encode(
            d, [&](std::int32_t i) { return half_bits_to_float(x[static_cast<std::size_t>(i)]); },
            codes_scalar.data(), scales_scalar.data(), nullptr);
        const std::int32_t bad_vector = detail::cpu::simd::int8_encode_f16(
            x.data(), d, group, codes_vector.data(), scales_vector.data(), scale_bytes);
        ASSERT_EQ(std::memcmp(codes_vector.data(), codes_scalar.data(), d), 0)
            << "head_dim " << d << " group " << group << " row " << row;
        ASSERT_EQ(scales_vector, scales_scalar);
        ASSERT_EQ(bad_vector, bad_scalar);
        std::vector<std::uint16_t> out_vector(d);
        detail::cpu::simd::int8_decode_f16(codes_vector.data(), scales_vector.data(), d, group,
                                           scale_bytes, out_vector.data());
        Rows::decode(d, codes_scalar.data(), scales_scalar.data(), nullptr,
                     [&](std::int32_t i, float value) {
                       ASSERT_EQ(out_vector[static_cast<std::size_t>(i)],
                                 float_to_half_bits(value));
                     });
      }
    }
  };
  check.template operator()<8, 2>();
  check.template operator()<8, 4>();
  check.template operator()<32, 2>();
  check.template operator()<32, 4>();
  check.template operator()<64, 2>();
  check.template operator()<64, 4>();
  check.template operator()<128, 2>();
  check.template operator()<128, 4>();
#endif
}

// Rows encoded in batches (a token's heads, int8_encode_f16_rows) give each
// row's scalar bits: batches of 1-16 rows, split where they pass the buffers
// (head_dim 512 and 1024), with non-finite and all-zero rows among them.
TEST(Int8Codec, BatchedVectorRowsAreTheScalarCodecs) {
  if (!detail::cpu::simd::available())
    GTEST_SKIP() << "this CPU lacks AVX2 + F16C: only the scalar path runs";
#if KVCACHE_INT8_SIMD
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  auto check = [&]<std::int32_t group, std::int32_t scale_bytes>() {
    using Rows = Int8Rows<group, scale_bytes>;
    for (std::int32_t d : {64, 128, 256, 512, 1024}) {
      if (group > d) continue;
      for (int trial = 0; trial < 12; ++trial) {
        const auto count = static_cast<std::int32_t>(1 + rng() % 16);
        SCOPED_TRACE(::testing::Message() << "group " << group << " scale bytes " << scale_bytes
                                          << " head_dim " << d << " rows " << count);
        std::vector<std::vector<std::uint16_t>> x(static_cast<std::size_t>(count));
        std::vector<std::vector<std::uint8_t>> want_codes(x.size()), want_scales(x.size());
        std::vector<std::vector<std::int8_t>> codes(x.size());
        std::vector<std::vector<std::uint8_t>> scales(x.size());
        std::vector<const std::uint16_t*> rows;
        std::vector<std::int8_t*> code_rows;
        std::vector<std::uint8_t*> scale_rows;
        std::int32_t want_bad = 0;
        for (std::size_t r = 0; r < x.size(); ++r) {
          x[r].resize(static_cast<std::size_t>(d));
          const float magnitude = rng() % 4 == 0 ? 1000.0f : 1.0f;
          for (auto& h : x[r])
            h = float_to_half_bits(normal(rng) * magnitude);
          if (rng() % 4 == 0) x[r][rng() % d] = rng() % 2 ? 0x7e00 : 0xfc00;  // NaN, -Inf
          if (rng() % 5 == 0) std::fill(x[r].begin(), x[r].begin() + group, std::uint16_t{0});
          want_codes[r].assign(static_cast<std::size_t>(d), 0);
          want_scales[r].assign(static_cast<std::size_t>(d / group * scale_bytes), 0);
          want_bad += Rows::encode(
              d,
              [&](std::int32_t i) { return half_bits_to_float(x[r][static_cast<std::size_t>(i)]); },
              want_codes[r].data(), want_scales[r].data(), nullptr);
          codes[r].assign(static_cast<std::size_t>(d), 0x55);
          scales[r].assign(want_scales[r].size(), 0x55);
          rows.push_back(x[r].data());
          code_rows.push_back(codes[r].data());
          scale_rows.push_back(scales[r].data());
        }
        const std::int32_t bad = detail::cpu::simd::int8_encode_f16_rows(
            count, rows.data(), d, group, code_rows.data(), scale_rows.data(), scale_bytes);
        ASSERT_EQ(bad, want_bad);
        for (std::size_t r = 0; r < x.size(); ++r) {
          ASSERT_EQ(std::memcmp(codes[r].data(), want_codes[r].data(), static_cast<std::size_t>(d)),
                    0)
              << "row " << r;
          ASSERT_EQ(scales[r], want_scales[r]) << "row " << r;
        }
      }
    }
  };
  check.template operator()<32, 2>();
  check.template operator()<32, 4>();
  check.template operator()<64, 2>();
  check.template operator()<128, 4>();
  check.template operator()<8, 2>();
#endif
}

}  // namespace
}  // namespace kvcache::testing
