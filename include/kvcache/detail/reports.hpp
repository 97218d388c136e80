// What a manager reports about itself, built from its components: the
// memory figures, one sequence's description, and an unpark's answer.
#pragma once

#include <cstdint>

#include "kvcache/error.hpp"
#include "kvcache/types.hpp"

namespace kvcache::detail {

template <class Ledger, class Sequences, class Storage>
MemoryStats memory_stats(std::int64_t arena_bytes, std::int64_t bytes_per_block,
                         std::int64_t num_blocks, const Ledger& ledger, const Sequences& sequences,
                         const Storage& codec, std::int32_t block_size) {
  MemoryStats stats;
  stats.arena_bytes = arena_bytes;
  stats.bytes_per_block = bytes_per_block;
  stats.num_blocks = num_blocks;
  stats.free_blocks = ledger.num_free();
  stats.cached_blocks = ledger.num_cached();
  stats.budget_blocks = num_blocks;
  if constexpr (requires { ledger.allocation().budget(); })
    stats.budget_blocks = ledger.allocation().budget();
  stats.used_blocks = stats.budget_blocks - stats.free_blocks - stats.cached_blocks;
  stats.num_sequences = sequences.size();
  sequences.add_totals(stats, block_size);
  stats.residual_bytes = codec.side_bytes();
  return stats;
}

template <class Entry, class Storage>
SequenceInfo sequence_info(SeqId seq, const Entry& s, const Storage& codec) {
  return SequenceInfo{seq,
                      s.num_tokens,
                      codec.token_capacity(static_cast<std::int64_t>(s.blocks.size())),
                      static_cast<std::int64_t>(s.tokens.size()),
                      codec.paged_tokens(s.codec, s.num_tokens),
                      s.parked,
                      s.blocks};
}

// unpark: the parked sequence becomes active (true), or it was evicted and
// this reports the miss once (false); anything else is an error.
template <class Sequences, class Ledger>
bool unpark_sequence(Sequences& sequences, Ledger& ledger, SeqId seq) {
  if (auto* s = sequences.try_find(seq)) {
    if (!s->parked) raise<InvalidArgument>("unpark: sequence {} is not parked", seq);
    s->parked = false;
    ledger.unpark(seq);
    ++ledger.counters().unpark_hits;
    return true;
  }
  if (sequences.forget_evicted(seq)) {
    ++ledger.counters().unpark_misses;
    return false;
  }
  raise<UnknownSequence>("unpark: sequence {} is unknown (never created or released)", seq);
}

}  // namespace kvcache::detail
