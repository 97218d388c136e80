// What eviction churn is measured with: a direct-mapped table of the keys of
// recently evicted prefix blocks. A prompt's block that misses and finds its
// key here was evicted and asked for again (a refetch). Bounded (one key per
// slot, twice the pool's blocks, at least 1024), allocated once; a newer
// eviction overwrites an older key in its slot, so the count is a lower
// bound for reuse distances near the table's size.
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
            0) {}

  void remember(EvictionKey key) { slots_[slot(key)] = key; }
  // True once for a key remembered and not overwritten since.
  bool take(EvictionKey key) {
    EvictionKey& s = slots_[slot(key)];
    if (s != key || key == 0) return false;
    s = 0;
    return true;
  }
  std::size_t capacity() const { return slots_.size(); }

 private:
  std::size_t slot(EvictionKey key) const {
    // Keys are hashes already; mix the high half in for tables past 2^32.
    return static_cast<std::size_t>(key ^ (key >> 32)) & (slots_.size() - 1);
  }
  std::vector<EvictionKey> slots_;
};

}  // namespace kvcache::detail
