// Reuse-weighted LRU for prefix trees: an entry's priority is the moment its
// last owner let go (counted in releases) plus one "reuse interval" for every
// earlier request that reached it, up to kMaxBonus; the lowest goes first.
//
// Why it suits a prefix cache: a block's use count is the number of requests
// whose prompt passed through that node of the prefix tree, so a parent
// always counts at least as many as its children and, released after them,
// never goes first; a shared system prompt, or a conversation that already
// came back once, outlives the tail one request wrote and nobody reused. On
// the Mooncake conversation trace a block seen once is reused later with
// probability 0.24, one seen twice with 0.42, three times with 0.50: the
// bonus spends the pool on entries likelier to return.
//
// The interval is measured, not set: the geometric mean of the workload's
// reuse distances (release to next use, counted in releases), taken on a
// sample of the keys (one in eight, by hash) whose last 65536 releases (or
// one per block of capacity, if more) are remembered: about half a million
// releases, much longer than a small pool keeps a block. A distance is
// measured whether the entry was still cached or long evicted, so the
// interval is the workload's rhythm and not the pool's: a small pool, which
// only sees its own short reuses, would otherwise learn a short interval and
// give its bonus too little weight. Back-to-back reuses (an entry taken again
// before any other release began: a hot shared prefix, released tail first,
// going from one request to the next) say nothing about when a conversation
// comes back and are left out; a release is a run of insert() calls, which
// anything else ends. Use counts survive eviction in a ghost ring of eight
// keys per block of capacity, so a prefix that returns after being evicted
// keeps its history.
//
// Equal bonuses keep release order, so entries sit in one FIFO per use count
// and the victim is the cheapest of kMaxBonus + 1 queue fronts: O(1) per
// operation (hash lookups and list splices, as LRU).
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <list>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "kvcache/detail/key_memory.hpp"
#include "kvcache/policy/concepts.hpp"

namespace kvcache {

class ReuseLruEviction {
 public:
  static constexpr std::string_view kName = "reuse-lru";
  static constexpr bool kRetains = true;
  // Most reuse intervals of bonus an entry can earn.
  static constexpr int kMaxBonus = 4;
  // Ghost keys remembered per block of capacity.
  static constexpr std::int64_t kGhostFactor = 8;
  // One key in this many has its reuse distances measured ...
  static constexpr std::uint64_t kSampleOneIn = 8;
  // ... from its last release among the last this many sampled ones (or one
  // per block of capacity, if more).
  static constexpr std::int64_t kMinSampledReleases = 65536;
  // Weight of one observed distance in the running mean of logarithms.
  static constexpr double kDistanceWeight = 1.0 / 1024;

  explicit ReuseLruEviction(std::int64_t capacity_blocks)
      : log_distance_(log2_of(std::max<std::int64_t>(1, capacity_blocks))),
        interval_(std::max<std::int64_t>(1, capacity_blocks)),
        bonus_(interval_),
        ghosts_(
            static_cast<std::size_t>(kGhostFactor * std::max<std::int64_t>(1, capacity_blocks))),
        samples_(static_cast<std::size_t>(std::max(kMinSampledReleases, capacity_blocks))) {}

  // Whether `key`'s reuse distances are measured (a fixed one in kSampleOneIn).
  static bool sampled(EvictionKey key) {
    return (key & kSequenceKeyBit) == 0 &&
           ((key * 0x9E3779B97F4A7C15ull) >> 32) % kSampleOneIn == 0;
  }

  void on_access(EvictionKey key) {
    auto [it, fresh] = entries_.try_emplace(key);
    Entry& entry = it->second;
    if (fresh) {
      if (const auto uses = ghosts_.take(key)) entry.uses = *uses;
    }
    in_release_ = false;
    if (sampled(key)) {
      const auto sample = samples_.take(key);
      if (sample && sample->release != releases_)  // back to back: no news of a return
        observe(clock_ - sample->released);
    }
    if (entry.uses < kMaxBonus + 1) ++entry.uses;
  }
  void insert(EvictionKey key) {
    Entry& entry = entries_[key];
    if (entry.queued) return;
    if (entry.uses == 0) entry.uses = 1;  // inserted without an access: counts as one
    entry.released = ++clock_;
    if (!in_release_) {
      ++releases_;
      in_release_ = true;
    }
    if (sampled(key)) samples_.put(key, Sample{entry.released, releases_});
    entry.queue = static_cast<std::uint8_t>(entry.uses - 1);
    auto& queue = queues_[entry.queue];
    queue.push_back(key);
    entry.position = std::prev(queue.end());
    entry.queued = true;
    ++size_;
  }
  void erase(EvictionKey key) {
    in_release_ = false;
    auto it = entries_.find(key);
    if (it != entries_.end()) dequeue(it->second);
  }
  void forget(EvictionKey key) {
    in_release_ = false;
    auto it = entries_.find(key);
    if (it == entries_.end()) return;
    dequeue(it->second);
    entries_.erase(it);
  }
  std::optional<EvictionKey> pop_victim() {
    in_release_ = false;
    int best = -1;
    std::int64_t best_priority = 0;
    for (int q = 0; q <= kMaxBonus; ++q) {
      const auto& queue = queues_[static_cast<std::size_t>(q)];
      if (queue.empty()) continue;
      const std::int64_t priority = entries_.find(queue.front())->second.released + q * bonus_;
      if (best < 0 || priority < best_priority) {
        best = q;
        best_priority = priority;
      }
    }
    if (best < 0) return std::nullopt;
    auto& queue = queues_[static_cast<std::size_t>(best)];
    const EvictionKey key = queue.front();
    queue.pop_front();
    --size_;
    auto it = entries_.find(key);
    ghosts_.put(key, it->second.uses);
    entries_.erase(it);
    return key;
  }
  std::int64_t size() const { return size_; }

  // The current bonus per earlier use, in releases.
  std::int64_t interval() const { return interval_; }

  // How many intervals one earlier use is worth (default 1; 0 is LRU: the
  // victim is the entry released longest ago). Changing it keeps every entry
  // and what is known of it: only the choice of the next victims changes
  // (AdaptiveEviction tunes it).
  // `weight` in [0, kMaxWeight]; anything else (NaN included) is clamped.
  static constexpr double kMaxWeight = 64;
  void set_bonus_weight(double weight) {
    weight_ = std::isfinite(weight) ? std::clamp(weight, 0.0, kMaxWeight) : 1.0;
    update_bonus();
  }
  double bonus_weight() const { return weight_; }

  // Sets the interval (a replica of a larger cache starts from that cache's
  // scale, or follows its measured rhythm); measuring goes on from it.
  void set_interval(std::int64_t interval) {
    interval_ = std::clamp<std::int64_t>(interval, 1, std::int64_t{1} << 52);
    log_distance_ = log2_of(interval_);
    update_bonus();
  }

  // Requests that reached `key` (0 when unknown), for tests and tools.
  int uses(EvictionKey key) const {
    auto it = entries_.find(key);
    if (it != entries_.end()) return it->second.uses;
    const int* ghost = ghosts_.find(key);
    return ghost == nullptr ? 0 : *ghost;
  }

 private:
  struct Entry {
    int uses = 0;
    bool queued = false;
    std::uint8_t queue = 0;
    std::int64_t released = 0;
    std::list<EvictionKey>::iterator position;
  };
  struct Sample {
    std::int64_t released;  // the clock at the release
    std::int64_t release;   // which run of insert() calls it was part of
  };

  // log2 of a positive count, to about 0.1 (exponent plus linear mantissa).
  static double log2_of(std::int64_t x) {
    const int exponent = std::bit_width(static_cast<std::uint64_t>(x)) - 1;
    const double mantissa = std::ldexp(static_cast<double>(x), -exponent);  // [1, 2)
    return exponent + (mantissa - 1.0);
  }
  void observe(std::int64_t distance) {
    log_distance_ += kDistanceWeight * (log2_of(distance) - log_distance_);
    interval_ = std::max<std::int64_t>(1, static_cast<std::int64_t>(std::exp2(log_distance_)));
    update_bonus();
  }
  // Bounded so that released + kMaxBonus * bonus_ cannot overflow.
  void update_bonus() {
    constexpr double kMaxBonusValue = static_cast<double>(std::int64_t{1} << 52);
    const double bonus = weight_ * static_cast<double>(interval_);
    bonus_ = weight_ == 1.0 && interval_ <= (std::int64_t{1} << 52)
                 ? interval_
                 : static_cast<std::int64_t>(std::llround(std::min(bonus, kMaxBonusValue)));
  }
  void dequeue(Entry& entry) {
    if (!entry.queued) return;
    queues_[entry.queue].erase(entry.position);
    entry.queued = false;
    --size_;
  }

  double log_distance_;        // running mean of log2(reuse distance)
  std::int64_t interval_;      // 2^log_distance_
  double weight_ = 1.0;        // intervals per earlier use
  std::int64_t bonus_;         // weight_ * interval_
  std::int64_t clock_ = 0;     // insert() calls
  std::int64_t releases_ = 0;  // runs of insert() calls
  bool in_release_ = false;    // the last call was an insert()
  std::int64_t size_ = 0;
  std::array<std::list<EvictionKey>, kMaxBonus + 1> queues_;
  std::unordered_map<EvictionKey, Entry> entries_;
  detail::KeyMemory<int> ghosts_;      // evicted keys' use counts
  detail::KeyMemory<Sample> samples_;  // sampled keys' last release
};

static_assert(EvictionPolicy<ReuseLruEviction>);

}  // namespace kvcache
