// A manager's metrics at one instant, cheap enough to take every scheduler
// step: no heap allocation and no wait for the device (the codecs' non-finite
// count, which needs one, is left to stats()). Everything in it is either a
// cumulative counter or a gauge read from the components' own bookkeeping.
//
//   kvcache::metrics::Monitor monitor(cache, 32);   // a window of 32 snapshots
//   each step: const auto& snap = monitor.sample(); // + window figures
//   kvcache::metrics::to_prometheus(snap)           // metrics/exposition.hpp
//
// Also here: the engine-side switches the metrics come with: a KV event
// sink (attach_kv_events), per-call timing (set_op_timing), and
// clear_prefix_cache, which drops every prefix key (the all-cleared event).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <utility>

#include "kvcache/codec/plain/codec.hpp"
#include "kvcache/detail/manager_access.hpp"
#include "kvcache/metrics/kv_events.hpp"
#include "kvcache/metrics/op_stats.hpp"
#include "kvcache/types.hpp"

namespace kvcache::metrics {

// Differences between this snapshot and the oldest one in the monitor's
// window (all zero for a snapshot taken alone).
struct WindowFigures {
  std::int32_t snapshots = 0;  // snapshots in the window, this one included
  double seconds = 0;
  std::int64_t lookups = 0;
  std::int64_t blocks_requested = 0;
  std::int64_t blocks_hit = 0;
  std::int64_t tokens_requested = 0;
  std::int64_t tokens_hit = 0;
  std::int64_t evicted_blocks = 0;
  std::int64_t evicted_sequences = 0;
  std::int64_t refetched_blocks = 0;
  std::array<std::int64_t, kRefetchBuckets> refetch_distance{};  // as CacheStats'
  std::int64_t reserve_failures = 0;
  // The smallest growth (a power of two, in blocks) that would have turned at
  // least `share` of the window's refetches into hits under LRU, and how
  // many it covers; {0, 0} without refetches.
  std::pair<std::int64_t, std::int64_t> growth_for(double share) const {
    std::int64_t covered = 0;
    for (std::size_t b = 0; b < kRefetchBuckets; ++b) {
      covered += refetch_distance[b];
      if (covered > 0 &&
          static_cast<double>(covered) >= share * static_cast<double>(refetched_blocks))
        return {std::int64_t{1} << b, covered};
    }
    return {0, 0};
  }
  double hit_rate_blocks() const { return ratio(blocks_hit, blocks_requested); }
  double hit_rate_tokens() const { return ratio(tokens_hit, tokens_requested); }
  static double ratio(std::int64_t a, std::int64_t b) {
    return b == 0 ? std::numeric_limits<double>::quiet_NaN()
                  : static_cast<double>(a) / static_cast<double>(b);
  }
};

struct MetricsSnapshot {
  std::int64_t time_ns = 0;  // steady clock
  // The cache's shape of memory.
  ModelShape shape;
  std::int32_t block_size = 0;
  std::int64_t bytes_per_block = 0;
  std::int64_t plain_bytes_per_block = 0;  // the same block in the model dtype
  MemoryStats memory;
  CacheStats counters;  // without the codec's non-finite count
  std::array<OpStats, kNumOps> ops{};
  bool op_timing = false;
  WindowFigures window;

  std::int64_t free_bytes() const { return memory.free_blocks * memory.bytes_per_block; }
  std::int64_t cached_bytes() const { return memory.cached_blocks * memory.bytes_per_block; }
  std::int64_t used_bytes() const { return memory.used_bytes() + memory.residual_bytes; }
  // Blocks held by sequences, of the budget (cached blocks can be reclaimed).
  // The blocks that may hold data: the budget (set_budget_blocks), or the pool.
  std::int64_t budget_blocks() const {
    return memory.budget_blocks > 0 ? memory.budget_blocks : memory.num_blocks;
  }
  double memory_pressure() const {
    return WindowFigures::ratio(memory.used_blocks, budget_blocks());
  }
  // Unwritten slots of the blocks sequences hold (partly filled last blocks,
  // room reserved ahead).
  std::int64_t fragmented_slots() const { return memory.reserved_tokens - memory.stored_tokens; }
  double fragmentation() const {
    return WindowFigures::ratio(fragmented_slots(), memory.reserved_tokens);
  }
  double bytes_per_token() const {
    return WindowFigures::ratio(used_bytes(), memory.stored_tokens);
  }
  // The codec's saving on what sequences hold: their blocks in the model
  // dtype, over their blocks and the codec's side storage (1 for plain).
  double compression_ratio() const {
    return WindowFigures::ratio(memory.used_blocks * plain_bytes_per_block, used_bytes());
  }
  // Blocks found in the pool or brought back from a tier, of those asked for.
  std::int64_t blocks_hit() const { return counters.prefix_blocks_hit + counters.tier_hit_blocks; }
  double hit_rate_blocks() const {
    return WindowFigures::ratio(blocks_hit(), counters.prefix_blocks_requested);
  }
  double hit_rate_tokens() const {
    return WindowFigures::ratio(counters.prefix_tokens_hit, counters.prefix_tokens_requested);
  }
};

// Fills `out` from the manager's components (`out.window` is left as is).
template <class Manager>
void take_snapshot(Manager& m, MetricsSnapshot& out) {
  using Access = detail::ManagerAccess;
  out.time_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::steady_clock::now().time_since_epoch())
                    .count();
  out.shape = m.shape();
  out.block_size = m.block_size();
  out.bytes_per_block = m.bytes_per_block();
  out.plain_bytes_per_block = PlainCodec::block_bytes(m.shape(), m.block_size());
  out.memory = m.memory();
  auto& ledger = Access::ledger(m);
  out.counters = ledger.counters();
  out.counters.allocation = ledger.allocation().stats();
  Access::tiers(m).add_stats(out.counters);
  out.ops = Access::meter(m).ops();
  out.op_timing = Access::meter(m).timing();
}

// Stored / removed / all-cleared events of the manager's prefix index go to
// `sink` (nullptr: nowhere). The sink must outlive the attachment.
template <class Manager>
void attach_kv_events(Manager& m, KvEventSink* sink) {
  detail::ManagerAccess::ledger(m).set_events(sink);
}

// Per-call latency histograms on or off (the call counts stay on).
template <class Manager>
void set_op_timing(Manager& m, bool on) {
  detail::ManagerAccess::meter(m).set_timing(on);
}

}  // namespace kvcache::metrics

namespace kvcache {

// Drops every prefix key, like an engine's reset of its prefix cache after
// new weights: cached blocks are freed; blocks sequences hold stay theirs but
// are no longer shared with new prompts. One all-cleared KV event. Returns
// the blocks freed.
template <class Manager>
std::int64_t clear_prefix_cache(Manager& m) {
  return detail::ManagerAccess::ledger(m).clear_prefix_cache();
}

}  // namespace kvcache
