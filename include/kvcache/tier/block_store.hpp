// Where evicted blocks go instead of being dropped: a block store, keyed by
// the chained prefix key of the block's content (the prefix index's key) and
// a fingerprint of the cache format that wrote it (model shape, block size,
// layout, codec and its parameters, calibrated state), so that a block is
// only ever read back by a cache that would have written the same bytes.
//
// Blocks move as the codec stores them (codes and scales: an int4 cache moves
// a quarter of a plain one's bytes). Every store has a fixed block size in
// bytes, a capacity in blocks and its own eviction: a put into a full store
// evicts by the store's policy, never fails for that reason. A miss is an
// answer, not an error: absent, evicted, another fingerprint or unreadable
// (a lower tier's bad checksum, a server that went away) all read as a miss.
//
// Implementations: HostTier (tier/host_tier.hpp, host memory: pinned for the
// CUDA backend), SharedHostTier (tier/shared_host_tier.hpp: one host store
// several engines of a process share) and RedisTier (tier/redis_tier.hpp,
// the kvcache::redis library: engines anywhere share it). The
// manager side (detail/tier_link.hpp) moves blocks between a store and the
// device pool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "kvcache/model_shape.hpp"
#include "kvcache/policy/concepts.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace kvcache {

// A store's counters over its life.
struct TierStats {
  std::int64_t capacity_blocks = 0;
  std::int64_t blocks = 0;      // held now
  std::int64_t puts = 0;        // blocks stored
  std::int64_t hits = 0;        // blocks read back
  std::int64_t misses = 0;      // lookups of a block it did not have
  std::int64_t evictions = 0;   // blocks it dropped (or passed down) to make room
  std::int64_t demotions = 0;   // ... of which went to the store below
  std::int64_t promotions = 0;  // blocks brought up from the store below on a lookup
  std::int64_t erases = 0;      // blocks removed on request
  std::int64_t rejected = 0;    // puts refused (no room at all, wrong size)
  std::int64_t bytes_in = 0;    // bytes stored
  std::int64_t bytes_out = 0;   // bytes read back
};

class BlockStore {
 public:
  virtual ~BlockStore() = default;

  virtual std::string_view name() const = 0;
  // Bytes of every block it holds (0: keys only, as for a metadata-only cache).
  virtual std::int64_t block_bytes() const = 0;
  virtual std::int64_t capacity_blocks() const = 0;
  virtual std::int64_t size_blocks() const = 0;

  // Stores a copy of `bytes` (block_bytes() long) under (fingerprint, key),
  // replacing any block stored there; evicts by its policy when full. False
  // when the store cannot hold it (a size other than block_bytes(), or a
  // capacity of 0).
  virtual bool put(std::uint64_t fingerprint, EvictionKey key,
                   std::span<const std::byte> bytes) = 0;
  // Copies the block into `out` (block_bytes() long); false on a miss.
  virtual bool get(std::uint64_t fingerprint, EvictionKey key, std::span<std::byte> out) = 0;
  // How many of `keys`, from the first, are present (stops at the first miss).
  virtual std::size_t contains(std::uint64_t fingerprint, std::span<const EvictionKey> keys) = 0;
  // Removes the block; false when it was not there.
  virtual bool erase(std::uint64_t fingerprint, EvictionKey key) = 0;
  virtual TierStats stats() const = 0;
  // The store other engines read too (a shared tier), where published
  // blocks go: this store, one below it, or none.
  virtual BlockStore* shared_store() { return nullptr; }
  // Waits until what was put can be read back (a store that writes
  // asynchronously: the replay's engines take turns in simulated time).
  virtual void settle() {}
};

// The fingerprint of a cache format: XXH3 over a canonical description. Two
// caches exchange blocks only if every part is equal; `codec` is the codec's
// name with its parameters (Codec::name()), `state_hash` a hash of its
// calibrated state (fp8 scales, low-rank bases; 0 for codecs without).
inline constexpr std::uint32_t kTierFormatVersion = 1;

inline std::uint64_t cache_fingerprint(const ModelShape& shape, std::int32_t block_size,
                                       std::int32_t layout, std::string_view codec,
                                       std::int64_t block_bytes, std::uint64_t state_hash) {
  const std::string description = fmt::format(
      "kvcache-tier v{} layers={} kv_heads={} head_dim={} dtype={} block={} layout={} codec={} "
      "block_bytes={} state={:016x}",
      kTierFormatVersion, shape.num_layers, shape.num_kv_heads, shape.head_dim,
      static_cast<int>(shape.dtype), block_size, layout, codec, block_bytes, state_hash);
  return XXH3_64bits(description.data(), description.size());
}

}  // namespace kvcache
