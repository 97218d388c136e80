// A map from eviction keys to 32-bit slot numbers in one flat array: open
// addressing, linear probing, deletion by backward shift (no tombstones, so a
// long run of inserts and erases does not slow the probes), grown when half
// full. A find is one hash and, at that load, one or two neighbouring cells:
// what a policy that touches every key of a lookup several times needs, where
// a node-based map's allocations and pointer chases dominate.
//
// The home cell is taken from the top bits of a 64-bit mix of the key
// (MurmurHash3's finalizer), not of a plain multiplicative hash: the shadow
// caches' sampling keeps the keys whose multiplicative hash is small, so its
// top bits would be mostly zero in a table of sampled keys.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcache/policy/concepts.hpp"

namespace kvcache::detail {

class FlatKeyIndex {
 public:
  static constexpr std::uint32_t kNone = 0xFFFFFFFFu;

  // Room for `expected` keys before the first growth.
  explicit FlatKeyIndex(std::size_t expected = 8) {
    resize(std::bit_ceil(std::max<std::size_t>(16, 2 * expected)));
  }

  // The slot of `key`, or kNone.
  std::uint32_t find(EvictionKey key) const {
    for (std::size_t i = home(key);; i = (i + 1) & mask_) {
      const Cell& cell = cells_[i];
      if (cell.slot == kNone || cell.key == key) return cell.slot;
    }
  }
  // Maps `key` (absent: the caller found kNone) to `slot` (not kNone).
  void insert(EvictionKey key, std::uint32_t slot) {
    if (2 * (size_ + 1) > cells_.size()) resize(2 * cells_.size());
    place(key, slot);
    ++size_;
  }
  // Removes `key`; false if it was absent.
  bool erase(EvictionKey key) {
    std::size_t hole = home(key);
    for (;; hole = (hole + 1) & mask_) {
      if (cells_[hole].slot == kNone) return false;
      if (cells_[hole].key == key) break;
    }
    // Backward shift: a later cell of the run moves into the hole when its
    // home is not between the hole and itself (cyclically), so every key
    // stays reachable from its home without crossing an empty cell.
    for (std::size_t next = (hole + 1) & mask_; cells_[next].slot != kNone;
         next = (next + 1) & mask_) {
      const std::size_t from_home = (next - home(cells_[next].key)) & mask_;
      if (from_home >= ((next - hole) & mask_)) {
        cells_[hole] = cells_[next];
        hole = next;
      }
    }
    cells_[hole].slot = kNone;
    --size_;
    return true;
  }
  std::size_t size() const { return size_; }
  // Cells allocated (twice the keys at most, before a growth).
  std::size_t cells() const { return cells_.size(); }
  void clear() {
    for (Cell& cell : cells_)
      cell.slot = kNone;
    size_ = 0;
  }

 private:
  struct Cell {
    EvictionKey key = 0;
    std::uint32_t slot = kNone;
  };

  std::size_t home(EvictionKey key) const {
    std::uint64_t h = key;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return static_cast<std::size_t>(h >> shift_);
  }
  void place(EvictionKey key, std::uint32_t slot) {
    std::size_t i = home(key);
    while (cells_[i].slot != kNone)
      i = (i + 1) & mask_;
    cells_[i] = Cell{key, slot};
  }
  void resize(std::size_t cells) {
    std::vector<Cell> old = std::move(cells_);
    cells_.assign(cells, Cell{});
    mask_ = cells - 1;
    shift_ = 64 - std::countr_zero(cells);
    for (const Cell& cell : old)
      if (cell.slot != kNone) place(cell.key, cell.slot);
  }

  std::vector<Cell> cells_;
  std::size_t mask_ = 0;
  int shift_ = 64;
  std::size_t size_ = 0;
};

}  // namespace kvcache::detail
