// CPU backend benchmarks: paged append, gather and decode attention against
// memcpy of the same bytes in the same iteration, block pool throughput, and
// the bookkeeping of a decode step.
//
//   kvcache_cpu_bench [--smoke] [google benchmark flags]
#include <cstring>
#include <random>
#include <vector>

#include "bench_common.hpp"
#include "checkpoint_bench.hpp"
#include "kvcache/kvcache.hpp"
#include "tier_bench.hpp"

namespace kvcache::bench {
namespace {

std::vector<std::byte> random_bytes(std::size_t bytes, std::uint64_t seed) {
  std::vector<std::byte> data(bytes);
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i + 8 <= bytes; i += 8) {
    const std::uint64_t x = rng() & 0x3fff3fff3fff3fffULL;  // finite fp16 values
    std::memcpy(data.data() + i, &x, 8);
  }
  return data;
}

std::int64_t bench_tokens(benchmark::State& state) {
  return smoke() ? 256 : state.range(0);
}

void BM_CpuAppend(benchmark::State& state, KVLayout layout) {
  const std::int64_t tokens = bench_tokens(state);
  const auto pages = static_cast<std::int32_t>(tokens / 16);
  HostBackend backend;
  Buffer arena =
      backend.allocate(static_cast<std::size_t>(bench_view(nullptr, pages).page_bytes * pages));
  const PagedKVView view = bench_view(arena.bytes_data(), pages, layout);
  const auto bytes = static_cast<std::size_t>(tokens * view.row_bytes() * view.num_heads);
  const auto k = random_bytes(bytes, 1), v = random_bytes(bytes, 2);
  std::vector<std::byte> copy_k(bytes), copy_v(bytes);
  std::memset(arena.data(), 0, arena.size());  // touch every page once
  const auto slots = shuffled_slots(pages, 16, tokens);
  kernels::AppendParams params;
  params.cache = view;
  params.source = kernels::AppendSource{k.data(), v.data(), view.row_bytes() * view.num_heads,
                                        view.row_bytes()};
  params.slots = kernels::SlotMapping{slots.data(), static_cast<std::int32_t>(tokens)};
  time_against_memcpy(
      state, 2.0 * 2.0 * static_cast<double>(bytes), [&] { launch(backend, params); },
      [&] {
        std::memcpy(copy_k.data(), k.data(), bytes);
        std::memcpy(copy_v.data(), v.data(), bytes);
      });
  state.counters["tokens"] = static_cast<double>(tokens);
}

void BM_CpuGather(benchmark::State& state, KVLayout layout) {
  const std::int64_t tokens = bench_tokens(state);
  const auto pages = static_cast<std::int32_t>(tokens / 16);
  HostBackend backend;
  Buffer arena =
      backend.allocate(static_cast<std::size_t>(bench_view(nullptr, pages).page_bytes * pages));
  const PagedKVView view = bench_view(arena.bytes_data(), pages, layout);
  const auto bytes = static_cast<std::size_t>(tokens * view.row_bytes() * view.num_heads);
  std::memcpy(arena.data(), random_bytes(arena.size(), 3).data(), arena.size());
  std::vector<std::byte> out_k(bytes), out_v(bytes), copy_k(bytes), copy_v(bytes);
  std::memset(out_k.data(), 0, bytes);
  std::memset(out_v.data(), 0, bytes);
  const std::int32_t batch = 64;
  const auto slots = shuffled_slots(pages, 16, tokens);
  const GatherTable table = gather_table(slots, 16, batch, tokens / batch);
  kernels::GatherParams params;
  params.cache = view;
  params.table = table.view();
  params.out = kernels::GatherOutput{out_k.data(), out_v.data()};
  // The copy moves the same number of bytes: the whole arena (every page's
  // K and V region) into two separate buffers.
  const std::byte* arena_k = arena.bytes_data();
  const std::byte* arena_v = arena.bytes_data() + bytes;
  time_against_memcpy(
      state, 2.0 * 2.0 * static_cast<double>(bytes), [&] { launch(backend, params); },
      [&] {
        std::memcpy(copy_k.data(), arena_k, bytes);
        std::memcpy(copy_v.data(), arena_v, bytes);
      });
  state.counters["tokens"] = static_cast<double>(tokens);
}

// Decode attention (kvcache/kernels/attention.hpp) on the CPU backend: 64
// sequences of tokens / 64 keys, one query row each, 32 query heads over the
// 8 KV heads. Bytes: the K and V read once; the memcpy moves the same bytes.
// The kernel's lanes run one after another on one core: a reference for the
// GPU's, not a CPU attention kernel.
void BM_CpuDecodeAttention(benchmark::State& state) {
  const std::int64_t tokens = bench_tokens(state);
  const auto pages = static_cast<std::int32_t>(tokens / 16);
  HostBackend backend;
  Buffer arena =
      backend.allocate(static_cast<std::size_t>(bench_view(nullptr, pages).page_bytes * pages));
  const PagedKVView view = bench_view(arena.bytes_data(), pages);
  const auto bytes = static_cast<std::size_t>(tokens * view.row_bytes() * view.num_heads);
  std::memcpy(arena.data(), random_bytes(arena.size(), 4).data(), arena.size());
  const std::int32_t batch = 64, q_heads = 4 * view.num_heads;
  const GatherTable table =
      gather_table(shuffled_slots(pages, 16, tokens), 16, batch, tokens / batch);
  std::vector<std::int32_t> q_indptr(static_cast<std::size_t>(batch) + 1);
  for (std::int32_t b = 0; b <= batch; ++b)
    q_indptr[static_cast<std::size_t>(b)] = b;
  std::vector<float> q(static_cast<std::size_t>(batch) * q_heads * view.head_dim, 0.01f);
  std::vector<float> out(q.size());
  std::vector<std::byte> copy(bytes);
  kernels::AttentionParams params;
  params.cache = view;
  params.table = table.view();
  params.q_indptr = q_indptr.data();
  params.q = q.data();
  params.out = out.data();
  params.num_rows = batch;
  params.num_q_heads = q_heads;
  params.scale = 0.088f;
  time_against_memcpy(
      state, 2.0 * static_cast<double>(bytes), [&] { launch(backend, params); },
      [&] { std::memcpy(copy.data(), arena.data(), bytes); });
  state.counters["tokens"] = static_cast<double>(tokens);
}

// Allocate then free a batch of blocks: pairs per second.
void BM_BlockPoolAllocateFree(benchmark::State& state) {
  const std::int64_t batch = smoke() ? 64 : state.range(0);
  BlockPool pool(1 << 20);
  std::vector<BlockId> ids(static_cast<std::size_t>(batch));
  for (auto _ : state) {
    for (auto& id : ids)
      id = *pool.try_allocate();
    for (auto id : ids)
      pool.release(id);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["alloc+free/s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * batch), benchmark::Counter::kIsRate);
}

// The host-side bookkeeping of one decode step of 256 sequences: reserve one
// token each, prepare the batch (slot mapping), commit. No K/V is moved.
void BM_ManagerDecodeStep(benchmark::State& state) {
  const std::int32_t batch = smoke() ? 16 : 256;
  CacheConfig config;
  config.shape = ModelShape::gqa(1, 8, 128, DType::kF16);
  config.block_size = 16;
  config.num_blocks = 65536;
  KVCacheManager<CachePolicy<>, MetadataBackend> manager(config);  // bookkeeping only
  std::vector<SeqId> seqs;
  for (std::int32_t i = 0; i < batch; ++i)
    seqs.push_back(manager.create_sequence());
  const std::vector<std::int32_t> ones(static_cast<std::size_t>(batch), 1);
  std::int64_t steps = 0;
  for (auto _ : state) {
    for (SeqId seq : seqs) {
      if (manager.try_reserve(seq, 1) != ReserveStatus::kOk) state.SkipWithError("pool full");
    }
    AppendBatch step = manager.prepare_append(seqs, ones);
    manager.commit(step);
    if (++steps % 2048 == 0) {  // keep sequences short: release and recreate
      state.PauseTiming();
      for (auto& seq : seqs) {
        manager.release(seq);
        seq = manager.create_sequence();
      }
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["steps/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(BM_CpuAppend, NHD, KVLayout::kNHD)
    ->Arg(16384)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CpuAppend, HND, KVLayout::kHND)
    ->Arg(16384)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CpuGather, NHD, KVLayout::kNHD)
    ->Arg(16384)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CpuGather, HND, KVLayout::kHND)
    ->Arg(16384)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
// The host tier (tier_bench.hpp): offload (`onboard` false) or onboard of K
// blocks of 2 MiB through the manager, against memcpy of the same blocks one
// at a time between two other buffers.
void BM_CpuTier(benchmark::State& state, bool onboard) {
  const std::int64_t blocks = smoke() ? 2 : state.range(0);
  TierRoundTrip<HostBackend> bench(blocks, HostBackend());
  const auto block = static_cast<std::size_t>(bench.block_bytes());
  std::vector<std::byte> from(block * static_cast<std::size_t>(blocks), std::byte{1});
  std::vector<std::byte> to(from.size());
  using Clock = std::chrono::steady_clock;
  RatioCounter ratio;
  for (auto _ : state) {
    auto start = Clock::now();
    bench.offload();
    const double out = std::chrono::duration<double>(Clock::now() - start).count();
    bench.settle();
    start = Clock::now();
    bench.onboard();
    const double in = std::chrono::duration<double>(Clock::now() - start).count();
    bench.settle();
    start = Clock::now();
    for (std::int64_t b = 0; b < blocks; ++b) {
      const auto at = static_cast<std::size_t>(b) * block;
      std::memcpy(to.data() + at, from.data() + at, block);
    }
    benchmark::ClobberMemory();
    ratio.copy_seconds += std::chrono::duration<double>(Clock::now() - start).count();
    ratio.kernel_seconds += onboard ? in : out;
    state.SetIterationTime(onboard ? in : out);
  }
  ratio.publish(state, 2.0 * static_cast<double>(block) * static_cast<double>(blocks), "memcpy");
  state.counters["blocks"] = static_cast<double>(blocks);
}

// Checkpoint (`restore` false) or restore of a cache of K blocks of 2 MiB
// (checkpoint_bench.hpp), against write() + fsync() or read() of as many
// bytes as the checkpoint file holds. Bytes counted once (the file's size).
void BM_CpuCheckpoint(benchmark::State& state, bool restore) {
  CheckpointFiles bench(smoke() ? 2 : state.range(0));
  bench.save();
  std::vector<std::byte> bytes(static_cast<std::size_t>(bench.file_bytes()), std::byte{3});
  bench.plain_write(bytes);
  using Clock = std::chrono::steady_clock;
  RatioCounter ratio;
  for (auto _ : state) {
    if (restore) bench.empty_target();
    auto start = Clock::now();
    if (restore) {
      bench.restore();
    } else {
      bench.save();
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    start = Clock::now();
    if (restore) {
      bench.plain_read(bytes);
    } else {
      bench.plain_write(bytes);
    }
    benchmark::ClobberMemory();
    ratio.copy_seconds += std::chrono::duration<double>(Clock::now() - start).count();
    ratio.kernel_seconds += seconds;
    state.SetIterationTime(seconds);
  }
  ratio.publish(state, static_cast<double>(bytes.size()), restore ? "read" : "write_fsync");
}

BENCHMARK(BM_CpuDecodeAttention)->Arg(16384)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CpuTier, offload, false)
    ->Arg(64)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CpuTier, onboard, true)
    ->Arg(64)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CpuCheckpoint, save, false)
    ->Arg(64)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CpuCheckpoint, restore, true)
    ->Arg(64)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BlockPoolAllocateFree)->Arg(1024);
BENCHMARK(BM_ManagerDecodeStep)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace kvcache::bench

int main(int argc, char** argv) {
  kvcache::bench::parse_smoke(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
