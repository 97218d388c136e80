// The prefix index: which block holds the content of a prefix key (a chained
// hash of a full block's token ids and its parent's key), and the key of each
// block. With NoPrefixSharing it is an empty class whose operations do
// nothing, so the manager and the ledger carry no sharing branches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "kvcache/error.hpp"
#include "kvcache/metrics/kv_events.hpp"
#include "kvcache/policy/concepts.hpp"
#include "kvcache/policy/prefix_sharing.hpp"
#include "kvcache/types.hpp"

namespace kvcache::detail {

template <class Sharing, bool = Sharing::kEnabled>
class PrefixIndex {
 public:
  explicit PrefixIndex(std::int64_t num_blocks)
      : block_key_(static_cast<std::size_t>(num_blocks), 0) {}

  // Key of the `index`-th full block of `tokens` given its parent's.
  static EvictionKey block_key(EvictionKey parent, std::span<const std::int32_t> tokens,
                               std::size_t index, std::int32_t block_size) {
    return Sharing::block_hash(parent, tokens.subspan(index * static_cast<std::size_t>(block_size),
                                                      static_cast<std::size_t>(block_size)));
  }
  static EvictionKey parent_key(std::span<const EvictionKey> hashes, std::size_t index) {
    return index == 0 ? PrefixSharing::kRootKey : hashes[index - 1];
  }

  // Takes the cached blocks of the longest prefix of `tokens` (full blocks,
  // up to the first miss): each is revived (cached) or shared (in use).
  // Returns how many were taken; counts the lookup in `stats`.
  template <class Allocation, class Eviction>
  std::size_t match(std::span<const std::int32_t> tokens, std::int32_t block_size,
                    Allocation& allocation, Eviction& eviction, std::vector<BlockId>& blocks,
                    std::vector<EvictionKey>& hashes, CacheStats& stats) {
    const std::size_t full = tokens.size() / static_cast<std::size_t>(block_size);
    ++stats.prefix_lookups;
    stats.prefix_blocks_requested += static_cast<std::int64_t>(full);
    stats.prefix_tokens_requested += static_cast<std::int64_t>(tokens.size());
    // Sized for a full hit and cut back at the first miss: no push_back per block.
    const std::size_t first_block = blocks.size();
    const std::size_t first_hash = hashes.size();
    blocks.resize(first_block + full);
    hashes.resize(first_hash + full);
    std::size_t taken = 0;
    EvictionKey parent = first_hash == 0 ? PrefixSharing::kRootKey : hashes[first_hash - 1];
    for (; taken < full; ++taken) {
      const EvictionKey key = block_key(parent, tokens, taken, block_size);
      auto it = index_.find(key);
      if (it == index_.end()) break;
      const BlockId block = it->second;
      if (allocation.pool().is_cached(block)) {
        allocation.pool().revive(block);
        eviction.erase(key);
      } else {
        allocation.pool().retain(block);
      }
      eviction.on_access(key);
      blocks[first_block + taken] = block;
      hashes[first_hash + taken] = key;
      parent = key;
    }
    blocks.resize(first_block + taken);
    hashes.resize(first_hash + taken);
    stats.prefix_blocks_hit += static_cast<std::int64_t>(taken);
    stats.prefix_tokens_hit += static_cast<std::int64_t>(taken) * block_size;
    return taken;
  }

  // Keys a sequence's full blocks not keyed yet. A key already held by a
  // cached copy moves to this block (the copy is reclaimed); one held by a
  // block in use stays there.
  template <class Seq, class Allocation, class Eviction>
  void publish(Seq& s, std::size_t full_blocks, std::int32_t block_size, Allocation& allocation,
               Eviction& eviction) {
    const std::span<const std::int32_t> tokens(s.tokens);
    while (s.hashable && s.hashes.size() < full_blocks &&
           tokens.size() >= (s.hashes.size() + 1) * static_cast<std::size_t>(block_size)) {
      const std::size_t i = s.hashes.size();
      const EvictionKey key = block_key(parent_key(s.hashes, i), tokens, i, block_size);
      s.hashes.push_back(key);
      const BlockId block = s.blocks[i];
      if (key_of(block) != 0) continue;  // shared from the cache
      auto it = index_.find(key);
      if (it == index_.end()) {
        index_.emplace(key, block);
      } else if (allocation.pool().is_cached(it->second)) {
        // The same content sat cached after this prompt's first miss: the new
        // copy replaces it, so the key's recency is this use (the policy keeps
        // what it knew of the key).
        const BlockId stale = it->second;
        eviction.erase(key);
        block_key_[static_cast<std::size_t>(stale)] = 0;
        allocation.pool().reclaim(stale);
        emit(KvEventKind::kRemoved, key, 0, stale, 0);
        it->second = block;
      } else {
        continue;  // in use by another sequence: that copy stays the keyed one
      }
      block_key_[static_cast<std::size_t>(block)] = key;
      eviction.on_access(key);
      emit(KvEventKind::kStored, key, i == 0 ? 0 : s.hashes[i - 1], block, block_size);
    }
  }

  EvictionKey key_of(BlockId block) const { return block_key_[static_cast<std::size_t>(block)]; }
  std::optional<BlockId> find(EvictionKey key) const {
    auto it = index_.find(key);
    if (it == index_.end()) return std::nullopt;
    return it->second;
  }
  // Keys a block in use whose content was brought back from a tier (no block
  // holds the key: the lookup that found it in the tier missed here).
  void bind(EvictionKey key, EvictionKey parent, BlockId block, std::int32_t block_size) {
    index_.emplace(key, block);
    block_key_[static_cast<std::size_t>(block)] = key;
    emit(KvEventKind::kStored, key, parent, block, block_size);
  }
  // Drops a block's key (its contents are gone); returns the block.
  BlockId unbind(EvictionKey key) {
    auto it = index_.find(key);
    const BlockId block = it->second;
    index_.erase(it);
    block_key_[static_cast<std::size_t>(block)] = 0;
    emit(KvEventKind::kRemoved, key, 0, block, 0);
    return block;
  }
  // Evicts a cached block: its key is dropped and the block freed.
  template <class Allocation>
  BlockId drop_cached(EvictionKey key, Allocation& allocation) {
    const BlockId block = unbind(key);
    allocation.pool().reclaim(block);
    return block;
  }
  std::int64_t size() const { return static_cast<std::int64_t>(index_.size()); }

  // Drops every key: cached blocks are freed, blocks in use stay with their
  // sequences, unshareable; the eviction policy forgets every key. One
  // all-cleared event.
  template <class Allocation, class Eviction>
  std::int64_t clear(Allocation& allocation, Eviction& eviction) {
    std::int64_t freed = 0;
    for (const auto& [key, block] : index_) {
      block_key_[static_cast<std::size_t>(block)] = 0;
      eviction.forget(key);  // the policy keeps nothing of the key (a use count, a queue)
      if (allocation.pool().is_cached(block)) {
        allocation.pool().reclaim(block);
        ++freed;
      }
    }
    index_.clear();
    emit(KvEventKind::kAllCleared, 0, 0, -1, 0);
    return freed;
  }

  void set_events(KvEventSink* events) { events_ = events; }

 private:
  void emit(KvEventKind kind, EvictionKey key, EvictionKey parent, BlockId block,
            std::int32_t tokens) const {
    if (events_ != nullptr) events_->on_event(KvEvent{kind, tokens, block, key, parent, 0});
  }

  std::unordered_map<EvictionKey, BlockId> index_;  // prefix key -> block holding it
  std::vector<EvictionKey> block_key_;              // per block, 0 when unkeyed
  KvEventSink* events_ = nullptr;
};

template <class Sharing>
class PrefixIndex<Sharing, false> {
 public:
  explicit PrefixIndex(std::int64_t) {}
  template <class Allocation, class Eviction>
  std::size_t match(std::span<const std::int32_t>, std::int32_t, Allocation&, Eviction&,
                    std::vector<BlockId>&, std::vector<EvictionKey>&, CacheStats&) {
    return 0;
  }
  template <class Seq, class Allocation, class Eviction>
  void publish(Seq&, std::size_t, std::int32_t, Allocation&, Eviction&) {}
  EvictionKey key_of(BlockId) const { return 0; }
  std::optional<BlockId> find(EvictionKey) const { return std::nullopt; }
  void bind(EvictionKey, EvictionKey, BlockId, std::int32_t) {}
  BlockId unbind(EvictionKey) { return -1; }
  template <class Allocation>
  BlockId drop_cached(EvictionKey, Allocation&) {
    return -1;  // no block is ever keyed
  }
  std::int64_t size() const { return 0; }
  template <class Allocation, class Eviction>
  std::int64_t clear(Allocation&, Eviction&) {
    return 0;
  }
  void set_events(KvEventSink*) {}
};

}  // namespace kvcache::detail
