// A host-memory store that several engines of one process share (engines on
// several GPUs of a machine, or the replay's engines): a HostTier behind a
// lock. Unlike a HostTier attached to one cache it is not exclusive of the
// pools: a block an engine brings back stays here for the others, and
// publish_prefix (tier/publish.hpp) puts blocks here as soon as they are
// computed. Attach it to each manager (attach_tier), or put it under each
// engine's own HostTier (set_lower).
#pragma once

#include <cstdint>
#include <mutex>
#include <span>
#include <string_view>
#include <utility>

#include "kvcache/buffer.hpp"
#include "kvcache/policy/lru.hpp"
#include "kvcache/tier/block_store.hpp"
#include "kvcache/tier/host_tier.hpp"

namespace kvcache {

template <EvictionPolicy Eviction = LruEviction>
class SharedHostTier final : public BlockStore {
 public:
  // As HostTier: `capacity_blocks` slots of `block_bytes` in `memory`.
  SharedHostTier(std::int64_t block_bytes, std::int64_t capacity_blocks, Buffer memory)
      : tier_(block_bytes, capacity_blocks, std::move(memory)) {}

  std::string_view name() const override { return "shared-host"; }
  std::int64_t block_bytes() const override { return tier_.block_bytes(); }
  std::int64_t capacity_blocks() const override { return tier_.capacity_blocks(); }
  std::int64_t size_blocks() const override {
    std::lock_guard lock(mutex_);
    return tier_.size_blocks();
  }
  BlockStore* shared_store() override { return this; }

  bool put(std::uint64_t fingerprint, EvictionKey key, std::span<const std::byte> bytes) override {
    std::lock_guard lock(mutex_);
    return tier_.put(fingerprint, key, bytes);
  }
  bool get(std::uint64_t fingerprint, EvictionKey key, std::span<std::byte> out) override {
    std::lock_guard lock(mutex_);
    return tier_.get(fingerprint, key, out);
  }
  std::size_t contains(std::uint64_t fingerprint, std::span<const EvictionKey> keys) override {
    std::lock_guard lock(mutex_);
    return tier_.contains(fingerprint, keys);
  }
  bool erase(std::uint64_t fingerprint, EvictionKey key) override {
    std::lock_guard lock(mutex_);
    return tier_.erase(fingerprint, key);
  }
  TierStats stats() const override {
    std::lock_guard lock(mutex_);
    return tier_.stats();
  }
  void check_invariants() const {
    std::lock_guard lock(mutex_);
    tier_.check_invariants();
  }

 private:
  mutable std::mutex mutex_;
  HostTier<Eviction> tier_;
};

}  // namespace kvcache
