// The strategy axes of a KVCacheManager, each a class satisfying a concept:
//
//   allocation  PagedAllocation (blocks anywhere, a block table) or
//               DynamicAllocation (one contiguous region per sequence, grown by
//               doubling);
//   eviction    NoEviction, LruEviction, LfuAgingEviction, S3FifoEviction,
//               ReuseLruEviction (reuse-weighted LRU for prefix trees);
//   sharing     NoPrefixSharing or PrefixSharing (chained block hashes,
//               copy-on-write);
//   codec       how a page stores K and V (codec/concepts.hpp).
//
// CachePolicy bundles one of each; changing one template argument changes the
// behaviour and nothing else in the engine's code.
#pragma once

#include <concepts>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvcache {

using BlockId = std::int32_t;

// Block copies an allocation step asks for: (source, destination) pairs, all
// layers, K and V (relocation of a grown region, copy-on-write).
using BlockMoves = std::vector<std::pair<BlockId, BlockId>>;

struct AllocationStats {
  std::int64_t blocks_allocated = 0;  // blocks handed out, over the pool's life
  std::int64_t regions = 0;           // contiguous regions handed out (dynamic)
  std::int64_t regions_reused = 0;    // ... of which came from released space
  std::int64_t grown_in_place = 0;    // regions extended without moving (dynamic)
  std::int64_t relocations = 0;       // regions moved to grow (dynamic)
  std::int64_t blocks_moved = 0;      // blocks copied by relocations
  double reuse_rate() const {
    return regions == 0 ? 0.0 : static_cast<double>(regions_reused) / static_cast<double>(regions);
  }
};

template <class A>
concept AllocationPolicy = requires(A a, const A ca, std::vector<BlockId>& table, std::int64_t n,
                                    BlockMoves& moves, std::span<const BlockId> blocks,
                                    std::int32_t block_size) {
  { A::kName } -> std::convertible_to<std::string_view>;
  { A::kContiguous } -> std::convertible_to<bool>;
  A::validate_block_size(block_size);
  requires std::constructible_from<A, std::int64_t, std::int64_t>;
  { ca.num_blocks() } -> std::same_as<std::int64_t>;
  { ca.num_free() } -> std::same_as<std::int64_t>;
  { ca.ref_count(BlockId{}) } -> std::same_as<std::int32_t>;
  { ca.stats() } -> std::same_as<AllocationStats>;
  { a.try_grow(table, n, n, moves) } -> std::same_as<bool>;
  a.release_table(blocks);
};

// Evictable entries are keys: a prefix block by its content hash (63 bits), a
// parked sequence by its id with the top bit set.
using EvictionKey = std::uint64_t;
inline constexpr EvictionKey kSequenceKeyBit = EvictionKey{1} << 63;

template <class E>
concept EvictionPolicy = requires(E e, const E ce, EvictionKey key) {
  { E::kName } -> std::convertible_to<std::string_view>;
  // False: nothing is kept once unreferenced, so nothing is ever evicted.
  { E::kRetains } -> std::convertible_to<bool>;
  requires std::constructible_from<E, std::int64_t>;
  e.on_access(key);  // the entry was used (created or hit)
  e.insert(key);     // the entry became evictable (no owner left)
  e.erase(key);      // the entry has an owner again (hit)
  e.forget(key);     // the entry's contents are gone (evicted or freed)
  { e.pop_victim() } -> std::same_as<std::optional<EvictionKey>>;
  { ce.size() } -> std::same_as<std::int64_t>;
};

template <class S>
concept SharingPolicy = requires(std::uint64_t parent, std::span<const std::int32_t> tokens) {
  { S::kEnabled } -> std::convertible_to<bool>;
  { S::block_hash(parent, tokens) } -> std::same_as<std::uint64_t>;
};

}  // namespace kvcache
