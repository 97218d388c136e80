// MetricsServer: a real HTTP client (cpp-httplib's) scrapes /metrics and
// /metrics.json while an engine thread publishes snapshots of a running cache.
#include <gtest/gtest.h>

#include <httplib.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"
#include "kvcache/metrics/http_server.hpp"
#include "kvcache/metrics/monitor.hpp"

namespace kvcache::metrics {
namespace {

using Meta =
    KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>, MetadataBackend>;

// The value of an unlabelled sample in the text format; -1 when absent.
std::int64_t sample(const std::string& text, const std::string& name) {
  const std::string key = "\n" + name + " ";
  const auto at = text.find(key);
  if (at == std::string::npos) return -1;
  return std::stoll(text.substr(at + key.size()));
}

struct Engine {
  Meta cache;
  std::mt19937_64 rng;
  std::vector<SeqId> live;
  explicit Engine(std::uint64_t seed) : cache(config()), rng(seed) {}
  static CacheConfig config() {
    CacheConfig c;
    c.shape = ModelShape::gqa(2, 2, 64, DType::kF16);
    c.block_size = 4;
    c.num_blocks = 64;
    return c;
  }
  void step() {
    std::vector<std::int32_t> prompt(4 * (1 + rng() % 4));
    for (auto& t : prompt)
      t = static_cast<std::int32_t>(rng() % 4);
    const SeqId s = cache.create_sequence(prompt);
    const auto rest = static_cast<std::int32_t>(prompt.size() - cache.sequence(s).num_tokens);
    if (cache.try_reserve(s, rest) != ReserveStatus::kOk) {
      cache.release(s);
      return;
    }
    const SeqId seqs[] = {s};
    const std::int32_t counts[] = {rest};
    cache.commit(cache.prepare_append(seqs, counts));
    live.push_back(s);
    if (live.size() > 6) {
      cache.release(live.front());
      live.erase(live.begin());
    }
  }
};

TEST(MetricsServer, ServesWhatWasPublishedLast) {
  Engine engine(testing::test_seed());
  Monitor<Meta> monitor(engine.cache, 4);
  MetricsServer server(0);
  ASSERT_GT(server.port(), 0);
  httplib::Client client("127.0.0.1", server.port());
  auto before = client.Get("/metrics");
  ASSERT_TRUE(before);
  EXPECT_EQ(before->status, 200);
  EXPECT_EQ(sample(before->body, "kvcache_prefix_lookups_total"), 0) << "nothing published yet";
  EXPECT_NE(before->get_header_value("Content-Type").find("text/plain; version=0.0.4"),
            std::string::npos);

  for (int i = 0; i < 40; ++i)
    engine.step();
  const MetricsSnapshot& first = monitor.sample();
  server.publish(first);
  auto a = client.Get("/metrics");
  ASSERT_TRUE(a);
  EXPECT_EQ(sample(a->body, "kvcache_prefix_lookups_total"), first.counters.prefix_lookups);
  EXPECT_EQ(sample(a->body, "kvcache_prefix_hit_blocks_total"), first.blocks_hit());

  for (int i = 0; i < 40; ++i)
    engine.step();
  const MetricsSnapshot& second = monitor.sample();
  const std::vector<Recommendation> recs{{"eviction-churn", "f", "a", 0.5, 0.25, 99}};
  server.publish(second, recs);
  auto b = client.Get("/metrics");
  ASSERT_TRUE(b);
  EXPECT_EQ(sample(b->body, "kvcache_prefix_lookups_total"), second.counters.prefix_lookups);
  EXPECT_GT(second.counters.prefix_lookups, first.counters.prefix_lookups);
  auto j = client.Get("/metrics.json");
  ASSERT_TRUE(j);
  const auto json = nlohmann::json::parse(j->body);
  EXPECT_EQ(json["prefix"]["lookups"], second.counters.prefix_lookups);
  EXPECT_EQ(json["recommendations"][0]["suggested"], 99);
  auto missing = client.Get("/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(server.requests(), 4);
}

TEST(MetricsServer, ScrapesWhileTheEngineRunsSeeCountersOnlyGrow) {
  Engine engine(testing::test_seed());
  Monitor<Meta> monitor(engine.cache, 8);
  MetricsServer server(0);
  std::atomic<bool> done{false};
  std::atomic<int> scrapes{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&] {
      httplib::Client client("127.0.0.1", server.port());
      std::int64_t last = 0;
      while (!done.load()) {
        auto r = client.Get("/metrics");
        ASSERT_TRUE(r);
        const std::int64_t lookups = sample(r->body, "kvcache_prefix_lookups_total");
        ASSERT_GE(lookups, last) << "a counter went back";
        last = lookups;
        ++scrapes;
      }
    });
  }
  for (int i = 0; i < 400; ++i) {
    engine.step();
    server.publish(monitor.sample());
    if (i % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  while (scrapes.load() < 6)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  done = true;
  for (auto& t : clients)
    t.join();
  httplib::Client client("127.0.0.1", server.port());
  auto r = client.Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(sample(r->body, "kvcache_prefix_lookups_total"), engine.cache.stats().prefix_lookups);
}

TEST(MetricsServer, BadPortsAreRefusedNamingThem) {
  EXPECT_TRUE(testing::throws_with<InvalidArgument>([] { MetricsServer bad(70000); },
                                                    {"port 70000", "0 to 65535"}));
  MetricsServer first(0);
  const int taken = first.port();
  EXPECT_TRUE(testing::throws_with<Error>([&] { MetricsServer second(taken); },
                                          {std::to_string(taken), "cannot listen"}));
  httplib::Client client("127.0.0.1", taken);
  auto r = client.Get("/metrics");
  ASSERT_TRUE(r) << "the first server still serves";
  EXPECT_EQ(r->status, 200);
}

}  // namespace
}  // namespace kvcache::metrics
