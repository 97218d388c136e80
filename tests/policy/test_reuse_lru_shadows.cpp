// The adaptive policy's shadow caches: the flat key index against a standard
// map, and the shared-index replicas against independent models of a
// reuse-lru prefix cache (one per weight), on random chains with the
// interval and the capacity changing between lookups.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/detail/flat_key_index.hpp"
#include "kvcache/policy/cache_policy.hpp"
#include "kvcache/policy/reuse_lru_shadows.hpp"

namespace kvcache {
namespace {

using testing::test_seed;

TEST(FlatKeyIndex, AgreesWithAStandardMapThroughGrowthAndErasure) {
  std::mt19937_64 rng(test_seed());
  detail::FlatKeyIndex index(4);
  std::unordered_map<EvictionKey, std::uint32_t> model;
  // Keys from a small range collide in their home cells often; the shadows'
  // sampled keys (a small multiplicative hash) are the other half.
  auto draw = [&] {
    if (rng() % 2 == 0) return EvictionKey{rng() % 3000};
    EvictionKey key = rng();
    while (((key * 0x9E3779B97F4A7C15ull) >> 32) >= (std::uint64_t{1} << 28))
      key = rng();
    return key;
  };
  std::vector<EvictionKey> seen;
  for (int step = 0; step < 200000; ++step) {
    const auto r = rng() % 10;
    const EvictionKey key = (r < 5 || seen.empty()) ? draw() : seen[rng() % seen.size()];
    if (r < 6) {
      const auto it = model.find(key);
      ASSERT_EQ(index.find(key), it == model.end() ? detail::FlatKeyIndex::kNone : it->second);
      if (it == model.end()) {
        const auto slot = static_cast<std::uint32_t>(rng() % 1000000);
        index.insert(key, slot);
        model.emplace(key, slot);
        seen.push_back(key);
      }
    } else {
      ASSERT_EQ(index.erase(key), model.erase(key) == 1) << step;
    }
    ASSERT_EQ(index.size(), model.size());
    ASSERT_LE(2 * index.size(), index.cells());
    if (step % 5000 == 0) {
      for (EvictionKey k : seen) {
        const auto it = model.find(k);
        ASSERT_EQ(index.find(k), it == model.end() ? detail::FlatKeyIndex::kNone : it->second);
      }
    }
  }
  EXPECT_GT(index.cells(), 1000u);  // it grew
  index.clear();
  EXPECT_EQ(index.size(), 0u);
  for (EvictionKey k : seen)
    ASSERT_EQ(index.find(k), detail::FlatKeyIndex::kNone);
}

// An independent reuse-lru prefix cache per weight, written plainly: a map of
// resident keys, the victim found by a scan for the lowest release time +
// (uses - 1) x bonus (ties: the lower queue). Use counts are never forgotten.
struct ModelShadows {
  struct Entry {
    bool queued = false;
    std::int64_t released = 0;
    int queue = 0;
  };
  struct Replica {
    double weight;
    std::int64_t bonus = 1;
    std::map<EvictionKey, Entry> resident;
    std::int64_t hits = 0;
  };
  std::vector<Replica> replicas;
  std::int64_t capacity;
  std::unordered_map<EvictionKey, int> uses;
  std::int64_t clock = 0;

  void set_interval(std::int64_t interval) {
    for (Replica& r : replicas) {
      r.bonus =
          r.weight == 1.0
              ? interval
              : static_cast<std::int64_t>(std::llround(r.weight * static_cast<double>(interval)));
    }
  }
  void lookup(const std::vector<EvictionKey>& chain) {
    for (Replica& r : replicas) {
      bool prefix = true;
      for (EvictionKey key : chain) {
        auto it = r.resident.find(key);
        if (it != r.resident.end()) {
          r.hits += prefix ? 1 : 0;
          it->second.queued = false;
          continue;
        }
        prefix = false;
        while (static_cast<std::int64_t>(r.resident.size()) >= capacity) {
          auto victim = r.resident.end();
          std::int64_t best = 0;
          for (auto e = r.resident.begin(); e != r.resident.end(); ++e) {
            if (!e->second.queued) continue;
            const std::int64_t priority = e->second.released + e->second.queue * r.bonus;
            if (victim == r.resident.end() || priority < best ||
                (priority == best && e->second.queue < victim->second.queue)) {
              victim = e;
              best = priority;
            }
          }
          if (victim == r.resident.end()) break;
          r.resident.erase(victim);
        }
        r.resident.emplace(key, Entry{});
      }
    }
    for (EvictionKey key : chain)
      uses[key] = std::min(uses[key] + 1, ReuseLruEviction::kMaxBonus + 1);
    std::set<EvictionKey> released;
    for (std::size_t i = chain.size(); i-- > 0;) {
      if (!released.insert(chain[i]).second) continue;
      ++clock;
      for (Replica& r : replicas)
        r.resident[chain[i]] = Entry{true, clock, uses[chain[i]] - 1};
    }
  }
};

std::vector<EvictionKey> random_chain(std::mt19937_64& rng) {
  // Prompts from a few trees (shared roots, branches), sometimes a new tail,
  // sometimes a key repeated within the chain.
  std::vector<EvictionKey> chain;
  const EvictionKey tree = rng() % 10;
  const auto depth = 1 + rng() % 9;
  const EvictionKey branch = rng() % 4;
  for (std::uint64_t d = 0; d < depth; ++d)
    chain.push_back((tree << 40) | ((d < 2 ? 0 : branch) << 20) | (d + 1));
  if (rng() % 3 == 0) chain.push_back((EvictionKey{1} << 50) + rng() % 200);
  if (rng() % 8 == 0) chain.push_back(chain[rng() % chain.size()]);
  return chain;
}

TEST(ReuseLruShadows, EachReplicaIsAnIndependentReuseLruCache) {
  std::mt19937_64 rng(test_seed());
  for (int round = 0; round < 4; ++round) {
    std::vector<double> weights = {0.0, 0.5, 1.0, 2.0, 4.0};
    if (round % 2 == 1) {
      weights.resize(1 + rng() % ReuseLruShadows::kMaxReplicas);
      for (double& w : weights)
        w = std::ldexp(static_cast<double>(rng() % 64), -3);
    }
    const auto capacity = static_cast<std::int64_t>(6 + rng() % 40);
    ReuseLruShadows shadows(weights, capacity, std::int64_t{1} << 20);
    ModelShadows model{{}, capacity, {}, 0};
    for (double w : weights)
      model.replicas.push_back({w, 1, {}, 0});
    std::int64_t interval = capacity;
    model.set_interval(interval);
    std::int64_t requested = 0;
    for (int i = 0; i < 3000; ++i) {
      if (rng() % 50 == 0) {
        interval = 1 + static_cast<std::int64_t>(rng() % 400);
        shadows.set_interval(interval);
        model.set_interval(interval);
      }
      if (rng() % 200 == 0) {
        const auto c = static_cast<std::int64_t>(4 + rng() % 40);
        shadows.set_capacity(c);
        model.capacity = c;
      }
      const auto chain = random_chain(rng);
      shadows.lookup(chain);
      model.lookup(chain);
      requested += static_cast<std::int64_t>(chain.size());
      for (std::size_t r = 0; r < weights.size(); ++r) {
        ASSERT_EQ(shadows.hits(r), model.replicas[r].hits)
            << "replica " << r << " (weight " << weights[r] << "), lookup " << i;
        ASSERT_EQ(shadows.resident(r),
                  static_cast<std::int64_t>(model.replicas[r].resident.size()));
      }
      if (i % 97 == 0) {
        for (std::size_t r = 0; r < weights.size(); ++r)
          for (const auto& [key, entry] : model.replicas[r].resident)
            ASSERT_TRUE(shadows.holds(r, key)) << r << " " << key;
        for (const auto& [key, count] : model.uses)
          ASSERT_EQ(shadows.uses(key), count) << key;
      }
    }
    EXPECT_EQ(shadows.requested(), requested);
    for (std::size_t r = 0; r < weights.size(); ++r) {
      EXPECT_GT(shadows.hits(r), 0);
      EXPECT_LT(shadows.hits(r), requested);
    }
  }
}

TEST(ReuseLruShadows, WeightZeroIsTheLruShadow) {
  std::mt19937_64 rng(test_seed());
  const auto capacity = static_cast<std::int64_t>(8 + rng() % 40);
  const std::array<double, 2> weights{0.0, 1.0};
  ReuseLruShadows shadows(weights, capacity);
  ShadowCache<LruEviction> lru(capacity);
  for (int i = 0; i < 5000; ++i) {
    const auto chain = random_chain(rng);
    shadows.lookup(chain);
    lru.lookup(chain);
    ASSERT_EQ(shadows.hits(0), lru.hits()) << i;
  }
  EXPECT_NE(shadows.hits(0), shadows.hits(1));  // the bonus changes what stays
}

TEST(ReuseLruShadows, ForgetsAUseCountGhostBlocksEvictionsAfterTheLastReplicaLetItGo) {
  std::mt19937_64 rng(test_seed());
  const auto ghosts = static_cast<std::int64_t>(2 + rng() % 20);
  const std::array<double, 1> lru{0.0};
  ReuseLruShadows shadows(lru, 4, ghosts);
  const EvictionKey hot = rng() | 1;
  const std::vector<EvictionKey> hot_chain{hot};
  for (int i = 0; i < 3; ++i)
    shadows.lookup(hot_chain);
  EXPECT_EQ(shadows.uses(hot), 3);
  EvictionKey fresh = EvictionKey{1} << 60;
  // Four fresh keys: the fourth evicts the hot key (released longest ago).
  for (int i = 0; i < 4; ++i)
    shadows.lookup(std::vector<EvictionKey>{++fresh});
  EXPECT_FALSE(shadows.holds(0, hot));
  EXPECT_EQ(shadows.uses(hot), 3);  // a ghost now
  // Every later fresh key evicts one; the ring forgets the hot key at the
  // ghosts-th eviction after its own.
  for (std::int64_t i = 1; i < ghosts; ++i) {
    shadows.lookup(std::vector<EvictionKey>{++fresh});
    ASSERT_EQ(shadows.uses(hot), 3) << i;
  }
  shadows.lookup(std::vector<EvictionKey>{++fresh});
  EXPECT_EQ(shadows.uses(hot), 0);
  EXPECT_EQ(shadows.tracked(), 4 + ghosts);
  // Back again, it starts from one use.
  shadows.lookup(hot_chain);
  EXPECT_EQ(shadows.uses(hot), 1);
}

TEST(ReuseLruShadows, ItsMemoryIsBoundedByReplicasCapacityAndGhosts) {
  std::mt19937_64 rng(test_seed());
  const std::array<double, 5> weights{0.0, 0.5, 1.0, 2.0, 4.0};
  const std::int64_t capacity = 64, ghosts = 300;
  ReuseLruShadows shadows(weights, capacity, ghosts);
  std::int64_t longest = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<EvictionKey> chain = random_chain(rng);
    for (int k = 0; k < static_cast<int>(rng() % 6); ++k)
      chain.push_back(rng());  // never seen again
    longest = std::max(longest, static_cast<std::int64_t>(chain.size()));
    shadows.lookup(chain);
    for (std::size_t r = 0; r < weights.size(); ++r)
      ASSERT_LE(shadows.resident(r), std::max(capacity, longest));
    ASSERT_LE(shadows.tracked(),
              static_cast<std::int64_t>(weights.size()) * std::max(capacity, longest) + ghosts);
  }
  EXPECT_GT(shadows.tracked(), capacity + ghosts / 2);  // the ghosts are in use
}

TEST(ReuseLruShadows, RefusesABadWeightOrCountNamingIt) {
  const auto message = [](auto&& make) {
    try {
      make();
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::vector<double> none, nine(9, 1.0);
  EXPECT_NE(message([&] { ReuseLruShadows s(none, 8); }).find("0 weights; 1 to 8"),
            std::string::npos);
  EXPECT_NE(message([&] { ReuseLruShadows s(nine, 8); }).find("9 weights"), std::string::npos);
  const std::vector<double> negative{1.0, -0.5};
  EXPECT_NE(message([&] { ReuseLruShadows s(negative, 8); }).find("weight -0.5;"),
            std::string::npos);
  const std::vector<double> nan{std::numeric_limits<double>::quiet_NaN()};
  EXPECT_NE(message([&] { ReuseLruShadows s(nan, 8); }).find("weight nan"), std::string::npos);
  const std::vector<double> big{65.0};
  EXPECT_NE(message([&] { ReuseLruShadows s(big, 8); }).find("weight 65; [0, 64] allowed"),
            std::string::npos);
}

}  // namespace
}  // namespace kvcache
