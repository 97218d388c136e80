// Belady's MIN for the replay: the offline optimum every online policy is
// measured against. A first pass over the trace lists, for every prefix key
// the manager will compute (the same chained hash of the same token ids), the
// requests that use it; during the replay the policy evicts the cached entry
// whose next use is furthest away (never used again first), ties going to the
// entry released first (a request's deeper blocks, released tail first). A
// parent is used whenever its children are, so it is never needed later than
// they are and MIN respects the prefix tree. It runs through the same manager
// as every other policy, so hits are counted the same way.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kvcache/policy/concepts.hpp"
#include "replay.hpp"

namespace kvcache::replay {

// The prefix keys the manager computes for the full blocks of `request`'s
// prompt (the chained hash of its token ids), root first, into `keys`;
// `tokens` is scratch.
void prompt_keys(const TraceRequest& request, const ReplayOptions& options,
                 std::vector<std::int32_t>& tokens, std::vector<EvictionKey>& keys);

// The requests that use each prefix key, in order, and the request being
// replayed now.
class BeladyOracle {
 public:
  static constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();

  BeladyOracle(const Trace& trace, const ReplayOptions& options);

  // The request being replayed (its index in the trace).
  void advance(std::int64_t request) { now_ = request; }
  // The first request after the current one that uses `key`; kNever if none.
  std::int64_t next_use(EvictionKey key) const;
  std::int64_t keys() const { return static_cast<std::int64_t>(uses_.size()); }

  // The oracle a BeladyEviction constructed now reads (the replay sets it
  // for the length of one run).
  static const BeladyOracle*& current();

 private:
  std::unordered_map<EvictionKey, std::vector<std::int32_t>> uses_;
  std::int64_t now_ = -1;
};

// Sets BeladyOracle::current() for one scope.
class OracleScope {
 public:
  explicit OracleScope(const BeladyOracle& oracle) : previous_(BeladyOracle::current()) {
    BeladyOracle::current() = &oracle;
  }
  ~OracleScope() { BeladyOracle::current() = previous_; }
  OracleScope(const OracleScope&) = delete;
  OracleScope& operator=(const OracleScope&) = delete;

 private:
  const BeladyOracle* previous_;
};

class BeladyEviction {
 public:
  static constexpr std::string_view kName = "belady";
  static constexpr bool kRetains = true;

  // InvalidArgument without an oracle: MIN needs the whole trace up front.
  explicit BeladyEviction(std::int64_t capacity_blocks);

  void on_access(EvictionKey) {}
  void insert(EvictionKey key) {
    if (where_.count(key) != 0) return;
    // Parked sequences (never keyed by the trace) count as never used again.
    const std::int64_t next =
        (key & kSequenceKeyBit) != 0 ? BeladyOracle::kNever : oracle_->next_use(key);
    const auto entry = std::make_tuple(next, -static_cast<std::int64_t>(++order_), key);
    queue_.insert(entry);
    where_.emplace(key, entry);
  }
  void erase(EvictionKey key) {
    auto it = where_.find(key);
    if (it == where_.end()) return;
    queue_.erase(it->second);
    where_.erase(it);
  }
  void forget(EvictionKey key) { erase(key); }
  std::optional<EvictionKey> pop_victim() {
    if (queue_.empty()) return std::nullopt;
    const auto last = std::prev(queue_.end());  // furthest next use, released first
    const EvictionKey key = std::get<2>(*last);
    queue_.erase(last);
    where_.erase(key);
    return key;
  }
  std::int64_t size() const { return static_cast<std::int64_t>(queue_.size()); }

 private:
  using Entry = std::tuple<std::int64_t, std::int64_t, EvictionKey>;
  const BeladyOracle* oracle_;
  std::int64_t order_ = 0;
  std::set<Entry> queue_;
  std::unordered_map<EvictionKey, Entry> where_;
};

static_assert(EvictionPolicy<BeladyEviction>);

}  // namespace kvcache::replay
