// Compressed caches through the manager: capacity, measured error of the
// gathered cache on fresh random data, KIVI's residual window, the low-rank
// fit and its energy, re-encoding a cold sequence, and bad configurations.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "codec_reference.hpp"
#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache::testing {
namespace {

template <class Codec>
using Manager =
    KVCacheManager<CachePolicy<PagedAllocation, LruEviction, NoPrefixSharing, Codec>, HostBackend>;
using PlainManager = KVCacheManager<CachePolicy<>, HostBackend>;

CacheConfig config(std::int32_t block_size, std::int64_t blocks, DType dtype = DType::kF16) {
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 4, 128, dtype);
  c.block_size = block_size;
  c.num_blocks = blocks;
  c.max_batch_tokens = 4096;
  c.max_batch_sequences = 8;
  c.max_sequences = 8;
  return c;
}

std::vector<float> as_floats(const std::vector<std::byte>& data, DType dtype) {
  std::vector<float> out(data.size() / static_cast<std::size_t>(dtype_size(dtype)));
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i] = load_as_float(data.data(), dtype, static_cast<std::int64_t>(i));
  return out;
}

// Appends `tokens` random N(0, 1) rows to one sequence, in steps of `step`
// tokens; returns (appended K, gathered K) of layer 1 as floats.
template <class M>
std::pair<std::vector<float>, std::vector<float>> round_trip(M& m, std::int64_t tokens,
                                                             std::int64_t step, std::uint64_t seed,
                                                             SeqId* out_seq = nullptr) {
  StepDriver driver(m, seed);
  const SeqId seq = m.create_sequence();
  for (std::int64_t done = 0; done < tokens; done += step) {
    EXPECT_TRUE(driver.step({seq}, {static_cast<std::int32_t>(std::min(step, tokens - done))}));
  }
  const ModelShape& shape = m.shape();
  const auto bytes = static_cast<std::size_t>(tokens * shape.kv_width() * dtype_size(shape.dtype));
  Buffer k = m.backend().allocate(bytes), v = m.backend().allocate(bytes);
  m.gather(seq, 1, driver.tensor(k, tokens), driver.tensor(v, tokens));
  std::vector<std::byte> got(bytes);
  std::memcpy(got.data(), k.data(), bytes);
  if (out_seq != nullptr) *out_seq = seq;
  return {as_floats(driver.recorded.k[{seq, 1}], shape.dtype), as_floats(got, shape.dtype)};
}

TEST(CodecCapacity, TokensPerByteFollowTheCodes) {
  const ModelShape shape = ModelShape::gqa(32, 8, 128, DType::kF16);
  const double plain = static_cast<double>(PlainCodec::block_bytes(shape, 32));
  // int8 g32: one byte per value plus a 2-byte scale per 32 -> 2 / (1 + 2/32).
  EXPECT_NEAR(plain / static_cast<double>(Int8Codec<32>::block_bytes(shape, 32)),
              2.0 / (1.0 + 2.0 / 32), 1e-9);
  EXPECT_NEAR(plain / static_cast<double>(Int8Codec<128>::block_bytes(shape, 32)),
              2.0 / (1.0 + 2.0 / 128), 1e-9);
  EXPECT_NEAR(plain / static_cast<double>(Fp8Codec<>::block_bytes(shape, 32)), 2.0, 1e-9);
  // int4 KIVI g32: half a byte per value, scale + zero (4 bytes) per 32.
  EXPECT_NEAR(plain / static_cast<double>(KiviCodec<4, 32, 128>::block_bytes(shape, 32)),
              2.0 / (0.5 + 4.0 / 32), 1e-9);
  EXPECT_NEAR(4 * plain / static_cast<double>(KiviCodec<4, 128, 128>::block_bytes(shape, 128)),
              2.0 / (0.5 + 4.0 / 128), 1e-9);
  EXPECT_NEAR(plain / static_cast<double>(KiviCodec<2, 32, 128>::block_bytes(shape, 32)),
              2.0 / (0.25 + 4.0 / 32), 1e-9);
  // Low rank 32 of 128 in fp16: a quarter of the bytes (no reconstructed rows).
  EXPECT_NEAR(plain / static_cast<double>(LowRankCodec<32>::block_bytes(shape, 32)), 4.0, 1e-9);
  // The same byte budget holds that many more tokens.
  CacheConfig c = config(32, 0);
  c.budget_bytes = std::int64_t{64} << 20;
  Manager<Int8Codec<32>> int8(c);
  PlainManager fp16(c);
  EXPECT_NEAR(static_cast<double>(int8.num_blocks()) / static_cast<double>(fp16.num_blocks()), 1.88,
              0.02);
}

TEST(CodecManager, Int8AndFp8ErrorsThroughTheCache) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  {
    Manager<Int8Codec<32>> m(config(16, 256));
    const auto [x, y] = round_trip(m, 700, 97, seed);
    EXPECT_NEAR(relative_error(x, y), 0.0053, 0.0008);
  }
  {
    Manager<Int8Codec<128, 4>> m(config(16, 256));
    const auto [x, y] = round_trip(m, 700, 97, seed);
    EXPECT_NEAR(relative_error(x, y), 0.0064, 0.0008);
  }
  {
    Manager<Fp8Codec<Fp8Scale::kPerHead>> m(config(16, 256));
    const auto [x, y] = round_trip(m, 700, 700, seed);  // one batch: it calibrates the scales
    EXPECT_NEAR(relative_error(x, y), 0.026, 0.004);
    EXPECT_TRUE(m.codec().is_calibrated(0));
    const auto scales = m.codec().state();
    ASSERT_EQ(scales.size(), 2u * 2 * 4);
    for (float s : scales)
      EXPECT_GT(s, 0.0f);
  }
}

TEST(CodecManager, KiviKeepsTheResidualWindowExact) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Manager<KiviCodec<4, 32, 64>> m(config(32, 64));
  SeqId seq = 0;
  // A prefill of 300 then decode one token at a time to 330.
  StepDriver driver(m, seed);
  seq = m.create_sequence();
  ASSERT_TRUE(driver.step({seq}, {300}));
  for (int i = 0; i < 30; ++i)
    ASSERT_TRUE(driver.step({seq}, {1}));
  const SequenceInfo info = m.sequence(seq);
  // Whole groups of 32 leave the window, keeping at least 64 recent tokens.
  EXPECT_EQ(info.quantized_tokens, (330 - 64) / 32 * 32);
  EXPECT_EQ(info.blocks.size(), 8u);
  EXPECT_EQ(m.stats().flushed_groups, 8);
  const ModelShape& shape = m.shape();
  const auto bytes = static_cast<std::size_t>(330 * shape.kv_width() * 2);
  Buffer k = m.backend().allocate(bytes), v = m.backend().allocate(bytes);
  m.gather(seq, 0, driver.tensor(k, 330), driver.tensor(v, 330));
  const auto& recorded_k = driver.recorded.k[{seq, 0}];
  const auto& recorded_v = driver.recorded.v[{seq, 0}];
  const std::size_t row = static_cast<std::size_t>(shape.kv_width() * 2);
  const std::size_t exact_from = static_cast<std::size_t>(info.quantized_tokens) * row;
  // The ring's tokens come back bit for bit...
  EXPECT_EQ(
      std::memcmp(k.bytes_data() + exact_from, recorded_k.data() + exact_from, bytes - exact_from),
      0);
  EXPECT_EQ(
      std::memcmp(v.bytes_data() + exact_from, recorded_v.data() + exact_from, bytes - exact_from),
      0);
  // ...the quantized ones within int4's error.
  std::vector<std::byte> head_k(recorded_k.begin(),
                                recorded_k.begin() + static_cast<std::ptrdiff_t>(exact_from));
  std::vector<std::byte> got_k(k.bytes_data(), k.bytes_data() + exact_from);
  EXPECT_NEAR(relative_error(as_floats(head_k, DType::kF16), as_floats(got_k, DType::kF16)), 0.08,
              0.015);
  m.check_invariants();
}

TEST(CodecManager, LowRankStoresCoefficientsAndKeepsTheEnergyOfLowRankData) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  Manager<LowRankCodec<16, 4>> m(config(16, 128, DType::kF32));
  const ModelShape& shape = m.shape();
  // Rows that lie in a 12-dimensional subspace per head, plus 1% noise.
  const std::int64_t tokens = 400;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> directions(static_cast<std::size_t>(shape.num_kv_heads) * 12 * 128);
  for (float& x : directions)
    x = normal(rng);
  std::vector<float> rows(static_cast<std::size_t>(tokens * shape.kv_width()));
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int32_t h = 0; h < shape.num_kv_heads; ++h) {
      float weights[12];
      for (float& w : weights)
        w = normal(rng);
      for (std::int32_t d = 0; d < 128; ++d) {
        float value = 0.01f * normal(rng);
        for (int j = 0; j < 12; ++j)
          value += weights[j] * directions[(static_cast<std::size_t>(h) * 12 + j) * 128 + d];
        rows[static_cast<std::size_t>((t * shape.num_kv_heads + h) * 128 + d)] = value;
      }
    }
  }
  const SeqId seq = m.create_sequence();
  ASSERT_EQ(m.try_reserve(seq, tokens), ReserveStatus::kOk);
  EXPECT_FALSE(m.codec().is_calibrated(0));
  const auto view = TensorView::packed(rows.data(), DType::kF32, tokens, shape.num_kv_heads, 128);
  for (std::int32_t layer = 0; layer < 2; ++layer)
    m.calibrate(layer, view, view);
  AppendBatch batch = m.prepare_append(
      std::vector<SeqId>{seq}, std::vector<std::int32_t>{static_cast<std::int32_t>(tokens)});
  for (std::int32_t layer = 0; layer < 2; ++layer)
    m.append(layer, batch, view, view);
  m.commit(batch);
  std::vector<float> k(rows.size()), v(rows.size());
  m.gather(seq, 1, TensorView::packed(k.data(), DType::kF32, tokens, shape.num_kv_heads, 128),
           TensorView::packed(v.data(), DType::kF32, tokens, shape.num_kv_heads, 128));
  EXPECT_LT(relative_error(rows, k), 0.01);
  for (std::int32_t h = 0; h < shape.num_kv_heads; ++h)
    EXPECT_GT(m.codec().energy_kept(1, 0, h), 0.9999f);
  // Pages hold 16 fp32 coefficients per row: 16 x 4 bytes instead of 128 x 4.
  EXPECT_EQ(m.bytes_per_block(), PlainCodec::block_bytes(shape, 16) / 8);
  // On unstructured data the kept energy says how little a rank-16 basis holds.
  Manager<LowRankCodec<16, 4>> noise(config(16, 128, DType::kF32));
  const auto [x, y] = round_trip(noise, 300, 300, seed);
  const float kept = noise.codec().energy_kept(1, 0, 0);
  EXPECT_GT(kept, 16.0f / 128.0f);
  EXPECT_LT(kept, 0.5f);
  EXPECT_NEAR(relative_error(x, y), std::sqrt(1.0 - kept), 0.1);
}

TEST(CodecManager, ReencodeMovesAColdSequenceIntoACompressedPool) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  PlainManager hot(config(16, 64));
  Manager<Int8Codec<32>> cold(config(16, 64));
  StepDriver driver(hot, seed);
  const SeqId seq = hot.create_sequence();
  ASSERT_TRUE(driver.step({seq}, {200}));
  const std::int64_t used = hot.memory().used_blocks;
  const auto moved = reencode_sequence(hot, seq, cold);
  ASSERT_TRUE(moved.has_value());
  EXPECT_FALSE(hot.contains(seq));
  EXPECT_EQ(hot.memory().used_blocks, 0);  // the plain blocks are free again
  EXPECT_EQ(cold.memory().used_blocks, used);
  EXPECT_LT(cold.memory().used_bytes(), hot.bytes_per_block() * used * 6 / 10);
  std::vector<std::byte> k(200 * 512 * 2), v(k.size());
  cold.gather(*moved, 1, TensorView::packed(k.data(), DType::kF16, 200, 4, 128),
              TensorView::packed(v.data(), DType::kF16, 200, 4, 128));
  EXPECT_NEAR(relative_error(as_floats(driver.recorded.k[{seq, 1}], DType::kF16),
                             as_floats(k, DType::kF16)),
              0.0053, 0.0008);
  // No room in the target: nothing moves.
  Manager<Int8Codec<32>> tiny(config(16, 2));
  const SeqId other = hot.create_sequence();
  ASSERT_TRUE(driver.step({other}, {100}));
  EXPECT_FALSE(reencode_sequence(hot, other, tiny).has_value());
  EXPECT_TRUE(hot.contains(other));
  EXPECT_EQ(tiny.num_sequences(), 0);
}

TEST(CodecManager, NonFiniteInputIsSaturatedAndCounted) {
  Manager<Int8Codec<32>> m(config(16, 16));
  const ModelShape& shape = m.shape();
  std::vector<std::uint16_t> k(static_cast<std::size_t>(2 * shape.kv_width()),
                               float_to_half_bits(0.25f));
  k[5] = float_to_half_bits(std::nanf(""));
  k[700] = float_to_half_bits(std::numeric_limits<float>::infinity());
  const SeqId seq = m.create_sequence();
  ASSERT_EQ(m.try_reserve(seq, 2), ReserveStatus::kOk);
  AppendBatch batch = m.prepare_append(std::vector<SeqId>{seq}, std::vector<std::int32_t>{2});
  for (std::int32_t layer = 0; layer < 2; ++layer) {
    m.append(layer, batch, TensorView::packed(k.data(), DType::kF16, 2, 4, 128),
             TensorView::packed(k.data(), DType::kF16, 2, 4, 128));
  }
  m.commit(batch);
  EXPECT_EQ(m.stats().nonfinite_values, 2 * 2 * 2);  // 2 values x K and V x 2 layers
  std::vector<std::uint16_t> out(k.size()), out_v(k.size());
  m.gather(seq, 0, TensorView::packed(out.data(), DType::kF16, 2, 4, 128),
           TensorView::packed(out_v.data(), DType::kF16, 2, 4, 128));
  EXPECT_EQ(half_bits_to_float(out[5]), 0.0f);
  EXPECT_NEAR(half_bits_to_float(out[0]), 0.25f, 0.002f);
  for (std::uint16_t bits : out)
    EXPECT_TRUE(std::isfinite(half_bits_to_float(bits)));
}

TEST(CodecManager, BadConfigurationsAreRejected) {
  EXPECT_TRUE(throws_with<InvalidArgument>([] { Manager<Int8Codec<48>> m(config(16, 8)); },
                                           {"group size 48", "head_dim 128"}));
  EXPECT_TRUE(
      throws_with<InvalidArgument>([] { Manager<KiviCodec<4, 32, 48>> m(config(32, 8)); },
                                   {"residual window 48", "multiple of the group size 32"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([] { Manager<KiviCodec<4, 32, 64>> m(config(16, 8)); },
                                           {"block_size 16", "group size 32"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([] { Manager<LowRankCodec<256>> m(config(16, 8)); },
                                           {"rank 256", "[1, head_dim 128]"}));
  EXPECT_TRUE(
      throws_with<InvalidArgument>([] { Manager<LowRankCodec<0>> m(config(16, 8)); }, {"rank 0"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [] {
        CacheConfig c = config(16, 8);
        c.layout = KVLayout::kHND;
        Manager<Int8Codec<32>> m(c);
      },
      {"layout HND", "NHD"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [] {
        CacheConfig c = config(16, 8);
        c.shape.dtype = static_cast<DType>(7);
        Manager<Fp8Codec<>> m(c);
      },
      {"dtype 7"}));
  // A tensor of another dtype than the cache's.
  Manager<Int8Codec<32>> m(config(16, 8));
  const SeqId seq = m.create_sequence();
  ASSERT_EQ(m.try_reserve(seq, 1), ReserveStatus::kOk);
  AppendBatch batch = m.prepare_append(std::vector<SeqId>{seq}, std::vector<std::int32_t>{1});
  alignas(16) float rows[512];
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [&] {
        m.append(0, batch, TensorView::packed(rows, DType::kF32, 1, 4, 128),
                 TensorView::packed(rows, DType::kF32, 1, 4, 128));
      },
      {"dtype fp32", "holds fp16"}));
  // KIVI keeps its recent tokens outside the pages: no page-table export.
  Manager<KiviCodec<4, 32, 64>> kivi(config(32, 8));
  const SeqId k_seq = kivi.create_sequence();
  EXPECT_TRUE(
      throws_with<Unsupported>([&] { (void)export_flashinfer(kivi, std::vector<SeqId>{k_seq}); },
                               {"export_flashinfer", "ring", "gather"}));
}

}  // namespace
}  // namespace kvcache::testing
