// Shadow caches: metadata-only replicas of a prefix cache under another
// eviction policy, fed the same prompt lookups, that say what that policy
// would have hit. No block, no byte: a set of resident keys and the policy's
// own bookkeeping.
//
// A lookup is a prompt's chain of block keys, in order. Keys are sampled by
// hash (a fixed share `rate` of the key space, as SHARDS samples a cache's
// references) and the replica's capacity is the same share of the real one,
// so its hit rate estimates the full cache's at a fraction of the cost. A
// sampled key hits when it is resident and every sampled key before it in
// the chain hit (hits count up to a prompt's first miss, as in the cache).
// The blocks of a lookup are released right after it, deepest first (the
// order in which a finished request hands its blocks back).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <unordered_set>
#include <vector>

#include "kvcache/policy/concepts.hpp"

namespace kvcache {

// Told of every prompt lookup of a manager: its whole chain of block keys
// (the cached prefix and the rest), in order (metrics::attach_lookup_observer).
class LookupObserver {
 public:
  virtual void on_lookup(std::span<const EvictionKey> chain) = 0;

 protected:
  ~LookupObserver() = default;
};

// Which keys the shadows follow: a fixed share of the key space, by hash.
class ShadowSampling {
 public:
  // `rate` in (0, 1]; 1 follows every key.
  explicit ShadowSampling(double rate)
      : rate_(std::clamp(rate, 1.0 / (1 << 20), 1.0)),
        threshold_(static_cast<std::uint64_t>(std::ldexp(rate_, 32))) {}
  // A rate that gives replicas of about `target_blocks` blocks (never above
  // 1, never under 1/256) for a cache of `capacity_blocks`.
  static ShadowSampling for_capacity(std::int64_t capacity_blocks, std::int64_t target_blocks) {
    const double rate = static_cast<double>(target_blocks) /
                        static_cast<double>(std::max<std::int64_t>(1, capacity_blocks));
    return ShadowSampling(std::clamp(rate, 1.0 / 256, 1.0));
  }
  bool sampled(EvictionKey key) const {
    if (rate_ >= 1.0) return true;
    return ((key * 0x9E3779B97F4A7C15ull) >> 32) < threshold_;
  }
  double rate() const { return rate_; }
  // A replica's capacity for a cache of `capacity_blocks`.
  std::int64_t scaled(std::int64_t capacity_blocks) const {
    return std::max<std::int64_t>(
        1, static_cast<std::int64_t>(std::ceil(rate_ * static_cast<double>(capacity_blocks))));
  }
  // The sampled keys of `chain`, in order, into `out` (cleared first).
  void filter(std::span<const EvictionKey> chain, std::vector<EvictionKey>& out) const {
    out.clear();
    for (EvictionKey key : chain)
      if (sampled(key)) out.push_back(key);
  }

 private:
  double rate_;
  std::uint64_t threshold_;  // of the hash's top 32 bits
};

template <EvictionPolicy Policy>
class ShadowCache {
 public:
  explicit ShadowCache(std::int64_t capacity_blocks)
      : policy_(std::max<std::int64_t>(1, capacity_blocks)),
        capacity_(std::max<std::int64_t>(1, capacity_blocks)) {
    resident_.reserve(static_cast<std::size_t>(capacity_) + 1);
  }

  // One prompt's (sampled) keys, in chain order.
  void lookup(std::span<const EvictionKey> keys) {
    bool prefix = true;
    for (EvictionKey key : keys) {
      if (resident_.contains(key)) {
        hits_ += prefix ? 1 : 0;
        policy_.erase(key);  // in use again
      } else {
        prefix = false;
        make_room();
        resident_.insert(key);
      }
      policy_.on_access(key);
    }
    requested_ += static_cast<std::int64_t>(keys.size());
    for (std::size_t i = keys.size(); i-- > 0;)
      policy_.insert(keys[i]);
  }

  std::int64_t hits() const { return hits_; }
  std::int64_t requested() const { return requested_; }
  std::int64_t capacity() const { return capacity_; }
  // A smaller capacity takes effect at the next admission (it evicts down).
  void set_capacity(std::int64_t blocks) { capacity_ = std::max<std::int64_t>(1, blocks); }
  std::int64_t resident() const { return static_cast<std::int64_t>(resident_.size()); }
  Policy& policy() { return policy_; }
  const Policy& policy() const { return policy_; }

 private:
  // Evicts until a block is free; a chain longer than the whole replica
  // (nothing evictable left) overfills it until its next lookup.
  void make_room() {
    while (static_cast<std::int64_t>(resident_.size()) >= capacity_) {
      const std::optional<EvictionKey> victim = policy_.pop_victim();
      if (!victim) return;
      resident_.erase(*victim);
    }
  }

  Policy policy_;
  std::int64_t capacity_;
  std::unordered_set<EvictionKey> resident_;
  std::int64_t hits_ = 0;
  std::int64_t requested_ = 0;
};

}  // namespace kvcache
