// The replay with a host tier: evicted blocks come back from the tier, and
// an exclusive LRU tier under an LRU pool hits exactly what one LRU pool of
// both sizes hits (one request at a time), on fresh synthetic workloads; a
// tier that holds everything gives the unlimited pool's hit rate; moving
// real bytes changes no hit; bad sizes are refused. Engines with their own
// pools sharing one tier: a shared tier of everything gives the unlimited hit
// rate whatever the routing.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "cli.hpp"
#include "kv_test_support.hpp"
#include "replay.hpp"

namespace kvcache::replay {
namespace {

using kvcache::testing::test_seed;
using kvcache::testing::throws_with;

ReplayOptions one_at_a_time(std::int64_t capacity, std::int64_t tier) {
  ReplayOptions o;
  o.policy = "lru";
  o.decode_ms_per_token = 0;
  o.capacity_blocks = capacity;
  o.host_tier_blocks = tier;
  return o;
}

TEST(ReplayTier, AnExclusiveTierHitsWhatOnePoolOfBothSizesHits) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  int compared = 0, skipped = 0, helped = 0;
  for (int round = 0; round < 3; ++round) {
    const Trace trace = synthetic_trace(80 + static_cast<std::int32_t>(rng() % 80), rng());
    const std::int64_t distinct = unique_blocks(trace);
    for (std::int64_t divisor : {64, 16, 4}) {
      const std::int64_t pool = std::max<std::int64_t>(2, distinct / divisor);
      const ReplayResult alone = run_replay(trace, one_at_a_time(pool, 0));
      for (std::int64_t times : {1, 3}) {
        const ReplayResult tiered = run_replay(trace, one_at_a_time(pool, times * pool));
        const ReplayResult big = run_replay(trace, one_at_a_time(pool * (1 + times), 0));
        EXPECT_EQ(tiered.tier_offloads, tiered.evicted_blocks) << "every eviction went down";
        EXPECT_GE(tiered.blocks_hit, alone.blocks_hit);
        // A request longer than the pool alone is rejected there, not in the
        // big pool: the equality holds where every request fits the pool.
        if (tiered.rejected != 0 || big.rejected != 0) {
          ++skipped;
          continue;
        }
        ++compared;
        EXPECT_EQ(tiered.blocks_hit, big.blocks_hit) << "pool " << pool << ", tier x" << times;
        // The tier served blocks exactly where the bigger pool hit more than
        // the pool alone (a tier never hit leaves the pool's run unchanged).
        EXPECT_EQ(tiered.blocks_hit_tier > 0, big.blocks_hit > alone.blocks_hit)
            << "pool " << pool << ", tier x" << times;
        if (tiered.blocks_hit_tier > 0) ++helped;
      }
    }
  }
  EXPECT_GE(compared, 9) << skipped << " configurations had requests longer than the pool";
  EXPECT_GE(helped, 3) << "the tier should serve blocks in some configurations";
}

TEST(ReplayTier, ATierHoldingEverythingGivesTheUnlimitedHitRate) {
  const Trace trace = synthetic_trace(120, test_seed());
  const std::int64_t distinct = unique_blocks(trace);
  const ReplayResult unlimited = run_replay(trace, one_at_a_time(0, 0));
  const ReplayResult tiered = run_replay(trace, one_at_a_time(distinct / 32 + 1, distinct));
  EXPECT_EQ(tiered.blocks_hit, unlimited.blocks_hit);
  EXPECT_GT(tiered.blocks_hit_tier, 0);
  EXPECT_EQ(tiered.tier_evictions, 0);
}

// Real K/V bytes on the CPU: the same hits, and the bytes moved are the
// blocks moved times the block's bytes.
TEST(ReplayTier, MovingRealBytesChangesNoHit) {
  const Trace trace = synthetic_trace(150, test_seed());
  ReplayOptions options =
      one_at_a_time(std::max<std::int64_t>(2, unique_blocks(trace) / 16), unique_blocks(trace) / 8);
  const ReplayResult metadata = run_replay(trace, options);
  options.model = ModelShape::gqa(1, 1, 8, DType::kF16);
  const ReplayResult bytes = run_replay(trace, options);
  EXPECT_EQ(bytes.blocks_hit, metadata.blocks_hit);
  EXPECT_EQ(bytes.blocks_hit_tier, metadata.blocks_hit_tier);
  const std::int64_t block_bytes = 2 * 512 * 8 * 2;  // K and V, one layer, one head of 8 fp16
  EXPECT_EQ(bytes.tier_bytes_offloaded, bytes.tier_offloads * block_bytes);
  EXPECT_EQ(bytes.tier_bytes_onboarded, bytes.blocks_hit_tier * block_bytes);
  EXPECT_GT(bytes.blocks_hit_tier, 0);
}

TEST(ReplayTier, BadTierSizesAreRefused) {
  const Trace trace = synthetic_trace(10, 1);
  ReplayOptions options = one_at_a_time(8, -1);
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { run_replay(trace, options); },
                                           {"host tier of -1 blocks"}));
  const std::vector<std::string> words = {"--host-tier-blocks", "-5"};
  EXPECT_TRUE(
      throws_with<UsageError>([&] { parse_arguments(words); }, {"--host-tier-blocks", "-5"}));
  const std::vector<std::string> both = {"--tier-table", "--sweep"};
  EXPECT_TRUE(throws_with<UsageError>([&] { parse_arguments(both); }, {"--tier-table"}));
}

// ---- engines sharing a tier ----------------------------------------------------------

// Engines that share a tier holding every block hit every repeated block:
// the unlimited pool's hit rate, whatever the routing; alone they publish
// nothing and hit less.
TEST(ReplayEngines, ASharedTierOfEverythingGivesTheUnlimitedHitRate) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const Trace trace = synthetic_trace(100 + static_cast<std::int32_t>(rng() % 100), rng());
  const std::int64_t distinct = unique_blocks(trace);
  const ReplayResult unlimited = run_replay(trace, one_at_a_time(0, 0));
  for (const bool by_prefix : {false, true}) {
    ReplayOptions o = one_at_a_time(std::max<std::int64_t>(2, distinct / 32), 0);
    o.engines = 4;
    o.route_by_prefix = by_prefix;
    const ReplayResult alone = run_replay(trace, o);
    EXPECT_EQ(alone.published, 0);
    EXPECT_EQ(alone.requests, static_cast<std::int64_t>(trace.requests.size()));
    o.shared_tier_blocks = distinct;
    const ReplayResult shared = run_replay(trace, o);
    EXPECT_EQ(shared.blocks_hit, unlimited.blocks_hit) << "route by prefix " << by_prefix;
    EXPECT_GE(shared.blocks_hit, alone.blocks_hit);
    EXPECT_GT(shared.blocks_hit_tier, 0);
    EXPECT_GT(shared.published, 0);
    EXPECT_EQ(shared.tier_evictions, 0);
  }
}

// One engine with a shared tier and a host tier: the host tier takes the
// pool's evictions, the shared tier below takes what is published and what
// the host tier evicts; more engines never see more requests than the trace.
TEST(ReplayEngines, EnginesSplitTheRequestsAndBadOptionsAreRefused) {
  const Trace trace = synthetic_trace(60, test_seed());
  ReplayOptions o = one_at_a_time(16, 32);
  o.engines = 3;
  o.shared_tier_blocks = 64;
  const ReplayResult r = run_replay(trace, o);
  EXPECT_EQ(r.requests, static_cast<std::int64_t>(trace.requests.size()));
  EXPECT_GT(r.published, 0);
  o.engines = 0;
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { run_replay(trace, o); }, {"0 engines"}));
  o.engines = 2;
  o.policy = "belady";
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { run_replay(trace, o); }, {"belady", "2 engines"}));
  const std::vector<std::string> words = {"--engines", "65"};
  EXPECT_TRUE(throws_with<UsageError>([&] { parse_arguments(words); }, {"--engines", "65"}));
  const std::vector<std::string> route = {"--route", "random"};
  EXPECT_TRUE(throws_with<UsageError>([&] { parse_arguments(route); }, {"--route", "random"}));
  const std::vector<std::string> both = {"--redis", "redis://h:1/0", "--shared-tier-blocks", "8"};
  EXPECT_TRUE(throws_with<UsageError>([&] { parse_arguments(both); }, {"--redis"}));
  const std::vector<std::string> table = {"--engines-table", "--engines", "2"};
  EXPECT_TRUE(throws_with<UsageError>([&] { parse_arguments(table); }, {"--engines-table"}));
}

}  // namespace
}  // namespace kvcache::replay
