// A live budget: how many of a paged cache's preallocated blocks may hold
// data (used or cached). The arena stays allocated; a smaller budget makes
// the rest unavailable, so the memory a cache takes can follow a limit that
// changes while it runs (the tuner, tuner/tuner.hpp, moves it).
//
//   kvcache::set_budget_blocks(cache, 3000);   // true, or false: nothing changed
//
// Growing always succeeds. Shrinking evicts first (cached blocks and parked
// sequences, in the eviction policy's order) and never drops a block a
// running sequence holds: when those alone exceed the new budget it returns
// false and changes nothing.
#pragma once

#include <cstdint>
#include <vector>

#include "kvcache/detail/manager_access.hpp"
#include "kvcache/error.hpp"
#include "kvcache/types.hpp"

namespace kvcache {

// Read from the allocation (memory() would walk every sequence).
template <class Manager>
std::int64_t budget_blocks(const Manager& m) {
  return detail::ManagerAccess::ledger(m).budget();
}

// Blocks held by sequences the eviction policy cannot drop (running ones;
// parked ones too under a policy that keeps nothing), each counted once.
template <class Manager>
std::int64_t pinned_blocks(Manager& m) {
  std::vector<char> held(static_cast<std::size_t>(m.num_blocks()), 0);
  std::int64_t count = 0;
  detail::ManagerAccess::sequences(m).for_each([&](SeqId, const auto& s) {
    if (s.parked && Manager::Eviction::kRetains) return;
    for (BlockId block : s.blocks) {
      char& mark = held[static_cast<std::size_t>(block)];
      count += mark == 0 ? 1 : 0;
      mark = 1;
    }
  });
  return count;
}

template <class Manager>
bool set_budget_blocks(Manager& m, std::int64_t blocks) {
  using Allocation = typename Manager::Allocation;
  if constexpr (Allocation::kContiguous) {
    detail::raise<InvalidArgument>(
        "set_budget_blocks: {} allocation has no budget (PagedAllocation has)", Allocation::kName);
  } else {
    if (blocks < 1 || blocks > m.num_blocks()) {
      detail::raise<InvalidArgument>(
          "set_budget_blocks: {} blocks (allowed: 1 to {}, the pool's size)", blocks,
          m.num_blocks());
    }
    auto& ledger = detail::ManagerAccess::ledger(m);
    auto& allocation = ledger.allocation_mut();
    if (blocks >= allocation.budget()) {
      allocation.set_budget(blocks);
      return true;
    }
    if (pinned_blocks(m) > blocks) return false;
    // Everything else can go: cached blocks, and parked sequences (whose
    // keyed blocks become cached, then go too).
    const std::int64_t withheld = m.num_blocks() - blocks;
    const bool room = ledger.evict_until([&] { return allocation.pool().num_free() >= withheld; },
                                         detail::ManagerAccess::drop_sequence(m));
    if (!room) {
      detail::raise<Error>(
          "set_budget_blocks: {} blocks were free after evicting everything evictable, {} needed",
          allocation.pool().num_free(), withheld);
    }
    allocation.set_budget(blocks);
    return true;
  }
}

}  // namespace kvcache
