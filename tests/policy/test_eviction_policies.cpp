// The eviction policies on their own: the order in which they give up
// entries, on sequences of operations whose right answer is worked out here.
#include <gtest/gtest.h>

#include <vector>

#include "kvcache/policy/cache_policy.hpp"

namespace kvcache {
namespace {

template <class Policy>
std::vector<EvictionKey> drain(Policy& policy) {
  std::vector<EvictionKey> order;
  while (auto key = policy.pop_victim())
    order.push_back(*key);
  return order;
}

TEST(LruEviction, EvictsLeastRecentlyReleasedFirst) {
  LruEviction lru(100);
  for (EvictionKey key : {1, 2, 3, 4}) {
    lru.on_access(key);
    lru.insert(key);
  }
  lru.erase(2);   // 2 is in use again (a hit) ...
  lru.insert(2);  // ... and released: now the most recent
  lru.forget(3);  // 3's contents went away without eviction
  EXPECT_EQ(lru.size(), 3);
  EXPECT_EQ(drain(lru), (std::vector<EvictionKey>{1, 4, 2}));
  EXPECT_FALSE(lru.pop_victim().has_value());
}

TEST(NoEviction, NeverGivesAVictim) {
  NoEviction none(10);
  none.insert(5);
  EXPECT_FALSE(none.pop_victim().has_value());
  EXPECT_FALSE(NoEviction::kRetains);
}

TEST(LfuAgingEviction, FrequentEntriesOutliveOneHitWondersUntilTheyAge) {
  LfuAgingEviction lfu(100);
  // 1 is used three times, 2 and 3 once each.
  for (int i = 0; i < 3; ++i)
    lfu.on_access(1);
  lfu.on_access(2);
  lfu.on_access(3);
  lfu.insert(1);                                // priority 0 + 3
  lfu.insert(2);                                // priority 0 + 1
  lfu.insert(3);                                // priority 0 + 1
  EXPECT_EQ(lfu.pop_victim(), EvictionKey{2});  // lowest priority, earliest inserted
  EXPECT_EQ(lfu.pop_victim(), EvictionKey{3});  // the cache's age is now 1
  // A newcomer used once enters at age 1 + 1 = 2 < 3: it still goes before 1.
  lfu.on_access(4);
  lfu.insert(4);
  EXPECT_EQ(lfu.pop_victim(), EvictionKey{4});
  // After more evictions the age passes 3: old favourites lose their edge.
  for (EvictionKey key : {5, 6}) {
    lfu.on_access(key);
    lfu.on_access(key);
    lfu.insert(key);  // priority 2 + 2 = 4
  }
  EXPECT_EQ(drain(lfu), (std::vector<EvictionKey>{1, 5, 6}));
}

TEST(S3FifoEviction, OneHitWondersLeaveFromTheSmallQueue) {
  S3FifoEviction s3(20);  // small queue target: 2 entries
  for (EvictionKey key = 1; key <= 4; ++key)
    s3.on_access(key);
  s3.on_access(1);  // 1 is used again while young
  for (EvictionKey key = 1; key <= 4; ++key)
    s3.insert(key);
  // Small queue (FIFO 1, 2, 3, 4): 1 was reused, so it moves to main; 2 goes.
  EXPECT_EQ(s3.pop_victim(), EvictionKey{2});
  EXPECT_EQ(s3.pop_victim(), EvictionKey{3});
  // Small queue holds 4 (below target) and main holds 1: main is served.
  EXPECT_EQ(s3.pop_victim(), EvictionKey{1});
  EXPECT_EQ(s3.pop_victim(), EvictionKey{4});
  // 2 is remembered as a ghost: coming back, it goes straight to main.
  s3.on_access(2);
  s3.on_access(7);
  s3.insert(7);
  s3.insert(2);
  s3.on_access(8);
  s3.insert(8);
  // Small holds 7, 8 (at its target): 7 goes first; small is then under its
  // target, so main's 2 goes next, and 8 last.
  EXPECT_EQ(drain(s3), (std::vector<EvictionKey>{7, 2, 8}));
}

TEST(S3FifoEviction, MainQueueGivesEachUseAnotherPass) {
  S3FifoEviction s3(10);  // small target 1
  for (EvictionKey key : {1, 2}) {
    s3.on_access(key);
    s3.on_access(key);  // used twice: promoted out of small
    s3.insert(key);
  }
  s3.on_access(1);  // one more use of 1 while in main
  // Small: [1, 2] both promoted to main with uses reset; then main [1, 2]:
  // nothing left with uses, 1 first.
  EXPECT_EQ(drain(s3), (std::vector<EvictionKey>{1, 2}));
}

}  // namespace
}  // namespace kvcache
