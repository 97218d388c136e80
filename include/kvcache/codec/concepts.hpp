// The contract of a storage codec, the fourth strategy axis of a
// KVCacheManager (codec/codecs.hpp lists the codecs).
//
// A codec class C names itself, checks a configuration, sizes a block, and
// brings its storage: C::Storage<Backend>, constructed by the manager over
// the arena, owns everything codec-specific (calibrated state, KIVI's rings
// and flush plan, how many pages a sequence needs, which kernels to launch).
// The manager keeps one C::SequenceState per sequence and hands it to the
// storage; it never asks which codec it holds.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>

#include "kvcache/codec/page_view.hpp"
#include "kvcache/kernels/params.hpp"
#include "kvcache/layout.hpp"
#include "kvcache/model_shape.hpp"
#include "kvcache/page_table.hpp"
#include "kvcache/types.hpp"

namespace kvcache {

template <class C>
concept CacheCodec = requires(const CacheConfig& config, const ModelShape& shape,
                              std::int32_t block_size) {
  { C::name() } -> std::convertible_to<std::string>;
  { C::kKind } -> std::convertible_to<CodecKind>;
  // Recent tokens a sequence keeps in full precision beside its pages.
  { C::kResidualTokens } -> std::convertible_to<std::int32_t>;
  // Throws InvalidArgument naming what the codec cannot hold.
  C::validate(config);
  // Bytes of one block: codes and scales of every layer, K and V.
  { C::block_bytes(shape, block_size) } -> std::same_as<std::int64_t>;
  typename C::SequenceState;
}
&&std::is_nothrow_default_constructible_v<typename C::SequenceState>&&
    std::is_trivially_copyable_v<typename C::SequenceState>;

// One gather launch: a page table and side table in backend memory, and the
// packed outputs.
struct GatherRequest {
  std::int32_t layer = 0;
  kernels::PageTableView table;
  kernels::SideTable side;
  kernels::GatherOutput out;
};

// What the manager asks of C::Storage<Backend> (besides a member template
// plan(seqs, counts, slots) that writes the slot mapping of a batch).
template <class S>
concept CodecStorage = requires(S& s, const S& cs, typename S::SequenceState& state,
                                const typename S::SequenceState& cstate, std::int64_t n,
                                std::int32_t layer, const kernels::AppendSource& source,
                                const kernels::SlotMapping& slots, const GatherRequest& gather,
                                KVLayout layout, CacheStats& stats) {
  // Blocks a sequence of n tokens needs; tokens n blocks (and the side
  // storage) hold; of a sequence's n tokens, those in pages; its side slot.
  { cs.pages_needed(n) } -> std::same_as<std::int64_t>;
  { cs.token_capacity(n) } -> std::same_as<std::int64_t>;
  { cs.paged_tokens(cstate, n) } -> std::same_as<std::int64_t>;
  { cs.side_slot(cstate) } -> std::same_as<std::int64_t>;
  // False when a sequence only ever writes whole fresh pages (no copy-on-write).
  { S::kWritesPartialPages } -> std::convertible_to<bool>;
  { S::kExportsPageTable } -> std::convertible_to<bool>;
  // Lifecycle: per-sequence resources (false: none free; the manager evicts
  // and retries), a fork's copy, a prefix hit of n tokens, a commit.
  { s.try_attach(state) } -> std::same_as<bool>;
  s.detach(state);
  s.fork(cstate, state);
  s.on_prefix_hit(state, n);
  s.commit(state, n);
  // Kernels.
  s.append(layer, source, slots);
  s.gather(gather);
  // Reporting.
  { cs.addressing(layout) } -> std::same_as<CacheAddressing>;
  { cs.side_bytes() } -> std::same_as<std::int64_t>;
  s.add_stats(stats);
};

}  // namespace kvcache
