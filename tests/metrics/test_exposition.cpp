// The Prometheus text and JSON of a snapshot: the format's rules, and every
// value equal to the snapshot's (the Python test parses the same text with
// prometheus_client).
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"
#include "kvcache/metrics/exposition.hpp"
#include "kvcache/metrics/monitor.hpp"

namespace kvcache::metrics {
namespace {

using Meta =
    KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>, MetadataBackend>;

MetricsSnapshot random_snapshot(std::uint64_t seed) {
  CacheConfig config;
  config.shape = ModelShape::gqa(4, 2, 64, DType::kF16);
  config.block_size = 8;
  config.num_blocks = 64;
  Meta cache(config);
  Monitor<Meta> monitor(cache, 8);
  std::mt19937_64 rng(seed);
  std::vector<SeqId> live;
  for (int i = 0; i < 400; ++i) {
    std::vector<std::int32_t> prompt(8 * (1 + rng() % 6));
    for (auto& t : prompt)
      t = static_cast<std::int32_t>(rng() % 3);  // few distinct blocks: hits
    const SeqId s = cache.create_sequence(prompt);
    const auto rest = static_cast<std::int32_t>(prompt.size() - cache.sequence(s).num_tokens) + 3;
    if (cache.try_reserve(s, rest) == ReserveStatus::kOk) {
      const SeqId seqs[] = {s};
      const std::int32_t counts[] = {rest};
      cache.commit(cache.prepare_append(seqs, counts));
      live.push_back(s);
    } else {
      cache.release(s);
    }
    if (live.size() > 4) {
      cache.release(live.front());
      live.erase(live.begin());
    }
    if (i % 20 == 0) monitor.sample();
  }
  return monitor.sample();
}

// name{labels} -> value, from the text format (no HELP/TYPE lines).
std::map<std::string, std::string> samples(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    out[line.substr(0, space)] = line.substr(space + 1);
  }
  return out;
}

TEST(Exposition, PrometheusFollowsTheFormatsRules) {
  const MetricsSnapshot snap = random_snapshot(testing::test_seed());
  const std::string text = to_prometheus(snap);
  std::istringstream in(text);
  std::map<std::string, std::string> types;
  std::string family;
  for (std::string line; std::getline(in, line);) {
    ASSERT_FALSE(line.empty());
    if (line.starts_with("# HELP ")) {
      family = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_TRUE(family.starts_with("kvcache_")) << family;
      continue;
    }
    if (line.starts_with("# TYPE ")) {
      const std::string name = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_EQ(name, family) << "TYPE follows its HELP";
      types[name] = line.substr(line.rfind(' ') + 1);
      if (types[name] == "counter") {
        EXPECT_TRUE(name.ends_with("_total")) << name;
      }
      continue;
    }
    const std::string name = line.substr(0, line.find_first_of("{ "));
    EXPECT_TRUE(name.starts_with(family)) << name << " outside its family " << family;
  }
  EXPECT_EQ(types["kvcache_operation_duration_seconds"], "histogram");
  const auto s = samples(text);
  EXPECT_EQ(s.at("kvcache_prefix_hit_blocks_total"), std::to_string(snap.blocks_hit()));
  EXPECT_EQ(s.at("kvcache_memory_blocks{state=\"cached\"}"),
            std::to_string(snap.memory.cached_blocks));
  EXPECT_EQ(s.at("kvcache_evictions_total{kind=\"block\"}"),
            std::to_string(snap.counters.evicted_blocks));
  // Cumulative buckets, +Inf equal to _count.
  for (std::size_t op = 0; op < kNumOps; ++op) {
    const std::string name(op_name(static_cast<Op>(op)));
    std::int64_t previous = 0;
    for (std::size_t b = 0; b < kLatencyBuckets; ++b) {
      const std::string le =
          b + 1 < kLatencyBuckets
              ? fmt::format("{}", static_cast<double>(latency_bucket_bound_ns(b)) * 1e-9)
              : "+Inf";
      const auto v = std::stoll(s.at(fmt::format(
          "kvcache_operation_duration_seconds_bucket{{op=\"{}\",le=\"{}\"}}", name, le)));
      EXPECT_GE(v, previous);
      previous = v;
    }
    EXPECT_EQ(previous, snap.ops[op].count);
    EXPECT_EQ(std::stoll(
                  s.at(fmt::format("kvcache_operation_duration_seconds_count{{op=\"{}\"}}", name))),
              snap.ops[op].count);
  }
}

TEST(Exposition, JsonCarriesTheSnapshotsValues) {
  const MetricsSnapshot snap = random_snapshot(testing::test_seed());
  const std::vector<Recommendation> recs{
      {"fragmentation", "a \"quoted\" finding\n", "smaller blocks", 0.4, 0.25, 8}};
  const auto j = nlohmann::json::parse(to_json(snap, recs));
  EXPECT_EQ(j["prefix"]["requested_blocks"], snap.counters.prefix_blocks_requested);
  EXPECT_EQ(j["prefix"]["hit_blocks"], snap.blocks_hit());
  EXPECT_EQ(j["prefix"]["hit_tokens"], snap.counters.prefix_tokens_hit);
  EXPECT_EQ(j["window"]["requested_blocks"], snap.window.blocks_requested);
  EXPECT_EQ(j["memory"]["used_blocks"], snap.memory.used_blocks);
  EXPECT_EQ(j["memory"]["fragmented_slots"], snap.fragmented_slots());
  EXPECT_DOUBLE_EQ(j["memory"]["pressure"].get<double>(), snap.memory_pressure());
  EXPECT_EQ(j["evictions"]["blocks"], snap.counters.evicted_blocks);
  EXPECT_EQ(j["operations"]["create_sequence"]["count"], snap.ops[0].count);
  EXPECT_EQ(j["recommendations"][0]["finding"], "a \"quoted\" finding\n");
  EXPECT_EQ(j["recommendations"][0]["suggested"], 8);
  // An empty cache's ratios are undefined: null, not a number.
  MetricsSnapshot empty;
  const auto e = nlohmann::json::parse(to_json(empty));
  EXPECT_TRUE(e["prefix"]["hit_rate_blocks"].is_null());
  EXPECT_NE(to_prometheus(empty).find(
                "kvcache_prefix_hit_ratio{unit=\"blocks\",window=\"cumulative\"} NaN"),
            std::string::npos);
}

TEST(Exposition, TunerCountersAreCountersWithTheirActions) {
  TunerStats t;
  t.decisions = 12;
  t.grows = 3;
  t.limit_shrinks = 1;
  t.compressed = 5;
  std::string text;
  append_prometheus(text, t);
  const auto s = samples(text);
  EXPECT_EQ(s.at("kvcache_tuner_decision_points_total"), "12");
  EXPECT_EQ(s.at("kvcache_tuner_decisions_total{action=\"grow\"}"), "3");
  EXPECT_EQ(s.at("kvcache_tuner_decisions_total{action=\"limit\"}"), "1");
  EXPECT_EQ(s.at("kvcache_tuner_moved_sequences_total{direction=\"compress\"}"), "5");
  EXPECT_NE(text.find("# TYPE kvcache_tuner_decisions_total counter"), std::string::npos);
}

}  // namespace
}  // namespace kvcache::metrics
