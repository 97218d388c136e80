// The host tier on its own: blocks of fresh random bytes put, read back,
// looked up as runs, erased and evicted by its policy, checked against a
// reference model after every operation; fingerprints that differ never
// read each other's blocks; a lower store takes what it evicts and gives it
// back on a lookup.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/backend/host.hpp"
#include "kvcache/policy/lfu_aging.hpp"
#include "kvcache/policy/reuse_lru.hpp"
#include "kvcache/policy/s3fifo.hpp"
#include "kvcache/tier/host_tier.hpp"

namespace kvcache::testing {
namespace {

constexpr std::int64_t kBlockBytes = 96;

template <class Eviction = LruEviction>
std::unique_ptr<HostTier<Eviction>> make_tier(std::int64_t capacity,
                                              std::int64_t block_bytes = kBlockBytes) {
  HostBackend backend;
  return std::make_unique<HostTier<Eviction>>(
      block_bytes, capacity,
      backend.allocate_host(
          static_cast<std::size_t>(std::max<std::int64_t>(1, block_bytes * capacity))));
}

std::vector<std::byte> random_block(std::mt19937_64& rng, std::int64_t bytes = kBlockBytes) {
  std::vector<std::byte> b(static_cast<std::size_t>(bytes));
  for (auto& x : b)
    x = static_cast<std::byte>(rng());
  return b;
}

TEST(HostTier, PutGetContainsEraseRoundTrip) {
  std::mt19937_64 rng(test_seed());
  auto tier = make_tier(8);
  std::map<EvictionKey, std::vector<std::byte>> stored;
  for (EvictionKey key = 1; key <= 5; ++key) {
    stored[key] = random_block(rng);
    ASSERT_TRUE(tier->put(7, key, stored[key]));
  }
  std::vector<std::byte> out(kBlockBytes);
  for (auto& [key, bytes] : stored) {
    ASSERT_TRUE(tier->get(7, key, out));
    EXPECT_EQ(out, bytes);
  }
  const std::vector<EvictionKey> run = {1, 2, 3, 9, 4};
  EXPECT_EQ(tier->contains(7, run), 3u);
  EXPECT_EQ(tier->contains(8, run), 0u) << "another fingerprint";
  EXPECT_FALSE(tier->get(8, 1, out)) << "another fingerprint reads nothing";
  EXPECT_TRUE(tier->erase(7, 2));
  EXPECT_FALSE(tier->erase(7, 2));
  EXPECT_EQ(tier->contains(7, run), 1u);
  EXPECT_FALSE(tier->get(7, 2, out));
  // A put of another size is refused and changes nothing.
  const std::vector<std::byte> wrong(kBlockBytes - 16);
  EXPECT_FALSE(tier->put(7, 10, wrong));
  EXPECT_FALSE(tier->get(7, 10, out));
  const TierStats s = tier->stats();
  EXPECT_EQ(s.puts, 5);
  EXPECT_EQ(s.blocks, 4);
  EXPECT_EQ(s.rejected, 1);
  EXPECT_EQ(s.erases, 1);
  EXPECT_EQ(s.hits, 5);
  EXPECT_EQ(s.misses, 3);
  EXPECT_EQ(s.bytes_in, 5 * kBlockBytes);
  tier->check_invariants();
}

// The least recently used block goes first; a hit makes a block recent.
TEST(HostTier, FullTierEvictsByItsPolicy) {
  std::mt19937_64 rng(test_seed());
  auto tier = make_tier(3);
  for (EvictionKey key = 1; key <= 3; ++key)
    ASSERT_TRUE(tier->put(1, key, random_block(rng)));
  std::vector<std::byte> out(kBlockBytes);
  ASSERT_TRUE(tier->get(1, 1, out));                // 1 is now the most recent
  ASSERT_TRUE(tier->put(1, 4, random_block(rng)));  // evicts 2
  EXPECT_TRUE(tier->get(1, 1, out));
  EXPECT_FALSE(tier->get(1, 2, out));
  EXPECT_TRUE(tier->get(1, 3, out));
  EXPECT_EQ(tier->stats().evictions, 1);
  tier->check_invariants();
}

// A model of the tier: LRU over (fingerprint, key) with a fixed capacity.
// Random puts, gets, erases and run lookups on fresh random bytes; every
// answer and every byte read back is the model's.
TEST(HostTier, RandomOperationsMatchAnLruModel) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const std::int64_t capacity = 12;
  auto tier = make_tier(capacity);
  using Id = std::pair<std::uint64_t, EvictionKey>;
  std::list<Id> order;  // least recent first
  std::map<Id, std::vector<std::byte>> model;
  auto touch = [&](const Id& id) {
    order.remove(id);
    order.push_back(id);
  };
  std::vector<std::byte> out(kBlockBytes);
  for (int step = 0; step < 20000; ++step) {
    const Id id{rng() % 2, 1 + rng() % 30};
    const int op = static_cast<int>(rng() % 10);
    if (op < 4) {
      auto bytes = random_block(rng);
      ASSERT_TRUE(tier->put(id.first, id.second, bytes));
      if (model.count(id) == 0 && static_cast<std::int64_t>(model.size()) == capacity) {
        model.erase(order.front());
        order.pop_front();
      }
      model[id] = bytes;
      touch(id);
    } else if (op < 8) {
      const bool hit = tier->get(id.first, id.second, out);
      ASSERT_EQ(hit, model.count(id) != 0) << "step " << step;
      if (hit) {
        ASSERT_EQ(out, model[id]);
        touch(id);
      }
    } else if (op < 9) {
      ASSERT_EQ(tier->erase(id.first, id.second), model.count(id) != 0);
      model.erase(id);
      order.remove(id);
    } else {
      std::vector<EvictionKey> keys;
      for (EvictionKey k = id.second; k < id.second + 4; ++k)
        keys.push_back(k);
      std::size_t expected = 0;
      while (expected < keys.size() && model.count({id.first, keys[expected]}) != 0)
        ++expected;
      ASSERT_EQ(tier->contains(id.first, keys), expected);
    }
    ASSERT_EQ(tier->size_blocks(), static_cast<std::int64_t>(model.size()));
  }
  tier->check_invariants();
}

// Every eviction policy of the library can run a tier.
template <class Eviction>
void exercise_policy() {
  std::mt19937_64 rng(test_seed());
  auto tier = make_tier<Eviction>(10);
  std::vector<std::byte> out(kBlockBytes);
  std::map<EvictionKey, std::vector<std::byte>> last;
  for (int step = 0; step < 5000; ++step) {
    const EvictionKey key = 1 + rng() % 40;
    if (rng() % 2 == 0) {
      last[key] = random_block(rng);
      ASSERT_TRUE(tier->put(3, key, last[key]));
    } else if (tier->get(3, key, out)) {
      ASSERT_EQ(out, last[key]) << Eviction::kName << ": a hit reads what was put last";
    }
    ASSERT_LE(tier->size_blocks(), 10);
  }
  ASSERT_NO_THROW(tier->check_invariants()) << Eviction::kName;
  EXPECT_GT(tier->stats().evictions, 0) << Eviction::kName;
}

TEST(HostTier, EveryEvictionPolicyRunsATier) {
  exercise_policy<LruEviction>();
  exercise_policy<LfuAgingEviction>();
  exercise_policy<S3FifoEviction>();
  exercise_policy<ReuseLruEviction>();
}

// Blocks the upper tier evicts go down; a lookup finds them there and
// brings them back up; contains() counts across both.
TEST(HostTier, ALowerStoreTakesEvictedBlocksAndGivesThemBack) {
  std::mt19937_64 rng(test_seed());
  auto upper = make_tier(2);
  auto lower = make_tier(8);
  upper->set_lower(lower.get());
  std::map<EvictionKey, std::vector<std::byte>> bytes;
  for (EvictionKey key = 1; key <= 5; ++key) {
    bytes[key] = random_block(rng);
    ASSERT_TRUE(upper->put(4, key, bytes[key]));
  }
  EXPECT_EQ(upper->size_blocks(), 2);
  EXPECT_EQ(lower->size_blocks(), 3);
  EXPECT_EQ(upper->stats().demotions, 3);
  const std::vector<EvictionKey> run = {1, 2, 3, 4, 5, 6};
  EXPECT_EQ(upper->contains(4, run), 5u);
  std::vector<std::byte> out(kBlockBytes);
  ASSERT_TRUE(upper->get(4, 1, out));  // from below
  EXPECT_EQ(out, bytes[1]);
  EXPECT_EQ(upper->stats().promotions, 1);
  for (EvictionKey key = 1; key <= 5; ++key) {
    ASSERT_TRUE(upper->get(4, key, out)) << key;
    EXPECT_EQ(out, bytes[key]) << key;
  }
  EXPECT_FALSE(upper->get(4, 6, out));
  upper->check_invariants();
  lower->check_invariants();
  // A lower store of another block size is refused.
  auto other = make_tier(4, kBlockBytes * 2);
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { upper->set_lower(other.get()); },
                                           {"192-byte", "96-byte"}));
}

TEST(HostTier, BadSizesAreRefusedNamingThem) {
  EXPECT_TRUE(
      throws_with<InvalidArgument>([] { HostTier<> t(-1, 4, Buffer()); }, {"block_bytes -1"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([] { HostTier<> t(64, 4, HostBackend().allocate(100)); },
                                           {"100 bytes", "needs 256"}));
  // Keys only (a metadata cache's tier): no memory at all.
  HostTier<> keys(0, 4, Buffer());
  EXPECT_TRUE(keys.put(1, 5, {}));
  EXPECT_EQ(keys.contains(1, std::vector<EvictionKey>{5}), 1u);
  // No room at all: every put is refused.
  HostTier<> none(64, 0, Buffer());
  EXPECT_FALSE(none.put(1, 5, std::vector<std::byte>(64)));
}

}  // namespace
}  // namespace kvcache::testing
