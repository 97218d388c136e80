// The sequence registry of a manager: each live sequence's block table,
// token count, known token ids and prefix keys, and the codec's state for it;
// ids of sequences evicted while parked (until unpark reports the miss).
#pragma once

#include <cstdint>
#include <span>
#include <unordered_set>
#include <utility>
#include <vector>

#include "kvcache/error.hpp"
#include "kvcache/policy/concepts.hpp"
#include "kvcache/types.hpp"

namespace kvcache::detail {

template <class CodecState>
struct Sequence {
  std::vector<BlockId> blocks;
  std::int64_t num_tokens = 0;
  std::uint64_t batch_mark = 0;      // id of the last batch that listed it
  std::vector<std::int32_t> tokens;  // known token ids (may run ahead: the prompt)
  std::vector<EvictionKey> hashes;   // prefix key of each full block, in order
  bool hashable = true;              // every committed token's id is known
  bool parked = false;
  CodecState codec;
};

// A commit's `count` new tokens, with their ids when the engine gave them:
// without ids the sequence's tokens are no longer all known, so its blocks
// past this point get no prefix keys.
template <class CodecState>
void advance_tokens(Sequence<CodecState>& s, std::int32_t count,
                    std::span<const std::int32_t> ids) {
  if (!ids.empty()) {
    s.tokens.resize(static_cast<std::size_t>(s.num_tokens));
    s.tokens.insert(s.tokens.end(), ids.begin(), ids.end());
  } else if (static_cast<std::int64_t>(s.tokens.size()) < s.num_tokens + count) {
    s.hashable = false;
  }
  s.num_tokens += count;
}

// A parked sequence's entry in the eviction policy.
inline EvictionKey sequence_key(SeqId seq) {
  return kSequenceKeyBit | seq;
}

// Sequences live in slots reused through a free list; a SeqId names a slot
// and the generation of its use (id = generation << 32 | slot), so a lookup
// is an index and a compare, and an id of a released sequence never names
// the next sequence in its slot.
template <class CodecState>
class SequenceTable {
 public:
  using Entry = Sequence<CodecState>;

  const Entry& find(SeqId seq, const char* what) const {
    const Entry* entry = lookup(seq);
    if (entry == nullptr) [[unlikely]]
      unknown(seq, what);
    return *entry;
  }
  Entry& find(SeqId seq, const char* what) {
    return const_cast<Entry&>(std::as_const(*this).find(seq, what));
  }
  // A sequence that may change: known and not parked.
  Entry& find_active(SeqId seq, const char* what) {
    Entry& s = find(seq, what);
    if (s.parked) [[unlikely]]
      raise<InvalidArgument>("{}: sequence {} is parked; unpark it first", what, seq);
    return s;
  }
  Entry* try_find(SeqId seq) { return const_cast<Entry*>(lookup(seq)); }
  bool contains(SeqId seq) const { return lookup(seq) != nullptr; }

  // The entry's id; references to entries stay valid until the next insert.
  SeqId insert(Entry&& entry) {
    std::uint32_t slot;
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
    } else {
      slot = static_cast<std::uint32_t>(slots_.size());
      slots_.emplace_back();
    }
    Slot& target = slots_[slot];
    ++target.generation;  // ids start at generation 1: 0 is never an id
    target.live = true;
    target.entry = std::move(entry);
    ++size_;
    return (SeqId{target.generation} << 32) | slot;
  }
  // Removes a sequence and returns its entry.
  Entry take(SeqId seq, const char* what) {
    Entry& entry = find(seq, what);
    Slot& slot = slots_[seq & 0xffffffffu];
    Entry out = std::move(entry);
    slot.entry = Entry();
    slot.live = false;
    free_.push_back(static_cast<std::uint32_t>(seq & 0xffffffffu));
    --size_;
    return out;
  }

  void mark_evicted(SeqId seq) { evicted_.insert(seq); }
  // True once for a sequence evicted while parked (unpark's miss).
  bool forget_evicted(SeqId seq) { return evicted_.erase(seq) != 0; }

  std::int64_t size() const { return size_; }
  // Tokens stored and reserved (block_size per block held) and parked
  // sequences, added to `stats`.
  void add_totals(MemoryStats& stats, std::int32_t block_size) const {
    for_each([&](SeqId, const Sequence<CodecState>& s) {
      stats.stored_tokens += s.num_tokens;
      stats.reserved_tokens += static_cast<std::int64_t>(s.blocks.size()) * block_size;
      stats.parked_sequences += s.parked ? 1 : 0;
    });
  }

  // Calls visit(id, entry) for every live sequence.
  template <class Visit>
  void for_each(Visit visit) const {
    for (std::size_t slot = 0; slot < slots_.size(); ++slot) {
      const Slot& s = slots_[slot];
      if (s.live) visit((SeqId{s.generation} << 32) | slot, s.entry);
    }
  }

 private:
  struct Slot {
    std::uint32_t generation = 0;
    bool live = false;
    Entry entry;
  };

  const Entry* lookup(SeqId seq) const {
    const std::uint64_t slot = seq & 0xffffffffu;
    if (slot >= slots_.size()) return nullptr;
    const Slot& s = slots_[slot];
    return s.live && s.generation == (seq >> 32) ? &s.entry : nullptr;
  }

  [[noreturn]] KVCACHE_COLD void unknown(SeqId seq, const char* what) const {
    raise<UnknownSequence>("{}: sequence {} is unknown (never created, released{})", what, seq,
                           evicted_.count(seq) != 0 ? " or evicted" : "");
  }

  std::vector<Slot> slots_;
  std::vector<std::uint32_t> free_;
  std::int64_t size_ = 0;
  std::unordered_set<SeqId> evicted_;  // evicted, not yet reported by unpark
};

}  // namespace kvcache::detail
