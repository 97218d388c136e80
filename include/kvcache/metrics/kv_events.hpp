// KV events: what the prefix cache gained and lost, block by block, for a
// component outside the engine that mirrors it (a router that sends a
// request to the engine holding its prefix, a cache-aware scheduler).
//
//   kvcache::KvEventRing events(4096);
//   kvcache::attach_kv_events(cache, events);   // metrics/snapshot.hpp
//   ... engine steps ...
//   events.drain([&](const kvcache::KvEvent& e) { publish(e); });
//
// A block is *stored* when its prefix key becomes findable (a full block
// completed, or brought back from a tier) and *removed* when the key goes
// (eviction, or the block freed); *all cleared* says every key is gone
// (clear_prefix_cache). The ring is bounded and lock-free for one producer
// (the engine thread) and one consumer (any thread): a push into a full ring
// drops the event and counts it, and never blocks or allocates. Every event
// carries the number of the push that made it, so a consumer sees a gap
// where events were dropped (and should then resynchronize).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/error.hpp"
#include "kvcache/policy/concepts.hpp"

namespace kvcache {

enum class KvEventKind : std::uint8_t { kStored, kRemoved, kAllCleared };

struct KvEvent {
  KvEventKind kind = KvEventKind::kStored;
  std::int32_t num_tokens = 0;        // tokens in the block (stored)
  BlockId block = -1;                 // the block holding it (stored, removed)
  EvictionKey key = 0;                // its prefix key
  EvictionKey parent = 0;             // the key of the block before it (stored; 0 for the first)
  std::uint64_t sequence_number = 0;  // set by the sink: every event ever offered, counted
};

// Where a manager's prefix index reports events (it must not throw).
class KvEventSink {
 public:
  virtual void on_event(const KvEvent& event) noexcept = 0;

 protected:
  ~KvEventSink() = default;
};

class KvEventRing final : public KvEventSink {
 public:
  // Capacity: a power of two in [2, 2^24].
  explicit KvEventRing(std::size_t capacity) {
    if (capacity < 2 || capacity > (std::size_t{1} << 24) || (capacity & (capacity - 1)) != 0) {
      detail::raise<InvalidArgument>(
          "KvEventRing: capacity {} (allowed: a power of two in [2, 16777216])", capacity);
    }
    slots_.resize(capacity);
    mask_ = capacity - 1;
  }

  void on_event(const KvEvent& event) noexcept override {
    const std::uint64_t head = head_.load(std::memory_order_relaxed);
    const std::uint64_t number = offered_++;
    if (head - tail_.load(std::memory_order_acquire) == slots_.size()) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    KvEvent& slot = slots_[static_cast<std::size_t>(head & mask_)];
    slot = event;
    slot.sequence_number = number;
    head_.store(head + 1, std::memory_order_release);
  }

  // Hands every waiting event to visit(event), oldest first; returns how many.
  template <class Visit>
  std::size_t drain(Visit visit) {
    const std::uint64_t tail = tail_.load(std::memory_order_relaxed);
    const std::uint64_t head = head_.load(std::memory_order_acquire);
    for (std::uint64_t i = tail; i < head; ++i)
      visit(static_cast<const KvEvent&>(slots_[static_cast<std::size_t>(i & mask_)]));
    tail_.store(head, std::memory_order_release);
    return static_cast<std::size_t>(head - tail);
  }
  // Copies up to out.size() waiting events into `out`; returns how many.
  std::size_t drain(std::span<KvEvent> out) {
    const std::uint64_t tail = tail_.load(std::memory_order_relaxed);
    const std::uint64_t head = head_.load(std::memory_order_acquire);
    const std::uint64_t n = std::min<std::uint64_t>(head - tail, out.size());
    for (std::uint64_t i = 0; i < n; ++i)
      out[static_cast<std::size_t>(i)] = slots_[static_cast<std::size_t>((tail + i) & mask_)];
    tail_.store(tail + n, std::memory_order_release);
    return static_cast<std::size_t>(n);
  }

  std::size_t capacity() const { return slots_.size(); }
  std::size_t size() const {
    // The tail first: read the other way round, a drain in between could put
    // the tail past the head read before it.
    const std::uint64_t tail = tail_.load(std::memory_order_acquire);
    return static_cast<std::size_t>(head_.load(std::memory_order_acquire) - tail);
  }
  // Events dropped because the ring was full.
  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  std::vector<KvEvent> slots_;
  std::size_t mask_ = 0;
  std::uint64_t offered_ = 0;  // producer only
  alignas(64) std::atomic<std::uint64_t> head_{0};
  alignas(64) std::atomic<std::uint64_t> tail_{0};
  alignas(64) std::atomic<std::uint64_t> dropped_{0};
};

}  // namespace kvcache
