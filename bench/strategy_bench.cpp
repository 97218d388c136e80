// Strategy benchmarks: manager operations per second for each policy bundle
// (bookkeeping only: the metadata backend moves no bytes), prefix lookup of a
// 64-block prompt, and the whole trace replay in requests per second.
//
//   kvcache_strategy_bench [--smoke] [google benchmark flags]
//   KVCACHE_TRACE=path/to/mooncake_conversation.jsonl adds the real trace.
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "kvcache/kvcache.hpp"
#include "replay.hpp"

namespace kvcache::bench {
namespace {

CacheConfig bench_config(std::int32_t block_size, std::int64_t blocks) {
  CacheConfig config;
  config.shape = ModelShape::gqa(32, 8, 128, DType::kF16);
  config.block_size = block_size;
  config.num_blocks = blocks;
  config.max_batch_tokens = 4096;
  config.max_batch_sequences = 8;
  return config;
}

// One request's life: create, reserve a 300-token prompt plus 20 decode
// steps, prepare + commit the prompt and each step, release.
template <class Policy>
void BM_SequenceLifecycle(benchmark::State& state) {
  KVCacheManager<Policy, MetadataBackend> manager(bench_config(16, 1 << 16));
  const std::vector<std::int32_t> prompt = {300};
  const std::vector<std::int32_t> one = {1};
  std::int64_t operations = 0;
  for (auto _ : state) {
    const SeqId seq = manager.create_sequence();
    const std::vector<SeqId> seqs = {seq};
    if (manager.try_reserve(seq, 300) != ReserveStatus::kOk) state.SkipWithError("full");
    manager.commit(manager.prepare_append(seqs, prompt));
    for (int step = 0; step < 20; ++step) {
      if (manager.try_reserve(seq, 1) != ReserveStatus::kOk) state.SkipWithError("full");
      manager.commit(manager.prepare_append(seqs, one));
    }
    manager.release(seq);
    operations += 2 + 2 * 21;
  }
  state.counters["requests/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["ops/s"] =
      benchmark::Counter(static_cast<double>(operations), benchmark::Counter::kIsRate);
}

// create_sequence of a 64-block prompt (block 16: 1024 tokens) that another
// sequence holds, then release: hashing and looking up 64 chained block keys
// and taking a reference on each block.
template <class Policy>
void BM_PrefixLookup64Blocks(benchmark::State& state) {
  KVCacheManager<Policy, MetadataBackend> manager(bench_config(16, 4096));
  std::vector<std::int32_t> prompt(64 * 16);
  for (std::size_t i = 0; i < prompt.size(); ++i)
    prompt[i] = static_cast<std::int32_t>(i * 7 + 3);
  const SeqId first = manager.create_sequence(prompt);
  if (manager.try_reserve(first, 1024) != ReserveStatus::kOk) state.SkipWithError("full");
  manager.commit(
      manager.prepare_append(std::vector<SeqId>{first}, std::vector<std::int32_t>{1024}));
  // `first` stays alive, so the blocks are found under every eviction policy
  // (NoEviction keeps nothing once its owner is gone).
  for (auto _ : state) {
    const SeqId seq = manager.create_sequence(prompt);
    benchmark::DoNotOptimize(seq);
    manager.release(seq);
  }
  if (manager.stats().prefix_blocks_hit < 64) state.SkipWithError("the prompt was not cached");
  state.counters["lookups/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["blocks/s"] = benchmark::Counter(64.0 * static_cast<double>(state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

void BM_TraceReplay(benchmark::State& state, const std::string& path, const std::string& policy) {
  const replay::Trace trace =
      path.empty() ? replay::synthetic_trace(smoke() ? 40 : 600) : replay::load_trace(path, false);
  replay::ReplayOptions options;
  options.policy = policy;
  options.capacity_blocks = std::max<std::int64_t>(16, replay::unique_blocks(trace) / 8);
  double hit_rate = 0;
  for (auto _ : state)
    hit_rate = replay::run_replay(trace, options).hit_rate();
  state.counters["requests/s"] = benchmark::Counter(
      static_cast<double>(trace.requests.size()) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
  state.counters["hit_rate"] = hit_rate;
  state.counters["requests"] = static_cast<double>(trace.requests.size());
}

using Paged = PagedAllocation;
using Dynamic = DynamicAllocation;
BENCHMARK_TEMPLATE(BM_SequenceLifecycle, CachePolicy<Paged, NoEviction, NoPrefixSharing>);
BENCHMARK_TEMPLATE(BM_SequenceLifecycle, CachePolicy<Paged, LruEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_SequenceLifecycle, CachePolicy<Paged, LfuAgingEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_SequenceLifecycle, CachePolicy<Paged, S3FifoEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_SequenceLifecycle, CachePolicy<Paged, ReuseLruEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_SequenceLifecycle, CachePolicy<Dynamic, NoEviction, NoPrefixSharing>);
BENCHMARK_TEMPLATE(BM_SequenceLifecycle, CachePolicy<Dynamic, LruEviction, NoPrefixSharing>);
BENCHMARK_TEMPLATE(BM_PrefixLookup64Blocks, CachePolicy<Paged, NoEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_PrefixLookup64Blocks, CachePolicy<Paged, LruEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_PrefixLookup64Blocks, CachePolicy<Paged, LfuAgingEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_PrefixLookup64Blocks, CachePolicy<Paged, S3FifoEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_PrefixLookup64Blocks, CachePolicy<Paged, ReuseLruEviction, PrefixSharing>);

}  // namespace
}  // namespace kvcache::bench

int main(int argc, char** argv) {
  kvcache::bench::parse_smoke(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const char* trace = std::getenv("KVCACHE_TRACE");
  const std::string path = trace != nullptr ? trace : "";
  for (const std::string policy : {"lru", "lfu-aging", "s3-fifo"}) {
    benchmark::RegisterBenchmark(
        ("BM_TraceReplay/" + std::string(path.empty() ? "synthetic" : "mooncake") + "/" + policy)
            .c_str(),
        kvcache::bench::BM_TraceReplay, path, policy)
        ->Unit(benchmark::kMillisecond)
        ->Iterations(kvcache::bench::smoke() ? 1 : 5);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
