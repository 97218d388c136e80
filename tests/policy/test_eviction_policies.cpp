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

// Capacity 2 and no reuse seen yet: the interval starts at the capacity, so
// each earlier use of an entry buys it 2 releases of standing.
TEST(ReuseLruEviction, EachEarlierUseBuysOneCacheLifetime) {
  ReuseLruEviction reuse(2);
  reuse.on_access(1);
  reuse.on_access(1);  // reached by two requests
  reuse.insert(1);     // released at 1: priority 1 + 2
  reuse.on_access(2);
  reuse.insert(2);  // released at 2: priority 2
  reuse.on_access(3);
  reuse.insert(3);  // released at 3: priority 3, ties go to the fewer uses
  reuse.on_access(4);
  reuse.insert(4);  // released at 4: priority 4
  EXPECT_EQ(reuse.size(), 4);
  EXPECT_EQ(drain(reuse), (std::vector<EvictionKey>{2, 3, 1, 4}));
}

TEST(ReuseLruEviction, TheBonusIsBoundedSoOldFavouritesAge) {
  ReuseLruEviction reuse(1);  // an interval of one release until a reuse is seen
  for (int i = 0; i < 10; ++i)
    reuse.on_access(100);
  reuse.insert(100);  // released at 1, at most kMaxBonus = 4 intervals: priority 5
  for (EvictionKey key = 1; key <= 5; ++key) {
    reuse.on_access(key);
    reuse.insert(key);  // released at 2..6: priority 2..6
  }
  EXPECT_EQ(drain(reuse), (std::vector<EvictionKey>{1, 2, 3, 4, 100, 5}));
}

// The first `n` keys from `from` whose reuse distances the policy measures
// (or, with `measured` false, does not).
std::vector<EvictionKey> sampled_keys(std::size_t n, EvictionKey from, bool measured = true) {
  std::vector<EvictionKey> keys;
  for (EvictionKey key = from; keys.size() < n; ++key) {
    if (ReuseLruEviction::sampled(key) == measured) keys.push_back(key);
  }
  return keys;
}

TEST(ReuseLruEviction, SamplesOneKeyInEight) {
  const auto measured = sampled_keys(1000, 1);
  // 1000 sampled keys among about 8000: one in eight, give or take.
  EXPECT_GT(measured.back(), 6000u);
  EXPECT_LT(measured.back(), 10000u);
  EXPECT_FALSE(ReuseLruEviction::sampled(measured.front() | kSequenceKeyBit));
}

TEST(ReuseLruEviction, TheIntervalFollowsTheMeasuredReuseDistance) {
  ReuseLruEviction reuse(100000);
  EXPECT_EQ(reuse.interval(), 100000);
  // Ten sampled entries in turn: each is reused 9 releases after its release.
  const auto keys = sampled_keys(10, 1);
  for (int round = 0; round < 20000; ++round) {
    const EvictionKey key = keys[static_cast<std::size_t>(round % 10)];
    reuse.erase(key);
    reuse.on_access(key);
    reuse.insert(key);
  }
  // The geometric mean distance, 9, within the log2 approximation.
  EXPECT_GE(reuse.interval(), 8);
  EXPECT_LE(reuse.interval(), 9);
}

// A pool of one block and a ghost ring of 8 keys: the sampled entry is
// evicted and forgotten by the ring long before it returns, 99 releases
// later, and its distance still counts.
TEST(ReuseLruEviction, MeasuresTheWorkloadsDistancesNotThePools) {
  ReuseLruEviction reuse(1);
  const EvictionKey returning = sampled_keys(1, 1).front();
  const auto others = sampled_keys(99, 1, false);
  for (int round = 0; round < 10000; ++round) {
    reuse.on_access(returning);
    reuse.insert(returning);
    for (EvictionKey other : others) {
      reuse.on_access(other);
      reuse.insert(other);
      reuse.pop_victim();
    }
    while (reuse.pop_victim()) {
    }
  }
  EXPECT_EQ(reuse.uses(returning), 0);  // long gone from the ghost ring
  // 99 releases between the release and the next use (log2 approximated as
  // 6 + 99/64 - 1 = 6.55: 2^6.55 = 93).
  EXPECT_GE(reuse.interval(), 90);
  EXPECT_LE(reuse.interval(), 101);
}

// Keys outside the sample change nothing, however they are reused; nor does
// a prefix taken again by the next request before any other release: its
// five blocks, released tail first, are 0 to 4 releases old when they come
// back. One unrelated release in between, and they count: 1 to 5 releases
// (log2 approximated as 0, 1, 1.5, 2, 2.25: a mean of 1.35, 2^1.35 = 2.5).
TEST(ReuseLruEviction, LeavesOutUnsampledKeysAndBackToBackReuse) {
  ReuseLruEviction reuse(50);
  const auto others = sampled_keys(99, 1, false);
  for (int round = 0; round < 10000; ++round) {
    for (EvictionKey other : others) {  // reused 99 releases later, but not sampled
      reuse.erase(other);
      reuse.on_access(other);
      reuse.insert(other);
    }
  }
  EXPECT_EQ(reuse.interval(), 50);
  const auto prefix = sampled_keys(5, 1);
  const auto request = [&](bool other_release_first) {
    if (other_release_first) {
      reuse.on_access(others[0]);
      reuse.erase(others[0]);
      reuse.insert(others[0]);
    }
    for (EvictionKey key : prefix) {
      reuse.erase(key);
      reuse.on_access(key);
    }
    for (auto key = prefix.rbegin(); key != prefix.rend(); ++key)
      reuse.insert(*key);
  };
  for (int round = 0; round < 10000; ++round)
    request(false);
  EXPECT_EQ(reuse.interval(), 50);
  for (int round = 0; round < 10000; ++round)
    request(true);
  EXPECT_GE(reuse.interval(), 2);
  EXPECT_LE(reuse.interval(), 3);
}

TEST(ReuseLruEviction, AParentReleasedAfterItsChildrenOutlivesThem) {
  ReuseLruEviction reuse(100);
  // Two requests reached the parent 10; each wrote one child (11, 12),
  // released tail first.
  reuse.on_access(10);
  reuse.on_access(11);
  reuse.erase(11);
  reuse.insert(11);
  reuse.insert(10);
  reuse.on_access(10);
  reuse.erase(10);
  reuse.on_access(12);
  reuse.insert(12);
  reuse.insert(10);
  EXPECT_EQ(reuse.uses(10), 2);
  EXPECT_EQ(drain(reuse), (std::vector<EvictionKey>{11, 12, 10}));
}

TEST(ReuseLruEviction, UseCountsOutliveEvictionInTheGhostList) {
  ReuseLruEviction reuse(1);  // a ghost ring of 8 keys
  for (int i = 0; i < 3; ++i)
    reuse.on_access(7);
  reuse.insert(7);
  EXPECT_EQ(reuse.pop_victim(), EvictionKey{7});
  EXPECT_EQ(reuse.uses(7), 3);  // remembered
  reuse.on_access(7);           // back: its fourth request
  EXPECT_EQ(reuse.uses(7), 4);
  reuse.insert(7);
  EXPECT_EQ(reuse.pop_victim(), EvictionKey{7});
  // Eight more evictions push 7 out of the ghost ring: it starts over.
  for (EvictionKey key = 20; key < 28; ++key) {
    reuse.on_access(key);
    reuse.insert(key);
    EXPECT_EQ(reuse.pop_victim(), key);
  }
  EXPECT_EQ(reuse.uses(7), 0);
  EXPECT_EQ(reuse.uses(20), 1);
  // forget() drops what was known: contents gone without an eviction.
  reuse.on_access(30);
  reuse.insert(30);
  reuse.forget(30);
  EXPECT_EQ(reuse.size(), 0);
  EXPECT_EQ(reuse.uses(30), 0);
  EXPECT_FALSE(reuse.pop_victim().has_value());
}

}  // namespace
}  // namespace kvcache
