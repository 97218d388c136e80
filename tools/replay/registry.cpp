#include "registry.hpp"

#include "belady.hpp"
#include "engine.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache::replay {
namespace {

using Paged = PagedAllocation;

// A codec's block under the replay's blocks: KIVI pages hold one group of
// G tokens, so a block of block_tokens tokens is block_tokens / G pages.
template <class Codec>
std::int64_t block_bytes(const ModelShape& shape, std::int32_t block_tokens) {
  if constexpr (Codec::kKind == CodecKind::kKivi) {
    if (block_tokens % Codec::kGroup != 0) {
      detail::raise<InvalidArgument>(
          "replay: codec {} needs blocks of a multiple of {} tokens, not {}", Codec::name(),
          Codec::kGroup, block_tokens);
    }
    return Codec::block_bytes(shape, Codec::kGroup) * (block_tokens / Codec::kGroup);
  } else {
    return Codec::block_bytes(shape, block_tokens);
  }
}

// KIVI keeps each live sequence's R + G most recent tokens in a ring.
template <class Codec>
std::int64_t fixed_bytes(const ModelShape& shape, std::int64_t sequences) {
  if constexpr (Codec::kKind == CodecKind::kKivi) {
    return sequences * (Codec::kResidualTokens + Codec::kGroup) * shape.bytes_per_token();
  } else {
    return 0;
  }
}

template <class Codec>
constexpr CodecInfo codec_row(std::string_view name, std::string_view help) {
  return CodecInfo{name, help, &block_bytes<Codec>, &fixed_bytes<Codec>};
}

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
    {"belady", "offline optimum (MIN): the block used furthest in the future first", &run_belady,
     true},
};

const CodecInfo kCodecs[] = {
    codec_row<PlainCodec>("plain", "the model dtype"),
    codec_row<Int8Codec<32>>("int8", "int8, a scale per 32 values"),
    codec_row<Fp8Codec<>>("fp8", "fp8 e4m3, a scale per head"),
    codec_row<KiviCodec<4, 32, 128>>("int4", "KIVI int4, group 32, 128 recent tokens exact"),
    codec_row<KiviCodec<2, 32, 128>>("int2", "KIVI int2, group 32, 128 recent tokens exact"),
    codec_row<LowRankCodec<32>>("low-rank-32", "32 coefficients per row over a fitted basis"),
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
  return kCodecs;
}
const PolicyInfo& find_policy(std::string_view name) {
  return find(policies(), name, "policy");
}
const CodecInfo& find_codec(std::string_view name) {
  return find(codecs(), name, "codec");
}

}  // namespace kvcache::replay
