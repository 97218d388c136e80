// PolicyAdvisor: shadows of the four fixed policies say which would have hit
// most; it recommends a switch only past its margin, and is fed by a real
// manager's lookups once attached.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"
#include "kvcache/metrics/policy_advisor.hpp"

namespace kvcache::metrics {
namespace {

TEST(PolicyAdvisor, RefusesAPolicyItCannotCompare) {
  EXPECT_TRUE(testing::throws_with<InvalidArgument>([] { PolicyAdvisor a(100, "belady"); },
                                                    {"\"belady\"", "lru, lfu-aging, s3-fifo"}));
}

TEST(PolicyAdvisor, RecommendsLeavingLruWhenAScanFlushesAHotSet) {
  std::mt19937_64 rng(testing::test_seed());
  PolicyAdvisor advisor(300, "lru");
  EXPECT_FALSE(advisor.recommendation()) << "no window closed yet";
  EvictionKey scan = EvictionKey{1} << 40;
  for (int i = 0; i < 100000; ++i) {
    const EvictionKey key = rng() % 3 == 0 ? 1 + rng() % 200 : ++scan;
    advisor.on_lookup(std::vector<EvictionKey>{key});
  }
  ASSERT_GT(advisor.windows(), 10);
  const auto r = advisor.recommendation();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->rule, "eviction-policy");
  EXPECT_NE(r->suggested, 0) << "not LRU";
  const std::string best(PolicyAdvisor::kCandidates[static_cast<std::size_t>(r->suggested)]);
  EXPECT_NE(r->action.find("switch to " + best + ": it would have hit"), std::string::npos)
      << r->action;
  EXPECT_GT(advisor.window_hit_rate(static_cast<std::size_t>(r->suggested)),
            1.02 * advisor.window_hit_rate(0));
  EXPECT_GT(r->value, 1.02);
}

TEST(PolicyAdvisor, SaysNothingWhenEveryPolicyHitsAlike) {
  // The working set fits: every policy hits every block after its first use.
  std::mt19937_64 rng(testing::test_seed());
  for (const char* current : {"lru", "s3-fifo", "reuse-lru", "lfu-aging"}) {
    PolicyAdvisor advisor(1000, current);
    for (int i = 0; i < 50000; ++i)
      advisor.on_lookup(std::vector<EvictionKey>{1 + rng() % 500, 1000 + rng() % 300});
    ASSERT_GT(advisor.windows(), 10);
    EXPECT_FALSE(advisor.recommendation()) << current;
  }
}

TEST(PolicyAdvisor, IsFedEveryLookupOfAnAttachedManager) {
  using Meta =
      KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>, MetadataBackend>;
  CacheConfig config;
  config.shape = ModelShape::gqa(2, 2, 64, DType::kF16);
  config.block_size = 4;
  config.num_blocks = 64;  // small: the advisor follows every key
  Meta cache(config);
  PolicyAdvisor advisor(cache);
  EXPECT_DOUBLE_EQ(advisor.sampling().rate(), 1.0);
  attach_lookup_observer(cache, &advisor);
  std::mt19937_64 rng(testing::test_seed());
  std::int64_t blocks = 0;
  for (int i = 0; i < 600; ++i) {
    std::vector<std::int32_t> prompt(4 * (1 + rng() % 6));
    for (auto& t : prompt)
      t = static_cast<std::int32_t>(rng() % 3);
    blocks += static_cast<std::int64_t>(prompt.size() / 4);
    const SeqId s = cache.create_sequence(prompt);
    const auto rest = static_cast<std::int32_t>(prompt.size() - cache.sequence(s).num_tokens);
    if (cache.try_reserve(s, rest) == ReserveStatus::kOk) {
      const SeqId seqs[] = {s};
      const std::int32_t counts[] = {rest};
      cache.commit(cache.prepare_append(seqs, counts));
    }
    cache.release(s);
  }
  EXPECT_EQ(blocks, cache.stats().prefix_blocks_requested);
  // Windows of 1024 blocks (and at most one prompt past it) closed: every
  // block asked for reached the shadows.
  EXPECT_LE(advisor.windows(), blocks / 1024);
  EXPECT_GE(advisor.windows(), blocks / 1030);
  attach_lookup_observer(cache, nullptr);
}

}  // namespace
}  // namespace kvcache::metrics
