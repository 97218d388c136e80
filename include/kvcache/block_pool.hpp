// Fixed-size blocks carved from one arena: O(1) allocate and free, reference
// counts for sharing. The pool holds only metadata (ids and counts); the bytes
// live in the backend's arena, block id b at b x page_bytes.
//
// A block is in one of three states:
//   in use  reference count >= 1;
//   cached  reference count 0 but its contents are kept for reuse (a prefix
//           cache entry): not free until reclaimed, revived on a hit;
//   free    on the free stack.
// Free blocks are kept on a LIFO stack so a block freed now is the next one
// handed out (warm in cache). Nothing here allocates after construction.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "kvcache/error.hpp"

namespace kvcache {

using BlockId = std::int32_t;

class BlockPool {
 public:
  static constexpr std::int64_t kMaxBlocks = (std::int64_t{1} << 31) - 1;

  explicit BlockPool(std::int64_t num_blocks) {
    if (num_blocks < 1 || num_blocks > kMaxBlocks) {
      detail::raise<InvalidArgument>("BlockPool: num_blocks {} is outside [1, {}]", num_blocks,
                                     kMaxBlocks);
    }
    const auto count = static_cast<std::size_t>(num_blocks);
    free_stack_.resize(count);
    ref_counts_.assign(count, 0);
    cached_.assign(count, 0);
    // Hand out low ids first: block 0 is on top of the stack.
    for (std::size_t i = 0; i < count; ++i) {
      free_stack_[i] = static_cast<BlockId>(count - 1 - i);
    }
    free_top_ = num_blocks;
  }

  std::int64_t capacity() const noexcept { return static_cast<std::int64_t>(ref_counts_.size()); }
  std::int64_t num_free() const noexcept { return free_top_; }
  std::int64_t num_cached() const noexcept { return num_cached_; }
  // Blocks referenced by at least one owner.
  std::int64_t num_used() const noexcept { return capacity() - free_top_ - num_cached_; }

  // A free block with reference count 1, or nullopt when the pool is full.
  std::optional<BlockId> try_allocate() noexcept {
    if (free_top_ == 0) return std::nullopt;
    const BlockId id = free_stack_[static_cast<std::size_t>(--free_top_)];
    ref_counts_[static_cast<std::size_t>(id)] = 1;
    return id;
  }

  // All of `out.size()` blocks or none: false (and nothing taken) when fewer
  // are free.
  bool try_allocate(std::span<BlockId> out) noexcept {
    if (static_cast<std::int64_t>(out.size()) > free_top_) return false;
    for (BlockId& id : out)
      id = *try_allocate();
    return true;
  }

  // One more owner of an allocated block (sharing).
  void retain(BlockId id) {
    check_allocated(id, "retain");
    ++ref_counts_[static_cast<std::size_t>(id)];
  }

  // One owner fewer; returns true when that freed the block.
  bool release(BlockId id) {
    check_allocated(id, "release");
    auto& count = ref_counts_[static_cast<std::size_t>(id)];
    if (--count > 0) return false;
    free_stack_[static_cast<std::size_t>(free_top_++)] = id;
    return true;
  }

  // One owner fewer; at zero the block becomes cached instead of free.
  // Returns true when it became cached.
  bool release_to_cache(BlockId id) {
    check_allocated(id, "release_to_cache");
    auto& count = ref_counts_[static_cast<std::size_t>(id)];
    if (--count > 0) return false;
    cached_[static_cast<std::size_t>(id)] = 1;
    ++num_cached_;
    return true;
  }

  // A cached block gets an owner again (a prefix-cache hit).
  void revive(BlockId id) {
    check_cached(id, "revive");
    cached_[static_cast<std::size_t>(id)] = 0;
    --num_cached_;
    ref_counts_[static_cast<std::size_t>(id)] = 1;
  }

  // A cached block's contents are dropped: it becomes free (eviction).
  void reclaim(BlockId id) {
    check_cached(id, "reclaim");
    cached_[static_cast<std::size_t>(id)] = 0;
    --num_cached_;
    free_stack_[static_cast<std::size_t>(free_top_++)] = id;
  }

  std::int32_t ref_count(BlockId id) const {
    check_range(id, "ref_count");
    return ref_counts_[static_cast<std::size_t>(id)];
  }

  bool is_cached(BlockId id) const {
    check_range(id, "is_cached");
    return cached_[static_cast<std::size_t>(id)] != 0;
  }

  bool is_free(BlockId id) const { return ref_count(id) == 0 && !is_cached(id); }

 private:
  // The checks are a compare on the hot path; the message is built out of line.
  enum class Fault { kRange, kNotCached, kNotAllocated };
  KVCACHE_ALWAYS_INLINE void check_range(BlockId id, const char* what) const {
    if (id < 0 || id >= capacity()) [[unlikely]]
      fail(Fault::kRange, id, what);
  }
  KVCACHE_ALWAYS_INLINE void check_cached(BlockId id, const char* what) const {
    check_range(id, what);
    if (cached_[static_cast<std::size_t>(id)] == 0) [[unlikely]]
      fail(Fault::kNotCached, id, what);
  }
  KVCACHE_ALWAYS_INLINE void check_allocated(BlockId id, const char* what) const {
    check_range(id, what);
    if (ref_counts_[static_cast<std::size_t>(id)] <= 0) [[unlikely]]
      fail(Fault::kNotAllocated, id, what);
  }
  [[noreturn]] KVCACHE_COLD void fail(Fault fault, BlockId id, const char* what) const {
    if (fault == Fault::kRange) {
      detail::raise<OutOfRange>("BlockPool::{}: block id {} is outside [0, {})", what, id,
                                capacity());
    }
    if (fault == Fault::kNotCached) {
      detail::raise<InvalidArgument>("BlockPool::{}: block {} is not cached", what, id);
    }
    detail::raise<InvalidArgument>("BlockPool::{}: block {} is free or cached (reference count 0)",
                                   what, id);
  }

  std::vector<BlockId> free_stack_;
  std::vector<std::int32_t> ref_counts_;
  std::vector<std::uint8_t> cached_;
  std::int64_t free_top_ = 0;
  std::int64_t num_cached_ = 0;
};

}  // namespace kvcache
