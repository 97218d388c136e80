// Least recently used: the entry whose last owner let go longest ago goes
// first. Released sequences hand their blocks over tail first, so a prefix's
// deeper blocks leave before the blocks they extend. O(1) per operation.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "kvcache/policy/concepts.hpp"

namespace kvcache {

class LruEviction {
 public:
  static constexpr std::string_view kName = "lru";
  static constexpr bool kRetains = true;

  explicit LruEviction(std::int64_t /*capacity_blocks*/) {}

  void on_access(EvictionKey) {}
  void insert(EvictionKey key) {
    if (where_.count(key) != 0) return;
    order_.push_back(key);
    where_.emplace(key, std::prev(order_.end()));
  }
  void erase(EvictionKey key) {
    auto it = where_.find(key);
    if (it == where_.end()) return;
    order_.erase(it->second);
    where_.erase(it);
  }
  void forget(EvictionKey key) { erase(key); }
  std::optional<EvictionKey> pop_victim() {
    if (order_.empty()) return std::nullopt;
    const EvictionKey key = order_.front();
    order_.pop_front();
    where_.erase(key);
    return key;
  }
  std::int64_t size() const { return static_cast<std::int64_t>(order_.size()); }

 private:
  std::list<EvictionKey> order_;  // least recent at the front
  std::unordered_map<EvictionKey, std::list<EvictionKey>::iterator> where_;
};

static_assert(EvictionPolicy<LruEviction>);

}  // namespace kvcache
