// The public value types of a KVCacheManager: its configuration, what it
// reports about sequences, memory and counters, and eviction events.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcache/layout.hpp"
#include "kvcache/model_shape.hpp"
#include "kvcache/policy/concepts.hpp"

namespace kvcache {

using SeqId = std::uint64_t;

struct CacheConfig {
  ModelShape shape;
  std::int32_t block_size = 16;  // tokens per block: a power of two in [1, 1024]
  // The pool's size: set exactly one of the two.
  std::int64_t num_blocks = 0;
  std::int64_t budget_bytes = 0;
  KVLayout layout = KVLayout::kNHD;
  std::int32_t max_batch_tokens = 8192;     // most new tokens in one append batch
  std::int32_t max_batch_sequences = 1024;  // most sequences in one append batch
  // DynamicAllocation: capacity of a new sequence's region, in tokens.
  std::int64_t initial_tokens = 256;
  // KiviCodec: live sequences at most (each holds a full-precision ring of
  // its most recent tokens, preallocated beside the arena).
  std::int32_t max_sequences = 256;
};

enum class ReserveStatus { kOk, kPoolFull };

struct SequenceInfo {
  SeqId id = 0;
  std::int64_t num_tokens = 0;       // committed tokens (after create: the cached prefix)
  std::int64_t reserved_tokens = 0;  // tokens its blocks (and the codec's side storage) hold
  std::int64_t known_tokens = 0;     // token ids known (prompt and appended)
  // Tokens stored in pages; the rest (KIVI's residual window) sit beside them.
  std::int64_t quantized_tokens = 0;
  bool parked = false;
  std::vector<BlockId> blocks;
};

struct MemoryStats {
  std::int64_t arena_bytes = 0;
  std::int64_t bytes_per_block = 0;
  std::int64_t num_blocks = 0;
  std::int64_t budget_blocks = 0;  // of them, those that may hold data (set_budget_blocks)
  std::int64_t used_blocks = 0;    // referenced by a sequence
  std::int64_t cached_blocks = 0;  // unreferenced, kept for prefix reuse (evictable)
  std::int64_t free_blocks = 0;
  std::int64_t num_sequences = 0;
  std::int64_t parked_sequences = 0;
  std::int64_t stored_tokens = 0;    // committed tokens over all sequences
  std::int64_t reserved_tokens = 0;  // token capacity of the used blocks
  std::int64_t residual_bytes = 0;   // KIVI: the full-precision rings beside the arena
  std::int64_t used_bytes() const { return used_blocks * bytes_per_block; }
};

// Counters over the manager's life.
inline constexpr std::size_t kRefetchBuckets = 40;
constexpr std::size_t refetch_bucket(std::int64_t distance) {
  const auto b = static_cast<std::size_t>(std::bit_width(static_cast<std::uint64_t>(distance - 1)));
  return b < kRefetchBuckets ? b : kRefetchBuckets - 1;
}

struct CacheStats {
  std::int64_t prefix_lookups = 0;           // create_sequence calls with a prompt
  std::int64_t prefix_blocks_requested = 0;  // full blocks in those prompts
  std::int64_t prefix_blocks_hit = 0;        // ... found cached, up to the first miss
  std::int64_t prefix_tokens_requested = 0;  // prompt tokens of those lookups
  std::int64_t prefix_tokens_hit = 0;        // ... already cached (pool or tier)
  // Prompt blocks past the hit whose key was evicted lately (eviction churn;
  // detail/eviction_ghosts.hpp).
  std::int64_t prefix_blocks_refetched = 0;
  // ... by how many block evictions later they were asked for: bucket i
  // counts distances in (2^(i-1), 2^i] (bucket 0: 1). Under LRU, a pool
  // larger by d blocks would have hit the refetches of distance <= d.
  std::array<std::int64_t, kRefetchBuckets> refetch_distance{};
  std::int64_t reserve_failures = 0;   // reservations no eviction could make room for
  std::int64_t evicted_blocks = 0;     // cached prefix blocks dropped
  std::int64_t evicted_sequences = 0;  // parked sequences dropped
  std::int64_t unpark_hits = 0;        // unpark found the sequence
  std::int64_t unpark_misses = 0;      // unpark found it evicted
  std::int64_t copy_on_write = 0;      // shared blocks copied before a write
  std::int64_t blocks_copied = 0;      // blocks moved by the copy kernel (COW, growth, fork)
  std::int64_t nonfinite_values = 0;   // NaN / Inf inputs met by a codec (saturated, see README)
  std::int64_t flushed_groups = 0;     // KIVI: token groups quantized out of the residual window
  // With a tier attached (attach_tier): blocks copied out to it on eviction
  // and back on a prefix hit, and their bytes; full blocks asked of it after
  // the pool's own miss and found there; partial last blocks of evicted
  // parked sequences; blocks the tier itself evicted.
  std::int64_t tier_offloads = 0;
  std::int64_t tier_onboards = 0;
  std::int64_t tier_bytes_offloaded = 0;
  std::int64_t tier_bytes_onboarded = 0;
  std::int64_t tier_lookup_blocks = 0;
  std::int64_t tier_hit_blocks = 0;
  std::int64_t tier_tails_offloaded = 0;
  std::int64_t tier_tails_onboarded = 0;
  std::int64_t tier_evictions = 0;
  std::int64_t tier_published = 0;  // blocks put into a shared store by publish_prefix
  AllocationStats allocation;
  std::int64_t tier_misses() const { return tier_lookup_blocks - tier_hit_blocks; }
  double prefix_hit_rate() const {
    return prefix_blocks_requested == 0 ? 0.0
                                        : static_cast<double>(prefix_blocks_hit) /
                                              static_cast<double>(prefix_blocks_requested);
  }
};

enum class EvictionKind { kBlock, kSequence };

// What an eviction took away: a cached prefix block (its id and key) or a
// parked sequence (its id; unpark will report the miss).
struct EvictionEvent {
  EvictionKind kind = EvictionKind::kBlock;
  SeqId sequence = 0;
  BlockId block = -1;
  EvictionKey key = 0;
};

}  // namespace kvcache
