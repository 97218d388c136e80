// Paged (chunked) allocation: a sequence's cache is a list of fixed-size
// blocks anywhere in the arena, found through its block table (vLLM's
// PagedAttention). Growing a sequence takes free blocks in O(1) each and never
// moves data.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "kvcache/block_pool.hpp"

namespace kvcache {

class PagedAllocation {
 public:
  static constexpr std::string_view kName = "paged";

  explicit PagedAllocation(std::int64_t num_blocks) : pool_(num_blocks) {}

  std::int64_t num_blocks() const { return pool_.capacity(); }
  std::int64_t num_free() const { return pool_.num_free(); }
  const BlockPool& pool() const { return pool_; }

  // Appends `count` fresh blocks to `table`; false, with `table` unchanged,
  // when fewer are free.
  bool try_extend(std::vector<BlockId>& table, std::int64_t count) {
    if (count > pool_.num_free()) return false;
    const std::size_t old_size = table.size();
    table.resize(old_size + static_cast<std::size_t>(count));
    return pool_.try_allocate(std::span<BlockId>(table).subspan(old_size));
  }

  // Drops one owner of each block of `table` (a released sequence).
  void release(std::span<const BlockId> table) {
    for (BlockId block : table)
      pool_.release(block);
  }

 private:
  BlockPool pool_;
};

}  // namespace kvcache
