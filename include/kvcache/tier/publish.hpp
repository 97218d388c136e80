// Publishing a sequence's prefix blocks to the shared tier, so that other
// engines (other processes, other machines on the same Redis) find them
// while this engine still holds them, not only once it evicts them.
//
//   cache.attach_tier(host_tier);        // host_tier.set_lower(&redis), or
//   cache.attach_tier(redis);            //   a shared store attached directly
//   ... prefill seq, commit ...
//   kvcache::publish_prefix(cache, seq); // its full blocks, keyed, to Redis
//
// The blocks go as the codec stores them; a store that already has a block
// (or just wrote or read it) does not send it again. A cache without a tier,
// or whose tier has no shared store below it, publishes nothing.
#pragma once

#include <cstdint>

#include "kvcache/detail/manager_access.hpp"
#include "kvcache/types.hpp"

namespace kvcache {

// Returns the blocks the shared store took. Throws InvalidArgument for an
// unknown sequence.
template <class Manager>
std::int64_t publish_prefix(Manager& m, SeqId seq) {
  const auto& s = detail::ManagerAccess::sequences(m).find(seq, "publish_prefix");
  return detail::ManagerAccess::tiers(m).publish(s, m.sequence(seq).quantized_tokens,
                                                 m.block_size());
}

}  // namespace kvcache
