// Paged attention (kvcache/attention.hpp, kernels/attention.hpp) on the CPU
// backend: against a dense attention in double precision over the K/V each
// sequence was given, for every dtype and layout, grouped-query heads, head
// dims 64 / 128 / 256, decode and chunked-prefill rows; its exponential
// against std::exp; bad arguments refused with the manager untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "attention_support.hpp"
#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache::testing {
namespace {

TEST(AttentionExp, MatchesTheLibraryExponential) {
  std::mt19937_64 rng(test_seed());
  std::uniform_real_distribution<float> range(-87.0f, 88.0f);
  double worst = 0;
  for (int i = 0; i < 200000; ++i) {
    const float x = i < 1000 ? -87.0f + 0.175f * static_cast<float>(i) : range(rng);
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(kernels::attention_exp(x) - want) / want);
  }
  EXPECT_LT(worst, 4e-7);
  EXPECT_EQ(kernels::attention_exp(0.0f), 1.0f);
  EXPECT_EQ(kernels::attention_exp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(kernels::attention_exp(-100.0f), 0.0f);
  EXPECT_TRUE(std::isinf(kernels::attention_exp(std::numeric_limits<float>::infinity())));
  EXPECT_TRUE(std::isnan(kernels::attention_exp(std::numeric_limits<float>::quiet_NaN())));
}

using Params = kvcache::testing::DTypeDimLayout;

class AttentionMatchesDense : public ::testing::TestWithParam<Params> {};

TEST_P(AttentionMatchesDense, DecodeAndChunkedPrefill) {
  const auto [dtype, head_dim, layout] = GetParam();
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 2, head_dim, dtype);
  c.layout = layout;
  c.block_size = 16;
  c.num_blocks = 64;
  c.max_batch_tokens = 1024;
  c.max_batch_sequences = 4;
  KVCacheManager<CachePolicy<PagedAllocation>, HostBackend> m(c);
  StepDriver driver(m, seed);
  std::vector<SeqId> seqs = {m.create_sequence(), m.create_sequence(), m.create_sequence()};
  ASSERT_TRUE(driver.step(seqs, {70, 1, 33}));
  ASSERT_TRUE(driver.step(seqs, {1, 16, 1}));
  const std::vector<std::int32_t> rows = {1, 17, 5};  // decode, a whole prefill, a chunk
  constexpr std::int32_t kQHeads = 8;
  std::int64_t total_rows = 0;
  for (auto r : rows)
    total_rows += r;
  auto q = random_queries(total_rows, kQHeads, head_dim, driver.rng());
  for (std::int32_t layer = 0; layer < 2; ++layer) {
    const std::vector<float> out = run_attention(m, seqs, rows, kQHeads, layer, q);
    std::vector<const std::byte*> k, v;
    std::vector<std::int64_t> lengths;
    for (SeqId seq : seqs) {
      k.push_back(driver.recorded.k[{seq, layer}].data());
      v.push_back(driver.recorded.v[{seq, layer}].data());
      lengths.push_back(m.sequence(seq).num_tokens);
    }
    const double worst =
        worst_against_dense(k, v, lengths, dtype, 2, head_dim, rows, kQHeads, q, out);
    EXPECT_LT(worst, 2e-5) << "layer " << layer;
    EXPECT_TRUE(lanes_agree(m, seqs, rows, kQHeads, layer, q)) << "layer " << layer;
  }
}

INSTANTIATE_TEST_SUITE_P(DTypesHeadDimsLayouts, AttentionMatchesDense,
                         kvcache::testing::every_dtype_dim_layout(),
                         kvcache::testing::dtype_dim_layout_name);

// The CPU loops' edges against the lanes run in turn, bit for bit: passes
// of several blocks of 128 keys (a pass's first block and later ones), a
// round starting mid-page (pages of 64), an odd number of query heads per KV
// head (a query alone and pairs that span two rows), and prefill rows whose
// keys end in different blocks (rows 121-136 of a 136-key sequence).
TEST(PagedAttention, LongPassesOddGroupsAndMidPageRoundsAreTheLanes) {
  for (DType dtype : {DType::kF16, DType::kF32}) {
    const std::uint64_t seed = test_seed();
    SCOPED_TRACE(::testing::Message() << "seed " << seed << ", dtype " << dtype_name(dtype));
    CacheConfig c;
    c.shape = ModelShape::gqa(1, 2, 128, dtype);
    c.block_size = 64;
    c.num_blocks = 32;
    c.max_batch_tokens = 1024;
    c.max_batch_sequences = 4;
    KVCacheManager<CachePolicy<PagedAllocation>, HostBackend> m(c);
    StepDriver driver(m, seed);
    std::vector<SeqId> seqs = {m.create_sequence(), m.create_sequence(), m.create_sequence()};
    ASSERT_TRUE(driver.step(seqs, {300, 120, 1}));
    ASSERT_TRUE(driver.step(seqs, {1, 16, 1}));
    const std::vector<std::int32_t> rows = {1, 16, 1};
    constexpr std::int32_t kQHeads = 6;  // 3 a KV head
    auto q = random_queries(18, kQHeads, 128, driver.rng());
    const std::vector<float> out = run_attention(m, seqs, rows, kQHeads, 0, q);
    std::vector<const std::byte*> k, v;
    std::vector<std::int64_t> lengths;
    for (SeqId seq : seqs) {
      k.push_back(driver.recorded.k[{seq, 0}].data());
      v.push_back(driver.recorded.v[{seq, 0}].data());
      lengths.push_back(m.sequence(seq).num_tokens);
    }
    EXPECT_LT(worst_against_dense(k, v, lengths, dtype, 2, 128, rows, kQHeads, q, out), 2e-5);
    EXPECT_TRUE(lanes_agree(m, seqs, rows, kQHeads, 0, q));
  }
}

// One object prepared step after step (its table buffer reused, and grown
// when a step needs more) gives what a fresh object gives.
TEST(PagedAttention, OneObjectServesStepAfterStep) {
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 2, 64, DType::kF16);
  c.block_size = 16;
  c.num_blocks = 64;
  c.max_batch_tokens = 1024;
  c.max_batch_sequences = 4;
  using Manager = KVCacheManager<CachePolicy<PagedAllocation>, HostBackend>;
  Manager m(c);
  StepDriver driver(m, test_seed());
  PagedAttention<Manager> attention(m, 4, 0.125f);
  std::vector<float> scratch(4 * 64);
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [&] { attention.run(0, scratch.data(), scratch.data()); }, {"nothing prepared"}));
  std::vector<SeqId> seqs = {m.create_sequence()};
  for (int step = 0; step < 4; ++step) {
    if (step == 2) seqs.push_back(m.create_sequence());  // more sequences, more pages
    std::vector<std::int32_t> counts(seqs.size(), step == 2 ? 200 : 3);
    ASSERT_TRUE(driver.step(seqs, counts));
    const std::vector<std::int32_t> rows(seqs.size(), 2);
    const auto q = random_queries(2 * static_cast<std::int64_t>(seqs.size()), 4, 64, driver.rng());
    attention.prepare(seqs, rows);
    std::vector<float> out(q.size());
    attention.run(1, q.data(), out.data());
    const std::vector<float> fresh = run_attention(m, seqs, rows, 4, 1, q);
    EXPECT_EQ(std::memcmp(out.data(), fresh.data(), out.size() * sizeof(float)), 0)
        << "step " << step;
  }
}

// A key whose score is -Inf weighs nothing, first or not: the output is the
// attention over the other keys (and equal to the CPU's own order-free case).
TEST(PagedAttention, AKeyScoredMinusInfinityWeighsNothing) {
  CacheConfig c;
  c.shape = ModelShape::gqa(1, 1, 8, DType::kF32);
  c.block_size = 4;
  c.num_blocks = 4;
  using Manager = KVCacheManager<CachePolicy<PagedAllocation>, HostBackend>;
  std::mt19937_64 rng(test_seed());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto run = [&](const std::vector<float>& k, const std::vector<float>& v, std::int32_t tokens,
                 const std::vector<float>& q) {
    Manager m(c);
    const std::vector<SeqId> seqs = {m.create_sequence()};
    EXPECT_EQ(m.try_reserve(seqs[0], tokens), ReserveStatus::kOk);
    const std::vector<std::int32_t> counts = {tokens};
    AppendBatch batch = m.prepare_append(seqs, counts);
    m.append(0, batch, TensorView::packed(k.data(), DType::kF32, tokens, 1, 8),
             TensorView::packed(v.data(), DType::kF32, tokens, 1, 8));
    m.commit(batch);
    std::vector<float> out(8);
    PagedAttention<Manager> attention(m, seqs, std::vector<std::int32_t>{1}, 1, 1.0f);
    attention.run(0, q.data(), out.data());
    return out;
  };
  std::vector<float> k(5 * 8), v(5 * 8), q(8);
  for (float& x : k)
    x = normal(rng);
  for (float& x : v)
    x = normal(rng);
  for (float& x : q)
    x = std::abs(normal(rng)) + 0.1f;
  k[0] = -std::numeric_limits<float>::infinity();  // key 0 scores -Inf
  const std::vector<float> with = run(k, v, 5, q);
  const std::vector<float> without = run(std::vector<float>(k.begin() + 8, k.end()),
                                         std::vector<float>(v.begin() + 8, v.end()), 4, q);
  for (int i = 0; i < 8; ++i) {
    EXPECT_TRUE(std::isfinite(with[static_cast<std::size_t>(i)]));
    EXPECT_NEAR(with[static_cast<std::size_t>(i)], without[static_cast<std::size_t>(i)], 1e-6);
  }
}

TEST(PagedAttention, RefusesBadArgumentsNamingThem) {
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 2, 64, DType::kF16);
  c.block_size = 16;
  c.num_blocks = 8;
  using Manager = KVCacheManager<CachePolicy<PagedAllocation>, HostBackend>;
  Manager m(c);
  StepDriver driver(m, test_seed());
  const std::vector<SeqId> seqs = {m.create_sequence()};
  ASSERT_TRUE(driver.step(seqs, {20}));
  const std::vector<std::int32_t> one = {1};
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { PagedAttention<Manager>(m, seqs, one, 3, 1.0f); },
                                           {"3 query heads", "2 KV heads"}));
  const std::vector<std::int32_t> too_many = {21};
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [&] { PagedAttention<Manager>(m, seqs, too_many, 4, 1.0f); }, {"21 query rows", "20"}));
  const std::vector<std::int32_t> two = {1, 1};
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { PagedAttention<Manager>(m, seqs, two, 4, 1.0f); },
                                           {"2 row counts", "1 sequences"}));
  PagedAttention<Manager> attention(m, seqs, one, 4, 1.0f);
  std::vector<float> q(4 * 64, 1.0f), out(4 * 64, 7.0f);
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { attention.run(2, q.data(), out.data()); },
                                           {"layer 2", "[0, 2)"}));
  EXPECT_EQ(out, std::vector<float>(4 * 64, 7.0f));  // nothing written
  kernels::AttentionParams p;
  p.cache = m.codec().view();
  p.num_rows = 1;
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { launch(m.backend(), p); }, {"null pointer"}));
  p.q = q.data();
  p.out = out.data();
  p.q_indptr = p.table.indptr = p.table.last_page_len = p.table.indices = one.data();
  p.num_q_heads = 4;
  p.table.batch_size = 1;
  p.cache.page_size = 0;
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { launch(m.backend(), p); }, {"page size"}));
  p.cache.page_size = 16;
  p.num_q_heads = 65536;
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { launch(m.backend(), p); }, {"65535"}));
  m.check_invariants();
  EXPECT_TRUE(driver.reads_back(seqs[0], 0));
}

// The CPU attention's two vector loops: the AVX2 path gives the portable
// one's bits (each lane's products and sums unchanged), on random values with
// zeros, infinities, NaNs and subnormals among them. A NaN is any NaN (which
// operand's payload survives is the compiler's choice; outputs store the
// canonical one).
[[maybe_unused]] bool same_bits(const float* a, const float* b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::memcmp(a + i, b + i, sizeof(float)) != 0) return false;
  }
  return true;
}

#if KVCACHE_INT8_SIMD
__attribute__((target("avx2"))) void exp_of_eight(const float* x, float* out) {
  _mm256_storeu_ps(out, detail::cpu::attention_detail::exp_avx2(_mm256_loadu_ps(x)));
}
#endif

// The vector exponential against kernels::attention_exp on values across its
// whole range, its clamps and their neighbours, and the special values.
TEST(CpuAttentionLoops, VectorExponentialIsTheKernels) {
#if KVCACHE_INT8_SIMD
  if (!detail::cpu::simd::available()) GTEST_SKIP() << "no AVX2 on this processor";
  std::mt19937_64 rng(test_seed());
  std::vector<float> xs = {0.0f,
                           -0.0f,
                           -87.0f,
                           88.0f,
                           std::nextafter(-87.0f, -100.0f),
                           std::nextafter(-87.0f, 0.0f),
                           std::nextafter(88.0f, 100.0f),
                           std::nextafter(88.0f, 0.0f),
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(),
                           -std::numeric_limits<float>::quiet_NaN(),
                           1e-40f,
                           -1e-40f};
  std::uniform_real_distribution<float> wide(-100.0f, 100.0f), near(-1.0f, 1.0f);
  for (int i = 0; i < 200000; ++i)
    xs.push_back(i % 2 == 0 ? wide(rng) : near(rng));
  while (xs.size() % 8 != 0)
    xs.push_back(0.5f);
  for (std::size_t i = 0; i < xs.size(); i += 8) {
    float vector[8];
    exp_of_eight(&xs[i], vector);
    for (std::size_t j = 0; j < 8; ++j) {
      const float scalar = kernels::attention_exp(xs[i + j]);
      ASSERT_TRUE(same_bits(&scalar, &vector[j], 1)) << "x = " << xs[i + j];
    }
  }
#else
  GTEST_SKIP() << "no AVX2 path on this architecture";
#endif
}

TEST(CpuAttentionLoops, VectorPathEqualsPortable) {
#if KVCACHE_INT8_SIMD
  if (!detail::cpu::simd::available()) GTEST_SKIP() << "no AVX2 on this processor";
  std::mt19937_64 rng(test_seed());
  std::normal_distribution<float> normal(0.0f, 3.0f);
  auto value = [&] {
    switch (rng() % 40) {
      case 0:
        return std::numeric_limits<float>::infinity();
      case 1:
        return std::numeric_limits<float>::quiet_NaN();
      case 2:
        return 1e-40f;
      case 3:
        return -0.0f;
      default:
        return normal(rng);
    }
  };
  namespace a = detail::cpu::attention_detail;
  for (std::int32_t dim : {1, 7, 8, 64, 100, 256}) {
    std::vector<float> q(static_cast<std::size_t>(dim)), k(static_cast<std::size_t>(dim) * 32);
    for (float& x : q)
      x = value();
    for (float& x : k)
      x = value();
    float scalar[32] = {}, vector[32];
    a::dots_portable(q.data(), k.data(), dim, scalar);
    a::dots_avx2(q.data(), k.data(), dim, vector);
    EXPECT_TRUE(same_bits(scalar, vector, 32)) << "dots, dim " << dim;
    // Two queries over the same columns: each the one-query dots.
    std::vector<float> q2(q.size());
    for (float& x : q2)
      x = value();
    float second[32] = {}, pair0[32], pair1[32];
    a::dots_portable(q2.data(), k.data(), dim, second);
    a::dots_pair_avx2(q.data(), q2.data(), k.data(), dim, pair0, pair1);
    EXPECT_TRUE(same_bits(scalar, pair0, 32)) << "first of a pair, dim " << dim;
    EXPECT_TRUE(same_bits(second, pair1, 32)) << "second of a pair, dim " << dim;
    // A block's accumulator updates: up to five queries (a block of four
    // and one more), 1-4 rounds of value rows, steps active or not, in a
    // pass's first block (rows start from zero, whatever they held) or a
    // later one (rows carried on).
    for (const bool fresh : {true, false}) {
      const auto count = static_cast<std::size_t>(1 + rng() % 5);
      const auto rounds = static_cast<std::int32_t>(1 + rng() % a::kRoundsPerBlock);
      const auto width = static_cast<std::size_t>(dim);
      std::vector<a::LaneState> states1(count), states2(count);
      for (std::size_t h = 0; h < count; ++h) {
        states1[h].acc.resize(width * 32);
        for (float& x : states1[h].acc)
          x = value();
        states2[h].acc = states1[h].acc;
      }
      std::vector<a::RoundWeights> weights(count * a::kRoundsPerBlock);
      for (a::RoundWeights& w : weights) {
        for (std::int32_t l = 0; l < 32; ++l) {
          w.active[l] = rng() % 5 == 0 ? 0 : 1;
          w.keep[l] = rng() % 7 == 0 ? 0.0f : std::abs(normal(rng));
          w.weight[l] = std::abs(normal(rng));
        }
      }
      std::vector<float> v(width * 32 * static_cast<std::size_t>(rounds));
      for (float& x : v)
        x = value();
      a::accumulate_rounds_portable(states1.data(), weights.data(), count, v.data(), rounds, dim,
                                    fresh);
      a::accumulate_rounds_avx2(states2.data(), weights.data(), count, v.data(), rounds, dim,
                                fresh);
      for (std::size_t h = 0; h < count; ++h) {
        ASSERT_TRUE(same_bits(states1[h].acc.data(), states2[h].acc.data(), width * 32))
            << "accumulate, dim " << dim << ", query " << h << " of " << count << ", " << rounds
            << " rounds, fresh " << fresh;
      }
      // fp16 value rows read where they lie (random bit patterns, each row
      // somewhere of its own) against the same rows converted to floats first.
      std::vector<std::uint16_t> halves(v.size() + 8 * 32 * static_cast<std::size_t>(rounds));
      for (std::uint16_t& h : halves)
        h = static_cast<std::uint16_t>(rng());
      std::vector<const std::byte*> rows(static_cast<std::size_t>(rounds) * 32);
      std::vector<float> decoded(v.size());
      for (std::size_t row = 0; row < rows.size(); ++row) {
        const std::size_t at = row * (width + 8) + rng() % 8;
        rows[row] = reinterpret_cast<const std::byte*>(halves.data() + at);
        for (std::size_t i = 0; i < width; ++i)
          decoded[row * width + i] = half_bits_to_float(halves[at + i]);
      }
      std::vector<a::LaneState> states3(count), states4(count);
      for (std::size_t h = 0; h < count; ++h)
        states3[h].acc = states4[h].acc = states1[h].acc;
      a::accumulate_rounds_avx2(states3.data(), weights.data(), count, decoded.data(), rounds, dim,
                                fresh);
      a::accumulate_rounds_avx2(states4.data(), weights.data(), count,
                                a::HalfValueRows{rows.data()}, rounds, dim, fresh);
      for (std::size_t h = 0; h < count; ++h) {
        ASSERT_TRUE(same_bits(states3[h].acc.data(), states4[h].acc.data(), width * 32))
            << "fp16 rows in place, dim " << dim << ", query " << h << ", " << rounds
            << " rounds, fresh " << fresh;
      }
    }
    // The online-softmax step of the 32 lanes: scores with -Inf, NaN, ties
    // with the running maximum and values past exp's clamps, some lanes past
    // `mine`; twice in a row (the second sees the first's maxima).
    {
      float max1[32], sum1[32], dots[32];
      for (std::int32_t l = 0; l < 32; ++l) {
        max1[l] = rng() % 4 == 0 ? -std::numeric_limits<float>::infinity() : normal(rng);
        sum1[l] = std::abs(normal(rng));
      }
      float max2[32], sum2[32];
      std::memcpy(max2, max1, sizeof(max1));
      std::memcpy(sum2, sum1, sizeof(sum1));
      for (int round = 0; round < 2; ++round) {
        for (std::int32_t l = 0; l < 32; ++l) {
          switch (rng() % 12) {
            case 0:
              dots[l] = -std::numeric_limits<float>::infinity();
              break;
            case 1:
              dots[l] = max1[l];  // a tie (scale 1)
              break;
            case 2:
              dots[l] = normal(rng) * 100.0f;  // past -87 / 88
              break;
            default:
              dots[l] = value();
          }
        }
        const auto mine = static_cast<std::int32_t>(rng() % 33);
        float keep1[32], weight1[32], keep2[32], weight2[32];
        std::int32_t active1[32], active2[32];
        a::softmax_lanes_portable(dots, 1.0f, mine, max1, sum1, keep1, weight1, active1);
        a::softmax_lanes_avx2(dots, 1.0f, mine, max2, sum2, keep2, weight2, active2);
        ASSERT_TRUE(same_bits(max1, max2, 32)) << "maxima, mine " << mine;
        ASSERT_TRUE(same_bits(sum1, sum2, 32)) << "sums, mine " << mine;
        for (std::int32_t l = 0; l < 32; ++l) {
          ASSERT_EQ(active1[l], active2[l]) << "lane " << l;
          if (active1[l] == 0) continue;
          ASSERT_TRUE(same_bits(&keep1[l], &keep2[l], 1)) << "keep, lane " << l;
          ASSERT_TRUE(same_bits(&weight1[l], &weight2[l], 1)) << "weight, lane " << l;
        }
      }
    }
    // The merge of the 32 lanes' accumulators ([32][dim]), some lanes unused,
    // against attention_merged element by element (the device's merge).
    std::vector<float> lanes_acc(static_cast<std::size_t>(dim) * 32);
    for (float& x : lanes_acc)
      x = value();
    float max[32], sum[32];
    for (std::int32_t l = 0; l < 32; ++l) {
      max[l] = normal(rng);
      sum[l] = rng() % 5 == 0 ? 0.0f : std::abs(normal(rng)) + 1.0f;
    }
    const kernels::AttentionMergeWeights m = kernels::attention_merge_weights(max, sum);
    std::vector<float> merged1(static_cast<std::size_t>(dim)), merged2(merged1.size()),
        merged3(merged1.size());
    a::merge_portable(m, lanes_acc.data(), dim, merged1.data());
    a::merge_avx2(m, lanes_acc.data(), dim, merged2.data());
    for (std::int32_t i = 0; i < dim; ++i)
      merged3[static_cast<std::size_t>(i)] =
          kernels::attention_merged(m, lanes_acc.data(), dim, 1, i);
    EXPECT_TRUE(same_bits(merged1.data(), merged3.data(), merged1.size())) << "merge, dim " << dim;
    EXPECT_TRUE(same_bits(merged2.data(), merged3.data(), merged1.size())) << "merge, dim " << dim;
    // Eight key rows into the lanes' columns, at every block of lanes.
    std::vector<float> block(static_cast<std::size_t>(dim) * 8);
    for (float& x : block)
      x = value();
    std::vector<float> columns1(static_cast<std::size_t>(dim) * 32), columns2(columns1.size());
    for (std::size_t i = 0; i < columns1.size(); ++i)
      columns1[i] = columns2[i] = value();
    for (std::int32_t lane = 0; lane < 32; lane += 8) {
      a::keys_to_columns_portable(block.data(), dim, columns1.data(), lane);
      a::keys_to_columns_avx2(block.data(), dim, columns2.data(), lane);
      ASSERT_TRUE(same_bits(columns1.data(), columns2.data(), columns1.size()))
          << "key columns, dim " << dim << " lane " << lane;
      EXPECT_TRUE(same_bits(&columns1[static_cast<std::size_t>(dim - 1) * 32 + lane + 7],
                            &block[static_cast<std::size_t>(7 * dim + dim - 1)], 1))
          << "the last row's last value is in the last column";
    }
    // Eight fp16 rows straight into the columns: the float rows' columns.
    std::vector<std::uint16_t> halves(block.size());
    for (std::size_t i = 0; i < halves.size(); ++i) {
      halves[i] = static_cast<std::uint16_t>(rng());
      block[i] = half_bits_to_float(halves[i]);
    }
    const std::uint16_t* rows[8];
    for (std::size_t r = 0; r < 8; ++r)
      rows[r] = halves.data() + r * static_cast<std::size_t>(dim);
    for (std::int32_t lane = 0; lane < 32; lane += 8) {
      a::keys_to_columns_portable(block.data(), dim, columns1.data(), lane);
      a::half_keys_to_columns_avx2(rows, dim, columns2.data(), lane);
      ASSERT_TRUE(same_bits(columns1.data(), columns2.data(), columns1.size()))
          << "fp16 key columns, dim " << dim << " lane " << lane;
    }
  }
#else
  GTEST_SKIP() << "no AVX2 path on this architecture";
#endif
}

}  // namespace
}  // namespace kvcache::testing
