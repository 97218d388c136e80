// The sequence registry of a manager: each live sequence's block table,
// token count, known token ids and prefix keys, and the codec's state for it;
// ids of sequences evicted while parked (until unpark reports the miss).
#pragma once

#include <cstdint>
#include <unordered_map>
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

// A parked sequence's entry in the eviction policy.
inline EvictionKey sequence_key(SeqId seq) {
  return kSequenceKeyBit | seq;
}

template <class CodecState>
class SequenceTable {
 public:
  using Entry = Sequence<CodecState>;
  using Map = std::unordered_map<SeqId, Entry>;

  const Entry& find(SeqId seq, const char* what) const {
    auto it = map_.find(seq);
    if (it == map_.end()) unknown(seq, what);
    return it->second;
  }
  Entry& find(SeqId seq, const char* what) {
    return const_cast<Entry&>(std::as_const(*this).find(seq, what));
  }
  // A sequence that may change: known and not parked.
  Entry& find_active(SeqId seq, const char* what) {
    Entry& s = find(seq, what);
    if (s.parked) raise<InvalidArgument>("{}: sequence {} is parked; unpark it first", what, seq);
    return s;
  }
  Entry* try_find(SeqId seq) {
    auto it = map_.find(seq);
    return it == map_.end() ? nullptr : &it->second;
  }
  bool contains(SeqId seq) const { return map_.count(seq) != 0; }

  SeqId insert(Entry&& entry) {
    const SeqId id = next_id_++;
    map_.emplace(id, std::move(entry));
    return id;
  }
  // Removes a sequence and returns its entry.
  Entry take(SeqId seq, const char* what) {
    auto it = map_.find(seq);
    if (it == map_.end()) unknown(seq, what);
    Entry entry = std::move(it->second);
    map_.erase(it);
    return entry;
  }

  void mark_evicted(SeqId seq) { evicted_.insert(seq); }
  // True once for a sequence evicted while parked (unpark's miss).
  bool forget_evicted(SeqId seq) { return evicted_.erase(seq) != 0; }

  std::int64_t size() const { return static_cast<std::int64_t>(map_.size()); }
  auto begin() const { return map_.begin(); }
  auto end() const { return map_.end(); }

 private:
  [[noreturn]] void unknown(SeqId seq, const char* what) const {
    raise<UnknownSequence>("{}: sequence {} is unknown (never created, released{})", what, seq,
                           evicted_.count(seq) != 0 ? " or evicted" : "");
  }

  Map map_;
  std::unordered_set<SeqId> evicted_;  // evicted, not yet reported by unpark
  SeqId next_id_ = 1;
};

}  // namespace kvcache::detail
