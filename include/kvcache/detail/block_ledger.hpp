// The block ledger: who holds which block, and what goes when room is needed.
// It owns the allocation policy (free blocks, regions), the eviction policy
// (the order in which unreferenced entries go) and the prefix index (which
// block holds which prefix), and keeps them consistent: a released keyed
// block becomes cached (or free), a cache hit revives it, an eviction drops
// a cached block or hands a parked sequence back to the manager to drop.
// Block copies it decides on (copy-on-write, relocation, fork of a region)
// are queued in moves() for the manager's copy kernel.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "kvcache/error.hpp"

#include "kvcache/detail/eviction_ghosts.hpp"
#include "kvcache/detail/prefix_index.hpp"
#include "kvcache/detail/sequence_table.hpp"
#include "kvcache/kernels/page_math.hpp"
#include "kvcache/policy/concepts.hpp"
#include "kvcache/policy/shadow_cache.hpp"
#include "kvcache/types.hpp"

namespace kvcache::detail {

// Told of every cached block an eviction drops, while its page still holds
// the block (before anything can reuse it): a tier copies it out.
class EvictionSink {
 public:
  virtual void spill(BlockId block, EvictionKey key) = 0;

 protected:
  ~EvictionSink() = default;
};

template <class Allocation, class Eviction, class Sharing>
class BlockLedger {
  // An eviction policy that learns from whole lookups (AdaptiveEviction).
  static constexpr bool kEvictionFollowsLookups =
      requires(Eviction & e, std::span<const EvictionKey> chain) {
    e.on_lookup(chain);
  };

 public:
  using Index = PrefixIndex<Sharing>;

  explicit BlockLedger(const CacheConfig& config)
      : allocation_(config.num_blocks,
                    kernels::pages_for_tokens(config.initial_tokens, config.block_size)),
        eviction_(config.num_blocks),
        index_(config.num_blocks),
        ghosts_(Sharing::kEnabled ? config.num_blocks : 0),
        block_size_(config.block_size) {
    moves_.reserve(static_cast<std::size_t>(config.num_blocks));
  }

  const Allocation& allocation() const { return allocation_; }
  Allocation& allocation_mut() { return allocation_; }  // checkpoint restore
  Eviction& eviction() { return eviction_; }
  const Eviction& eviction() const { return eviction_; }
  const Index& index() const { return index_; }
  BlockMoves& moves() { return moves_; }
  CacheStats& counters() { return counters_; }
  const CacheStats& counters() const { return counters_; }
  std::int64_t num_free() const { return allocation_.num_free(); }
  // Blocks that may hold data: a paged budget (budget.hpp), or all of them.
  std::int64_t budget() const {
    if constexpr (requires { allocation_.budget(); }) {
      return allocation_.budget();
    } else {
      return allocation_.num_blocks();
    }
  }
  std::int64_t num_cached() const { return allocation_.num_cached(); }

  void set_listener(std::function<void(const EvictionEvent&)> listener) {
    listener_ = std::move(listener);
  }
  void set_sink(EvictionSink* sink) { sink_ = sink; }
  void set_events(KvEventSink* events) { index_.set_events(events); }
  // Drops every prefix key (cached blocks are freed); returns the blocks freed.
  std::int64_t clear_prefix_cache() {
    if constexpr (Allocation::kContiguous) {
      return 0;
    } else {
      return index_.clear(allocation_, eviction_);
    }
  }

  // Evicts victims until done() holds: a cached block is dropped here, a
  // parked sequence is dropped by drop_sequence(seq). False when nothing is
  // left to evict and done() still does not hold.
  template <class Done, class DropSequence>
  bool evict_until(Done done, DropSequence drop_sequence) {
    while (!done()) {
      const std::optional<EvictionKey> victim = eviction_.pop_victim();
      if (!victim) return false;
      EvictionEvent event;
      event.key = *victim;
      if ((*victim & kSequenceKeyBit) != 0) {
        event.kind = EvictionKind::kSequence;
        event.sequence = *victim & ~kSequenceKeyBit;
        drop_sequence(event.sequence);
        ++counters_.evicted_sequences;
      } else {
        event.kind = EvictionKind::kBlock;
        if (sink_ != nullptr) {
          if (const std::optional<BlockId> block = index_.find(*victim))
            sink_->spill(*block, *victim);
        }
        event.block = index_.drop_cached(*victim, allocation_);
        ghosts_.remember(*victim, counters_.evicted_blocks);
        ++counters_.evicted_blocks;
      }
      notify(event);
    }
    return true;
  }

  // Makes `table` hold `needed` blocks, evicting as needed; its first `used`
  // blocks hold data (a relocated region queues their copy). With
  // `copy_index` >= 0 the shared block at that index is first copied to a
  // private one. False, with nothing changed, when no room can be made.
  template <class DropSequence>
  bool reserve(std::vector<BlockId>& table, std::int64_t used, std::int64_t needed,
               std::int64_t copy_index, DropSequence drop_sequence) {
    if constexpr (Allocation::kContiguous) {
      if (evict_until([&] { return allocation_.try_grow(table, used, needed, moves_); },
                      drop_sequence))
        return true;
      ++counters_.reserve_failures;
      return false;
    } else {
      const std::int64_t missing =
          std::max<std::int64_t>(0, needed - static_cast<std::int64_t>(table.size())) +
          (copy_index >= 0 ? 1 : 0);
      if (!evict_until([&] { return allocation_.num_free() >= missing; }, drop_sequence)) {
        ++counters_.reserve_failures;
        return false;
      }
      if (copy_index >= 0) copy_on_write(table, static_cast<std::size_t>(copy_index));
      allocation_.try_grow(table, used, needed, moves_);
      return true;
    }
  }

  // A fork's blocks: paged tables share the parent's first `used` blocks;
  // a contiguous region gets its own copy (queued in moves()). False when
  // there is no room.
  template <class DropSequence>
  bool fork(std::span<const BlockId> parent, std::int64_t used, std::vector<BlockId>& child,
            DropSequence drop_sequence) {
    if (used == 0) return true;
    if constexpr (Allocation::kContiguous) {
      if (!reserve(child, 0, used, -1, drop_sequence)) return false;
      for (std::int64_t i = 0; i < used; ++i) {
        moves_.emplace_back(parent[static_cast<std::size_t>(i)],
                            child[static_cast<std::size_t>(i)]);
      }
    } else {
      child.assign(parent.begin(), parent.begin() + used);
      for (BlockId block : child)
        allocation_.pool().retain(block);
    }
    return true;
  }

  // Gives a table's blocks back: shared blocks to their other owners, keyed
  // blocks to the cache when the eviction policy keeps entries (tail first,
  // so deeper blocks are evicted before their parents), the rest to the free
  // list.
  void release(std::span<const BlockId> table) {
    if constexpr (Allocation::kContiguous) {
      allocation_.release_table(table);
    } else {
      for (std::size_t i = table.size(); i-- > 0;)
        release_block(table[i]);
    }
  }

  // Prefix sharing (no-ops without it): the cached blocks of a prompt's
  // longest cached prefix, and the keys of newly completed blocks. The
  // prompt's blocks past the hit that were evicted lately count as refetched.
  template <class Seq>
  std::size_t acquire_prefix(Seq& s, std::int32_t block_size) {
    const std::size_t taken =
        index_.match(s.tokens, block_size, allocation_, eviction_, s.blocks, s.hashes, counters_);
    if constexpr (Sharing::kEnabled) {
      // The chain of the whole prompt goes to whoever follows lookups (an
      // adaptive eviction policy's shadows, an observer).
      const bool follow = kEvictionFollowsLookups || observer_ != nullptr;
      if (follow) chain_.assign(s.hashes.begin(), s.hashes.end());
      const std::span<const std::int32_t> tokens(s.tokens);
      EvictionKey parent = s.hashes.empty() ? PrefixSharing::kRootKey : s.hashes.back();
      for (std::size_t i = taken; i < tokens.size() / static_cast<std::size_t>(block_size); ++i) {
        parent = Index::block_key(parent, tokens, i, block_size);
        if (const std::int64_t distance = ghosts_.take(parent, counters_.evicted_blocks)) {
          ++counters_.prefix_blocks_refetched;
          ++counters_.refetch_distance[refetch_bucket(distance)];
        }
        if (follow) chain_.push_back(parent);
      }
      if constexpr (kEvictionFollowsLookups) eviction_.on_lookup(chain_);
      if (observer_ != nullptr) observer_->on_lookup(chain_);
    }
    return taken;
  }
  void set_lookup_observer(LookupObserver* observer) { observer_ = observer; }
  template <class Seq>
  void publish(Seq& s, std::size_t full_blocks, std::int32_t block_size) {
    index_.publish(s, full_blocks, block_size, allocation_, eviction_);
  }

  // The sequence's next block taken from the pool when a block keyed `key`
  // is there (it came back to the pool after the prompt's first miss: a tier
  // lookup goes on past blocks the pool holds again); false when none is.
  template <class Seq>
  bool take_cached(Seq& s, EvictionKey key) {
    if constexpr (Allocation::kContiguous) {
      return false;
    } else {
      const std::optional<BlockId> block = index_.find(key);
      if (!block) return false;
      auto& pool = allocation_.pool();
      if (pool.is_cached(*block)) {
        pool.revive(*block);
        eviction_.erase(key);
      } else {
        pool.retain(*block);
      }
      eviction_.on_access(key);
      s.blocks.push_back(*block);
      s.hashes.push_back(key);
      ++counters_.prefix_blocks_hit;
      return true;
    }
  }

  // A fresh block for the sequence's next block, evicting for room: keyed by
  // `key` (a prefix block brought back from a tier, shareable at once) or
  // unkeyed (key 0: a partial tail). nullopt when no room can be made.
  template <class Seq, class DropSequence>
  std::optional<BlockId> adopt(Seq& s, EvictionKey key, DropSequence drop_sequence) {
    if constexpr (Allocation::kContiguous) {
      return std::nullopt;
    } else {
      if (!evict_until([&] { return allocation_.num_free() >= 1; }, drop_sequence))
        return std::nullopt;
      const BlockId block = *allocation_.pool().try_allocate();
      if (key != 0) {
        index_.bind(key, s.hashes.empty() ? 0 : s.hashes.back(), block, block_size_);
        eviction_.on_access(key);
        s.hashes.push_back(key);
      }
      s.blocks.push_back(block);
      return block;
    }
  }
  // Undoes the sequence's last adopt (its block could not be filled).
  template <class Seq>
  void abandon_last(Seq& s, EvictionKey key) {
    if constexpr (!Allocation::kContiguous) {
      const BlockId block = s.blocks.back();
      s.blocks.pop_back();
      if (key != 0) {
        s.hashes.pop_back();
        index_.unbind(key);
        eviction_.forget(key);
      }
      allocation_.pool().release(block);
    }
  }

  // A parked sequence becomes evictable, or stops being so.
  void park(SeqId seq) {
    eviction_.on_access(sequence_key(seq));
    eviction_.insert(sequence_key(seq));
  }
  void unpark(SeqId seq) { eviction_.erase(sequence_key(seq)); }
  void forget(SeqId seq) { eviction_.forget(sequence_key(seq)); }

 private:
  void release_block(BlockId block) {
    auto& pool = allocation_.pool();
    const EvictionKey key = index_.key_of(block);
    if (key != 0 && Eviction::kRetains) {
      if (pool.release_to_cache(block)) eviction_.insert(key);
      return;
    }
    if (pool.release(block) && key != 0) {
      index_.unbind(key);
      eviction_.forget(key);
    }
  }

  void copy_on_write(std::vector<BlockId>& table, std::size_t index) {
    const BlockId shared = table[index];
    const BlockId fresh = *allocation_.pool().try_allocate();
    moves_.emplace_back(shared, fresh);
    allocation_.pool().release(shared);  // another owner keeps it
    table[index] = fresh;
    ++counters_.copy_on_write;
  }

  void notify(const EvictionEvent& event) {
    if (!listener_) return;
    try {
      listener_(event);
    } catch (...) {  // documented: a listener must not throw
    }
  }

  Allocation allocation_;
  Eviction eviction_;
  Index index_;
  BlockMoves moves_;
  EvictionGhosts ghosts_;
  std::int32_t block_size_;
  std::vector<EvictionKey> chain_;  // the last lookup's keys
  LookupObserver* observer_ = nullptr;
  CacheStats counters_;
  std::function<void(const EvictionEvent&)> listener_;
  EvictionSink* sink_ = nullptr;
};

}  // namespace kvcache::detail
