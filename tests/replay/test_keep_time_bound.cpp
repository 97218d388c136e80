// The keep-time ceilings (keep_time_bound.hpp) on a trace worked out by hand,
// against the replay itself on fresh synthetic workloads, and their refusals.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "hand_trace.hpp"
#include "keep_time_bound.hpp"
#include "kv_test_support.hpp"
#include "replay.hpp"

namespace kvcache::replay {
namespace {

using kvcache::testing::throws_with;
using testing::one_at_a_time;
using testing::trace_of;

constexpr int A = 1, B = 2, C = 3;

// Requests A B A B C A (one block each). Reuse times of each release:
//   A@0 -> 2, B@1 -> 2, A@2 -> 3, B@3 never, C@4 never, A@5 never.
// Use-count classes: class 1 = {2, 2, never}, class 2 = {3, never},
// class 3 = {never}. Class 1 kept 2 requests: 2 hits for 2 + 2 + 2 = 6
// slots (1/3 hit a slot); class 2 kept 3: 1 hit for 3 + 3 = 6 (1/6).
// Six requests: capacity 1 buys 6 slot-requests, class 1 only: 2 of 6
// blocks; capacity 2 buys 12: 3 of 6.
// One class = {2, 2, 3, never x 3}: keep 2 is 2 hits for 2 + 2 + 4 x 2 = 12
// slots, keep 3 is 3 hits for 2 + 2 + 3 + 3 x 3 = 16; the hull goes straight
// to (16, 3) (3/16 > 2/12), so capacity 1 gives 6 x 3/16 = 1.125 hits,
// capacity 2 gives 2.25, capacity 3 (18 >= 16) all 3.
TEST(KeepTimeBound, MatchesTheHandWorkedLinearProgramme) {
  const Trace trace = trace_of({{A}, {B}, {A}, {B}, {C}, {A}});
  const ReplayOptions options = one_at_a_time("lru", 0);
  const std::vector<std::int64_t> capacities = {1, 2, 3, 0};
  const auto counts = keep_time_bound(trace, options, BoundClasses::kUseCount, capacities);
  const auto recency = keep_time_bound(trace, options, BoundClasses::kRecency, capacities);
  ASSERT_EQ(counts.size(), 4u);
  ASSERT_EQ(recency.size(), 4u);
  EXPECT_DOUBLE_EQ(counts[0], 2.0 / 6);
  EXPECT_DOUBLE_EQ(counts[1], 3.0 / 6);
  EXPECT_DOUBLE_EQ(counts[2], 3.0 / 6);
  EXPECT_DOUBLE_EQ(counts[3], 3.0 / 6);
  EXPECT_DOUBLE_EQ(recency[0], 1.125 / 6);
  EXPECT_DOUBLE_EQ(recency[1], 2.25 / 6);
  EXPECT_DOUBLE_EQ(recency[2], 3.0 / 6);
  EXPECT_DOUBLE_EQ(recency[3], 3.0 / 6);
  // The replay at 1 block: every request evicts the one cached block, so
  // nothing hits; the bound counts slots on average and says 1/3 at most.
  EXPECT_EQ(run_replay(trace, one_at_a_time("lru", 1)).blocks_hit, 0);
}

// A prompt's blocks are keyed as the manager keys them (chained), so the
// same block id after a different prefix is another block: [A B] [C B]
// [A B] reuses A and its B once, after 2 requests each (and C's B never).
TEST(KeepTimeBound, KeysBlocksByTheirPrefixAsTheManagerDoes) {
  const Trace trace = trace_of({{A, B}, {C, B}, {A, B}});
  const std::vector<std::int64_t> unlimited = {0};
  const auto counts =
      keep_time_bound(trace, one_at_a_time("lru", 0), BoundClasses::kUseCount, unlimited);
  EXPECT_DOUBLE_EQ(counts[0], 2.0 / 6);
  EXPECT_DOUBLE_EQ(counts[0], run_replay(trace, one_at_a_time("lru", 0)).hit_rate());
}

// On fresh synthetic workloads, at two block sizes: unlimited room is the
// replay's own unlimited hit rate (every reuse hits, none is cut by a miss);
// counting requests can only do better than being blind to them; more room
// never lowers either.
TEST(KeepTimeBound, AgreesWithTheReplayAndOrdersItsClasses) {
  const std::uint64_t seed = kvcache::testing::test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const Trace trace = synthetic_trace(120, seed);
  const std::int64_t distinct = unique_blocks(trace);
  std::vector<std::int64_t> capacities;
  for (std::int64_t divisor : {64, 32, 16, 8, 4, 2})
    capacities.push_back(std::max<std::int64_t>(1, distinct / divisor));
  capacities.push_back(0);
  for (std::int32_t block : {512, 256}) {
    ReplayOptions options = one_at_a_time("lru", 0);
    options.block_size = block;
    const auto counts = keep_time_bound(trace, options, BoundClasses::kUseCount, capacities);
    const auto recency = keep_time_bound(trace, options, BoundClasses::kRecency, capacities);
    const double unlimited = run_replay(trace, options).hit_rate();
    ASSERT_GT(unlimited, 0.0) << "block " << block;
    EXPECT_NEAR(counts.back(), unlimited, 1e-12) << "block " << block;
    EXPECT_NEAR(recency.back(), unlimited, 1e-12) << "block " << block;
    for (std::size_t i = 0; i + 1 < capacities.size(); ++i) {
      EXPECT_GE(counts[i], recency[i] - 1e-12) << "block " << block << " at " << capacities[i];
      EXPECT_LE(counts[i], counts[i + 1] + 1e-12) << "block " << block << " at " << capacities[i];
      EXPECT_LE(recency[i], recency[i + 1] + 1e-12) << "block " << block << " at " << capacities[i];
    }
  }
}

TEST(KeepTimeBound, RefusesWhatItDoesNotModel) {
  const Trace trace = trace_of({{A}, {B}, {A}});
  const std::vector<std::int64_t> capacities = {2};
  ReplayOptions concurrent = one_at_a_time("lru", 0);
  concurrent.decode_ms_per_token = 20;
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [&] { keep_time_bound(trace, concurrent, BoundClasses::kUseCount, capacities); },
      {"decode_ms_per_token is 20", "one request at a time"}));
  const std::vector<std::int64_t> negative = {4, -5};
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [&] { keep_time_bound(trace, one_at_a_time("lru", 0), BoundClasses::kRecency, negative); },
      {"capacity -5", "negative"}));
  ReplayOptions bad_block = one_at_a_time("lru", 0);
  bad_block.block_size = 0;
  EXPECT_THROW(keep_time_bound(trace, bad_block, BoundClasses::kUseCount, capacities),
               InvalidArgument);
}

}  // namespace
}  // namespace kvcache::replay
