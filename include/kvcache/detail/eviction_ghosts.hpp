// What eviction churn is measured with: a direct-mapped table of the keys of
// recently evicted prefix blocks and when each went (the count of block
// evictions then). A prompt's block that misses and finds its key here was
// evicted and asked for again (a refetch), `distance` evictions later: under
// LRU a pool larger by that many blocks would have kept it (the larger pool
// holds the smaller one's blocks and the ones it evicted last). Bounded (one
// key per slot, twice the pool's blocks, at least 1024), allocated once; a
// newer eviction overwrites an older key in its slot, so the counts are lower
// bounds for distances near the table's size.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcache/policy/concepts.hpp"

namespace kvcache::detail {

class EvictionGhosts {
 public:
  explicit EvictionGhosts(std::int64_t num_blocks)
      : slots_(
            std::bit_ceil(static_cast<std::size_t>(std::max<std::int64_t>(1024, 2 * num_blocks))),
            Slot{}) {}

  // `evictions`: block evictions before this one.
  void remember(EvictionKey key, std::int64_t evictions) { slots_[slot(key)] = {key, evictions}; }
  // Evictions since the key left (>= 1), once for a key remembered and not
  // overwritten since; 0 otherwise.
  std::int64_t take(EvictionKey key, std::int64_t evictions) {
    Slot& s = slots_[slot(key)];
    if (s.key != key || key == 0) return 0;
    s.key = 0;
    return evictions - s.evictions;
  }
  std::size_t capacity() const { return slots_.size(); }

 private:
  std::size_t slot(EvictionKey key) const {
    // Keys are hashes already; mix the high half in for tables past 2^32.
    return static_cast<std::size_t>(key ^ (key >> 32)) & (slots_.size() - 1);
  }
  struct Slot {
    EvictionKey key = 0;
    std::int64_t evictions = 0;
  };
  std::vector<Slot> slots_;
};

}  // namespace kvcache::detail
