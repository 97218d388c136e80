// Shared pieces of the benchmarks: the benchmark geometry, shuffled slot
// mappings, and the `--smoke` switch that shrinks every size for a quick run.
//
// Bandwidth is counted as bytes read plus bytes written, for the kernel and
// for the copy it is compared with; the ratio is kernel bandwidth over copy
// bandwidth of the same bytes, both measured in the same iteration.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kvcache/kvcache.hpp"

namespace kvcache::bench {

inline bool& smoke() {
  static bool value = false;
  return value;
}

// Removes --smoke from argv (before benchmark::Initialize sees it).
inline void parse_smoke(int& argc, char** argv) {
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) {
      smoke() = true;
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
}

// The benchmark geometry: fp16, 8 KV heads x 128, block 16, one layer (a
// kernel call touches one layer).
inline PagedKVView bench_view(std::byte* data, std::int32_t pages,
                              KVLayout layout = KVLayout::kNHD) {
  return make_plain_view(data, pages, 16, 1, 8, 128, DType::kF16, layout);
}

// Every slot of `pages` pages, pages in random order (as a busy pool hands
// them out), tokens in order within a page.
inline std::vector<std::int64_t> shuffled_slots(std::int32_t pages, std::int32_t page_size,
                                                std::int64_t tokens, std::uint64_t seed = 7) {
  std::vector<std::int32_t> order(static_cast<std::size_t>(pages));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<std::int64_t> slots(static_cast<std::size_t>(tokens));
  for (std::int64_t t = 0; t < tokens; ++t) {
    slots[static_cast<std::size_t>(t)] =
        std::int64_t{order[static_cast<std::size_t>(t / page_size)]} * page_size + t % page_size;
  }
  return slots;
}

// FlashInfer-style table of `batch` sequences of `tokens_each` tokens over the
// pages of a shuffled slot mapping (the same pages the append wrote).
struct GatherTable {
  std::vector<std::int32_t> indptr, indices, last_page_len;
  std::vector<std::int64_t> out_row_offset;

  kernels::PageTableView view() const {
    return kernels::PageTableView{indptr.data(),
                                  indices.data(),
                                  last_page_len.data(),
                                  out_row_offset.data(),
                                  static_cast<std::int32_t>(last_page_len.size()),
                                  indptr.back()};
  }
};

inline GatherTable gather_table(const std::vector<std::int64_t>& slots, std::int32_t page_size,
                                std::int32_t batch, std::int64_t tokens_each) {
  GatherTable table;
  table.indptr.push_back(0);
  const auto pages_each = static_cast<std::int32_t>((tokens_each + page_size - 1) / page_size);
  for (std::int32_t b = 0; b < batch; ++b) {
    for (std::int32_t p = 0; p < pages_each; ++p) {
      const std::int64_t first_token = b * tokens_each + std::int64_t{p} * page_size;
      table.indices.push_back(
          static_cast<std::int32_t>(slots[static_cast<std::size_t>(first_token)] / page_size));
    }
    table.indptr.push_back(table.indptr.back() + pages_each);
    table.last_page_len.push_back(
        static_cast<std::int32_t>(tokens_each - std::int64_t{pages_each - 1} * page_size));
    table.out_row_offset.push_back(b * tokens_each);
  }
  table.out_row_offset.push_back(batch * tokens_each);
  return table;
}

// Records kernel and copy times of one iteration and publishes the counters.
struct RatioCounter {
  double kernel_seconds = 0;
  double copy_seconds = 0;

  void publish(benchmark::State& state, double bytes_per_iteration, const char* copy_name) {
    const double iterations = static_cast<double>(state.iterations());
    state.SetBytesProcessed(static_cast<std::int64_t>(bytes_per_iteration * iterations));
    const double kernel_bw = bytes_per_iteration * iterations / kernel_seconds;
    const double copy_bw = bytes_per_iteration * iterations / copy_seconds;
    state.counters["GB/s"] = kernel_bw / 1e9;
    state.counters[std::string(copy_name) + "_GB/s"] = copy_bw / 1e9;
    state.counters["ratio"] = kernel_bw / copy_bw;
  }
};

// The host-timed loop of the CPU benchmarks: each iteration runs `kernel`,
// then `copy` (a memcpy of as many bytes), timing each on the steady clock;
// the kernel's time is the iteration's. Publishes the counters at the end.
template <class Kernel, class Copy>
RatioCounter time_against_memcpy(benchmark::State& state, double bytes_per_iteration,
                                 Kernel&& kernel, Copy&& copy) {
  using Clock = std::chrono::steady_clock;
  RatioCounter ratio;
  for (auto _ : state) {
    auto start = Clock::now();
    kernel();
    benchmark::ClobberMemory();
    const double kernel_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    start = Clock::now();
    copy();
    benchmark::ClobberMemory();
    ratio.copy_seconds += std::chrono::duration<double>(Clock::now() - start).count();
    ratio.kernel_seconds += kernel_seconds;
    state.SetIterationTime(kernel_seconds);
  }
  ratio.publish(state, bytes_per_iteration, "memcpy");
  return ratio;
}

}  // namespace kvcache::bench
