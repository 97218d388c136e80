// Recommendations on scripted windows of snapshots: each rule fires on the
// figures it names, with its number, and nothing fires where it must not.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/metrics/recommend.hpp"

namespace kvcache::metrics {
namespace {

// What one step of a scripted run adds and holds.
struct Step {
  std::int64_t requested = 0, hit = 0, refetched = 0, evicted = 0, failures = 0;
  std::int64_t used = 0;      // blocks held by sequences
  std::int64_t stored = 0;    // tokens stored
  std::int64_t reserved = 0;  // token slots of the blocks held
  std::int64_t sequences = 0;
  std::size_t distance_bucket = 4;  // the refetches came back within 16 evictions
};

struct Script {
  std::int64_t num_blocks = 1000;
  std::int32_t block_size = 16;
  bool compressed = false;
  std::vector<MetricsSnapshot> window;

  void add(const Step& s) {
    MetricsSnapshot snap = window.empty() ? MetricsSnapshot{} : window.back();
    snap.shape = ModelShape::gqa(32, 8, 128, DType::kF16);
    snap.block_size = block_size;
    snap.plain_bytes_per_block = snap.shape.bytes_per_token() * block_size;
    snap.bytes_per_block = compressed ? snap.plain_bytes_per_block / 2 : snap.plain_bytes_per_block;
    snap.time_ns += 1000000;
    snap.memory.num_blocks = num_blocks;
    snap.memory.bytes_per_block = snap.bytes_per_block;
    snap.memory.used_blocks = s.used;
    snap.memory.free_blocks = num_blocks - s.used;
    snap.memory.stored_tokens = s.stored;
    snap.memory.reserved_tokens = s.reserved;
    snap.memory.num_sequences = s.sequences;
    snap.counters.prefix_lookups += s.requested > 0 ? 1 : 0;
    snap.counters.prefix_blocks_requested += s.requested;
    snap.counters.prefix_blocks_hit += s.hit;
    snap.counters.prefix_blocks_refetched += s.refetched;
    snap.counters.refetch_distance[s.distance_bucket] += s.refetched;
    snap.counters.evicted_blocks += s.evicted;
    snap.counters.reserve_failures += s.failures;
    window.push_back(snap);
  }
  std::vector<Recommendation> run() const {
    return recommend(std::span<const MetricsSnapshot>(window));
  }
};

const Recommendation* find(const std::vector<Recommendation>& recs, const std::string& rule) {
  for (const auto& r : recs)
    if (r.rule == rule) return &r;
  return nullptr;
}

// A healthy baseline step with random noise: high hit rate, half the pool
// used, little waste.
Step healthy(std::mt19937_64& rng) {
  Step s;
  s.requested = 40 + static_cast<std::int64_t>(rng() % 20);
  s.hit = s.requested - static_cast<std::int64_t>(rng() % 4);
  s.used = 450 + static_cast<std::int64_t>(rng() % 100);
  s.reserved = s.used * 16;
  s.stored = s.reserved - static_cast<std::int64_t>(rng() % 200);
  s.sequences = 30;
  return s;
}

TEST(Recommend, AHealthyRunFiresNothing) {
  std::mt19937_64 rng(testing::test_seed());
  Script script;
  for (int i = 0; i < 16; ++i)
    script.add(healthy(rng));
  EXPECT_TRUE(script.run().empty());
}

TEST(Recommend, LowHitRateFromEvictionsSaysHowMuchToGrow) {
  std::mt19937_64 rng(testing::test_seed());
  Script script;
  std::int64_t near = 0, far = 0;
  for (int i = 0; i < 16; ++i) {
    Step s = healthy(rng);
    s.hit = s.requested / 2;
    s.refetched = 5 + static_cast<std::int64_t>(rng() % 10);
    s.evicted = 40;
    // Most refetches come back within 64 evictions (bucket 6), the rest
    // within 1024: keeping half of them takes 64 more blocks.
    s.distance_bucket = i % 4 == 3 ? 10 : 6;
    if (i > 0) (s.distance_bucket == 6 ? near : far) += s.refetched;  // the first is the base
    script.add(s);
  }
  ASSERT_GT(near, far);
  const auto recs = script.run();
  const Recommendation* r = find(recs, "low-hit-rate");
  ASSERT_NE(r, nullptr);
  EXPECT_LT(r->value, 0.8);
  EXPECT_EQ(r->threshold, 0.8);
  EXPECT_EQ(r->suggested, 1000 + 64);
  EXPECT_NE(r->action.find("grow the budget to 1064 blocks (+64: under LRU that keeps those " +
                           std::to_string(near) + " blocks)"),
            std::string::npos)
      << r->action;
  EXPECT_NE(r->finding.find("evicted lately"), std::string::npos) << r->finding;
}

TEST(Recommend, LowHitRateOnNewPromptsFiresNothing) {
  // Half the blocks miss, but none of them was ever evicted: the prompts are
  // new, and more memory would not make them hit.
  std::mt19937_64 rng(testing::test_seed());
  Script script;
  for (int i = 0; i < 16; ++i) {
    Step s = healthy(rng);
    s.hit = s.requested / 2;
    script.add(s);
  }
  EXPECT_EQ(find(script.run(), "low-hit-rate"), nullptr);
}

TEST(Recommend, TooFewLookupsFireNothing) {
  Script script;
  for (int i = 0; i < 8; ++i)
    script.add(Step{i % 2 == 0 ? 5 : 0, 0, 2, 2, 0, 300, 4000, 4800, 10});
  EXPECT_TRUE(script.run().empty())
      << "20 blocks asked for and 14 evicted: under the 64 and 32 a rule needs";
}

TEST(Recommend, MemoryPressureOnAPlainCacheSuggestsInt8) {
  std::mt19937_64 rng(testing::test_seed());
  Script script;
  for (int i = 0; i < 12; ++i) {
    Step s = healthy(rng);
    s.used = 920 + static_cast<std::int64_t>(rng() % 60);
    s.reserved = s.used * 16;
    s.stored = s.reserved - 100;
    s.failures = i % 3 == 0 ? 1 : 0;
    script.add(s);
  }
  const auto recs = script.run();
  const Recommendation* r = find(recs, "memory-pressure");
  ASSERT_NE(r, nullptr);
  EXPECT_GT(r->value, 0.9);
  EXPECT_NE(r->action.find("Int8Codec<64>"), std::string::npos) << r->action;
  // A row of 128 values: fp16 is 256 bytes; int8 with an fp16 scale per 64
  // values is 128 + 2 * 2 = 132.
  const double gain = 256.0 / 132.0;
  EXPECT_EQ(r->suggested, static_cast<std::int64_t>(1000 * gain));
}

TEST(Recommend, MemoryPressureOnACompressedCacheLowersTheBatch) {
  std::mt19937_64 rng(testing::test_seed());
  Script script;
  script.compressed = true;
  double pressure = 0;
  for (int i = 0; i < 10; ++i) {
    Step s = healthy(rng);
    s.used = 950;
    s.reserved = s.used * 16;
    s.stored = s.reserved;
    s.sequences = 64;
    pressure += 0.95;
    script.add(s);
  }
  const auto recs = script.run();
  const Recommendation* r = find(recs, "memory-pressure");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->suggested, static_cast<std::int64_t>(64 * 0.85 / 0.95));
  EXPECT_NE(r->action.find("lower the max batch to 57"), std::string::npos) << r->action;
}

TEST(Recommend, OnePressureSpikeFiresNothing) {
  std::mt19937_64 rng(testing::test_seed());
  Script script;
  for (int i = 0; i < 12; ++i) {
    Step s = healthy(rng);
    if (i == 11) s.used = 990;  // only the last step is full
    script.add(s);
  }
  EXPECT_EQ(find(script.run(), "memory-pressure"), nullptr);
}

TEST(Recommend, FragmentationUnderPressureSuggestsSmallerBlocks) {
  std::mt19937_64 rng(testing::test_seed());
  Script script;
  for (int i = 0; i < 8; ++i) {
    Step s = healthy(rng);
    s.used = 700;
    s.reserved = 700 * 16;
    s.stored = s.reserved * 6 / 10;  // 40% unwritten
    script.add(s);
  }
  const auto recs = script.run();
  const Recommendation* r = find(recs, "fragmentation");
  ASSERT_NE(r, nullptr);
  EXPECT_NEAR(r->value, 0.4, 1e-9);
  EXPECT_EQ(r->suggested, 8);
  EXPECT_NE(r->action.find("block_size 16 -> 8"), std::string::npos) << r->action;
}

TEST(Recommend, FragmentationWithRoomToSpareFiresNothing) {
  std::mt19937_64 rng(testing::test_seed());
  Script script;
  for (int i = 0; i < 8; ++i) {
    Step s = healthy(rng);
    s.used = 200;  // pressure 0.2
    s.reserved = 200 * 16;
    s.stored = s.reserved / 2;
    script.add(s);
  }
  EXPECT_EQ(find(script.run(), "fragmentation"), nullptr);
}

TEST(Recommend, EvictionChurnFiresAboveItsShareOnly) {
  for (const std::int64_t refetched : {4, 20}) {  // of 40 evicted per step: 0.1 and 0.5
    std::mt19937_64 rng(testing::test_seed());
    Script script;
    for (int i = 0; i < 8; ++i) {
      Step s = healthy(rng);
      s.evicted = 40;
      s.refetched = refetched;
      script.add(s);
    }
    const auto recs = script.run();
    const Recommendation* r = find(recs, "eviction-churn");
    if (refetched == 4) {
      EXPECT_EQ(r, nullptr);
    } else {
      ASSERT_NE(r, nullptr);
      EXPECT_NEAR(r->value, 0.5, 1e-12);
      EXPECT_EQ(r->suggested, 1000 + 16);
    }
  }
}

TEST(Recommend, AWindowOfOneSnapshotFiresNothing) {
  Script script;
  script.add(Step{1000, 0, 1000, 1000, 5, 999, 0, 16000, 10});
  EXPECT_TRUE(script.run().empty());
}

}  // namespace
}  // namespace kvcache::metrics
