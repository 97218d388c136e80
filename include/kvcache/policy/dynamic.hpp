// Dynamic allocation: each sequence owns one contiguous region of blocks in
// the pool's arena, preallocated at an initial capacity and grown by doubling
// (the article's DynamicKVCache). A region grows in place when the blocks
// after it are free; otherwise it moves to a new region and the manager
// copies the data with the copy kernel. Released regions go back to a reuse
// pool of free extents (coalesced with their neighbours) from which the next
// request takes the best fit, the article's KVCacheAllocator; the stats count
// how often a region came from released space.
//
// Regions are owned by one sequence: no sharing, so fork copies and prefix
// sharing needs PagedAllocation. Free space can fragment: a request can fail
// while enough blocks are free in total, which is the cost this strategy pays
// for contiguous memory.
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "kvcache/error.hpp"
#include "kvcache/policy/concepts.hpp"

namespace kvcache {

class DynamicAllocation {
 public:
  static constexpr std::string_view kName = "dynamic";
  static constexpr bool kContiguous = true;

  static void validate_block_size(std::int32_t block_size) {
    if (block_size < 1 || block_size > 1024) {
      detail::raise<InvalidArgument>("DynamicAllocation: block_size {} is outside [1, 1024]",
                                     block_size);
    }
  }

  // `initial_blocks`: capacity of a new region (at least 1).
  DynamicAllocation(std::int64_t num_blocks, std::int64_t initial_blocks)
      : num_blocks_(num_blocks), initial_blocks_(std::max<std::int64_t>(1, initial_blocks)) {
    if (num_blocks < 1 || num_blocks > (std::int64_t{1} << 31) - 1) {
      detail::raise<InvalidArgument>("DynamicAllocation: num_blocks {} is outside [1, 2^31)",
                                     num_blocks);
    }
    owned_.assign(static_cast<std::size_t>(num_blocks), 0);
    add_free(0, num_blocks);
  }

  std::int64_t num_blocks() const { return num_blocks_; }
  std::int64_t num_free() const { return free_blocks_; }
  std::int64_t num_cached() const { return 0; }
  std::int32_t ref_count(BlockId id) const {
    if (id < 0 || id >= num_blocks_) {
      detail::raise<OutOfRange>("DynamicAllocation: block id {} is outside [0, {})", id,
                                num_blocks_);
    }
    return owned_[static_cast<std::size_t>(id)];
  }
  AllocationStats stats() const { return stats_; }
  // The longest run of free blocks: the largest region that can be handed out.
  std::int64_t largest_free_extent() const {
    return by_size_.empty() ? 0 : by_size_.rbegin()->first;
  }
  std::int64_t num_free_extents() const { return static_cast<std::int64_t>(by_start_.size()); }

  // Makes `table` (a region, or empty) hold at least `needed_blocks` blocks.
  // Tries, in order: the doubled capacity, then exactly what is needed; each
  // first in place, then as a new best-fit region whose first `used_blocks`
  // blocks the caller copies (`moves`). False, with nothing changed, when no
  // free extent is large enough.
  bool try_grow(std::vector<BlockId>& table, std::int64_t used_blocks, std::int64_t needed_blocks,
                BlockMoves& moves) {
    const auto capacity = static_cast<std::int64_t>(table.size());
    if (needed_blocks <= capacity) return true;
    const std::int64_t doubled =
        std::max(needed_blocks, capacity == 0 ? initial_blocks_ : 2 * capacity);
    for (std::int64_t want : {doubled, needed_blocks}) {
      if (capacity > 0 && grow_in_place(table, want)) return true;
      if (auto start = take_best_fit(want)) {
        const BlockId first = *start;
        for (std::int64_t i = 0; i < std::min(used_blocks, capacity); ++i) {
          moves.emplace_back(table[static_cast<std::size_t>(i)], static_cast<BlockId>(first + i));
        }
        if (capacity > 0) {
          release_table(table);
          ++stats_.relocations;
          stats_.blocks_moved += std::min(used_blocks, capacity);
        }
        table.resize(static_cast<std::size_t>(want));
        for (std::int64_t i = 0; i < want; ++i)
          table[static_cast<std::size_t>(i)] = static_cast<BlockId>(first + i);
        return true;
      }
      if (want == needed_blocks) break;
    }
    return false;
  }

  // Returns a region (the blocks of one table, contiguous) to the reuse pool.
  void release_table(std::span<const BlockId> table) {
    if (table.empty()) return;
    const BlockId start = table.front();
    const auto length = static_cast<std::int64_t>(table.size());
    for (std::int64_t i = 0; i < length; ++i) {
      auto& owned = owned_[static_cast<std::size_t>(start + i)];
      if (table[static_cast<std::size_t>(i)] != start + i || owned == 0) {
        detail::raise<InvalidArgument>(
            "DynamicAllocation: table of {} blocks from {} is not an allocated region", length,
            start);
      }
    }
    for (std::int64_t i = 0; i < length; ++i)
      owned_[static_cast<std::size_t>(start + i)] = 0;
    add_free(start, length);
  }

 private:
  bool grow_in_place(std::vector<BlockId>& table, std::int64_t want) {
    const auto capacity = static_cast<std::int64_t>(table.size());
    const BlockId end = static_cast<BlockId>(table.front() + capacity);
    auto it = by_start_.find(end);
    if (it == by_start_.end() || it->second < want - capacity) return false;
    take(end, it->second, want - capacity);
    for (std::int64_t i = capacity; i < want; ++i)
      table.push_back(static_cast<BlockId>(table.front() + i));
    ++stats_.grown_in_place;
    stats_.blocks_allocated += want - capacity;
    return true;
  }

  std::optional<BlockId> take_best_fit(std::int64_t want) {
    auto it = by_size_.lower_bound({want, 0});
    if (it == by_size_.end()) return std::nullopt;
    const auto [length, start] = *it;
    take(start, length, want);
    ++stats_.regions;
    if (start < high_water_) ++stats_.regions_reused;
    high_water_ = std::max<std::int64_t>(high_water_, start + want);
    stats_.blocks_allocated += want;
    return start;
  }

  // Takes the first `want` blocks of the free extent [start, start + length).
  void take(BlockId start, std::int64_t length, std::int64_t want) {
    by_start_.erase(start);
    by_size_.erase({length, start});
    if (length > want) {
      const auto rest = static_cast<BlockId>(start + want);
      by_start_.emplace(rest, length - want);
      by_size_.emplace(length - want, rest);
    }
    for (std::int64_t i = 0; i < want; ++i)
      owned_[static_cast<std::size_t>(start + i)] = 1;
    free_blocks_ -= want;
  }

  // Adds [start, start + length) to the free extents, merging neighbours.
  void add_free(BlockId start, std::int64_t length) {
    free_blocks_ += length;
    auto next = by_start_.lower_bound(start);
    if (next != by_start_.end() && next->first == start + length) {
      length += next->second;
      by_size_.erase({next->second, next->first});
      next = by_start_.erase(next);
    }
    if (next != by_start_.begin()) {
      auto previous = std::prev(next);
      if (previous->first + previous->second == start) {
        start = previous->first;
        length += previous->second;
        by_size_.erase({previous->second, previous->first});
        by_start_.erase(previous);
      }
    }
    by_start_.emplace(start, length);
    by_size_.emplace(length, start);
  }

  std::int64_t num_blocks_;
  std::int64_t initial_blocks_;
  std::int64_t free_blocks_ = 0;
  std::int64_t high_water_ = 0;               // blocks at or above it were never handed out
  std::map<BlockId, std::int64_t> by_start_;  // free extents by first block
  std::set<std::pair<std::int64_t, BlockId>> by_size_;  // the same, by (length, first)
  std::vector<std::int32_t> owned_;                     // 1 while in a region
  AllocationStats stats_;
};

static_assert(AllocationPolicy<DynamicAllocation>);

}  // namespace kvcache
