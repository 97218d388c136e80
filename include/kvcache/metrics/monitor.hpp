// A sliding window of metrics snapshots: sample() takes one (no heap
// allocation: the ring is allocated once, here) and fills its window
// figures against the oldest snapshot still in the window. Recommendations
// (metrics/recommend.hpp) and the tuner read the window.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcache/error.hpp"
#include "kvcache/metrics/snapshot.hpp"

namespace kvcache::metrics {

// The window figures of `now` against `then` (an earlier snapshot of the same cache).
inline WindowFigures window_between(const MetricsSnapshot& then, const MetricsSnapshot& now,
                                    std::int32_t snapshots) {
  const CacheStats& a = then.counters;
  const CacheStats& b = now.counters;
  WindowFigures w;
  w.snapshots = snapshots;
  w.seconds = static_cast<double>(now.time_ns - then.time_ns) * 1e-9;
  w.lookups = b.prefix_lookups - a.prefix_lookups;
  w.blocks_requested = b.prefix_blocks_requested - a.prefix_blocks_requested;
  w.blocks_hit = now.blocks_hit() - then.blocks_hit();
  w.tokens_requested = b.prefix_tokens_requested - a.prefix_tokens_requested;
  w.tokens_hit = b.prefix_tokens_hit - a.prefix_tokens_hit;
  w.evicted_blocks = b.evicted_blocks - a.evicted_blocks;
  w.evicted_sequences = b.evicted_sequences - a.evicted_sequences;
  w.refetched_blocks = b.prefix_blocks_refetched - a.prefix_blocks_refetched;
  for (std::size_t i = 0; i < kRefetchBuckets; ++i)
    w.refetch_distance[i] = b.refetch_distance[i] - a.refetch_distance[i];
  w.reserve_failures = b.reserve_failures - a.reserve_failures;
  return w;
}

template <class Manager>
class Monitor {
 public:
  // `window`: snapshots the window spans, this one included (2 to 65536).
  explicit Monitor(Manager& m, std::size_t window = 16) : manager_(&m) {
    if (window < 2 || window > 65536) {
      detail::raise<InvalidArgument>("Monitor: window of {} snapshots (allowed: 2 to 65536)",
                                     window);
    }
    ring_.resize(window);
  }

  // Takes a snapshot into the window and returns it (valid until the window
  // comes round to its slot again).
  const MetricsSnapshot& sample() {
    const std::size_t slot = static_cast<std::size_t>(taken_ % ring_.size());
    MetricsSnapshot& now = ring_[slot];
    take_snapshot(*manager_, now);
    const std::size_t in_window = size_after_insert();
    const MetricsSnapshot& oldest = at_from_newest(in_window - 1, slot);
    now.window = window_between(oldest, now, static_cast<std::int32_t>(in_window));
    ++taken_;
    return now;
  }

  // Snapshots in the window, oldest first: at(0) .. at(size() - 1).
  std::size_t size() const {
    return static_cast<std::size_t>(std::min<std::uint64_t>(taken_, ring_.size()));
  }
  const MetricsSnapshot& at(std::size_t i) const {
    const std::uint64_t first = taken_ - size();
    return ring_[static_cast<std::size_t>((first + i) % ring_.size())];
  }
  const MetricsSnapshot& latest() const { return at(size() - 1); }
  bool empty() const { return taken_ == 0; }
  std::size_t window() const { return ring_.size(); }
  std::uint64_t taken() const { return taken_; }

 private:
  std::size_t size_after_insert() const {
    return static_cast<std::size_t>(std::min<std::uint64_t>(taken_ + 1, ring_.size()));
  }
  const MetricsSnapshot& at_from_newest(std::size_t back, std::size_t newest_slot) const {
    return ring_[(newest_slot + ring_.size() - back) % ring_.size()];
  }

  Manager* manager_;
  std::vector<MetricsSnapshot> ring_;
  std::uint64_t taken_ = 0;
};

}  // namespace kvcache::metrics
