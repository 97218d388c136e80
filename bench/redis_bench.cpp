// The Redis tier's put and get throughput for 512-token blocks, against
// redis-benchmark's SET and GET of values of the same size on the same
// server, in the same run (one connection each way, pipelined as the tier
// pipelines: a batch of 16 SETs, a lookup of 8 blocks).
//
//   kvcache_redis_bench [--smoke] [google benchmark flags]
//
// Starts its own redis-server on a free loopback port (KVCACHE_REDIS_SERVER
// or the one CMake found; redis-benchmark beside it). Block: the "tiny"
// model (2 layers x 2 KV heads x 64, fp16) at 512 tokens: 512 KiB; --smoke
// uses 16 tokens.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "kvcache/tier/redis_tier.hpp"
#include "redis_server.hpp"

namespace kvcache::bench {
namespace {

using kvcache::testing::RedisServer;

std::int64_t block_bytes() {
  return ModelShape::gqa(2, 2, 64, DType::kF16).bytes_per_token() * (smoke() ? 16 : 512);
}

RedisServer& server() {
  static RedisServer s;
  return s;
}

// redis-benchmark's requests per second for `test` (SET or GET) of values
// of `bytes`, one connection, `pipeline` requests in flight; 0 if it fails.
double redis_benchmark(const std::string& test, std::int64_t bytes, int pipeline, int requests) {
  const std::string binary =
      (std::filesystem::path(kvcache::testing::redis_server_binary()).parent_path() /
       "redis-benchmark")
          .string();
  const std::string command = binary + " -h 127.0.0.1 -p " + std::to_string(server().port()) +
                              " -t " + test + " -d " + std::to_string(bytes) + " -n " +
                              std::to_string(requests) + " -c 1 -P " + std::to_string(pipeline) +
                              " --csv 2>/dev/null";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return 0;
  char line[512];
  double rps = 0;
  while (std::fgets(line, sizeof(line), pipe) != nullptr) {
    const std::string text(line);
    const std::string prefix = "\"" + test + "\",\"";
    if (text.rfind(prefix, 0) == 0) rps = std::atof(text.c_str() + prefix.size());
  }
  ::pclose(pipe);
  return rps;
}

std::vector<std::byte> random_block(std::uint64_t seed) {
  std::vector<std::byte> b(static_cast<std::size_t>(block_bytes()));
  std::mt19937_64 rng(seed);
  for (auto& x : b)
    x = static_cast<std::byte>(rng());
  return b;
}

RedisTierOptions tier_options() {
  RedisTierOptions o;
  o.url = server().url();
  o.command_timeout = std::chrono::milliseconds(5000);
  o.dedupe_window = std::chrono::milliseconds(0);  // every put is sent
  return o;
}

void publish(benchmark::State& state, double ours, double theirs, const char* name) {
  state.counters["GB/s"] = ours / 1e9;
  state.counters[std::string(name) + "_GB/s"] = theirs / 1e9;
  state.counters["ratio"] = theirs > 0 ? ours / theirs : 0;
}

// Puts of 64 blocks, flushed: the bytes the server took per second.
void BM_RedisPut(benchmark::State& state) {
  if (!server().running()) {
    state.SkipWithError("no redis-server");
    return;
  }
  RedisTier tier(block_bytes(), tier_options());
  const auto block = random_block(1);
  constexpr int kBlocks = 64;
  std::uint64_t next = 1;
  double seconds = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kBlocks; ++i)
      (void)tier.put(7, next++, block);
    (void)tier.flush(std::chrono::seconds(60));
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    seconds += s;
    state.SetIterationTime(s);
  }
  const double bytes = static_cast<double>(state.iterations()) * kBlocks * block_bytes();
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  const double theirs =
      redis_benchmark("SET", block_bytes(), 16, smoke() ? 64 : 512) * block_bytes();
  publish(state, bytes / seconds, theirs, "redis_benchmark_set");
}

// Lookups of 8 blocks (one round trip) and their gets.
void BM_RedisGet(benchmark::State& state) {
  if (!server().running()) {
    state.SkipWithError("no redis-server");
    return;
  }
  RedisTier tier(block_bytes(), tier_options());
  constexpr EvictionKey kRun = 8;
  const auto block = random_block(2);
  for (EvictionKey key = 1; key <= kRun; ++key)
    (void)tier.put(9, key, block);
  (void)tier.flush(std::chrono::seconds(60));
  std::vector<EvictionKey> keys(kRun);
  for (EvictionKey i = 0; i < kRun; ++i)
    keys[i] = i + 1;
  std::vector<std::byte> out(static_cast<std::size_t>(block_bytes()));
  double seconds = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    if (tier.contains(9, keys) != kRun) state.SkipWithError("blocks missing");
    for (EvictionKey key : keys)
      (void)tier.get(9, key, out);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    seconds += s;
    state.SetIterationTime(s);
  }
  const double bytes = static_cast<double>(state.iterations()) * kRun * block_bytes();
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  // redis-benchmark's GET reads the key its SET wrote (same size).
  (void)redis_benchmark("SET", block_bytes(), 1, 1);
  const double theirs =
      redis_benchmark("GET", block_bytes(), 8, smoke() ? 64 : 512) * block_bytes();
  publish(state, bytes / seconds, theirs, "redis_benchmark_get");
}

BENCHMARK(BM_RedisPut)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_RedisGet)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kvcache::bench

int main(int argc, char** argv) {
  kvcache::bench::parse_smoke(argc, argv);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
