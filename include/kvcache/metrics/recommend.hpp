// Recommendations from a window of metrics snapshots: each names the rule,
// the figures that triggered it, and one concrete action with its number.
//
//   low-hit-rate     prefix hit rate under 0.8 while the misses are blocks
//                    evicted lately: grow the budget to N blocks (the growth
//                    that keeps half of those refetches, under LRU)
//   memory-pressure  sequences hold over 0.9 of the pool: switch a plain
//                    cache to Int8Codec<64> (N times the tokens), or lower
//                    the max batch to N sequences
//   fragmentation    over 0.25 of the slots sequences hold are unwritten
//                    while memory is tight: smaller blocks (B -> B/2)
//   eviction-churn   over 0.25 of the blocks evicted come back: grow the
//                    budget to N blocks, or evict with reuse-lru / S3-FIFO
//
// A rule needs enough evidence in the window (blocks asked for, evictions)
// and reads gauges as the window's mean, so one odd step fires nothing. A hit
// rate that is low because prompts are new (no refetches) fires nothing:
// more memory would not help.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "kvcache/codec/int8/codec.hpp"
#include "kvcache/metrics/monitor.hpp"

namespace kvcache::metrics {

struct RecommendOptions {
  double min_hit_rate = 0.8;
  double max_memory_pressure = 0.9;
  double max_fragmentation = 0.25;
  double fragmentation_pressure = 0.5;  // fragmentation matters from this pressure on
  double max_churn = 0.25;              // refetched / evicted blocks
  double min_capacity_misses = 0.1;     // refetched share of the misses for low-hit-rate
  double target_pressure = 0.85;        // what a lower max batch aims at
  double refetch_share = 0.5;           // refetches a suggested growth must keep
  std::int64_t min_blocks_requested = 64;
  std::int64_t min_evictions = 32;
};

struct Recommendation {
  std::string rule;            // low-hit-rate, memory-pressure, fragmentation, eviction-churn
  std::string finding;         // the figures that triggered it
  std::string action;          // what to change, with its number
  double value = 0;            // the figure the rule compares ...
  double threshold = 0;        // ... with this
  std::int64_t suggested = 0;  // blocks, sequences or tokens per block, by rule
};

namespace detail_recommend {

struct Means {
  double pressure = 0, fragmentation = 0, sequences = 0, fragmented_slots = 0;
};

template <class At>
Means means(std::size_t n, At at) {
  Means m;
  for (std::size_t i = 0; i < n; ++i) {
    const MetricsSnapshot& s = at(i);
    m.pressure += s.memory_pressure();
    m.fragmentation += std::isnan(s.fragmentation()) ? 0.0 : s.fragmentation();
    m.sequences += static_cast<double>(s.memory.num_sequences - s.memory.parked_sequences);
    m.fragmented_slots += static_cast<double>(s.fragmented_slots());
  }
  const double d = static_cast<double>(n);
  return Means{m.pressure / d, m.fragmentation / d, m.sequences / d, m.fragmented_slots / d};
}

}  // namespace detail_recommend

// The window is snapshots oldest first: at(0) .. at(n - 1), n >= 2.
template <class At>
std::vector<Recommendation> recommend(std::size_t n, At at, const RecommendOptions& o = {}) {
  std::vector<Recommendation> out;
  if (n < 2) return out;
  const MetricsSnapshot& last = at(n - 1);
  const WindowFigures w = window_between(at(0), last, static_cast<std::int32_t>(n));
  const detail_recommend::Means mean = detail_recommend::means(n, at);
  const std::int64_t blocks = last.budget_blocks();

  const std::int64_t misses = w.blocks_requested - w.blocks_hit;
  if (w.blocks_requested >= o.min_blocks_requested && w.hit_rate_blocks() < o.min_hit_rate &&
      misses > 0 &&
      static_cast<double>(w.refetched_blocks) >=
          o.min_capacity_misses * static_cast<double>(misses)) {
    const auto [grow, covered] = w.growth_for(o.refetch_share);
    out.push_back(Recommendation{
        "low-hit-rate",
        fmt::format("prefix hit rate {:.3f} over the last {} lookups ({} of {} blocks); {} of the "
                    "{} missed blocks had been evicted lately, {} of them at most {} evictions "
                    "before",
                    w.hit_rate_blocks(), w.lookups, w.blocks_hit, w.blocks_requested,
                    w.refetched_blocks, misses, covered, grow),
        fmt::format("grow the budget to {} blocks (+{}: under LRU that keeps those {} blocks), "
                    "or evict with a policy that keeps reused blocks (reuse-lru, S3-FIFO)",
                    blocks + grow, grow, covered),
        w.hit_rate_blocks(), o.min_hit_rate, blocks + grow});
  }

  if (mean.pressure > o.max_memory_pressure && last.memory_pressure() > o.max_memory_pressure) {
    const bool compressed = last.bytes_per_block < last.plain_bytes_per_block;
    const std::string finding = fmt::format(
        "sequences hold {:.3f} of the pool on average over {} snapshots ({} of {} blocks now); "
        "{} reservations failed, {} parked sequences evicted",
        mean.pressure, n, last.memory.used_blocks, blocks, w.reserve_failures, w.evicted_sequences);
    if (!compressed) {
      // The widest int8 group that divides head_dim (Int8Codec's condition).
      const std::int32_t group = last.shape.head_dim % 64 == 0   ? 64
                                 : last.shape.head_dim % 32 == 0 ? 32
                                                                 : 8;
      const std::int64_t int8_block =
          group == 64   ? Int8Codec<64>::block_bytes(last.shape, last.block_size)
          : group == 32 ? Int8Codec<32>::block_bytes(last.shape, last.block_size)
                        : Int8Codec<8>::block_bytes(last.shape, last.block_size);
      const double gain =
          static_cast<double>(last.bytes_per_block) / static_cast<double>(int8_block);
      out.push_back(Recommendation{
          "memory-pressure", finding,
          fmt::format("switch to Int8Codec<{}>: {} bytes per block instead of {} ({:.2f}x the "
                      "tokens in the same memory, {} blocks)",
                      group, int8_block, last.bytes_per_block, gain,
                      static_cast<std::int64_t>(static_cast<double>(blocks) * gain)),
          mean.pressure, o.max_memory_pressure,
          static_cast<std::int64_t>(static_cast<double>(blocks) * gain)});
    } else {
      const auto batch = std::max<std::int64_t>(
          1, static_cast<std::int64_t>(
                 std::floor(mean.sequences * o.target_pressure / mean.pressure)));
      out.push_back(Recommendation{
          "memory-pressure", finding,
          fmt::format("lower the max batch to {} sequences (now {:.1f} on average), for a pressure "
                      "near {:.2f}",
                      batch, mean.sequences, o.target_pressure),
          mean.pressure, o.max_memory_pressure, batch});
    }
  }

  if (mean.fragmentation > o.max_fragmentation && mean.pressure > o.fragmentation_pressure &&
      last.block_size > 1) {
    const std::int32_t smaller = last.block_size / 2;
    const auto freed = static_cast<std::int64_t>(mean.fragmented_slots / 2.0 / last.block_size);
    out.push_back(Recommendation{
        "fragmentation",
        fmt::format("{:.3f} of the slots sequences hold are unwritten on average ({:.0f} slots, "
                    "{:.0f} blocks), at a pool pressure of {:.3f}",
                    mean.fragmentation, mean.fragmented_slots,
                    mean.fragmented_slots / last.block_size, mean.pressure),
        fmt::format("smaller blocks: block_size {} -> {} (about half the unwritten slots: some "
                    "{} blocks back)",
                    last.block_size, smaller, freed),
        mean.fragmentation, o.max_fragmentation, smaller});
  }

  if (w.evicted_blocks >= o.min_evictions) {
    const double churn =
        static_cast<double>(w.refetched_blocks) / static_cast<double>(w.evicted_blocks);
    if (churn > o.max_churn) {
      const auto [grow, covered] = w.growth_for(o.refetch_share);
      out.push_back(Recommendation{
          "eviction-churn",
          fmt::format("{} of the {} blocks evicted in the window were asked for again ({:.3f}); "
                      "{} of them within {} evictions",
                      w.refetched_blocks, w.evicted_blocks, churn, covered, grow),
          fmt::format("grow the budget to {} blocks (+{}), or evict with reuse-lru or S3-FIFO, "
                      "which keep blocks that are reused",
                      blocks + grow, grow),
          churn, o.max_churn, blocks + grow});
    }
  }
  return out;
}

template <class Manager>
std::vector<Recommendation> recommend(const Monitor<Manager>& monitor,
                                      const RecommendOptions& o = {}) {
  return recommend(
      monitor.size(), [&](std::size_t i) -> const MetricsSnapshot& { return monitor.at(i); }, o);
}

inline std::vector<Recommendation> recommend(std::span<const MetricsSnapshot> window,
                                             const RecommendOptions& o = {}) {
  return recommend(
      window.size(), [&](std::size_t i) -> const MetricsSnapshot& { return window[i]; }, o);
}

}  // namespace kvcache::metrics
