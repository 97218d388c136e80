// Prefix sharing: a full block is keyed by a chained hash of its token ids
// and its parent block's key (vLLM's prefix caching), so two sequences whose
// prompts start alike map their common full blocks to the same key and share
// the blocks. xxHash's XXH3 (64 bits, the parent key as seed) does the
// hashing; keys keep 63 bits (the top bit tags sequence keys in eviction).
//
// A 64-bit key makes a collision (two different prefixes, one key) possible
// but vanishingly rare (about n^2 / 2^64 for n cached blocks); the blocks are
// not compared token by token.
#pragma once

#include <cstdint>
#include <span>

#include "kvcache/policy/concepts.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace kvcache {

struct NoPrefixSharing {
  static constexpr bool kEnabled = false;
  static std::uint64_t block_hash(std::uint64_t, std::span<const std::int32_t>) { return 0; }
};

struct PrefixSharing {
  static constexpr bool kEnabled = true;
  // Key of the first block's parent.
  static constexpr std::uint64_t kRootKey = 0x6b76636163686521ULL;  // "kvcache!"

  static std::uint64_t block_hash(std::uint64_t parent_key, std::span<const std::int32_t> tokens) {
    const std::uint64_t hash = XXH3_64bits_withSeed(tokens.data(), tokens.size_bytes(), parent_key);
    const std::uint64_t key = hash & ~kSequenceKeyBit;
    return key == 0 ? 1 : key;  // 0 means "no key"
  }
};

static_assert(SharingPolicy<NoPrefixSharing>);
static_assert(SharingPolicy<PrefixSharing>);

}  // namespace kvcache
