// Frequency-aware eviction with dynamic aging (LFU-DA, GreedyDual with unit
// cost): an entry's priority is the cache's age L plus the number of times it
// was used while cached; the lowest priority goes first and sets L. Entries
// used often (a shared system prompt) outlive entries seen once, and L lets
// old favourites age out. On the Mooncake conversation trace it keeps more
// of the hot prefixes than LRU at the same capacity (see the README's sweep).
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include "kvcache/policy/concepts.hpp"

namespace kvcache {

class LfuAgingEviction {
 public:
  static constexpr std::string_view kName = "lfu-aging";
  static constexpr bool kRetains = true;

  explicit LfuAgingEviction(std::int64_t /*capacity_blocks*/) {}

  void on_access(EvictionKey key) { ++entries_[key].uses; }
  void insert(EvictionKey key) {
    Entry& entry = entries_[key];
    if (entry.queued) return;
    entry.priority = age_ + entry.uses;
    entry.order = ++clock_;
    entry.queued = true;
    queue_.emplace(entry.priority, entry.order, key);
  }
  void erase(EvictionKey key) {
    auto it = entries_.find(key);
    if (it == entries_.end() || !it->second.queued) return;
    queue_.erase({it->second.priority, it->second.order, key});
    it->second.queued = false;
  }
  void forget(EvictionKey key) {
    erase(key);
    entries_.erase(key);
  }
  std::optional<EvictionKey> pop_victim() {
    if (queue_.empty()) return std::nullopt;
    const auto [priority, order, key] = *queue_.begin();
    queue_.erase(queue_.begin());
    age_ = priority;
    entries_.erase(key);
    return key;
  }
  std::int64_t size() const { return static_cast<std::int64_t>(queue_.size()); }

 private:
  struct Entry {
    std::int64_t uses = 0;
    std::int64_t priority = 0;
    std::uint64_t order = 0;
    bool queued = false;
  };
  std::int64_t age_ = 0;
  std::uint64_t clock_ = 0;  // ties go to the earliest inserted
  std::unordered_map<EvictionKey, Entry> entries_;
  std::set<std::tuple<std::int64_t, std::uint64_t, EvictionKey>> queue_;
};

static_assert(EvictionPolicy<LfuAgingEviction>);

}  // namespace kvcache
