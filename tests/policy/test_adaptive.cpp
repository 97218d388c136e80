// The adaptive eviction policy and its parts: reuse-lru's bonus weight (0 is
// LRU exactly; a change keeps every entry), the shadow caches against an
// independent model, the key sampling, and the adaptive policy converging to
// the weight that hits most on workloads built to favour one or the other.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <list>
#include <random>
#include <set>
#include <unordered_map>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/policy/cache_policy.hpp"

namespace kvcache {
namespace {

using testing::test_seed;

// Drives two policies with the same random calls (as a ledger makes them:
// insert an unowned key, erase a queued one, forget, pop) and returns whether
// they always chose the same victims.
template <class A, class B>
::testing::AssertionResult same_victims(A& a, B& b, std::mt19937_64& rng, int steps) {
  std::set<EvictionKey> queued, owned;
  for (int i = 0; i < steps; ++i) {
    const auto r = rng() % 10;
    if (r < 4) {
      const EvictionKey key = 1 + rng() % 200;
      if (queued.contains(key)) continue;
      a.on_access(key);
      b.on_access(key);
      a.insert(key);
      b.insert(key);
      queued.insert(key);
    } else if (r < 6 && !queued.empty()) {
      auto it = std::next(queued.begin(), static_cast<long>(rng() % queued.size()));
      a.erase(*it);
      b.erase(*it);
      a.on_access(*it);
      b.on_access(*it);
      owned.insert(*it);
      queued.erase(it);
    } else if (r < 7 && !owned.empty()) {
      auto it = std::next(owned.begin(), static_cast<long>(rng() % owned.size()));
      a.insert(*it);
      b.insert(*it);
      queued.insert(*it);
      owned.erase(it);
    } else {
      const auto va = a.pop_victim();
      const auto vb = b.pop_victim();
      if (va != vb) {
        return ::testing::AssertionFailure()
               << "step " << i << ": " << (va ? *va : 0) << " against " << (vb ? *vb : 0);
      }
      if (va) queued.erase(*va);
    }
    if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes differ at " << i;
  }
  return ::testing::AssertionSuccess();
}

TEST(ReuseLruWeight, ZeroIsLruExactly) {
  std::mt19937_64 rng(test_seed());
  ReuseLruEviction weighted(64);
  weighted.set_bonus_weight(0);
  LruEviction lru(64);
  EXPECT_TRUE(same_victims(weighted, lru, rng, 20000));
}

TEST(ReuseLruWeight, WeightOneIsTheDefault) {
  std::mt19937_64 rng(test_seed());
  ReuseLruEviction a(64), b(64);
  a.set_bonus_weight(1.0);
  EXPECT_TRUE(same_victims(a, b, rng, 20000));
}

TEST(ReuseLruWeight, AChangeKeepsEveryEntry) {
  std::mt19937_64 rng(test_seed());
  ReuseLruEviction policy(256);
  std::set<EvictionKey> keys;
  for (int i = 0; i < 300; ++i) {
    const EvictionKey key = 1 + rng() % 1000;
    for (int k = 0; k < static_cast<int>(rng() % 4); ++k)
      policy.on_access(key);
    policy.insert(key);
    keys.insert(key);
  }
  const std::int64_t size = policy.size();
  policy.set_bonus_weight(4.0);
  policy.set_bonus_weight(0.0);
  EXPECT_EQ(policy.size(), size);
  std::set<EvictionKey> popped;
  while (auto v = policy.pop_victim())
    popped.insert(*v);
  EXPECT_EQ(popped, keys);
}

// An independent LRU prefix cache: chains hit up to their first miss, the
// whole chain is admitted and then released deepest first.
struct ModelLru {
  std::int64_t capacity;
  std::list<EvictionKey> order;  // least recent first
  std::int64_t hits = 0;
  void lookup(const std::vector<EvictionKey>& chain) {
    bool prefix = true;
    std::int64_t in_use = 0;  // the chain's blocks so far hold room too
    for (EvictionKey key : chain) {
      auto it = std::find(order.begin(), order.end(), key);
      if (it != order.end()) {
        hits += prefix ? 1 : 0;
        order.erase(it);
      } else {
        prefix = false;
        while (static_cast<std::int64_t>(order.size()) + in_use >= capacity && !order.empty())
          order.pop_front();
      }
      ++in_use;
    }
    for (std::size_t i = chain.size(); i-- > 0;)
      order.push_back(chain[i]);
  }
};

std::vector<std::vector<EvictionKey>> random_chains(std::mt19937_64& rng, int count) {
  // Prompts from a few trees: a root of 1-4 blocks, branches, then new blocks.
  std::vector<std::vector<EvictionKey>> out;
  for (int i = 0; i < count; ++i) {
    std::vector<EvictionKey> chain;
    const EvictionKey tree = rng() % 12;
    const auto depth = 1 + rng() % 10;
    EvictionKey branch = rng() % 3;
    for (std::uint64_t d = 0; d < depth; ++d)
      chain.push_back((tree << 40) | ((d < 3 ? 0 : branch) << 20) | (d + 1));
    if (rng() % 3 == 0) chain.push_back((EvictionKey{1} << 50) + rng());  // a new tail
    out.push_back(chain);
  }
  return out;
}

TEST(ShadowCache, EqualsAnIndependentLruModelAtFullRate) {
  std::mt19937_64 rng(test_seed());
  const auto capacity = static_cast<std::int64_t>(8 + rng() % 40);
  ShadowCache<LruEviction> shadow(capacity);
  ModelLru model{capacity, {}, 0};
  std::int64_t requested = 0;
  // A chain longer than the replica overfills it until a later lookup misses
  // (as the model): the bound is the capacity or the longest chain so far.
  std::int64_t longest = 0;
  for (const auto& chain : random_chains(rng, 3000)) {
    shadow.lookup(chain);
    model.lookup(chain);
    requested += static_cast<std::int64_t>(chain.size());
    longest = std::max(longest, static_cast<std::int64_t>(chain.size()));
    ASSERT_EQ(shadow.hits(), model.hits);
    ASSERT_LE(shadow.resident(), std::max(capacity, longest));
  }
  EXPECT_EQ(shadow.requested(), requested);
  EXPECT_GT(shadow.hits(), 0);
  EXPECT_LT(shadow.hits(), requested);
}

TEST(ShadowSampling, FollowsItsShareOfTheKeysAndScalesTheCapacity) {
  std::mt19937_64 rng(test_seed());
  for (const double rate : {1.0, 0.5, 1.0 / 16, 1.0 / 200}) {
    const ShadowSampling sampling(rate);
    constexpr int kKeys = 400000;
    int sampled = 0;
    for (int i = 0; i < kKeys; ++i)
      sampled += sampling.sampled(rng()) ? 1 : 0;
    // Binomial: within six standard deviations.
    const double mean = rate * kKeys;
    EXPECT_NEAR(sampled, mean, 6 * std::sqrt(mean * (1 - rate)) + 1) << rate;
    EXPECT_EQ(sampling.scaled(1000), static_cast<std::int64_t>(std::ceil(rate * 1000)));
  }
  EXPECT_DOUBLE_EQ(ShadowSampling::for_capacity(100, 1024).rate(), 1.0);
  EXPECT_DOUBLE_EQ(ShadowSampling::for_capacity(8192, 1024).rate(), 0.125);
  EXPECT_DOUBLE_EQ(ShadowSampling::for_capacity(1 << 30, 1024).rate(), 1.0 / 256);
}

// Feeds the adaptive policy as a ledger would for a sequential workload:
// lookup (whole chain), hits revived, misses admitted (evicting), release.
struct Driver {
  AdaptiveEviction policy;
  std::int64_t capacity;
  std::set<EvictionKey> resident;
  std::int64_t hits = 0, requested = 0;
  explicit Driver(std::int64_t c) : policy(c), capacity(c) {}
  void request(const std::vector<EvictionKey>& chain) {
    policy.on_lookup(chain);
    bool prefix = true;
    for (EvictionKey key : chain) {
      if (prefix && resident.contains(key)) {
        ++hits;
        policy.erase(key);
      } else {
        prefix = false;
        if (resident.contains(key)) {
          policy.erase(key);
        } else {
          while (static_cast<std::int64_t>(resident.size()) >= capacity) {
            const auto victim = policy.pop_victim();
            if (!victim) break;
            resident.erase(*victim);
          }
          resident.insert(key);
        }
      }
      policy.on_access(key);
    }
    requested += static_cast<std::int64_t>(chain.size());
    for (std::size_t i = chain.size(); i-- > 0;)
      policy.insert(chain[i]);
  }
};

TEST(AdaptiveEviction, FollowsLruWhereRecencyWins) {
  // A working set that drifts: each phase reuses a fresh set of keys many
  // times, and a key from an old phase never returns. Old favourites (the
  // reuse bonus) only take room from the current phase. The policy moves to
  // LRU's weight, or stays only where its start hits as much: on some draws
  // (about 1 in 150) the two are within the counts' noise and it never
  // switches, which is the hysteresis doing its job.
  const std::uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  Driver d(400);
  ShadowCache<LruEviction> lru(400);
  for (int phase = 0; phase < 60; ++phase) {
    for (int i = 0; i < 600; ++i) {
      const EvictionKey key = (static_cast<EvictionKey>(phase) << 32) | (1 + rng() % 380);
      d.request({key});
      lru.lookup(std::vector<EvictionKey>{key});
    }
  }
  EXPECT_GT(d.policy.decisions(), 10);
  EXPECT_LE(d.policy.weight(), AdaptiveEviction::kWeights[AdaptiveEviction::kStart])
      << "seed " << seed;
  if (d.policy.weight() != 0.0) {
    EXPECT_GE(d.hits, lru.hits() * 98 / 100) << "seed " << seed << ": stayed at weight "
                                             << d.policy.weight() << ", LRU hit " << lru.hits();
  }
}

TEST(AdaptiveEviction, KeepsAReuseBonusWhereFrequencyWins) {
  // A hot set used again and again, among a scan of keys seen once: LRU lets
  // the scan flush the hot set, the bonus keeps it.
  std::mt19937_64 rng(test_seed());
  std::vector<EvictionKey> requests;
  EvictionKey scan = EvictionKey{1} << 40;
  for (int i = 0; i < 200000; ++i)
    requests.push_back(rng() % 3 == 0 ? 1 + rng() % 200 : ++scan);
  Driver d(300);
  ShadowCache<LruEviction> lru(300);
  for (EvictionKey key : requests) {
    d.request({key});
    lru.lookup(std::vector<EvictionKey>{key});
  }
  EXPECT_GE(d.policy.weight(), 1.0) << "switches " << d.policy.switches();
  EXPECT_GT(d.hits, lru.hits() * 11 / 10) << "LRU hit " << lru.hits();
}

TEST(AdaptiveEviction, ItsShadowsStayWithinTheirCapacity) {
  std::mt19937_64 rng(test_seed());
  Driver d(5000);
  for (const auto& chain : random_chains(rng, 20000))
    d.request(chain);
  const auto& shadows = d.policy.shadows();
  ASSERT_EQ(shadows.replicas(), AdaptiveEviction::kWeights.size());
  for (std::size_t i = 0; i < shadows.replicas(); ++i)
    EXPECT_LE(shadows.resident(i), shadows.capacity() + 11) << i;  // one chain's slack
  const std::int64_t scaled = d.policy.sampling().scaled(5000);
  EXPECT_LE(shadows.capacity(), scaled);
  EXPECT_LE(scaled, AdaptiveEviction::kShadowBlocks + 1);
  // Keys held: those resident in some replica and the ghosts of 8 evictions
  // a block of the replicas' first capacity.
  EXPECT_LE(shadows.tracked(), static_cast<std::int64_t>(shadows.replicas()) * (scaled + 11) +
                                   ReuseLruShadows::kGhostFactor * scaled);
}

}  // namespace
}  // namespace kvcache
