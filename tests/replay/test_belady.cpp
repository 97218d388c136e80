// The offline optimum (--policy belady) on traces small enough to work out by
// hand, and as the ceiling of every online policy on the synthetic workload.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "belady.hpp"
#include "hand_trace.hpp"
#include "kv_test_support.hpp"
#include "registry.hpp"
#include "replay.hpp"

namespace kvcache::replay {
namespace {

using kvcache::testing::throws_with;

using testing::one_at_a_time;
using testing::trace_of;

ReplayResult replay(const Trace& trace, const std::string& policy, std::int64_t capacity) {
  return run_replay(trace, one_at_a_time(policy, capacity));
}

constexpr int A = 1, B = 2, C = 3, D = 4, E = 5;

// Two cached blocks, requests A B C A B A. At C: MIN evicts B (next used at
// request 4, A at 3); at B it evicts C (never used again); A hits twice.
// LRU evicts A at C, B at A, C at B: one hit (the last A).
TEST(Belady, EvictsTheBlockUsedFurthestInTheFuture) {
  const Trace trace = trace_of({{A}, {B}, {C}, {A}, {B}, {A}});
  const ReplayResult min = replay(trace, "belady", 2);
  EXPECT_EQ(min.blocks_requested, 6);
  EXPECT_EQ(min.blocks_hit, 2);
  EXPECT_EQ(min.evicted_blocks, 2);
  EXPECT_EQ(replay(trace, "lru", 2).blocks_hit, 1);
}

// Three blocks and prefix chains: [A B] [C D] [A E] [C D] [A B].
//  [C D] needs 2 blocks, 1 free: evict B (next use 4) over A (2).
//  [A E]: A hits; E needs 1: C and D are both next used at 3; the tie goes
//         to D, released first (tail first), so C still hits at 3.
//  [C D]: C hits; D needs 1: evict E (never again) over A (4).
//  [A B]: A hits; B needs 1: C and D are never used again.
// 3 hits of 10 blocks, which is the optimum: keeping A costs B; only one of
// C and D can stay past [A E], and C is their parent.
TEST(Belady, RespectsThePrefixTreeAndReachesTheHandWorkedOptimum) {
  const Trace trace = trace_of({{A, B}, {C, D}, {A, E}, {C, D}, {A, B}});
  const ReplayResult min = replay(trace, "belady", 3);
  EXPECT_EQ(min.blocks_requested, 10);
  EXPECT_EQ(min.blocks_hit, 3);
  EXPECT_EQ(min.rejected, 0);
}

TEST(Belady, IsTheCeilingOfEveryOnlinePolicyOnTheSyntheticWorkload) {
  const Trace trace = synthetic_trace(300);
  const std::int64_t distinct = unique_blocks(trace);
  for (std::int64_t divisor : {64, 16, 4}) {
    ReplayOptions options;
    options.capacity_blocks = std::max<std::int64_t>(4, distinct / divisor);
    options.policy = "belady";
    const double ceiling = run_replay(trace, options).hit_rate();
    for (const PolicyInfo& policy : policies()) {
      if (policy.offline) continue;
      options.policy = policy.name;
      EXPECT_LE(run_replay(trace, options).hit_rate(), ceiling)
          << policy.name << " at " << options.capacity_blocks << " blocks";
    }
  }
}

TEST(Belady, NeedsTheTraceUpFront) {
  EXPECT_TRUE(throws_with<InvalidArgument>([] { BeladyEviction outside(10); },
                                           {"BeladyEviction", "whole trace"}));
}

}  // namespace
}  // namespace kvcache::replay
