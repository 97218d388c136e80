// The live budget (set_budget_blocks) and the tuner: shrinking evicts first
// and never drops a running sequence's block, refusals change nothing, the
// tuner's rules fire on the figures they name, its moves into and out of a
// compressed pool, and its limits.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/budget.hpp"
#include "kvcache/kvcache.hpp"
#include "kvcache/tuner/tuner.hpp"

namespace kvcache {
namespace {

using testing::test_seed;
using Lru = CachePolicy<PagedAllocation, LruEviction, PrefixSharing>;
using Host = KVCacheManager<Lru, HostBackend>;
using Meta = KVCacheManager<Lru, MetadataBackend>;

CacheConfig config(std::int64_t blocks) {
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 2, 8, DType::kF16);
  c.block_size = 4;
  c.num_blocks = blocks;
  return c;
}

std::vector<std::int32_t> prompt(std::mt19937_64& rng, std::size_t tokens) {
  std::vector<std::int32_t> p(tokens);
  for (auto& t : p)
    t = static_cast<std::int32_t>(rng() % 100000);
  return p;
}

TEST(Budget, ShrinkEvictsCachedBlocksAndKeepsRunningSequencesWhole) {
  std::mt19937_64 rng(test_seed());
  Host cache(config(64));
  testing::StepDriver<Host> driver(cache, rng());
  // Two running sequences of 5 blocks each, and 8 cached blocks.
  std::vector<SeqId> running;
  for (int i = 0; i < 2; ++i) {
    running.push_back(cache.create_sequence(prompt(rng, 20)));
    ASSERT_TRUE(driver.step({running.back()}, {20}));
  }
  for (int i = 0; i < 2; ++i) {
    const SeqId s = cache.create_sequence(prompt(rng, 16));
    ASSERT_TRUE(driver.step({s}, {16}));
    cache.release(s);
  }
  ASSERT_EQ(cache.num_cached_blocks(), 8);
  EXPECT_EQ(pinned_blocks(cache), 10);

  const MemoryStats before = cache.memory();
  EXPECT_FALSE(set_budget_blocks(cache, 9)) << "running sequences hold 10 blocks";
  EXPECT_EQ(cache.memory().cached_blocks, before.cached_blocks) << "a refusal evicts nothing";
  EXPECT_EQ(budget_blocks(cache), 64);

  ASSERT_TRUE(set_budget_blocks(cache, 14));
  EXPECT_EQ(budget_blocks(cache), 14);
  EXPECT_EQ(cache.num_cached_blocks(), 4) << "four cached blocks had to go";
  EXPECT_EQ(cache.num_free_blocks(), 0);
  EXPECT_EQ(cache.stats().evicted_blocks, 4);
  cache.check_invariants();
  for (SeqId s : running)
    for (std::int32_t layer = 0; layer < 2; ++layer)
      EXPECT_TRUE(driver.reads_back(s, layer));
  // The budget holds: 4 more blocks can come only from the cached ones.
  EXPECT_EQ(cache.try_reserve(running[0], 16), ReserveStatus::kOk);
  EXPECT_EQ(cache.num_cached_blocks(), 0);
  EXPECT_EQ(cache.try_reserve(running[1], 4), ReserveStatus::kPoolFull);
  EXPECT_EQ(cache.stats().reserve_failures, 1);
  // Growing gives the blocks back.
  ASSERT_TRUE(set_budget_blocks(cache, 64));
  EXPECT_EQ(cache.try_reserve(running[1], 4), ReserveStatus::kOk);
  cache.check_invariants();
}

TEST(Budget, ARequestLargerThanTheBudgetEvictsNothing) {
  std::mt19937_64 rng(test_seed());
  Meta cache(config(64));
  for (int i = 0; i < 3; ++i) {  // 12 cached blocks
    const auto p = prompt(rng, 16);
    const SeqId s = cache.create_sequence(p);
    ASSERT_EQ(cache.try_reserve(s, 16), ReserveStatus::kOk);
    const SeqId seqs[] = {s};
    const std::int32_t counts[] = {16};
    cache.commit(cache.prepare_append(seqs, counts));
    cache.release(s);
  }
  ASSERT_TRUE(set_budget_blocks(cache, 20));
  const std::int64_t cached = cache.num_cached_blocks();
  const SeqId big = cache.create_sequence();
  EXPECT_EQ(cache.try_reserve(big, 4 * 21), ReserveStatus::kPoolFull) << "21 blocks of 20";
  EXPECT_EQ(cache.num_cached_blocks(), cached) << "refused before anything was evicted";
  EXPECT_EQ(cache.try_reserve(big, 4 * 20), ReserveStatus::kOk);
  cache.check_invariants();
}

TEST(Budget, ParkedSequencesMayGoRunningOnesNever) {
  std::mt19937_64 rng(test_seed());
  Meta cache(config(32));
  const SeqId parked = cache.create_sequence();
  ASSERT_EQ(cache.try_reserve(parked, 40), ReserveStatus::kOk);  // 10 blocks
  cache.park(parked);
  const SeqId running = cache.create_sequence();
  ASSERT_EQ(cache.try_reserve(running, 24), ReserveStatus::kOk);  // 6 blocks
  EXPECT_FALSE(set_budget_blocks(cache, 5));
  EXPECT_TRUE(cache.contains(parked)) << "refused: the parked sequence stays";
  ASSERT_TRUE(set_budget_blocks(cache, 6));
  EXPECT_FALSE(cache.unpark(parked)) << "it was evicted to make room";
  EXPECT_EQ(cache.sequence(running).num_tokens, 0);
  EXPECT_EQ(cache.memory().used_blocks, 6);
  cache.check_invariants();
}

TEST(Budget, BadValuesAreRefusedNamingThem) {
  Meta cache(config(32));
  EXPECT_TRUE(testing::throws_with<InvalidArgument>([&] { set_budget_blocks(cache, 0); },
                                                    {"0 blocks", "1 to 32"}));
  EXPECT_TRUE(testing::throws_with<InvalidArgument>([&] { set_budget_blocks(cache, 33); },
                                                    {"33 blocks", "1 to 32"}));
  KVCacheManager<CachePolicy<DynamicAllocation, LruEviction>, MetadataBackend> dynamic(config(32));
  EXPECT_TRUE(testing::throws_with<InvalidArgument>([&] { set_budget_blocks(dynamic, 8); },
                                                    {"dynamic", "PagedAllocation"}));
  EXPECT_EQ(budget_blocks(cache), 32);
}

// Requests over a metadata cache: prompts from a pool of prefixes larger
// than the cache, released after each request.
void serve(Meta& cache, Tuner<Meta>& tuner, std::mt19937_64& rng,
           const std::vector<std::vector<std::int32_t>>& prompts, int requests) {
  for (int i = 0; i < requests; ++i) {
    const auto& p = prompts[rng() % prompts.size()];
    const SeqId s = cache.create_sequence(p);
    const auto rest = static_cast<std::int64_t>(p.size()) - cache.sequence(s).num_tokens;
    if (cache.try_reserve(s, rest) == ReserveStatus::kOk) {
      const SeqId seqs[] = {s};
      const std::int32_t counts[] = {static_cast<std::int32_t>(rest)};
      cache.commit(cache.prepare_append(seqs, counts));
    }
    cache.release(s);
    tuner.observe();
  }
}

TEST(Tuner, GrowsForCapacityMissesUpToTheLimitAndShrinksToIt) {
  std::mt19937_64 rng(test_seed());
  Meta cache(config(400));
  ASSERT_TRUE(set_budget_blocks(cache, 100));
  Tuner<Meta> tuner(cache, TunerOptions{.every = 50});
  tuner.set_memory_limit(150);
  std::vector<std::vector<std::int32_t>> prompts;
  for (int i = 0; i < 60; ++i)
    prompts.push_back(prompt(rng, 16));  // 240 distinct blocks, more than the budget
  serve(cache, tuner, rng, prompts, 2000);
  EXPECT_EQ(budget_blocks(cache), 150) << "grown to the limit, not past it";
  ASSERT_GE(tuner.stats().grows, 4);
  const TunerDecision& first = tuner.log().front();
  EXPECT_EQ(first.action, "grow");
  EXPECT_EQ(first.budget_before, 100);
  EXPECT_EQ(first.budget_after, 110) << "10% a step";
  EXPECT_NE(first.reason.find("refetched"), std::string::npos) << first.reason;
  for (const TunerDecision& d : tuner.log())
    EXPECT_LE(d.budget_after, 150);

  tuner.set_memory_limit(80);
  const TunerDecision* d = tuner.decide();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->action, "limit");
  EXPECT_EQ(budget_blocks(cache), 80);
  EXPECT_EQ(tuner.stats().limit_shrinks, 1);
  cache.check_invariants();
}

TEST(Tuner, ARefusedShrinkChangesNothingAndIsTriedAgain) {
  Meta cache(config(64));
  Tuner<Meta> tuner(cache, TunerOptions{.every = 10});
  const SeqId held = cache.create_sequence();
  ASSERT_EQ(cache.try_reserve(held, 160), ReserveStatus::kOk);  // 40 blocks
  tuner.set_memory_limit(30);
  const TunerDecision* d = tuner.decide();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->action, "refused");
  EXPECT_NE(d->reason.find("running sequences hold 40 blocks"), std::string::npos) << d->reason;
  EXPECT_EQ(budget_blocks(cache), 40) << "as far as the running sequence allows";
  EXPECT_EQ(cache.sequence(held).num_tokens, 0);
  EXPECT_EQ(cache.sequence(held).reserved_tokens, 160);
  cache.release(held);
  d = tuner.decide();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->action, "limit");
  EXPECT_EQ(budget_blocks(cache), 30);
  EXPECT_EQ(tuner.stats().refused, 1);
}

TEST(Tuner, ShrinksAnUnderusedCacheOnlyOnceItStoppedFilling) {
  std::mt19937_64 rng(test_seed());
  Meta cache(config(400));
  Tuner<Meta> tuner(cache, TunerOptions{.every = 20, .min_budget = 40});
  std::vector<std::vector<std::int32_t>> prompts;
  for (int i = 0; i < 10; ++i)
    prompts.push_back(prompt(rng, 16));  // 40 distinct blocks: a small working set
  serve(cache, tuner, rng, prompts, 400);
  ASSERT_GE(tuner.stats().shrinks, 1);
  for (const TunerDecision& d : tuner.log()) {
    EXPECT_NE(d.action, "grow");
    EXPECT_GE(d.budget_after, 40) << "never under min_budget";
  }
  EXPECT_LT(budget_blocks(cache), 100);
  EXPECT_EQ(cache.stats().evicted_blocks, 0) << "the working set still fits";
}

TEST(Tuner, MovesColdSequencesIntoACompressedPoolAndBack) {
  std::mt19937_64 rng(test_seed());
  using Int8 =
      KVCacheManager<CachePolicy<PagedAllocation, LruEviction, NoPrefixSharing, Int8Codec<8>>,
                     HostBackend>;
  CacheConfig c = config(40);
  Host cache(c);
  Int8 pool(c);
  testing::StepDriver<Host> driver(cache, rng());
  Tuner<Host, Int8> tuner(cache, TunerOptions{.every = 1000});
  std::vector<SeqId> live;  // coldest first
  std::vector<std::pair<SeqId, bool>> moves;
  tuner.attach_compressed_pool(
      pool, [&] { return live; },
      [&](SeqId from, SeqId to, bool compressed) {
        moves.emplace_back(to, compressed);
        std::replace(live.begin(), live.end(), from, to);
      });
  for (int i = 0; i < 9; ++i) {  // 9 x 4 = 36 of 40 blocks: pressure 0.9
    live.push_back(cache.create_sequence());
    ASSERT_TRUE(driver.step({live.back()}, {16}));
  }
  ASSERT_TRUE(driver.step({live.back()}, {1}));  // 37 blocks: 0.925
  const TunerDecision* d = tuner.decide();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->action, "compress");
  EXPECT_EQ(d->sequences_moved, 2) << "37 -> 33 -> 29 blocks: under 0.8 after two";
  ASSERT_EQ(moves.size(), 2u);
  EXPECT_TRUE(pool.contains(moves[0].first));
  EXPECT_EQ(pool.sequence(moves[0].first).num_tokens, 16);
  EXPECT_LE(static_cast<double>(cache.memory().used_blocks) / 40, 0.8);
  EXPECT_EQ(tuner.stats().compressed, 2);
  // Pressure falls (the engine releases the rest): the two come back.
  for (std::size_t i = 2; i < live.size(); ++i)
    cache.release(live[i]);
  d = tuner.decide();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->action, "decompress");
  EXPECT_EQ(d->sequences_moved, 2);
  ASSERT_EQ(moves.size(), 4u);
  EXPECT_FALSE(moves[2].second);
  EXPECT_TRUE(cache.contains(moves[2].first));
  EXPECT_EQ(cache.sequence(moves[2].first).num_tokens, 16);
  EXPECT_EQ(pool.num_sequences(), 0);
  cache.check_invariants();
  pool.check_invariants();
}

TEST(Tuner, OverTheLimitItCompressesRunningSequencesUntilTheyFit) {
  std::mt19937_64 rng(test_seed());
  using Int8 =
      KVCacheManager<CachePolicy<PagedAllocation, LruEviction, NoPrefixSharing, Int8Codec<8>>,
                     HostBackend>;
  Host cache(config(40));
  Int8 pool(config(40));
  testing::StepDriver<Host> driver(cache, rng());
  Tuner<Host, Int8> tuner(cache, TunerOptions{.every = 1000});
  std::vector<SeqId> live;
  tuner.attach_compressed_pool(
      pool, [&] { return live; },
      [&](SeqId from, SeqId to, bool) { std::replace(live.begin(), live.end(), from, to); });
  for (int i = 0; i < 5; ++i) {  // 5 x 4 = 20 blocks, pressure 0.5
    live.push_back(cache.create_sequence());
    ASSERT_TRUE(driver.step({live.back()}, {16}));
  }
  tuner.set_memory_limit(10);
  const TunerDecision* d = tuner.decide();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->action, "compress");
  EXPECT_EQ(d->sequences_moved, 3) << "20 -> 8 blocks held: under the limit of 10";
  EXPECT_EQ(tuner.stats().refused, 1);
  d = tuner.decide();
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->action, "limit");
  EXPECT_EQ(budget_blocks(cache), 10);
  cache.check_invariants();
}

TEST(Tuner, BadOptionsAreRefusedNamingThem) {
  Meta cache(config(32));
  EXPECT_TRUE(testing::throws_with<InvalidArgument>(
      [&] { Tuner<Meta> t(cache, TunerOptions{.every = 0}); }, {"every 0 requests"}));
  EXPECT_TRUE(testing::throws_with<InvalidArgument>(
      [&] { Tuner<Meta> t(cache, TunerOptions{.compress_above = 0.6}); },
      {"hysteresis", "compress above 0.6"}));
  EXPECT_TRUE(testing::throws_with<InvalidArgument>(
      [&] { Tuner<Meta> t(cache, TunerOptions{.min_budget = 33}); }, {"min_budget 33"}));
  Tuner<Meta> tuner(cache);
  EXPECT_TRUE(testing::throws_with<InvalidArgument>([&] { tuner.set_memory_limit(40); },
                                                    {"40 blocks", "1 to 32"}));
  EXPECT_EQ(tuner.memory_limit(), 32);
}

}  // namespace
}  // namespace kvcache
