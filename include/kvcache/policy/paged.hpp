// Paged (chunked) allocation: a sequence's cache is a list of fixed-size
// blocks anywhere in the arena, found through its block table (vLLM's
// PagedAttention, the article's ChunkedKVCache). Growing a sequence takes free
// blocks in O(1) each and never moves data; blocks can be shared (prefix
// sharing, fork) and cached after their last owner lets go.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "kvcache/block_pool.hpp"
#include "kvcache/error.hpp"
#include "kvcache/policy/concepts.hpp"

namespace kvcache {

class PagedAllocation {
 public:
  static constexpr std::string_view kName = "paged";
  static constexpr bool kContiguous = false;

  // Block sizes the page-table consumers (FlashInfer, vLLM) take.
  static void validate_block_size(std::int32_t block_size) {
    if (block_size < 1 || block_size > 1024 || (block_size & (block_size - 1)) != 0) {
      detail::raise<InvalidArgument>(
          "PagedAllocation: block_size {} must be a power of two in [1, 1024]", block_size);
    }
  }

  PagedAllocation(std::int64_t num_blocks, std::int64_t /*initial_blocks*/)
      : pool_(num_blocks), budget_(num_blocks) {}

  std::int64_t num_blocks() const { return pool_.capacity(); }
  // Free blocks within the budget: the pool's free blocks less those the
  // budget withholds.
  std::int64_t num_free() const {
    return std::max<std::int64_t>(0, pool_.num_free() - num_withheld());
  }
  // The budget: how many of the pool's blocks may hold data (used or
  // cached); set_budget_blocks (budget.hpp) changes it.
  std::int64_t budget() const { return budget_; }
  std::int64_t num_withheld() const { return pool_.capacity() - budget_; }
  // Only once used + cached blocks fit in `blocks` (the caller evicts first).
  void set_budget(std::int64_t blocks) { budget_ = blocks; }
  std::int64_t num_cached() const { return pool_.num_cached(); }
  std::int32_t ref_count(BlockId id) const { return pool_.ref_count(id); }
  const BlockPool& pool() const { return pool_; }
  BlockPool& pool() { return pool_; }
  AllocationStats stats() const { return stats_; }

  // Grows `table` to `needed_blocks` blocks with fresh ones; false, with
  // `table` unchanged, when too few are free. Paged growth never moves data.
  bool try_grow(std::vector<BlockId>& table, std::int64_t /*used_blocks*/,
                std::int64_t needed_blocks, BlockMoves& /*moves*/) {
    const auto old_size = static_cast<std::int64_t>(table.size());
    const std::int64_t count = needed_blocks - old_size;
    if (count <= 0) return true;
    if (count > num_free()) return false;
    table.resize(static_cast<std::size_t>(needed_blocks));
    pool_.try_allocate(std::span<BlockId>(table).subspan(static_cast<std::size_t>(old_size)));
    stats_.blocks_allocated += count;
    return true;
  }

  // Drops one owner of each block of a released table.
  void release_table(std::span<const BlockId> table) {
    for (BlockId block : table)
      pool_.release(block);
  }

 private:
  BlockPool pool_;
  std::int64_t budget_;
  AllocationStats stats_;
};

static_assert(AllocationPolicy<PagedAllocation>);

}  // namespace kvcache
