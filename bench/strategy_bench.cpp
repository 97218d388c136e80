// Strategy benchmarks: manager operations per second for each policy bundle
// (bookkeeping only: the metadata backend moves no bytes), prefix lookup of a
// 64-block prompt, and the whole trace replay in requests per second.
//
//   kvcache_strategy_bench [--smoke] [google benchmark flags]
//   KVCACHE_TRACE=path/to/mooncake_conversation.jsonl adds the real trace.
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "kvcache/kvcache.hpp"
#include "kvcache/metrics/monitor.hpp"
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

// The metrics snapshot against the bookkeeping of the decode step it would
// follow: `batch` sequences of 1000 tokens each reserve one token, one
// prepare_append and one commit (the manager's share of a step, with its
// per-call timing on or off), then Monitor::sample(). Both are timed in the
// same loop: snapshot_ns / step_ns is the snapshot's cost per step.
void BM_SnapshotVsDecodeStep(benchmark::State& state) {
  const auto batch = static_cast<std::int32_t>(state.range(0));
  const bool timing = state.range(1) != 0;
  using Manager =
      KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>, MetadataBackend>;
  CacheConfig config = bench_config(16, 1 << 17);
  config.max_batch_sequences = batch;
  Manager manager(config);
  metrics::set_op_timing(manager, timing);
  metrics::Monitor<Manager> monitor(manager, 16);
  std::vector<SeqId> seqs;
  auto refill = [&] {
    for (SeqId s : seqs)
      manager.release(s);
    seqs.clear();
    for (std::int32_t i = 0; i < batch; ++i) {
      std::vector<std::int32_t> prompt(1000);
      for (std::size_t t = 0; t < prompt.size(); ++t)
        prompt[t] = static_cast<std::int32_t>(t * 31 + static_cast<std::size_t>(i) * 7919);
      const SeqId s = manager.create_sequence(prompt);
      if (manager.try_reserve(s, 1000) != ReserveStatus::kOk) state.SkipWithError("full");
      manager.commit(
          manager.prepare_append(std::vector<SeqId>{s}, std::vector<std::int32_t>{1000}));
      seqs.push_back(s);
    }
  };
  refill();
  const std::vector<std::int32_t> ones(static_cast<std::size_t>(batch), 1);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(batch), 5);
  using Clock = std::chrono::steady_clock;
  double step_ns = 0, snapshot_ns = 0;
  std::int64_t steps = 0;
  for (auto _ : state) {
    if (++steps % 512 == 0) {
      state.PauseTiming();
      refill();
      state.ResumeTiming();
    }
    const auto t0 = Clock::now();
    for (SeqId s : seqs) {
      if (manager.try_reserve(s, 1) != ReserveStatus::kOk) state.SkipWithError("full");
    }
    manager.commit(manager.prepare_append(seqs, ones, ids));
    const auto t1 = Clock::now();
    benchmark::DoNotOptimize(monitor.sample());
    const auto t2 = Clock::now();
    step_ns += std::chrono::duration<double, std::nano>(t1 - t0).count();
    snapshot_ns += std::chrono::duration<double, std::nano>(t2 - t1).count();
  }
  const auto n = static_cast<double>(state.iterations());
  state.counters["step_ns"] = step_ns / n;
  state.counters["snapshot_ns"] = snapshot_ns / n;
  state.counters["ratio"] = snapshot_ns / step_ns;
}
BENCHMARK(BM_SnapshotVsDecodeStep)
    ->ArgNames({"batch", "timing"})
    ->Args({8, 1})
    ->Args({64, 1})
    ->Args({256, 1})
    ->Args({64, 0});

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
BENCHMARK_TEMPLATE(BM_SequenceLifecycle, CachePolicy<Paged, AdaptiveEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_SequenceLifecycle, CachePolicy<Dynamic, NoEviction, NoPrefixSharing>);
BENCHMARK_TEMPLATE(BM_SequenceLifecycle, CachePolicy<Dynamic, LruEviction, NoPrefixSharing>);
BENCHMARK_TEMPLATE(BM_PrefixLookup64Blocks, CachePolicy<Paged, NoEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_PrefixLookup64Blocks, CachePolicy<Paged, LruEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_PrefixLookup64Blocks, CachePolicy<Paged, LfuAgingEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_PrefixLookup64Blocks, CachePolicy<Paged, S3FifoEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_PrefixLookup64Blocks, CachePolicy<Paged, ReuseLruEviction, PrefixSharing>);
BENCHMARK_TEMPLATE(BM_PrefixLookup64Blocks, CachePolicy<Paged, AdaptiveEviction, PrefixSharing>);

}  // namespace
}  // namespace kvcache::bench

int main(int argc, char** argv) {
  kvcache::bench::parse_smoke(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const char* trace = std::getenv("KVCACHE_TRACE");
  const std::string path = trace != nullptr ? trace : "";
  for (const std::string policy : {"lru", "lfu-aging", "s3-fifo", "reuse-lru", "adaptive"}) {
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
