// Paged attention over compressed pages (kernels/codec_attention.hpp) on the
// CPU backend, every codec family: against a dense attention in double
// precision over what gather() returns for the same cache (the codec's own
// decoded values: this measures the kernel, not the codec's error), for every
// dtype, head dims 64 / 128 / 256, grouped-query heads, decode and
// chunked-prefill rows, KIVI sequences with and without quantized pages; the
// step's own table (before commit) against the committed one; bad arguments.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "attention_support.hpp"
#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache::testing {
namespace {

template <class Codec>
using Manager =
    KVCacheManager<CachePolicy<PagedAllocation, LruEviction, NoPrefixSharing, Codec>, HostBackend>;

CacheConfig config(DType dtype, std::int32_t head_dim) {
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 2, head_dim, dtype);
  c.block_size = 32;  // KIVI's group: a page is one group
  c.num_blocks = 48;
  c.max_batch_tokens = 1024;
  c.max_batch_sequences = 4;
  c.max_sequences = 8;
  return c;
}

// The largest error a kernel reading unrounded decoded values may show
// against a reference built on gather()'s values rounded to the dtype: fp32
// is not rounded (the plain kernel's bound); fp16 / bf16 round each value by
// at most half a unit in the last place, which moves a score by up to
// |q| |k| u and the output by about max |v| times that.
double tolerance(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 2e-5;
    case DType::kF16:
      return 4e-3;  // u = 2^-11
    default:
      return 3e-2;  // bf16: u = 2^-8
  }
}

template <class Codec>
class CodecAttention : public ::testing::Test {};

using Codecs = ::testing::Types<Int8Codec<32>, Int8Codec<64, 4>, Fp8Codec<Fp8Scale::kPerHead>,
                                Fp8Codec<Fp8Scale::kPerTensor>, KiviCodec<4, 32, 128>,
                                KiviCodec<2, 32, 64>, LowRankCodec<16>, LowRankCodec<32, 4>>;
TYPED_TEST_SUITE(CodecAttention, Codecs);

TYPED_TEST(CodecAttention, MatchesDenseAttentionOverTheGatheredCache) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (std::int32_t head_dim : {64, 128, 256}) {
      const std::uint64_t seed = test_seed();
      SCOPED_TRACE(::testing::Message()
                   << dtype_name(dtype) << " d" << head_dim << " seed " << seed);
      Manager<TypeParam> m(config(dtype, head_dim));
      StepDriver driver(m, seed);
      const std::vector<SeqId> seqs = {m.create_sequence(), m.create_sequence(),
                                       m.create_sequence()};
      // 231 tokens: KIVI keeps some in pages and the rest in its window;
      // 70: all in the window; 17: a short prompt.
      ASSERT_TRUE(driver.step(seqs, {230, 1, 70}));
      ASSERT_TRUE(driver.step(seqs, {1, 16, 1}));
      const std::vector<std::int32_t> rows = {1, 17, 5};  // decode, a whole prefill, a chunk
      constexpr std::int32_t kQHeads = 8;
      const auto q = random_queries(23, kQHeads, head_dim, driver.rng());
      for (std::int32_t layer = 0; layer < 2; ++layer) {
        const std::vector<float> out = run_attention(m, seqs, rows, kQHeads, layer, q);
        EXPECT_LT(worst_against_gathered(m, seqs, rows, kQHeads, layer, q, out), tolerance(dtype))
            << "layer " << layer;
        // The CPU backend's lanes side by side give the device order's bits.
        EXPECT_TRUE(lanes_agree(m, seqs, rows, kQHeads, layer, q)) << "layer " << layer;
      }
    }
  }
}

// Per-token codecs on pages smaller than a round of 32 keys: a round's rows
// span two or four pages.
template <class Codec>
class CodecAttentionSmallPages : public ::testing::Test {};
using PerTokenCodecs = ::testing::Types<Int8Codec<32>, Int8Codec<64, 4>,
                                        Fp8Codec<Fp8Scale::kPerHead>, LowRankCodec<16>>;
TYPED_TEST_SUITE(CodecAttentionSmallPages, PerTokenCodecs);

TYPED_TEST(CodecAttentionSmallPages, MatchDenseAttentionAndTheLanes) {
  for (const std::int32_t block : {8, 16}) {
    for (DType dtype : {DType::kF32, DType::kF16}) {
      const std::uint64_t seed = test_seed();
      SCOPED_TRACE(::testing::Message()
                   << "block " << block << ", " << dtype_name(dtype) << ", seed " << seed);
      CacheConfig c = config(dtype, 128);
      c.block_size = block;
      c.num_blocks = 64;
      Manager<TypeParam> m(c);
      StepDriver driver(m, seed);
      const std::vector<SeqId> seqs = {m.create_sequence(), m.create_sequence()};
      ASSERT_TRUE(driver.step(seqs, {200, 57}));
      ASSERT_TRUE(driver.step(seqs, {1, 9}));
      const std::vector<std::int32_t> rows = {1, 9};
      const auto q = random_queries(10, 8, 128, driver.rng());
      const std::vector<float> out = run_attention(m, seqs, rows, 8, 1, q);
      EXPECT_LT(worst_against_gathered(m, seqs, rows, 8, 1, q, out), tolerance(dtype));
      EXPECT_TRUE(lanes_agree(m, seqs, rows, 8, 1, q));
    }
  }
}

// Within a step (after append, before commit: the engine's decode), the
// table covers the new tokens, including the groups KIVI flushed into pages
// this step; the result is the committed table's, bit for bit.
TYPED_TEST(CodecAttention, TheStepsTableEqualsTheCommittedOne) {
  Manager<TypeParam> m(config(DType::kF16, 128));
  StepDriver driver(m, test_seed());
  const std::vector<SeqId> seqs = {m.create_sequence(), m.create_sequence()};
  ASSERT_TRUE(driver.step(seqs, {159, 40}));
  PagedAttention<Manager<TypeParam>> attention(m, 8, 1.0f / std::sqrt(128.0f));  // run_attention's
  // 159 + 1 = 160 tokens: KIVI flushes its first group in this step.
  for (const std::vector<std::int32_t>& counts : {std::vector<std::int32_t>{1, 1}, {3, 2}}) {
    for (std::size_t i = 0; i < seqs.size(); ++i)
      ASSERT_EQ(m.try_reserve(seqs[i], counts[i]), ReserveStatus::kOk);
    AppendBatch batch = m.prepare_append(seqs, counts);
    driver.append_layers(batch);
    attention.prepare(batch);
    const auto q = random_queries(counts[0] + counts[1], 8, 128, driver.rng());
    std::vector<float> during(q.size());
    attention.run(1, q.data(), during.data());
    m.commit(batch);
    const std::vector<float> after = run_attention(m, seqs, counts, 8, 1, q);
    EXPECT_EQ(std::memcmp(during.data(), after.data(), during.size() * sizeof(float)), 0);
    EXPECT_LT(worst_against_gathered(m, seqs, counts, 8, 1, q, after), tolerance(DType::kF16));
  }
}

TYPED_TEST(CodecAttention, RefusesBadArgumentsNamingThem) {
  Manager<TypeParam> m(config(DType::kF16, 64));
  StepDriver driver(m, test_seed());
  const std::vector<SeqId> seqs = {m.create_sequence()};
  ASSERT_TRUE(driver.step(seqs, {40}));
  const std::vector<std::int32_t> one = {1};
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [&] { PagedAttention<Manager<TypeParam>>(m, seqs, one, 3, 1.0f); },
      {"3 query heads", "2 KV heads"}));
  const std::vector<std::int32_t> too_many = {41};
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [&] { PagedAttention<Manager<TypeParam>>(m, seqs, too_many, 4, 1.0f); },
      {"41 query rows", "40"}));
  const std::vector<SeqId> unknown = {seqs[0] + 100};
  EXPECT_ANY_THROW(PagedAttention<Manager<TypeParam>>(m, unknown, one, 4, 1.0f));
  PagedAttention<Manager<TypeParam>> attention(m, seqs, one, 4, 1.0f);
  std::vector<float> q(4 * 64, 1.0f), out(4 * 64, 7.0f);
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { attention.run(2, q.data(), out.data()); },
                                           {"layer 2", "[0, 2)"}));
  EXPECT_EQ(out, std::vector<float>(4 * 64, 7.0f));  // nothing written
  kernels::CodecAttentionParams<typename TypeParam::Rows> p;
  p.cache = m.codec().view();
  p.num_rows = 1;
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { launch(m.backend(), p); }, {"null pointer"}));
  m.check_invariants();
  EXPECT_EQ(m.sequence(seqs[0]).num_tokens, 40);
}

// Low-rank attends in coefficient space: the same result as decoding every
// row first (the reference above), with work per key that falls with the
// rank (a score is `rank` products, not head_dim).
TEST(CodecAttentionLowRank, ScoresInCoefficientSpace) {
  using Codec = LowRankCodec<8, 4>;
  Manager<Codec> m(config(DType::kF32, 64));
  StepDriver driver(m, test_seed());
  const std::vector<SeqId> seqs = {m.create_sequence()};
  ASSERT_TRUE(driver.step(seqs, {100}));
  auto r = kernels::CodecAttentionReader<Codec::Rows, float>{};
  kernels::CodecAttentionParams<Codec::Rows> p;
  p.cache = m.codec().view();
  p.state = m.codec().state_data();
  r.p = &p;
  EXPECT_EQ(r.dim(), 8);
  const auto q = random_queries(1, 4, 64, driver.rng());
  const std::vector<float> out = run_attention(m, seqs, {1}, 4, 0, q);
  EXPECT_LT(worst_against_gathered(m, seqs, {1}, 4, 0, q, out), 2e-5);
}

}  // namespace
}  // namespace kvcache::testing
