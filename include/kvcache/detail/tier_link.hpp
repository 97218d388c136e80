// The manager's side of a tier (tier/block_store.hpp): blocks the device pool
// evicts are copied out to the store instead of being dropped, and a prompt's
// blocks the pool lacks are brought back from it.
//
//   offload  the ledger tells the link of each cached prefix block it evicts
//            while the page still holds it (EvictionSink::spill); the link
//            copies the page to the store under the block's prefix key.
//            A parked sequence evicted whole also leaves its partial last
//            block (spill_tail), keyed by its tokens after the last full
//            block, so that resuming it (create_sequence with its tokens)
//            finds every token.
//   onboard  create_sequence(prompt), after the device's own prefix hit, asks
//            the store for the prompt's next full blocks (longest present
//            run), takes a fresh page for each, fills it from the store and
//            keys it (shareable at once); then, if every full block came
//            back, the prompt's tail. A host store gives the block up (the
//            tier is exclusive of the pool); a shared store keeps it.
//   publish  publish_prefix (tier/publish.hpp) puts a sequence's full blocks
//            into the shared store (RedisTier, SharedHostTier) at once, for
//            the other engines.
//
// With a host store (HostStore) the bytes go straight between a page and a
// slot: on the CPU backend a memcpy; on the CUDA backend an asynchronous copy
// on the backend's transfer stream, ordered by events after the kernels that
// wrote the page (offload) and before any kernel that reads it (onboard), so
// the engine's thread waits for neither. Any other store goes through one
// block of host staging. A block that cannot be read back (evicted from the
// store between the lookup and the read, or unreadable) ends the onboard
// there: a miss, never wrong data.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kvcache/buffer.hpp"
#include "kvcache/detail/block_ledger.hpp"
#include "kvcache/error.hpp"
#include "kvcache/policy/prefix_sharing.hpp"
#include "kvcache/tier/block_store.hpp"
#include "kvcache/tier/host_tier.hpp"
#include "kvcache/types.hpp"

namespace kvcache::detail {

// A partial block's key: its tokens hashed after its parent's key, salted so
// that it never names a full block.
inline EvictionKey tail_key(EvictionKey parent, std::span<const std::int32_t> tokens) {
  constexpr EvictionKey kTailSalt = 0x7461696c21ULL;  // "tail!"
  return PrefixSharing::block_hash(parent ^ kTailSalt, tokens);
}

// The fingerprint of a manager's cache format (tier/block_store.hpp): its
// configuration, codec and, for calibrated codecs, a hash of the state.
template <class Codec, class Storage>
std::uint64_t fingerprint_of(const CacheConfig& config, const Storage& storage,
                             std::int64_t block_bytes) {
  std::uint64_t state = 0;
  if constexpr (Storage::kCalibrated) {
    const std::vector<float> host = storage.state();
    state = XXH3_64bits(host.data(), host.size() * sizeof(float));
  }
  return cache_fingerprint(config.shape, config.block_size,
                           static_cast<std::int32_t>(config.layout), Codec::name(), block_bytes,
                           state);
}

// What attach_tier needs: keyed blocks (paged allocation, prefix sharing), a
// policy that keeps released blocks (so that evictions happen at all), and a
// store whose blocks are the pool's (or keys only, for a metadata cache).
template <class Allocation, class Sharing, bool kHoldsData>
void check_tier(const BlockStore& store, std::int64_t block_bytes) {
  if constexpr (Allocation::kContiguous || !Sharing::kEnabled) {
    raise<Unsupported>(
        "attach_tier: a tier keeps prefix blocks by their key; the cache needs PagedAllocation "
        "with PrefixSharing (this one: {} allocation, prefix sharing {})",
        Allocation::kName, Sharing::kEnabled ? "on" : "off");
  }
  const std::int64_t expected = kHoldsData ? block_bytes : 0;
  if (store.block_bytes() != expected) {
    raise<InvalidArgument>(
        "attach_tier: the {} store holds blocks of {} bytes; this cache's are {} bytes{}",
        store.name(), store.block_bytes(), expected,
        kHoldsData ? "" : " (a metadata-only cache moves keys only)");
  }
}

template <class Backend>
class TierLink final : public EvictionSink {
 public:
  TierLink(Backend& backend, std::byte* arena, std::int64_t block_bytes)
      : backend_(&backend), arena_(arena), block_bytes_(block_bytes) {}
  TierLink(const TierLink&) = delete;
  TierLink& operator=(const TierLink&) = delete;
  // The store is not touched here (it may be gone already): its hook into
  // the backend goes dead with `alive_`, and pending copies are waited for.
  ~TierLink() {
    try {
      if (store_ != nullptr) backend_->wait_transfers();
    } catch (...) {  // destructors never throw; a failed wait leaves the copies to the driver
    }
  }

  bool attached() const { return store_ != nullptr; }
  BlockStore* store() const { return store_; }

  void attach(BlockStore& store, std::uint64_t fingerprint) {
    host_ = dynamic_cast<HostStore*>(&store);
    store_ = &store;
    fingerprint_ = fingerprint;
    alive_ = std::make_shared<Backend*>(backend_);
    if (host_ != nullptr) {
      host_->set_before_host_read([alive = std::weak_ptr<Backend*>(alive_)] {
        if (const auto backend = alive.lock()) (*backend)->wait_transfers();
      });
    } else if (block_bytes_ > 0 && !staging_) {
      staging_ = backend_->allocate_host(static_cast<std::size_t>(block_bytes_));
    }
  }
  void detach() {
    if (store_ == nullptr) return;
    backend_->wait_transfers();
    if (host_ != nullptr) host_->set_before_host_read({});
    store_ = nullptr;
    host_ = nullptr;
    alive_.reset();
  }
  std::uint64_t fingerprint() const { return fingerprint_; }
  // A calibrated codec's state changed (version: its calibration count):
  // blocks written from now on carry the new fingerprint.
  template <class Compute>
  void refresh(std::uint64_t version, Compute compute) {
    if (store_ == nullptr || version == version_) return;
    version_ = version;
    fingerprint_ = compute();
  }

  // ---- offload -----------------------------------------------------------------------

  void spill(BlockId block, EvictionKey key) override { offload(block, key); }

  // A parked sequence dropped by eviction: its partial last block (for codecs
  // that keep every token in pages) goes to the store under its tail key.
  template <class Seq>
  void spill_tail(const Seq& s, std::int32_t block_size, bool pages_hold_tail) {
    if (store_ == nullptr || !pages_hold_tail || !s.hashable) return;
    const std::int64_t full = s.num_tokens / block_size;
    const std::int64_t tail = s.num_tokens - full * block_size;
    if (tail == 0 || static_cast<std::int64_t>(s.hashes.size()) < full ||
        static_cast<std::int64_t>(s.tokens.size()) < s.num_tokens) {
      return;
    }
    const EvictionKey parent =
        full == 0 ? PrefixSharing::kRootKey : s.hashes[static_cast<std::size_t>(full - 1)];
    const std::span<const std::int32_t> tokens(s.tokens.data() + full * block_size,
                                               static_cast<std::size_t>(tail));
    offload(s.blocks[static_cast<std::size_t>(full)], tail_key(parent, tokens));
    ++tails_offloaded_;
  }

  // ---- publish -----------------------------------------------------------------------

  // Puts the first full blocks of `s` (those in pages: `paged_tokens`) into
  // the shared store below the attached one, so that other engines find
  // them while this one still holds them. Returns the blocks the store took.
  template <class Seq>
  std::int64_t publish(const Seq& s, std::int64_t paged_tokens, std::int32_t block_size) {
    BlockStore* shared = store_ == nullptr ? nullptr : store_->shared_store();
    if (shared == nullptr || !s.hashable) return 0;
    const auto full = std::min<std::size_t>(
        {s.hashes.size(), s.blocks.size(), static_cast<std::size_t>(paged_tokens / block_size)});
    if (block_bytes_ > 0 && !staging_)
      staging_ = backend_->allocate_host(static_cast<std::size_t>(block_bytes_));
    std::int64_t put = 0;
    for (std::size_t i = 0; i < full; ++i) {
      if (block_bytes_ > 0) {
        backend_->copy_to_host(staging_.data(), page(s.blocks[i]),
                               static_cast<std::size_t>(block_bytes_));
      }
      if (shared->put(fingerprint_, s.hashes[i],
                      std::span<const std::byte>(staging_.bytes_data(),
                                                 static_cast<std::size_t>(block_bytes_)))) {
        ++put;
      }
    }
    published_ += put;
    return put;
  }

  // ---- onboard -----------------------------------------------------------------------

  // After the device's prefix hit left `s` holding its first s.blocks.size()
  // full blocks of `prompt`: brings the following ones (and, when all came
  // back, the prompt's tail) from the store. Returns the tokens added.
  template <class Ledger, class Seq, class DropSequence>
  std::int64_t onboard(Ledger& ledger, Seq& s, std::span<const std::int32_t> prompt,
                       std::int32_t block_size, bool pages_hold_tail, DropSequence drop_sequence) {
    if (store_ == nullptr) return 0;
    const auto block = static_cast<std::size_t>(block_size);
    const std::size_t full = prompt.size() / block;
    const std::size_t have = s.blocks.size();
    const std::size_t tail = prompt.size() - full * block;
    // One lookup for the whole run: the missing full blocks, then the tail
    // (present only if it follows them all).
    keys_.clear();
    EvictionKey parent = have == 0 ? PrefixSharing::kRootKey : s.hashes[have - 1];
    for (std::size_t i = have; i < full; ++i) {
      parent = PrefixSharing::block_hash(parent, prompt.subspan(i * block, block));
      keys_.push_back(parent);
    }
    const bool want_tail = tail > 0 && pages_hold_tail && have <= full;
    if (want_tail) keys_.push_back(tail_key(parent, prompt.subspan(full * block)));
    if (keys_.empty()) return 0;
    const std::size_t blocks = full > have ? full - have : 0;
    lookup_blocks_ += static_cast<std::int64_t>(blocks);
    const std::size_t present = store_->contains(fingerprint_, keys_);
    std::size_t present_end = present;
    for (std::size_t i = 0; i < blocks; ++i) {
      // A block the pool holds again (computed or brought back since the
      // pool's first miss) is taken from the pool, never a second copy (an
      // exclusive host store lets its own go); past the store's run, the
      // store is asked again for what follows.
      if (ledger.take_cached(s, keys_[i])) {
        if (i < present_end && host_ != nullptr) host_->erase(fingerprint_, keys_[i]);
        if (i + 1 >= present_end && i + 1 < keys_.size()) {
          present_end =
              i + 1 +
              store_->contains(fingerprint_, std::span<const EvictionKey>(keys_).subspan(i + 1));
        }
        continue;
      }
      if (i >= present_end || !bring_back(ledger, s, keys_[i], drop_sequence)) break;
      ++hit_blocks_;
    }
    std::int64_t tokens = static_cast<std::int64_t>(s.blocks.size() - have) * block_size;
    if (want_tail && s.blocks.size() == full && present_end == keys_.size() &&
        bring_back(ledger, s, keys_.back(), drop_sequence, /*tail=*/true)) {
      tokens += static_cast<std::int64_t>(tail);
      ++tails_onboarded_;
    }
    ledger.counters().prefix_tokens_hit += tokens;
    return tokens;
  }

  void add_stats(CacheStats& stats) const {
    stats.tier_offloads = offloads_;
    stats.tier_onboards = onboards_;
    stats.tier_bytes_offloaded = offloads_ * block_bytes_;
    stats.tier_bytes_onboarded = onboards_ * block_bytes_;
    stats.tier_lookup_blocks = lookup_blocks_;
    stats.tier_hit_blocks = hit_blocks_;
    stats.tier_tails_offloaded = tails_offloaded_;
    stats.tier_tails_onboarded = tails_onboarded_;
    stats.tier_published = published_;
    if (store_ != nullptr) stats.tier_evictions = store_->stats().evictions;
  }

 private:
  std::byte* page(BlockId block) const { return arena_ + std::int64_t{block} * block_bytes_; }

  void offload(BlockId block, EvictionKey key) {
    if (store_ == nullptr) return;
    if (host_ != nullptr) {
      const HostStore::Slot slot = host_->store(fingerprint_, key);
      if (!slot.present) return;
      if (block_bytes_ > 0)
        backend_->offload(slot.data, page(block), static_cast<std::size_t>(block_bytes_));
    } else {
      if (block_bytes_ > 0) {
        backend_->copy_to_host(staging_.data(), page(block),
                               static_cast<std::size_t>(block_bytes_));
      }
      if (!store_->put(fingerprint_, key,
                       std::span<const std::byte>(staging_.bytes_data(),
                                                  static_cast<std::size_t>(block_bytes_)))) {
        return;
      }
    }
    ++offloads_;
  }

  // A fresh page for the sequence's next block, filled from the store. The
  // page is taken first: taking it may evict (and offload) other blocks,
  // which may push this one out of the store; then the read misses, the page
  // is given back and false returned.
  template <class Ledger, class Seq, class DropSequence>
  bool bring_back(Ledger& ledger, Seq& s, EvictionKey key, DropSequence drop_sequence,
                  bool tail = false) {
    const EvictionKey index_key = tail ? 0 : key;
    const std::optional<BlockId> block = ledger.adopt(s, index_key, drop_sequence);
    if (!block) return false;
    bool read;
    if (host_ != nullptr) {
      const HostStore::Slot slot = host_->find(fingerprint_, key);
      read = slot.present;
      if (read && block_bytes_ > 0)
        backend_->onboard(page(*block), slot.data, static_cast<std::size_t>(block_bytes_));
    } else {
      read = store_->get(
          fingerprint_, key,
          std::span<std::byte>(staging_.bytes_data(), static_cast<std::size_t>(block_bytes_)));
      if (read && block_bytes_ > 0) {
        backend_->copy_to_backend(page(*block), staging_.data(),
                                  static_cast<std::size_t>(block_bytes_));
      }
    }
    if (!read) {
      ledger.abandon_last(s, index_key);
      return false;
    }
    ++onboards_;
    // The host tier is exclusive of the pool: the block leaves it (and comes
    // back when the pool evicts it again), so pool and tier together hold as
    // many distinct blocks as one pool of both sizes. A shared store below
    // keeps its copy for the other engines.
    if (host_ != nullptr) host_->erase(fingerprint_, key);
    return true;
  }

  Backend* backend_;
  std::byte* arena_;
  std::int64_t block_bytes_;
  BlockStore* store_ = nullptr;
  HostStore* host_ = nullptr;
  std::shared_ptr<Backend*> alive_;  // while attached: the store's hook may call the backend
  std::uint64_t fingerprint_ = 0;
  std::uint64_t version_ = 0;
  Buffer staging_;  // one block, for stores that are not host stores
  std::vector<EvictionKey> keys_;
  std::int64_t offloads_ = 0;
  std::int64_t onboards_ = 0;
  std::int64_t lookup_blocks_ = 0;
  std::int64_t hit_blocks_ = 0;
  std::int64_t tails_offloaded_ = 0;
  std::int64_t tails_onboarded_ = 0;
  std::int64_t published_ = 0;
};

}  // namespace kvcache::detail
