#include "registry.hpp"

#include "belady.hpp"
#include "engine.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache::replay {
namespace {

using Paged = PagedAllocation;

template <class Eviction>
ReplayResult run_online(const Trace& trace, const ReplayOptions& options) {
  return engine::run_policy<CachePolicy<Paged, Eviction, PrefixSharing>>(trace, options);
}

// MIN reads the trace's future: a first pass lists every key's uses.
ReplayResult run_belady(const Trace& trace, const ReplayOptions& options) {
  BeladyOracle oracle(trace, options);
  const OracleScope scope(oracle);
  return engine::run_policy<CachePolicy<Paged, BeladyEviction, PrefixSharing>>(
      trace, options, [&](std::int64_t request) { oracle.advance(request); });
}

const PolicyInfo kPolicies[] = {
    {"none", "no eviction: prompt blocks are dropped when their request ends",
     &run_online<NoEviction>, false},
    {"lru", "least recently used cached prefix block first", &run_online<LruEviction>, false},
    {"lfu-aging", "LFU with dynamic aging (GreedyDual, unit cost)", &run_online<LfuAgingEviction>,
     false},
    {"s3-fifo", "S3-FIFO: small and main FIFOs and a ghost list", &run_online<S3FifoEviction>,
     false},
    {"reuse-lru", "LRU plus a cache lifetime per earlier request that reached the block",
     &run_online<ReuseLruEviction>, false},
    {"adaptive", "reuse-lru whose bonus weight (0: LRU) follows shadow caches of each weight",
     &run_online<AdaptiveEviction>, false},
    {"belady", "offline optimum (MIN): the block used furthest in the future first", &run_belady,
     true},
};

template <class Info>
const Info& find(std::span<const Info> table, std::string_view name, const char* what) {
  for (const Info& entry : table) {
    if (entry.name == name) return entry;
  }
  detail::raise<InvalidArgument>("replay: {} \"{}\" is not one of {}", what, name,
                                 names(table, ", "));
}

}  // namespace

std::span<const PolicyInfo> policies() {
  return kPolicies;
}
std::span<const CodecInfo> codecs() {
  return plan::codec_costs();
}
const PolicyInfo& find_policy(std::string_view name) {
  return find(policies(), name, "policy");
}
const CodecInfo& find_codec(std::string_view name) {
  return find(codecs(), name, "codec");
}

}  // namespace kvcache::replay
