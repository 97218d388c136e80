// The keep-time ceilings (keep_time_bound.hpp) on a trace worked out by hand,
// against the replay itself on fresh synthetic workloads, and their refusals.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <unordered_set>
#include <vector>

#include "belady.hpp"
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

// Requests A B A B C A (one block each). Reuse times of each release, and
// for the last ones the requests left in the trace after them:
//   A@0 -> 2, B@1 -> 2, A@2 -> 3, B@3 never (3 left), C@4 never (2 left),
//   A@5 never (1 left).
// Use-count classes: class 1 = {2, 2, never (2 left)}, class 2 = {3, never
// (3 left)}, class 3 = {never (1 left)}. Class 1 kept 2 requests: 2 hits for
// 2 + 2 + 2 = 6 slots (1/3 hit a slot); class 2 kept 3: 1 hit for 3 + 3 = 6
// (1/6). Six requests: capacity 1 buys 6 slot-requests, class 1 only: 2 of
// 6 blocks; capacity 2 buys 12: 3 of 6.
// One class = {2, 2, 3, never with 3, 2, 1 left}: keep 2 is 2 hits for
// 2 + 2 + 2 + (2 + 2 + 1) = 11 slots, keep 3 is 3 hits for
// 2 + 2 + 3 + (3 + 2 + 1) = 13; the hull goes straight to (13, 3)
// (3/13 > 2/11), so capacity 1 gives 6 x 3/13 = 18/13 hits, capacity 2
// gives 36/13, capacity 3 (18 >= 13) all 3.
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
  EXPECT_DOUBLE_EQ(recency[0], 3.0 / 13);
  EXPECT_DOUBLE_EQ(recency[1], 6.0 / 13);
  EXPECT_DOUBLE_EQ(recency[2], 3.0 / 6);
  EXPECT_DOUBLE_EQ(recency[3], 3.0 / 6);
  // The replay at 1 block: every request evicts the one cached block, so
  // nothing hits; the bound counts slots on average and says 1/3 at most.
  EXPECT_EQ(run_replay(trace, one_at_a_time("lru", 1)).blocks_hit, 0);
}

// [A] [B] [A] [A] [A] at one block. Class 1 = {A@0 -> 2, B@1 never (4
// left)}: keeping 2 is 1 hit for 2 + 2 = 4 slots; class 2 = {A@2 -> 1} and
// class 3 = {A@3 -> 1}: 1 hit for 1 slot each; class 4 = {A@4 never}. The
// five slot-requests go to the steepest first, classes 2 and 3 (2 hits),
// then 3 of class 1's 4 slots: 2.75 hits of 5 blocks (in the order of the
// counts it would be class 1 first: 2 of 5). One class = {2, 1, 1, never
// with 4 and 1 left}: keep 1 is 2 hits for 5 slots, keep 2 is 3 for 7, the
// hull goes straight to (7, 3): 15/7 hits. LRU hits the last two A: 2.
TEST(KeepTimeBound, SpendsTheBudgetOnTheSteepestClassFirst) {
  const Trace trace = trace_of({{A}, {B}, {A}, {A}, {A}});
  const ReplayOptions options = one_at_a_time("lru", 0);
  const std::vector<std::int64_t> one = {1};
  EXPECT_DOUBLE_EQ(keep_time_bound(trace, options, BoundClasses::kUseCount, one)[0], 2.75 / 5);
  EXPECT_DOUBLE_EQ(keep_time_bound(trace, options, BoundClasses::kRecency, one)[0], 3.0 / 7);
  EXPECT_EQ(run_replay(trace, one_at_a_time("lru", 1)).blocks_hit, 2);
}

// The trace's end bounds what a block can hold: in [A] [B] [B] [A] nothing
// is ever evicted at 2 blocks, and the bound is what the replay gets (B@2
// and A@3 hold their slots for 2 and 1 requests, not for ever).
TEST(KeepTimeBound, ChargesNoSlotPastTheTracesEnd) {
  const Trace trace = trace_of({{A}, {B}, {B}, {A}});
  const std::vector<std::int64_t> two = {2};
  for (BoundClasses classes : {BoundClasses::kRecency, BoundClasses::kUseCount}) {
    EXPECT_DOUBLE_EQ(keep_time_bound(trace, one_at_a_time("lru", 0), classes, two)[0], 0.5);
  }
  EXPECT_DOUBLE_EQ(run_replay(trace, one_at_a_time("lru", 2)).hit_rate(), 0.5);
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

// On fresh synthetic workloads, at two block sizes: unlimited room, and room
// for every distinct block, give the replay's own unlimited hit rate (every
// reuse hits, none is cut by a miss); counting requests can only do better
// than being blind to them; more room never lowers either.
TEST(KeepTimeBound, AgreesWithTheReplayAndOrdersItsClasses) {
  const std::uint64_t seed = kvcache::testing::test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const Trace trace = synthetic_trace(120, seed);
  for (std::int32_t block : {512, 256}) {
    ReplayOptions options = one_at_a_time("lru", 0);
    options.block_size = block;
    std::unordered_set<EvictionKey> keys;  // the distinct blocks the manager sees
    std::vector<std::int32_t> tokens;
    std::vector<EvictionKey> prompt;
    for (const TraceRequest& request : trace.requests) {
      prompt_keys(request, options, tokens, prompt);
      keys.insert(prompt.begin(), prompt.end());
    }
    const auto distinct = static_cast<std::int64_t>(keys.size());
    std::vector<std::int64_t> capacities;
    for (std::int64_t divisor : {64, 32, 16, 8, 4, 2})
      capacities.push_back(std::max<std::int64_t>(1, distinct / divisor));
    capacities.push_back(distinct);
    capacities.push_back(0);
    const auto counts = keep_time_bound(trace, options, BoundClasses::kUseCount, capacities);
    const auto recency = keep_time_bound(trace, options, BoundClasses::kRecency, capacities);
    const double unlimited = run_replay(trace, options).hit_rate();
    ASSERT_GT(unlimited, 0.0) << "block " << block;
    const std::size_t all = capacities.size() - 2;  // room for every distinct block
    EXPECT_NEAR(counts.back(), unlimited, 1e-12) << "block " << block;
    EXPECT_NEAR(recency.back(), unlimited, 1e-12) << "block " << block;
    EXPECT_NEAR(counts[all], unlimited, 1e-12) << "block " << block;
    EXPECT_NEAR(recency[all], unlimited, 1e-12) << "block " << block;
    EXPECT_LT(recency[0], unlimited) << "block " << block;  // 1/64 of the blocks loses some
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
