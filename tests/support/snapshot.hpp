// Everything observable about a manager's bookkeeping, to show that a refused
// call changed nothing (shared by the unit tests and the fuzz targets, so no
// GoogleTest here).
#pragma once

#include <cstdint>
#include <vector>

#include "kvcache/kvcache.hpp"

namespace kvcache::testing {

struct Snapshot {
  MemoryStats memory;
  std::vector<SequenceInfo> sequences;
  std::vector<std::int32_t> ref_counts;

  template <class Manager>
  static Snapshot of(const Manager& manager, const std::vector<SeqId>& ids) {
    Snapshot s;
    s.memory = manager.memory();
    for (SeqId id : ids) {
      if (manager.contains(id)) s.sequences.push_back(manager.sequence(id));
    }
    for (BlockId b = 0; b < manager.num_blocks(); ++b)
      s.ref_counts.push_back(manager.ref_count(b));
    return s;
  }

  friend bool operator==(const Snapshot& a, const Snapshot& b) {
    auto same_memory = [](const MemoryStats& x, const MemoryStats& y) {
      return x.arena_bytes == y.arena_bytes && x.used_blocks == y.used_blocks &&
             x.free_blocks == y.free_blocks && x.cached_blocks == y.cached_blocks &&
             x.num_sequences == y.num_sequences && x.parked_sequences == y.parked_sequences &&
             x.stored_tokens == y.stored_tokens && x.reserved_tokens == y.reserved_tokens;
    };
    if (!same_memory(a.memory, b.memory) || a.sequences.size() != b.sequences.size() ||
        a.ref_counts != b.ref_counts) {
      return false;
    }
    for (std::size_t i = 0; i < a.sequences.size(); ++i) {
      if (a.sequences[i].id != b.sequences[i].id ||
          a.sequences[i].num_tokens != b.sequences[i].num_tokens ||
          a.sequences[i].blocks != b.sequences[i].blocks) {
        return false;
      }
    }
    return true;
  }
};

}  // namespace kvcache::testing
