// S3-FIFO (Yang et al., SOSP'23): a small FIFO that new entries enter, a
// main FIFO for entries that proved themselves, and a ghost list of keys
// recently dropped from the small queue. One-hit wonders leave from the small
// queue quickly; an entry used again while in the small queue, or coming back
// while remembered as a ghost, moves to the main queue, where each use buys
// one more pass. Here the queues hold the evictable (unreferenced) entries;
// an entry keeps its queue while in use and rejoins that queue's tail when
// released.
#pragma once

#include <algorithm>
#include <cstdint>
#include <list>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "kvcache/policy/concepts.hpp"

namespace kvcache {

class S3FifoEviction {
 public:
  static constexpr std::string_view kName = "s3-fifo";
  static constexpr bool kRetains = true;

  explicit S3FifoEviction(std::int64_t capacity_blocks)
      : small_target_(std::max<std::int64_t>(1, capacity_blocks / 10)),
        ghost_capacity_(std::max<std::int64_t>(1, capacity_blocks)) {}

  void on_access(EvictionKey key) {
    auto it = entries_.find(key);
    if (it == entries_.end()) {
      Entry entry;
      if (auto ghost = ghost_where_.find(key); ghost != ghost_where_.end()) {
        entry.main = true;  // seen recently: straight to the main queue
        ghosts_.erase(ghost->second);
        ghost_where_.erase(ghost);
      }
      entries_.emplace(key, entry);
      return;
    }
    it->second.uses = std::min(it->second.uses + 1, 3);
  }
  void insert(EvictionKey key) {
    Entry& entry = entries_[key];
    if (entry.queued) return;
    auto& queue = entry.main ? main_ : small_;
    queue.push_back(key);
    entry.position = std::prev(queue.end());
    entry.queued = true;
  }
  void erase(EvictionKey key) {
    auto it = entries_.find(key);
    if (it == entries_.end() || !it->second.queued) return;
    (it->second.main ? main_ : small_).erase(it->second.position);
    it->second.queued = false;
  }
  void forget(EvictionKey key) {
    erase(key);
    entries_.erase(key);
  }
  std::optional<EvictionKey> pop_victim() {
    while (!small_.empty() || !main_.empty()) {
      if (!small_.empty() &&
          (static_cast<std::int64_t>(small_.size()) >= small_target_ || main_.empty())) {
        const EvictionKey key = small_.front();
        small_.pop_front();
        Entry& entry = entries_[key];
        if (entry.uses > 0) {  // used again while young: promote
          entry.main = true;
          entry.uses = 0;
          main_.push_back(key);
          entry.position = std::prev(main_.end());
          continue;
        }
        entries_.erase(key);
        remember_ghost(key);
        return key;
      }
      const EvictionKey key = main_.front();
      main_.pop_front();
      Entry& entry = entries_[key];
      if (entry.uses > 0) {  // one more pass per use
        --entry.uses;
        main_.push_back(key);
        entry.position = std::prev(main_.end());
        continue;
      }
      entries_.erase(key);
      return key;
    }
    return std::nullopt;
  }
  std::int64_t size() const { return static_cast<std::int64_t>(small_.size() + main_.size()); }

 private:
  struct Entry {
    int uses = 0;
    bool main = false;
    bool queued = false;
    std::list<EvictionKey>::iterator position;
  };

  void remember_ghost(EvictionKey key) {
    ghosts_.push_back(key);
    ghost_where_[key] = std::prev(ghosts_.end());
    if (static_cast<std::int64_t>(ghosts_.size()) > ghost_capacity_) {
      ghost_where_.erase(ghosts_.front());
      ghosts_.pop_front();
    }
  }

  std::int64_t small_target_;
  std::int64_t ghost_capacity_;
  std::list<EvictionKey> small_, main_, ghosts_;
  std::unordered_map<EvictionKey, Entry> entries_;
  std::unordered_map<EvictionKey, std::list<EvictionKey>::iterator> ghost_where_;
};

static_assert(EvictionPolicy<S3FifoEviction>);

}  // namespace kvcache
