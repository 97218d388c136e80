// Shadow caches of reuse-weighted LRU at several bonus weights, sharing one
// key index: what AdaptiveEviction's candidates would have hit.
//
// Each replica is a metadata-only prefix cache fed the same prompt lookups,
// as ShadowCache<ReuseLruEviction> is (a key hits when it is resident and
// every key before it in the chain hit; the chain is then released deepest
// first), with its bonus weight as the only difference. Since every replica
// sees every lookup, what reuse-lru knows of a key is the same in all of
// them: the requests that reached it (its use count, and so its queue) and
// the moment it was last released. So the keys are found once a lookup, in
// one flat index, and held once, in one slot (key, use count, release time).
//
// The queues are shared too. Reuse-lru keeps one FIFO per use count, in
// release order, and evicts only from a queue's front; every key of a lookup
// is released into every replica. So a replica's keys in queue q are always a
// suffix of one shared queue q (the keys released into it, in release order,
// while any replica holds them): what the replica evicted is a prefix of it.
// A replica is its resident bits and a head in each shared queue; evicting
// moves the head on, and a key leaves the shared queue when the last replica
// lets it go (or when it is used again, to be released anew). A lookup costs
// one probe and one queue move per key, plus a few compares a replica: no
// allocation, where separate replicas each paid several hash-map operations
// and a list node per key.
//
// What differs from ReuseLruEviction inside a ShadowCache:
// - The reuse interval is set (AdaptiveEviction gives the live cache's
//   measured one), not measured: a replica's sample is too thin to learn it.
// - A key's use count outlives its eviction while any replica holds it, and
//   then until `ghost_blocks` more keys have been let go by every replica
//   (kGhostFactor a block of capacity by default, as reuse-lru's ghost ring).
//
// Memory: a slot (48 bytes) for each key resident in any replica or
// remembered as a ghost, and two to four index cells (16 bytes each) a slot:
// at most replicas x (the capacity, or the longest chain if longer) +
// ghost_blocks slots, whatever the cache's size.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/detail/flat_key_index.hpp"
#include "kvcache/error.hpp"
#include "kvcache/policy/concepts.hpp"
#include "kvcache/policy/reuse_lru.hpp"

namespace kvcache {

class ReuseLruShadows {
 public:
  static constexpr int kMaxBonus = ReuseLruEviction::kMaxBonus;
  static constexpr std::int64_t kGhostFactor = ReuseLruEviction::kGhostFactor;
  static constexpr std::size_t kMaxReplicas = 8;

  // One replica per weight (1 to kMaxReplicas of them, each in
  // [0, ReuseLruEviction::kMaxWeight]), of `capacity_blocks` blocks each,
  // remembering the use counts of the last `ghost_blocks` keys evicted from
  // every replica (-1: kGhostFactor x capacity). Throws InvalidArgument naming
  // a bad count or weight.
  ReuseLruShadows(std::span<const double> weights, std::int64_t capacity_blocks,
                  std::int64_t ghost_blocks = -1)
      : capacity_(std::max<std::int64_t>(1, capacity_blocks)) {
    if (weights.empty() || weights.size() > kMaxReplicas) {
      throw InvalidArgument(fmt::format("ReuseLruShadows: {} weights; 1 to {} allowed",
                                        weights.size(), kMaxReplicas));
    }
    for (double weight : weights) {
      if (!(weight >= 0.0 && weight <= ReuseLruEviction::kMaxWeight)) {
        throw InvalidArgument(fmt::format("ReuseLruShadows: weight {}; [0, {}] allowed", weight,
                                          ReuseLruEviction::kMaxWeight));
      }
    }
    replicas_.resize(weights.size());
    for (std::size_t r = 0; r < weights.size(); ++r)
      replicas_[r].weight = weights[r];
    for (auto& heads : heads_)
      heads.fill(kNil);
    empty_.fill(static_cast<std::uint8_t>(all_replicas()));
    const std::int64_t ghosts = ghost_blocks < 0 ? kGhostFactor * capacity_ : ghost_blocks;
    ghost_ring_.resize(static_cast<std::size_t>(std::max<std::int64_t>(1, ghosts)));
    set_interval(capacity_);
  }

  // The reuse interval, in releases (clamped to [1, 2^52]), that one earlier
  // use is worth at weight 1.
  void set_interval(std::int64_t interval) {
    interval_ = std::clamp<std::int64_t>(interval, 1, std::int64_t{1} << 52);
    constexpr double kMaxBonusValue = static_cast<double>(std::int64_t{1} << 52);
    for (Replica& replica : replicas_) {
      const double bonus = replica.weight * static_cast<double>(interval_);
      replica.bonus =
          replica.weight == 1.0
              ? interval_
              : static_cast<std::int64_t>(std::llround(std::min(bonus, kMaxBonusValue)));
    }
  }
  std::int64_t interval() const { return interval_; }
  // A smaller capacity takes effect at the next admission (it evicts down).
  void set_capacity(std::int64_t blocks) { capacity_ = std::max<std::int64_t>(1, blocks); }
  std::int64_t capacity() const { return capacity_; }

  // One prompt's keys, in chain order: hits counted, misses admitted (each
  // replica evicting by its own weight), then the chain released deepest
  // first. A chain longer than a replica overfills it until its next lookup.
  void lookup(std::span<const EvictionKey> keys) {
    ++lookup_;
    chain_.clear();
    // Replicas whose hits so far form a prefix: each has hit every key before
    // the one that ends it (a repeated key too, resident since it first came).
    std::uint32_t prefix = all_replicas();
    for (std::size_t i = 0; i < keys.size(); ++i) {
      const std::uint32_t s = slot_of(keys[i]);
      chain_.push_back(s);
      if (slots_[s].seen != 2 * lookup_) {  // not earlier in this chain
        slots_[s].seen = 2 * lookup_;
        slots_[s].ghost = 0;
        if (slots_[s].resident != 0) unlink(s);  // in use again
        const std::uint32_t missing = all_replicas() & ~std::uint32_t{slots_[s].resident};
        end_prefix(prefix & missing, static_cast<std::int64_t>(i));
        prefix &= ~missing;
        for (std::size_t r = 0; missing >> r != 0; ++r) {
          if ((missing >> r & 1u) == 0) continue;
          make_room(r);
          slots_[s].resident |= static_cast<std::uint8_t>(1u << r);
          ++replicas_[r].resident;
        }
      }
      if (slots_[s].uses < kMaxBonus + 1) ++slots_[s].uses;
    }
    end_prefix(prefix, static_cast<std::int64_t>(keys.size()));
    requested_ += static_cast<std::int64_t>(keys.size());
    for (std::size_t i = chain_.size(); i-- > 0;) {
      Slot& slot = slots_[chain_[i]];
      if (slot.seen == 2 * lookup_ + 1) continue;  // released already (a repeat)
      slot.seen = 2 * lookup_ + 1;
      slot.released = ++clock_;
      slot.queue = static_cast<std::uint8_t>(slot.uses - 1);
      push_back(chain_[i]);
    }
  }

  std::size_t replicas() const { return replicas_.size(); }
  double weight(std::size_t r) const { return replicas_.at(r).weight; }
  std::int64_t hits(std::size_t r) const { return replicas_.at(r).hits; }
  std::int64_t resident(std::size_t r) const { return replicas_.at(r).resident; }
  std::int64_t requested() const { return requested_; }
  // Keys held: resident in some replica, or remembered as a ghost.
  std::int64_t tracked() const { return static_cast<std::int64_t>(index_.size()); }
  // Whether replica `r` holds `key`, and the requests that reached it (0
  // when neither held nor remembered), for tests and tools.
  bool holds(std::size_t r, EvictionKey key) const {
    const std::uint32_t s = index_.find(key);
    return s != kNil && (slots_[s].resident >> r & 1u) != 0;
  }
  int uses(EvictionKey key) const {
    const std::uint32_t s = index_.find(key);
    return s == kNil ? 0 : slots_[s].uses;
  }

 private:
  static constexpr std::uint32_t kNil = detail::FlatKeyIndex::kNone;

  struct Slot {
    EvictionKey key = 0;
    std::int64_t released = 0;  // the clock at its last release
    std::uint64_t seen = 0;     // 2 x the lookup that last reached it (+1: released)
    std::uint64_t ghost = 0;    // its write to the ghost ring + 1 (0: not a ghost)
    std::uint8_t uses = 0;      // requests that reached it, up to kMaxBonus + 1
    std::uint8_t queue = 0;     // uses - 1 at its release
    std::uint8_t resident = 0;  // a bit per replica
    std::uint8_t heads = 0;     // the replicas whose suffix of its queue starts here
    std::uint32_t prev = kNil;  // its neighbours in its shared queue
    std::uint32_t next = kNil;
  };
  struct Queue {
    std::uint32_t head = kNil;
    std::uint32_t tail = kNil;
  };
  struct Replica {
    double weight = 1.0;
    std::int64_t bonus = 1;  // weight x interval
    std::int64_t hits = 0;
    std::int64_t resident = 0;
  };

  std::uint32_t all_replicas() const {
    return static_cast<std::uint32_t>((1u << replicas_.size()) - 1u);
  }

  // The slot of `key`, a fresh one (no use, resident nowhere) if not held.
  std::uint32_t slot_of(EvictionKey key) {
    std::uint32_t s = index_.find(key);
    if (s != kNil) return s;
    if (!free_.empty()) {
      s = free_.back();
      free_.pop_back();
      slots_[s] = Slot{};
    } else {
      s = static_cast<std::uint32_t>(slots_.size());
      slots_.emplace_back();
    }
    slots_[s].key = key;
    index_.insert(key, s);
    return s;
  }

  // The replicas in `ended` hit the `hits` keys before their first miss.
  void end_prefix(std::uint32_t ended, std::int64_t hits) {
    for (std::size_t r = 0; ended != 0; ++r, ended >>= 1)
      replicas_[r].hits += (ended & 1u) != 0 ? hits : 0;
  }

  // Replica heads in `queue` at slot `from` (the bits of `moving`) move to
  // slot `to` (kNil: their suffixes are empty).
  void move_heads(std::uint8_t queue, std::uint8_t moving, std::uint32_t to) {
    for (std::size_t r = 0; r < replicas_.size(); ++r)
      if ((moving >> r & 1u) != 0) heads_[queue][r] = to;
    if (to != kNil) {
      slots_[to].heads |= moving;
    } else {
      empty_[queue] |= moving;
    }
  }

  // Released: to the tail of its shared queue, where every replica holds it
  // (a replica whose suffix there was empty starts it here).
  void push_back(std::uint32_t s) {
    Slot& slot = slots_[s];
    Queue& queue = queues_[slot.queue];
    slot.prev = queue.tail;
    slot.next = kNil;
    if (queue.tail != kNil) {
      slots_[queue.tail].next = s;
    } else {
      queue.head = s;
    }
    queue.tail = s;
    if (empty_[slot.queue] != 0) {
      const std::uint8_t starting = empty_[slot.queue];
      empty_[slot.queue] = 0;
      move_heads(slot.queue, starting, s);
    }
  }
  // Out of its shared queue; a replica whose suffix started at it starts at
  // the next key.
  void unlink(std::uint32_t s) {
    Slot& slot = slots_[s];
    Queue& queue = queues_[slot.queue];
    if (slot.heads != 0) {
      const std::uint8_t moving = slot.heads;
      slot.heads = 0;
      move_heads(slot.queue, moving, slot.next);
    }
    if (slot.prev != kNil) {
      slots_[slot.prev].next = slot.next;
    } else {
      queue.head = slot.next;
    }
    if (slot.next != kNil) {
      slots_[slot.next].prev = slot.prev;
    } else {
      queue.tail = slot.prev;
    }
  }

  // Evicts from replica `r` until a block is free: the queue front with the
  // lowest release time + queue x bonus (ties: the lower queue), as
  // ReuseLruEviction::pop_victim.
  void make_room(std::size_t r) {
    Replica& replica = replicas_[r];
    while (replica.resident >= capacity_) {
      int best = -1;
      std::int64_t best_priority = 0;
      for (int q = 0; q <= kMaxBonus; ++q) {
        const std::uint32_t head = heads_[static_cast<std::size_t>(q)][r];
        if (head == kNil) continue;
        const std::int64_t priority = slots_[head].released + q * replica.bonus;
        if (best < 0 || priority < best_priority) {
          best = q;
          best_priority = priority;
        }
      }
      if (best < 0) return;  // everything is in this lookup's chain
      const std::uint32_t victim = heads_[static_cast<std::size_t>(best)][r];
      const auto bit = static_cast<std::uint8_t>(1u << r);
      slots_[victim].heads &= static_cast<std::uint8_t>(~bit);
      move_heads(static_cast<std::uint8_t>(best), bit, slots_[victim].next);
      slots_[victim].resident &= static_cast<std::uint8_t>(~bit);
      --replica.resident;
      if (slots_[victim].resident == 0) {
        unlink(victim);  // the shared queue's front: no replica holds it
        remember(victim);
      }
    }
  }

  // A key no replica holds: its use count is kept for the next ghost_blocks
  // such evictions, then its slot is freed (unless it came back meanwhile).
  void remember(std::uint32_t s) {
    const std::size_t at = static_cast<std::size_t>(ghost_writes_ % ghost_ring_.size());
    if (ghost_writes_ >= ghost_ring_.size()) {
      const std::uint32_t old = ghost_ring_[at];
      if (slots_[old].ghost == ghost_writes_ - ghost_ring_.size() + 1) {
        index_.erase(slots_[old].key);
        slots_[old].ghost = 0;
        slots_[old].seen = 0;
        free_.push_back(old);
      }
    }
    ghost_ring_[at] = s;
    slots_[s].ghost = ++ghost_writes_;
  }

  std::vector<Replica> replicas_;
  std::int64_t capacity_;
  std::int64_t interval_ = 1;
  std::vector<Slot> slots_;
  Queue queues_[kMaxBonus + 1];  // shared: keys in release order, one queue per use count
  // Where each replica's suffix of each queue starts ([queue][replica]), and
  // the replicas whose suffix of a queue is empty.
  std::array<std::array<std::uint32_t, kMaxReplicas>, kMaxBonus + 1> heads_{};
  std::array<std::uint8_t, kMaxBonus + 1> empty_{};
  std::vector<std::uint32_t> free_;
  detail::FlatKeyIndex index_;
  std::vector<std::uint32_t> ghost_ring_;
  std::uint64_t ghost_writes_ = 0;
  std::vector<std::uint32_t> chain_;  // this lookup's slots
  std::uint64_t lookup_ = 0;
  std::int64_t clock_ = 0;
  std::int64_t requested_ = 0;
};

}  // namespace kvcache
