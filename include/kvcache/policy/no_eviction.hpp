// No eviction: an unreferenced block is freed at once (nothing is cached), a
// parked sequence is never taken away, and a full pool is a plain return
// value (ReserveStatus::kPoolFull) for the scheduler to act on.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "kvcache/policy/concepts.hpp"

namespace kvcache {

class NoEviction {
 public:
  static constexpr std::string_view kName = "none";
  static constexpr bool kRetains = false;

  explicit NoEviction(std::int64_t /*capacity_blocks*/) {}
  void on_access(EvictionKey) {}
  void insert(EvictionKey) {}
  void erase(EvictionKey) {}
  void forget(EvictionKey) {}
  std::optional<EvictionKey> pop_victim() { return std::nullopt; }
  std::int64_t size() const { return 0; }
};

static_assert(EvictionPolicy<NoEviction>);

}  // namespace kvcache
