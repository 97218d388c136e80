// GPU benchmarks (CUDA events): paged append, paged gather and decode append
// against a device-to-device copy of the same bytes in the same iteration,
// plus the plain copy ceiling. DESIGN.md's geometry: fp16, 8 KV heads x 128,
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
  params.k = k.data();
  params.v = v.data();
  params.src_head_bytes = view.row_bytes();
  params.src_token_bytes = view.row_bytes() * view.num_heads;
  params.slot_mapping = static_cast<const std::int64_t*>(slots.data());
  params.num_tokens = static_cast<std::int32_t>(tokens);
  auto launch = [&] { check(kernels::cuda::launch_append(params, nullptr), "launch_append"); };
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
  params.page_indptr = static_cast<const std::int32_t*>(indptr.data());
  params.page_indices = static_cast<const std::int32_t*>(indices.data());
  params.last_page_len = static_cast<const std::int32_t*>(last.data());
  params.out_row_offset = static_cast<const std::int64_t*>(offsets.data());
  params.k_out = out_k.data();
  params.v_out = out_v.data();
  params.batch_size = batch;
  params.total_pages = table.indptr.back();
  auto launch = [&] { check(kernels::cuda::launch_gather(params, nullptr), "launch_gather"); };
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
  params.k = k.data();
  params.v = v.data();
  params.src_head_bytes = view.row_bytes();
  params.src_token_bytes = view.row_bytes() * view.num_heads;
  params.slot_mapping = static_cast<const std::int64_t*>(device_slots.data());
  params.num_tokens = sequences;
  auto launch = [&] { check(kernels::cuda::launch_append(params, nullptr), "launch_append"); };
  time_against_copy(state, launch, 2 * row * sequences, 200,
                    2.0 * 2.0 * static_cast<double>(row * sequences));
  state.counters["sequences"] = sequences;
}

// Fused quantize-append and dequantize-gather of a compressed cache: fp16
// rows in (out), codes and scales out (in). Bytes are the fewest each must
// move: the fp16 rows plus the codes and scales of the same tokens.
template <class Codec>
CodecPageView codec_view(std::byte* data, std::int32_t pages) {
  const ModelShape shape = ModelShape::gqa(1, 8, 128, DType::kF16);
  CodecPageView view = Codec::layout(shape, 16);
  view.data = data;
  view.num_pages = pages;
  view.page_size = 16;
  view.num_layers = 1;
  view.num_heads = 8;
  view.head_dim = 128;
  view.dtype = DType::kF16;
  return finish_layout(view);
}

template <class Codec>
void BM_GpuQuantizeAppend(benchmark::State& state) {
  const std::int64_t tokens = bench_tokens(state);
  const auto pages = static_cast<std::int32_t>(tokens / 16);
  const CodecPageView shape_only = codec_view<Codec>(nullptr, pages);
  Buffer arena = device_buffer(static_cast<std::size_t>(shape_only.page_bytes * pages));
  const CodecPageView view = codec_view<Codec>(arena.bytes_data(), pages);
  const auto rows = static_cast<std::size_t>(tokens * 8 * 128 * 2);
  Buffer k = device_buffer(rows), v = device_buffer(rows);
  check(cudaMemset(k.data(), 0x3c, rows), "cudaMemset");
  check(cudaMemset(v.data(), 0x3b, rows), "cudaMemset");
  Buffer slots = upload(shuffled_slots(pages, 16, tokens));
  Buffer scales = upload(std::vector<float>(16, 1.0f / 64));
  Buffer counter = device_buffer(sizeof(unsigned long long));
  kernels::CodecAppendParams params;
  params.cache = view;
  params.k = k.data();
  params.v = v.data();
  params.src_head_bytes = 256;
  params.src_token_bytes = 2048;
  params.slot_mapping = slots.as<const std::int64_t>();
  params.num_tokens = static_cast<std::int32_t>(tokens);
  params.state = scales.as<const float>();
  params.nonfinite = counter.as<unsigned long long>();
  auto launch = [&] {
    check(kernels::cuda::launch_codec_append(params, nullptr), "launch_codec_append");
  };
  const double bytes = static_cast<double>(rows) * 2 + static_cast<double>(view.page_bytes) * pages;
  time_against_copy(state, launch, static_cast<std::size_t>(bytes / 2), 1, bytes);
}

template <class Codec>
void BM_GpuDequantizeGather(benchmark::State& state) {
  const std::int64_t tokens = bench_tokens(state);
  const auto pages = static_cast<std::int32_t>(tokens / 16);
  const CodecPageView shape_only = codec_view<Codec>(nullptr, pages);
  Buffer arena = device_buffer(static_cast<std::size_t>(shape_only.page_bytes * pages));
  check(cudaMemset(arena.data(), 0x11, static_cast<std::size_t>(shape_only.page_bytes * pages)),
        "cudaMemset");
  const CodecPageView view = codec_view<Codec>(arena.bytes_data(), pages);
  const auto rows = static_cast<std::size_t>(tokens * 8 * 128 * 2);
  Buffer out_k = device_buffer(rows), out_v = device_buffer(rows);
  const std::int32_t batch = 64;
  const GatherTable table =
      gather_table(shuffled_slots(pages, 16, tokens), 16, batch, tokens / batch);
  Buffer indptr = upload(table.indptr), indices = upload(table.indices),
         last = upload(table.last_page_len), offsets = upload(table.out_row_offset);
  Buffer scales = upload(std::vector<float>(16, 1.0f / 64));
  kernels::CodecGatherParams params;
  params.cache = view;
  params.page_indptr = indptr.as<const std::int32_t>();
  params.page_indices = indices.as<const std::int32_t>();
  params.last_page_len = last.as<const std::int32_t>();
  params.out_row_offset = offsets.as<const std::int64_t>();
  params.k_out = out_k.data();
  params.v_out = out_v.data();
  params.batch_size = batch;
  params.total_pages = table.indptr.back();
  params.state = scales.as<const float>();
  auto launch = [&] {
    check(kernels::cuda::launch_codec_gather(params, nullptr), "launch_codec_gather");
  };
  const double bytes = static_cast<double>(rows) * 2 + static_cast<double>(view.page_bytes) * pages;
  time_against_copy(state, launch, static_cast<std::size_t>(bytes / 2), 1, bytes);
}

BENCHMARK(BM_GpuCopy)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_GpuQuantizeAppend, Int8Codec<32>)
    ->Arg(262144)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_GpuDequantizeGather, Int8Codec<32>)
    ->Arg(262144)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_GpuQuantizeAppend, Fp8Codec<Fp8Scale::kPerHead>)
    ->Arg(262144)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_GpuDequantizeGather, Fp8Codec<Fp8Scale::kPerHead>)
    ->Arg(262144)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
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
BENCHMARK(BM_GpuDecodeAppend)->UseManualTime()->Unit(benchmark::kMicrosecond);

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
