// The manager's bookkeeping invariants, checked on demand (tests run them
// after every step): every block's reference count equals the number of
// block tables holding it; a block is exactly one of in use, cached, free;
// cached blocks are keyed and evictable; the counts add up; each sequence's
// blocks hold its tokens.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kvcache/error.hpp"
#include "kvcache/kernels/page_math.hpp"
#include "kvcache/policy/concepts.hpp"
#include "kvcache/types.hpp"

namespace kvcache::detail {

template <class Table, class Ledger, class Storage>
void check_invariants(const Table& table, const Ledger& ledger, const Storage& codec,
                      std::int32_t block_size) {
  const auto& allocation = ledger.allocation();
  using Allocation = std::decay_t<decltype(allocation)>;
  const std::int64_t num_blocks = allocation.num_blocks();
  std::vector<std::int32_t> owners(static_cast<std::size_t>(num_blocks), 0);
  std::int64_t parked = 0;
  table.for_each([&](SeqId id, const auto& s) {
    const auto blocks = static_cast<std::int64_t>(s.blocks.size());
    const std::int64_t written =
        kernels::pages_for_tokens(codec.paged_tokens(s.codec, s.num_tokens), block_size);
    if (codec.token_capacity(blocks) < s.num_tokens || written > blocks) {
      raise<Error>("invariant: sequence {} holds {} tokens in {} blocks", id, s.num_tokens,
                   s.blocks.size());
    }
    parked += s.parked ? 1 : 0;
    for (std::size_t i = 0; i < s.blocks.size(); ++i) {
      const BlockId block = s.blocks[i];
      if (block < 0 || block >= num_blocks) {
        raise<Error>("invariant: sequence {} holds block id {}", id, block);
      }
      if (Allocation::kContiguous && block != s.blocks.front() + static_cast<BlockId>(i)) {
        raise<Error>("invariant: sequence {}'s region is not contiguous at {}", id, i);
      }
      ++owners[static_cast<std::size_t>(block)];
    }
  });
  std::int64_t used = 0, cached = 0, keyed = 0;
  for (BlockId block = 0; block < num_blocks; ++block) {
    const std::int32_t expected = owners[static_cast<std::size_t>(block)];
    if (allocation.ref_count(block) != expected) {
      raise<Error>("invariant: block {} has reference count {} but {} owners", block,
                   allocation.ref_count(block), expected);
    }
    used += expected > 0 ? 1 : 0;
    if constexpr (!Allocation::kContiguous) {
      const bool is_cached = allocation.pool().is_cached(block);
      if (is_cached && expected > 0)
        raise<Error>("invariant: block {} is cached and in use", block);
      cached += is_cached ? 1 : 0;
      const EvictionKey key = ledger.index().key_of(block);
      if (key != 0) {
        ++keyed;
        if (ledger.index().find(key) != block) {
          raise<Error>("invariant: block {} has key {} that the index does not map to it", block,
                       key);
        }
      } else if (is_cached) {
        raise<Error>("invariant: cached block {} has no key", block);
      }
    }
  }
  if (keyed != ledger.index().size()) {
    raise<Error>("invariant: {} keyed blocks but {} index entries", keyed, ledger.index().size());
  }
  std::int64_t withheld = 0;  // by a budget under the pool's size
  if constexpr (requires { allocation.num_withheld(); }) withheld = allocation.num_withheld();
  if (cached != allocation.num_cached() ||
      used + cached + allocation.num_free() + withheld != num_blocks) {
    raise<Error>("invariant: {} used + {} cached + {} free + {} withheld blocks != {}", used,
                 cached, allocation.num_free(), withheld, num_blocks);
  }
  using Eviction = std::decay_t<decltype(ledger.eviction())>;
  if (Eviction::kRetains && ledger.eviction().size() != cached + parked) {
    raise<Error>("invariant: eviction policy holds {} entries, expected {} cached + {} parked",
                 ledger.eviction().size(), cached, parked);
  }
}

}  // namespace kvcache::detail
