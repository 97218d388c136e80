// AppendBatch: the new tokens of one engine step, as prepare_append planned
// them. Valid until commit() or until a call that changes block tables
// (try_reserve, release, fork, park); the spans point into the manager's
// staging memory. A batch belongs to the manager that made it: its identity
// is unique across all managers of the process and a manager's whole life,
// so a batch cannot be used with another manager.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "kvcache/fwd.hpp"
#include "kvcache/types.hpp"

namespace kvcache {

namespace detail {
template <class Backend, class Entry>
class BatchBuilder;

// Process-wide ids of the managers' batch builders: never 0, never reused. A
// batch is named by its builder's id and a serial number within it, so no
// atomic is taken per batch.
inline std::uint64_t next_builder_id() {
  static std::atomic<std::uint64_t> counter{0};
  return counter.fetch_add(1, std::memory_order_relaxed) + 1;
}
}  // namespace detail

class AppendBatch {
 public:
  std::span<const SeqId> sequences() const { return sequences_; }
  std::span<const std::int32_t> new_tokens() const { return new_tokens_; }
  std::int32_t num_tokens() const { return num_tokens_; }
  // Slot of every new token, in batch order (host copy).
  std::span<const std::int64_t> slot_mapping() const {
    return {host_slots_, static_cast<std::size_t>(num_tokens_)};
  }
  // The same slots in the backend's memory, for the engine's own kernels.
  const std::int64_t* backend_slot_mapping() const { return backend_slots_; }

 private:
  template <class B, class E>
  friend class detail::BatchBuilder;

  std::uint64_t builder_ = 0;  // which manager made it
  std::uint64_t serial_ = 0;   // which of its batches
  std::span<const SeqId> sequences_;
  std::span<const std::int32_t> new_tokens_;
  std::int32_t num_tokens_ = 0;
  const std::int64_t* host_slots_ = nullptr;
  const std::int64_t* backend_slots_ = nullptr;
};

}  // namespace kvcache
