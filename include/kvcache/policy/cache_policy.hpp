// CachePolicy: one class per strategy axis, bundled for KVCacheManager.
//
//   KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>> m(config);
//   KVCacheManager<CachePolicy<PagedAllocation, LruEviction, NoPrefixSharing, Int8Codec<32>>>
//   q(config);
//
// Every combination that makes sense compiles; prefix sharing needs paged
// allocation (a shared block cannot sit inside two contiguous regions).
#pragma once

#include "kvcache/codec/codecs.hpp"
#include "kvcache/codec/concepts.hpp"
#include "kvcache/policy/adaptive.hpp"
#include "kvcache/policy/concepts.hpp"
#include "kvcache/policy/dynamic.hpp"
#include "kvcache/policy/lfu_aging.hpp"
#include "kvcache/policy/lru.hpp"
#include "kvcache/policy/no_eviction.hpp"
#include "kvcache/policy/paged.hpp"
#include "kvcache/policy/prefix_sharing.hpp"
#include "kvcache/policy/reuse_lru.hpp"
#include "kvcache/policy/s3fifo.hpp"

namespace kvcache {

template <AllocationPolicy Allocation = PagedAllocation, EvictionPolicy Eviction = NoEviction,
          SharingPolicy Sharing = NoPrefixSharing, CacheCodec Codec = PlainCodec>
struct CachePolicy {
  static_assert(!(Allocation::kContiguous && Sharing::kEnabled),
                "prefix sharing needs PagedAllocation: a shared block cannot sit inside two "
                "contiguous regions");
  using allocation = Allocation;
  using eviction = Eviction;
  using sharing = Sharing;
  using codec = Codec;
};

}  // namespace kvcache
