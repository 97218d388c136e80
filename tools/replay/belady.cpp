#include "belady.hpp"

#include <algorithm>
#include <span>

#include "engine.hpp"
#include "kvcache/error.hpp"
#include "kvcache/policy/prefix_sharing.hpp"

namespace kvcache::replay {

void prompt_keys(const TraceRequest& request, const ReplayOptions& options,
                 std::vector<std::int32_t>& tokens, std::vector<EvictionKey>& keys) {
  engine::fill_tokens(request, options.trace_block_tokens, tokens);
  const std::span<const std::int32_t> all(tokens);
  const auto block = static_cast<std::size_t>(options.block_size);
  keys.clear();
  EvictionKey parent = PrefixSharing::kRootKey;
  for (std::size_t b = 0; b + 1 <= tokens.size() / block; ++b) {
    parent = PrefixSharing::block_hash(parent, all.subspan(b * block, block));
    keys.push_back(parent);
  }
}

BeladyOracle::BeladyOracle(const Trace& trace, const ReplayOptions& options) {
  std::vector<std::int32_t> tokens;
  std::vector<EvictionKey> keys;
  for (std::size_t r = 0; r < trace.requests.size(); ++r) {
    prompt_keys(trace.requests[r], options, tokens, keys);
    for (EvictionKey key : keys) {
      auto& uses = uses_[key];
      if (uses.empty() || uses.back() != static_cast<std::int32_t>(r))
        uses.push_back(static_cast<std::int32_t>(r));
    }
  }
}

std::int64_t BeladyOracle::next_use(EvictionKey key) const {
  auto it = uses_.find(key);
  if (it == uses_.end()) return kNever;
  const auto& uses = it->second;
  auto next = std::upper_bound(uses.begin(), uses.end(), now_);
  return next == uses.end() ? kNever : *next;
}

const BeladyOracle*& BeladyOracle::current() {
  static thread_local const BeladyOracle* oracle = nullptr;
  return oracle;
}

BeladyEviction::BeladyEviction(std::int64_t /*capacity_blocks*/)
    : oracle_(BeladyOracle::current()) {
  if (oracle_ == nullptr) {
    detail::raise<InvalidArgument>(
        "BeladyEviction: the offline optimum needs the whole trace; it runs in the replay "
        "(kvcache-replay --policy belady), not in an online cache");
  }
}

}  // namespace kvcache::replay
