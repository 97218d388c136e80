// GPU benchmarks (CUDA events): paged append, paged gather, decode append and
// decode attention against a device-to-device copy of the same bytes in the
// same iteration,
// plus the plain copy ceiling. Geometry: fp16, 8 KV heads x 128,
// block 16, shuffled block ids, 262144 tokens.
//
//   kvcache_gpu_bench [--smoke] [google benchmark flags]
//
// Without a device it says so and exits 0.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "kvcache/kernels/cuda.hpp"
#include "kvcache/kvcache.hpp"
#include "tier_bench.hpp"

namespace kvcache::bench {
namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

Buffer device_buffer(std::size_t bytes) {
  void* data = nullptr;
  check(cudaMalloc(&data, bytes), "cudaMalloc");
  return Buffer(data, bytes, [](void* p) noexcept { (void)cudaFree(p); });
}

template <class T>
Buffer upload(const std::vector<T>& host) {
  Buffer buffer = device_buffer(host.size() * sizeof(T));
  check(cudaMemcpy(buffer.data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
        "upload");
  return buffer;
}

// The page table of `table` in device memory.
kernels::PageTableView device_table(const GatherTable& table, const Buffer& indptr,
                                    const Buffer& indices, const Buffer& last,
                                    const Buffer& offsets) {
  return kernels::PageTableView{indptr.as<const std::int32_t>(),
                                indices.as<const std::int32_t>(),
                                last.as<const std::int32_t>(),
                                offsets.as<const std::int64_t>(),
                                static_cast<std::int32_t>(table.last_page_len.size()),
                                table.indptr.back()};
}

struct Events {
  cudaEvent_t start{}, middle{}, end{};
  Events() {
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&middle), "cudaEventCreate");
    check(cudaEventCreate(&end), "cudaEventCreate");
  }
  ~Events() {
    (void)cudaEventDestroy(start);
    (void)cudaEventDestroy(middle);
    (void)cudaEventDestroy(end);
  }
  // Seconds of [start, middle) and [middle, end).
  std::pair<double, double> elapsed() const {
    check(cudaEventSynchronize(end), "cudaEventSynchronize");
    float first = 0, second = 0;
    check(cudaEventElapsedTime(&first, start, middle), "cudaEventElapsedTime");
    check(cudaEventElapsedTime(&second, middle, end), "cudaEventElapsedTime");
    return {first / 1e3, second / 1e3};
  }
};

std::int64_t bench_tokens(benchmark::State& state) {
  return smoke() ? 4096 : state.range(0);
}

// Runs `kernel` then a D2D copy of `copy_bytes` (each direction counted by
// the caller) `repeat` times between events; publishes both bandwidths.
template <class Kernel>
void time_against_copy(benchmark::State& state, Kernel kernel, std::size_t copy_bytes, int repeat,
                       double bytes_per_kernel) {
  Buffer copy_src = device_buffer(copy_bytes), copy_dst = device_buffer(copy_bytes);
  check(cudaMemset(copy_src.data(), 1, copy_bytes), "cudaMemset");
  Events events;
  kernel();  // warm up
  check(cudaDeviceSynchronize(), "warm-up");
  RatioCounter ratio;
  for (auto _ : state) {
    check(cudaEventRecord(events.start, nullptr), "cudaEventRecord");
    for (int i = 0; i < repeat; ++i)
      kernel();
    check(cudaEventRecord(events.middle, nullptr), "cudaEventRecord");
    for (int i = 0; i < repeat; ++i) {
      check(cudaMemcpyAsync(copy_dst.data(), copy_src.data(), copy_bytes, cudaMemcpyDeviceToDevice,
                            nullptr),
            "cudaMemcpyAsync");
    }
    check(cudaEventRecord(events.end, nullptr), "cudaEventRecord");
    const auto [kernel_seconds, copy_seconds] = events.elapsed();
    ratio.kernel_seconds += kernel_seconds / repeat;
    ratio.copy_seconds += copy_seconds / repeat;
    state.SetIterationTime(kernel_seconds / repeat);
  }
  ratio.publish(state, bytes_per_kernel, "d2d_copy");
}

void BM_GpuCopy(benchmark::State& state) {
  const std::size_t bytes = smoke() ? (std::size_t{8} << 20) : (std::size_t{1} << 30);
  Buffer src = device_buffer(bytes), dst = device_buffer(bytes);
  Events events;
  double total = 0;
  for (auto _ : state) {
    check(cudaEventRecord(events.start, nullptr), "cudaEventRecord");
    check(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, nullptr),
          "copy");
    check(cudaEventRecord(events.middle, nullptr), "cudaEventRecord");
    check(cudaEventRecord(events.end, nullptr), "cudaEventRecord");
    const double seconds = events.elapsed().first;
    total += seconds;
    state.SetIterationTime(seconds);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(2.0 * static_cast<double>(bytes) *
                                                    static_cast<double>(state.iterations())));
  state.counters["GB/s"] =
      2.0 * static_cast<double>(bytes) * static_cast<double>(state.iterations()) / total / 1e9;
}

void BM_GpuAppend(benchmark::State& state, KVLayout layout) {
  const std::int64_t tokens = bench_tokens(state);
  const auto pages = static_cast<std::int32_t>(tokens / 16);
  const PagedKVView shape_only = bench_view(nullptr, pages, layout);
  Buffer arena = device_buffer(static_cast<std::size_t>(shape_only.page_bytes * pages));
  const PagedKVView view = bench_view(arena.bytes_data(), pages, layout);
  const auto bytes = static_cast<std::size_t>(tokens * view.row_bytes() * view.num_heads);
  Buffer k = device_buffer(bytes), v = device_buffer(bytes);
  check(cudaMemset(k.data(), 0x3c, bytes), "cudaMemset");
  check(cudaMemset(v.data(), 0x3b, bytes), "cudaMemset");
  Buffer slots = upload(shuffled_slots(pages, 16, tokens));
  kernels::AppendParams params;
  params.cache = view;
  params.source = kernels::AppendSource{k.data(), v.data(), view.row_bytes() * view.num_heads,
                                        view.row_bytes()};
  params.slots = kernels::SlotMapping{static_cast<const std::int64_t*>(slots.data()),
                                      static_cast<std::int32_t>(tokens)};
  auto launch = [&] { check(kernels::cuda::launch(params, nullptr), "append"); };
  time_against_copy(state, launch, 2 * bytes, 1, 2.0 * 2.0 * static_cast<double>(bytes));
  state.counters["tokens"] = static_cast<double>(tokens);
}

void BM_GpuGather(benchmark::State& state, KVLayout layout) {
  const std::int64_t tokens = bench_tokens(state);
  const auto pages = static_cast<std::int32_t>(tokens / 16);
  const PagedKVView shape_only = bench_view(nullptr, pages, layout);
  Buffer arena = device_buffer(static_cast<std::size_t>(shape_only.page_bytes * pages));
  check(cudaMemset(arena.data(), 0x3c, static_cast<std::size_t>(shape_only.page_bytes * pages)),
        "cudaMemset");
  const PagedKVView view = bench_view(arena.bytes_data(), pages, layout);
  const auto bytes = static_cast<std::size_t>(tokens * view.row_bytes() * view.num_heads);
  Buffer out_k = device_buffer(bytes), out_v = device_buffer(bytes);
  const std::int32_t batch = 64;
  const GatherTable table =
      gather_table(shuffled_slots(pages, 16, tokens), 16, batch, tokens / batch);
  Buffer indptr = upload(table.indptr), indices = upload(table.indices),
         last = upload(table.last_page_len), offsets = upload(table.out_row_offset);
  kernels::GatherParams params;
  params.cache = view;
  params.table = device_table(table, indptr, indices, last, offsets);
  params.out = kernels::GatherOutput{out_k.data(), out_v.data()};
  auto launch = [&] { check(kernels::cuda::launch(params, nullptr), "gather"); };
  time_against_copy(state, launch, 2 * bytes, 1, 2.0 * 2.0 * static_cast<double>(bytes));
  state.counters["tokens"] = static_cast<double>(tokens);
}

// The decode step: 256 sequences append one token each, pages scattered.
// Reported per launch (averaged over 200 back-to-back launches).
void BM_GpuDecodeAppend(benchmark::State& state) {
  const std::int32_t sequences = 256;
  const std::int32_t pages = 16384;
  const PagedKVView shape_only = bench_view(nullptr, pages);
  Buffer arena = device_buffer(static_cast<std::size_t>(shape_only.page_bytes * pages));
  const PagedKVView view = bench_view(arena.bytes_data(), pages);
  const auto row = static_cast<std::size_t>(view.row_bytes() * view.num_heads);
  Buffer k = device_buffer(row * sequences), v = device_buffer(row * sequences);
  check(cudaMemset(k.data(), 0x3c, row * sequences), "cudaMemset");
  check(cudaMemset(v.data(), 0x3b, row * sequences), "cudaMemset");
  // Sequence s writes position 37 of its own random page.
  auto all = shuffled_slots(pages, 16, std::int64_t{pages} * 16);
  std::vector<std::int64_t> slots(sequences);
  for (std::int32_t s = 0; s < sequences; ++s)
    slots[static_cast<std::size_t>(s)] = all[static_cast<std::size_t>(s) * 16 * 64] + 5;
  Buffer device_slots = upload(slots);
  kernels::AppendParams params;
  params.cache = view;
  params.source = kernels::AppendSource{k.data(), v.data(), view.row_bytes() * view.num_heads,
                                        view.row_bytes()};
  params.slots =
      kernels::SlotMapping{static_cast<const std::int64_t*>(device_slots.data()), sequences};
  auto launch = [&] { check(kernels::cuda::launch(params, nullptr), "append"); };
  time_against_copy(state, launch, 2 * row * sequences, 200,
                    2.0 * 2.0 * static_cast<double>(row * sequences));
  state.counters["sequences"] = sequences;
}

// Decode attention (kvcache/kernels/attention.hpp): 64 sequences of
// tokens / 64 keys, one query row each, 32 query heads over the 8 KV heads.
// Bytes: the K and V it must read once; the copy moves the same bytes (read
// and write counted), so the ratio compares equal traffic.
void BM_GpuDecodeAttention(benchmark::State& state) {
  const std::int64_t tokens = bench_tokens(state);
  const auto pages = static_cast<std::int32_t>(tokens / 16);
  const PagedKVView shape_only = bench_view(nullptr, pages);
  Buffer arena = device_buffer(static_cast<std::size_t>(shape_only.page_bytes * pages));
  check(cudaMemset(arena.data(), 0x3c, static_cast<std::size_t>(shape_only.page_bytes * pages)),
        "cudaMemset");
  const PagedKVView view = bench_view(arena.bytes_data(), pages);
  const auto bytes = static_cast<std::size_t>(tokens * view.row_bytes() * view.num_heads);
  const std::int32_t batch = 64, q_heads = 4 * view.num_heads;
  const GatherTable table =
      gather_table(shuffled_slots(pages, 16, tokens), 16, batch, tokens / batch);
  Buffer indptr = upload(table.indptr), indices = upload(table.indices),
         last = upload(table.last_page_len), offsets = upload(table.out_row_offset);
  std::vector<std::int32_t> rows(static_cast<std::size_t>(batch) + 1);
  for (std::int32_t b = 0; b <= batch; ++b)
    rows[static_cast<std::size_t>(b)] = b;
  Buffer q_indptr = upload(rows);
  const auto q_bytes = static_cast<std::size_t>(batch) * q_heads * view.head_dim * sizeof(float);
  Buffer q = device_buffer(q_bytes), out = device_buffer(q_bytes);
  check(cudaMemset(q.data(), 0, q_bytes), "cudaMemset");
  kernels::AttentionParams params;
  params.cache = view;
  params.table = device_table(table, indptr, indices, last, offsets);
  params.q_indptr = q_indptr.as<const std::int32_t>();
  params.q = q.as<const float>();
  params.out = out.as<float>();
  params.num_rows = batch;
  params.num_q_heads = q_heads;
  params.scale = 0.088f;
  auto launch = [&] { check(kernels::cuda::launch(params, nullptr), "paged_attention"); };
  time_against_copy(state, launch, bytes, 1, 2.0 * static_cast<double>(bytes));
  state.counters["tokens"] = static_cast<double>(tokens);
}

// Fused quantize-append and dequantize-gather of a compressed cache: fp16
// rows in (out), codes and scales out (in). Bytes are the fewest each must
// move: the fp16 rows plus the codes and scales of the same tokens. KIVI's
// quantize is its flush of whole groups (from new tokens) into pages.
constexpr std::int32_t kHeads = 8, kDim = 128;

template <class Codec>
constexpr std::int32_t page_tokens() {
  if constexpr (Codec::kKind == CodecKind::kKivi) {
    return Codec::kGroup;
  } else {
    return 16;
  }
}

template <class Codec>
CodecPageView codec_view(std::byte* data, std::int32_t pages) {
  const ModelShape shape = ModelShape::gqa(1, kHeads, kDim, DType::kF16);
  constexpr std::int32_t kPage = page_tokens<Codec>();
  return make_codec_view(data, pages, kPage, 1, kHeads, kDim, DType::kF16,
                         Codec::region(shape, kPage, 0), Codec::region(shape, kPage, 1));
}

// Calibrated state for one layer (fp8 scales, low-rank bases): small values.
template <class Codec>
Buffer codec_state() {
  const auto floats = static_cast<std::size_t>(2 * kHeads * Codec::Rows::state_floats(kDim));
  return upload(std::vector<float>(floats == 0 ? 1 : floats, 1.0f / 64));
}

template <class Codec>
void BM_GpuQuantizeAppend(benchmark::State& state) {
  constexpr std::int32_t kPage = page_tokens<Codec>();
  const std::int64_t tokens = bench_tokens(state);
  const auto pages = static_cast<std::int32_t>(tokens / kPage);
  const CodecPageView shape_only = codec_view<Codec>(nullptr, pages);
  Buffer arena = device_buffer(static_cast<std::size_t>(shape_only.page_bytes * pages));
  const CodecPageView view = codec_view<Codec>(arena.bytes_data(), pages);
  const auto rows = static_cast<std::size_t>(tokens * kHeads * kDim * 2);
  Buffer k = device_buffer(rows), v = device_buffer(rows);
  check(cudaMemset(k.data(), 0x3c, rows), "cudaMemset");
  check(cudaMemset(v.data(), 0x3b, rows), "cudaMemset");
  const auto all_slots = shuffled_slots(pages, kPage, tokens);
  Buffer counter = device_buffer(sizeof(unsigned long long));
  const kernels::AppendSource source{k.data(), v.data(), kHeads * kDim * 2, kDim * 2};
  const double bytes = static_cast<double>(rows) * 2 + static_cast<double>(view.page_bytes) * pages;
  if constexpr (Codec::kKind == CodecKind::kKivi) {
    std::vector<std::int64_t> sources(static_cast<std::size_t>(tokens));
    std::vector<std::int32_t> group_pages(static_cast<std::size_t>(pages));
    for (std::int64_t t = 0; t < tokens; ++t)
      sources[static_cast<std::size_t>(t)] = -t - 1;
    for (std::int32_t g = 0; g < pages; ++g)
      group_pages[static_cast<std::size_t>(g)] =
          static_cast<std::int32_t>(all_slots[static_cast<std::size_t>(g) * kPage] / kPage);
    Buffer device_sources = upload(sources), device_pages = upload(group_pages);
    Buffer ring = device_buffer(256);
    kernels::KiviFlushParams<typename Codec::Rows> params;
    params.cache = view;
    params.residual =
        make_plain_view(ring.bytes_data(), 1, 1, 1, kHeads, kDim, DType::kF16, KVLayout::kNHD);
    params.source = source;
    params.sources = device_sources.as<const std::int64_t>();
    params.pages = device_pages.as<const std::int32_t>();
    params.num_groups = pages;
    params.nonfinite = counter.as<unsigned long long>();
    auto launch = [&] { check(kernels::cuda::launch(params, nullptr), "kivi_flush"); };
    time_against_copy(state, launch, static_cast<std::size_t>(bytes / 2), 1, bytes);
  } else {
    Buffer slots = upload(all_slots);
    Buffer codec_state_buffer = codec_state<Codec>();
    kernels::CodecAppendParams<typename Codec::Rows> params;
    params.cache = view;
    params.source = source;
    params.slots =
        kernels::SlotMapping{slots.as<const std::int64_t>(), static_cast<std::int32_t>(tokens)};
    params.state = codec_state_buffer.as<const float>();
    params.nonfinite = counter.as<unsigned long long>();
    auto launch = [&] { check(kernels::cuda::launch(params, nullptr), "codec_append"); };
    time_against_copy(state, launch, static_cast<std::size_t>(bytes / 2), 1, bytes);
  }
}

template <class Codec>
void BM_GpuDequantizeGather(benchmark::State& state) {
  constexpr std::int32_t kPage = page_tokens<Codec>();
  const std::int64_t tokens = bench_tokens(state);
  const auto pages = static_cast<std::int32_t>(tokens / kPage);
  const CodecPageView shape_only = codec_view<Codec>(nullptr, pages);
  Buffer arena = device_buffer(static_cast<std::size_t>(shape_only.page_bytes * pages));
  check(cudaMemset(arena.data(), 0x11, static_cast<std::size_t>(shape_only.page_bytes * pages)),
        "cudaMemset");
  const CodecPageView view = codec_view<Codec>(arena.bytes_data(), pages);
  const auto rows = static_cast<std::size_t>(tokens * kHeads * kDim * 2);
  Buffer out_k = device_buffer(rows), out_v = device_buffer(rows);
  const std::int32_t batch = 64;
  const GatherTable table =
      gather_table(shuffled_slots(pages, kPage, tokens), kPage, batch, tokens / batch);
  Buffer indptr = upload(table.indptr), indices = upload(table.indices),
         last = upload(table.last_page_len), offsets = upload(table.out_row_offset);
  const double bytes = static_cast<double>(rows) * 2 + static_cast<double>(view.page_bytes) * pages;
  if constexpr (Codec::kKind == CodecKind::kKivi) {
    std::vector<std::int64_t> lengths(batch, tokens / batch), rings(batch, 0);
    Buffer paged = upload(lengths), totals = upload(lengths), side = upload(rings);
    Buffer ring = device_buffer(256);
    kernels::KiviGatherParams<typename Codec::Rows> params;
    params.cache = view;
    params.residual =
        make_plain_view(ring.bytes_data(), 1, 1, 1, kHeads, kDim, DType::kF16, KVLayout::kNHD);
    params.table = device_table(table, indptr, indices, last, offsets);
    params.side =
        kernels::SideTable{paged.as<const std::int64_t>(), totals.as<const std::int64_t>(),
                           side.as<const std::int64_t>(), tokens};
    params.out = kernels::GatherOutput{out_k.data(), out_v.data()};
    auto launch = [&] { check(kernels::cuda::launch(params, nullptr), "kivi_gather"); };
    time_against_copy(state, launch, static_cast<std::size_t>(bytes / 2), 1, bytes);
  } else {
    Buffer codec_state_buffer = codec_state<Codec>();
    kernels::CodecGatherParams<typename Codec::Rows> params;
    params.cache = view;
    params.table = device_table(table, indptr, indices, last, offsets);
    params.out = kernels::GatherOutput{out_k.data(), out_v.data()};
    params.state = codec_state_buffer.as<const float>();
    auto launch = [&] { check(kernels::cuda::launch(params, nullptr), "codec_gather"); };
    time_against_copy(state, launch, static_cast<std::size_t>(bytes / 2), 1, bytes);
  }
}

// Decode attention over compressed pages (kernels/codec_attention.hpp), as
// BM_GpuDecodeAttention: 64 sequences, one query row each, 32 query heads
// over the 8 KV heads, every token in pages (KIVI: no window). Bytes: the
// pages it reads once (codes and scales); the copy moves as many.
template <class Codec>
void BM_GpuCodecDecodeAttention(benchmark::State& state) {
  constexpr std::int32_t kPage = page_tokens<Codec>();
  const std::int64_t tokens = bench_tokens(state);
  const auto pages = static_cast<std::int32_t>(tokens / kPage);
  const CodecPageView shape_only = codec_view<Codec>(nullptr, pages);
  const auto arena_bytes = static_cast<std::size_t>(shape_only.page_bytes * pages);
  Buffer arena = device_buffer(arena_bytes);
  check(cudaMemset(arena.data(), 0x11, arena_bytes), "cudaMemset");
  const CodecPageView view = codec_view<Codec>(arena.bytes_data(), pages);
  const std::int32_t batch = 64, q_heads = 4 * kHeads;
  const GatherTable table =
      gather_table(shuffled_slots(pages, kPage, tokens), kPage, batch, tokens / batch);
  Buffer indptr = upload(table.indptr), indices = upload(table.indices),
         last = upload(table.last_page_len), offsets = upload(table.out_row_offset);
  std::vector<std::int64_t> lengths(batch, tokens / batch), rings(batch, 0);
  Buffer paged = upload(lengths), totals = upload(lengths), side = upload(rings);
  std::vector<std::int32_t> rows(static_cast<std::size_t>(batch) + 1);
  for (std::int32_t b = 0; b <= batch; ++b)
    rows[static_cast<std::size_t>(b)] = b;
  Buffer q_indptr = upload(rows);
  const auto q_bytes = static_cast<std::size_t>(batch) * q_heads * kDim * sizeof(float);
  Buffer q = device_buffer(q_bytes), out = device_buffer(q_bytes);
  check(cudaMemset(q.data(), 0, q_bytes), "cudaMemset");
  Buffer ring = device_buffer(256);
  Buffer codec_state_buffer = codec_state<Codec>();
  kernels::CodecAttentionParams<typename Codec::Rows> params;
  params.cache = view;
  params.residual =
      make_plain_view(ring.bytes_data(), 1, 1, 1, kHeads, kDim, DType::kF16, KVLayout::kNHD);
  params.table = device_table(table, indptr, indices, last, offsets);
  params.side = kernels::SideTable{paged.as<const std::int64_t>(), totals.as<const std::int64_t>(),
                                   side.as<const std::int64_t>(), tokens};
  params.state = codec_state_buffer.as<const float>();
  params.q_indptr = q_indptr.as<const std::int32_t>();
  params.q = q.as<const float>();
  params.out = out.as<float>();
  params.num_rows = batch;
  params.num_q_heads = q_heads;
  params.scale = 0.088f;
  auto launch = [&] { check(kernels::cuda::launch(params, nullptr), "codec_attention"); };
  time_against_copy(state, launch, arena_bytes / 2, 1, static_cast<double>(arena_bytes));
  state.counters["tokens"] = static_cast<double>(tokens);
}

#define KVCACHE_GPU_CODEC_BENCHMARKS(Codec)             \
  BENCHMARK_TEMPLATE(BM_GpuQuantizeAppend, Codec)       \
      ->Arg(262144)                                     \
      ->UseManualTime()                                 \
      ->Unit(benchmark::kMicrosecond);                  \
  BENCHMARK_TEMPLATE(BM_GpuDequantizeGather, Codec)     \
      ->Arg(262144)                                     \
      ->UseManualTime()                                 \
      ->Unit(benchmark::kMicrosecond);                  \
  BENCHMARK_TEMPLATE(BM_GpuCodecDecodeAttention, Codec) \
      ->Arg(262144)                                     \
      ->UseManualTime()                                 \
      ->Unit(benchmark::kMicrosecond);
KVCACHE_GPU_CODEC_BENCHMARKS(Int8Codec<32>)
KVCACHE_GPU_CODEC_BENCHMARKS(Int8Codec<64>)
KVCACHE_GPU_CODEC_BENCHMARKS(Int8Codec<128>)
KVCACHE_GPU_CODEC_BENCHMARKS(Fp8Codec<Fp8Scale::kPerHead>)
using Int4Kivi = KiviCodec<4, 32, 128>;
using Int2Kivi = KiviCodec<2, 32, 128>;
KVCACHE_GPU_CODEC_BENCHMARKS(Int4Kivi)
KVCACHE_GPU_CODEC_BENCHMARKS(Int2Kivi)
KVCACHE_GPU_CODEC_BENCHMARKS(LowRankCodec<32>)

BENCHMARK(BM_GpuCopy)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_GpuAppend, NHD, KVLayout::kNHD)
    ->Arg(262144)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_GpuAppend, HND, KVLayout::kHND)
    ->Arg(262144)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_GpuGather, NHD, KVLayout::kNHD)
    ->Arg(262144)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_GpuGather, HND, KVLayout::kHND)
    ->Arg(262144)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
// The host tier on the GPU (tier_bench.hpp): offload (`onboard` false) or
// onboard of K blocks of 2 MiB through the manager, timed with events on the
// backend's stream (which waits for the transfer stream), against
// cudaMemcpyAsync of the same blocks one at a time between device memory and
// pinned host memory, in the same direction.
void BM_GpuTier(benchmark::State& state, bool onboard) {
  const std::int64_t blocks = smoke() ? 2 : state.range(0);
  TierRoundTrip<CudaBackend> bench(blocks, CudaBackend(0));
  const auto block = static_cast<std::size_t>(bench.block_bytes());
  const std::size_t bytes = block * static_cast<std::size_t>(blocks);
  Buffer device = device_buffer(bytes);
  Buffer pinned = bench.manager().backend().allocate_host(bytes);
  Events events;
  RatioCounter ratio;
  for (auto _ : state) {
    check(cudaEventRecord(events.start, nullptr), "cudaEventRecord");
    bench.offload();
    check(cudaEventRecord(events.middle, nullptr), "cudaEventRecord");
    check(cudaEventRecord(events.end, nullptr), "cudaEventRecord");
    const double out = events.elapsed().first;
    bench.settle();
    check(cudaEventRecord(events.start, nullptr), "cudaEventRecord");
    bench.onboard();
    check(cudaEventRecord(events.middle, nullptr), "cudaEventRecord");
    for (std::int64_t b = 0; b < blocks; ++b) {
      const auto at = static_cast<std::size_t>(b) * block;
      if (onboard) {
        check(cudaMemcpyAsync(device.bytes_data() + at, pinned.bytes_data() + at, block,
                              cudaMemcpyHostToDevice, nullptr),
              "cudaMemcpyAsync");
      } else {
        check(cudaMemcpyAsync(pinned.bytes_data() + at, device.bytes_data() + at, block,
                              cudaMemcpyDeviceToHost, nullptr),
              "cudaMemcpyAsync");
      }
    }
    check(cudaEventRecord(events.end, nullptr), "cudaEventRecord");
    const auto [in, copy] = events.elapsed();
    bench.settle();
    ratio.kernel_seconds += onboard ? in : out;
    ratio.copy_seconds += copy;
    state.SetIterationTime(onboard ? in : out);
  }
  ratio.publish(state, 2.0 * static_cast<double>(bytes), "pinned_memcpy");
  state.counters["blocks"] = static_cast<double>(blocks);
}

BENCHMARK(BM_GpuDecodeAppend)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_GpuTier, offload, false)
    ->Arg(64)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_GpuTier, onboard, true)
    ->Arg(64)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GpuDecodeAttention)->Arg(262144)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace kvcache::bench

int main(int argc, char** argv) {
  kvcache::bench::parse_smoke(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (kvcache::cuda_device_count() == 0) {
    std::printf("kvcache_gpu_bench: no CUDA device found; nothing to measure\n");
    return 0;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
