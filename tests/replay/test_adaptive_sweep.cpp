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
