// The adaptive policy against the fixed ones over a sweep of capacities:
// within 2% (relative) of the best fixed policy at each, on the built-in
// synthetic workload, one request at a time and with concurrent decoding
// (and on a real trace when KVCACHE_TRACE names one).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "kvcache/kvcache.hpp"
#include "replay.hpp"
#include "trace.hpp"

namespace kvcache::replay {
namespace {

void expect_adaptive_near_best(const Trace& trace, double decode_ms) {
  const std::int64_t distinct = unique_blocks(trace);
  for (const std::int64_t divisor : {128, 64, 32, 16, 8, 4}) {
    ReplayOptions options;
    options.decode_ms_per_token = decode_ms;
    options.capacity_blocks = std::max<std::int64_t>(1, distinct / divisor);
    double best = 0;
    std::string best_name;
    double lru = 0;
    for (const char* policy : {"lru", "lfu-aging", "s3-fifo", "reuse-lru"}) {
      options.policy = policy;
      const double hit = run_replay(trace, options).hit_rate();
      if (hit > best) best = hit, best_name = policy;
      if (options.policy == "lru") lru = hit;
    }
    options.policy = "adaptive";
    const double adaptive = run_replay(trace, options).hit_rate();
    EXPECT_GE(adaptive, 0.98 * best)
        << trace.source << " at 1/" << divisor << ", decode " << decode_ms << " ms: adaptive "
        << adaptive << ", " << best_name << " " << best;
    // Where LRU is not the best, the adaptive policy is above it.
    if (best > lru * 1.02) {
      EXPECT_GT(adaptive, lru) << trace.source << " at 1/" << divisor;
    }
  }
}

TEST(AdaptiveSweep, NearTheBestFixedPolicyOnTheSyntheticWorkload) {
  const Trace trace = synthetic_trace();
  expect_adaptive_near_best(trace, 0);
  expect_adaptive_near_best(trace, 20);
}

TEST(AdaptiveSweep, NearTheBestFixedPolicyOnTheTraceInKvcacheTrace) {
  const char* path = std::getenv("KVCACHE_TRACE");
  if (path == nullptr) GTEST_SKIP() << "KVCACHE_TRACE names no Mooncake trace";
  const Trace trace = load_trace(path, false);
  expect_adaptive_near_best(trace, 0);
  expect_adaptive_near_best(trace, 20);
}

}  // namespace
}  // namespace kvcache::replay

namespace kvcache::replay {
namespace {

// The tuner under a memory limit that halves and comes back: never over the
// limit, no failed allocation, and more hits than the static cache that the
// lowest limit allows.
TEST(TuneReplay, TunedBeatsStaticUnderAChangingLimit) {
  const Trace trace = synthetic_trace();
  ReplayOptions options;
  options.capacity_blocks = unique_blocks(trace) / 8;
  options.limit_schedule = {{0.0, 1.0}, {0.3, 0.5}, {0.6, 1.0}};
  ReplayOptions fixed = options;
  fixed.capacity_blocks = options.capacity_blocks / 2;
  const ReplayResult s = run_replay(trace, fixed);
  options.tune = true;
  const ReplayResult t = run_replay(trace, options);
  ASSERT_TRUE(t.tuned.has_value());
  const TuneResult& r = *t.tuned;
  EXPECT_EQ(t.rejected, 0);
  EXPECT_EQ(r.requests_over_limit, 0);
  EXPECT_LE(r.max_budget, options.capacity_blocks);
  EXPECT_GE(r.min_budget, 1);
  EXPECT_EQ(r.limit_shrinks, 1) << "the limit halved once";
  EXPECT_GT(r.grows, 0);
  EXPECT_EQ(static_cast<std::int64_t>(r.log.size()),
            r.grows + r.shrinks + r.limit_shrinks + r.refused);
  EXPECT_GT(t.hit_rate(), s.hit_rate());
  // Bad schedules are refused naming the entry.
  options.limit_schedule = {{0.0, 1.5}};
  EXPECT_THROW(run_replay(trace, options), InvalidArgument);
}

}  // namespace
}  // namespace kvcache::replay
