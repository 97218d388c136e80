// A bounded memory of keys: what an eviction policy remembers about entries
// it no longer holds. The last `capacity` writes are kept; an older one goes
// when the ring comes round to its slot, unless the key was written again
// since (its newer write holds another slot).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "kvcache/policy/concepts.hpp"

namespace kvcache::detail {

template <class Value>
class KeyMemory {
 public:
  // The ring grows with the writes up to `capacity` keys: a memory that is
  // never filled costs only what it holds.
  explicit KeyMemory(std::size_t capacity) : capacity_(capacity < 1 ? 1 : capacity) {}

  void put(EvictionKey key, Value value) {
    if (ring_.size() < capacity_) {
      ring_.push_back(key);  // writes_ == ring_.size() until the ring is full
    } else {
      const std::size_t slot = static_cast<std::size_t>(writes_ % capacity_);
      auto old = map_.find(ring_[slot]);
      if (old != map_.end() && old->second.stamp == writes_ - capacity_) map_.erase(old);
      ring_[slot] = key;
    }
    map_[key] = Slot{value, writes_};
    ++writes_;
  }
  // The value written last for `key`, removed from the memory.
  std::optional<Value> take(EvictionKey key) {
    auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    const Value value = it->second.value;
    map_.erase(it);
    return value;
  }
  const Value* find(EvictionKey key) const {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second.value;
  }

 private:
  struct Slot {
    Value value;
    std::uint64_t stamp;  // which write of the ring holds it
  };
  std::size_t capacity_;
  std::vector<EvictionKey> ring_;
  std::uint64_t writes_ = 0;
  std::unordered_map<EvictionKey, Slot> map_;
};

}  // namespace kvcache::detail
