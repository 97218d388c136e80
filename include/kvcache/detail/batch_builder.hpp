// The open append batch of a manager: prepare_append's validation of the
// batch as a whole, its copies of the sequence ids, counts and token ids, the
// staged slot mapping, and the id that ties an AppendBatch to it (ids are
// process-wide, so a batch of another manager never matches).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kvcache/append_batch.hpp"
#include "kvcache/detail/double_staging.hpp"
#include "kvcache/error.hpp"
#include "kvcache/policy/concepts.hpp"
#include "kvcache/types.hpp"

namespace kvcache::detail {

// Throws when sequence `seq`, holding `tokens` tokens with room for
// `capacity`, cannot take `count` more, or would write block `shared` (>= 0)
// that `owners` sequences share.
inline void check_room(SeqId seq, std::int32_t count, std::int64_t tokens, std::int64_t capacity,
                       BlockId shared, std::int32_t owners) {
  if (count < 0) {
    raise<InvalidArgument>("prepare_append: token count {} for sequence {} is negative", count,
                           seq);
  }
  if (count > capacity - tokens) {
    raise<ReservationError>(
        "prepare_append: sequence {} appends {} tokens but has room for {} (holds {} of {} "
        "reserved); call try_reserve first",
        seq, count, capacity - tokens, tokens, capacity);
  }
  if (shared >= 0) {
    raise<ReservationError>(
        "prepare_append: sequence {} would write into block {} shared by {} sequences; call "
        "try_reserve first (it copies the block)",
        seq, shared, owners);
  }
}

template <class Backend, class Entry>
class BatchBuilder {
 public:
  BatchBuilder(Backend& backend, const CacheConfig& config)
      : id_(next_builder_id()),
        max_sequences_(config.max_batch_sequences),
        max_tokens_(config.max_batch_tokens),
        slot_staging_(backend,
                      sizeof(std::int64_t) * static_cast<std::size_t>(config.max_batch_tokens)),
        layer_marks_(static_cast<std::size_t>(config.shape.num_layers), 0) {
    sequences_.reserve(static_cast<std::size_t>(max_sequences_));
    counts_.reserve(static_cast<std::size_t>(max_sequences_));
    entries_.reserve(static_cast<std::size_t>(max_sequences_));
    token_ids_.reserve(static_cast<std::size_t>(max_tokens_));
  }

  // Validates a batch: find(seq) returns the sequence's entry (or throws),
  // check(entry, seq, count) throws when it cannot take `count` tokens.
  // Nothing is recorded until every check passed; then plan(entries, counts,
  // slots) writes the slot mapping, which is uploaded.
  template <class Find, class Check, class Plan>
  AppendBatch prepare(Backend& backend, std::span<const SeqId> seqs,
                      std::span<const std::int32_t> counts, std::span<const std::int32_t> token_ids,
                      Find find, Check check, Plan plan) {
    if (seqs.size() != counts.size()) {
      raise<InvalidArgument>("prepare_append: {} sequence ids but {} token counts; they must match",
                             seqs.size(), counts.size());
    }
    if (seqs.size() > static_cast<std::size_t>(max_sequences_)) {
      raise<InvalidArgument>("prepare_append: {} sequences exceed max_batch_sequences {}",
                             seqs.size(), max_sequences_);
    }
    const std::uint64_t serial = ++serial_;
    std::int64_t total = 0;
    entries_.clear();
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      Entry& s = find(seqs[i]);
      if (s.batch_mark == serial) {
        raise<InvalidArgument>("prepare_append: sequence {} appears twice in the batch", seqs[i]);
      }
      s.batch_mark = serial;
      check(s, seqs[i], counts[i]);
      total += counts[i];
      entries_.push_back(&s);
    }
    if (total > max_tokens_) {
      raise<InvalidArgument>("prepare_append: {} new tokens exceed max_batch_tokens {}", total,
                             max_tokens_);
    }
    if (!token_ids.empty() && static_cast<std::int64_t>(token_ids.size()) != total) {
      raise<InvalidArgument>(
          "prepare_append: {} token ids for {} new tokens; pass one id per token or none",
          token_ids.size(), total);
    }
    // Validated: from here on nothing throws but the backend.
    sequences_.assign(seqs.begin(), seqs.end());
    counts_.assign(counts.begin(), counts.end());
    token_ids_.assign(token_ids.begin(), token_ids.end());
    auto* slots = static_cast<std::int64_t*>(slot_staging_.host(backend));
    plan(std::span<Entry* const>(entries_), counts, slots);
    AppendBatch batch;
    batch.builder_ = id_;
    batch.serial_ = serial;
    batch.sequences_ = sequences_;
    batch.new_tokens_ = counts_;
    batch.num_tokens_ = static_cast<std::int32_t>(total);
    batch.host_slots_ = slots;
    batch.backend_slots_ = static_cast<const std::int64_t*>(
        slot_staging_.upload(backend, sizeof(std::int64_t) * static_cast<std::size_t>(total)));
    open_ = serial;
    appended_layers_ = 0;
    return batch;
  }

  void check(const AppendBatch& batch, const char* what) const {
    if (batch.builder_ != id_ && batch.builder_ != 0) {
      raise<ReservationError>("{}: the append batch was made by another manager", what);
    }
    if (batch.serial_ == 0 || batch.serial_ != open_) {
      raise<ReservationError>(
          "{}: the append batch is stale (committed, replaced, invalidated by a "
          "try_reserve/release/fork/park since prepare_append)",
          what);
    }
  }
  void invalidate() { open_ = 0; }

  // The open batch's rows of `layer` were written.
  void mark_appended(std::int32_t layer) {
    std::uint64_t& mark = layer_marks_[static_cast<std::size_t>(layer)];
    if (mark != open_) {
      mark = open_;
      ++appended_layers_;
    }
  }
  // Throws unless every layer was appended (a batch without tokens needs none).
  void check_layers(const AppendBatch& batch, const char* what) const {
    if (batch.num_tokens() == 0 ||
        appended_layers_ == static_cast<std::int64_t>(layer_marks_.size())) {
      return;
    }
    std::string missing;
    for (std::size_t layer = 0; layer < layer_marks_.size() && missing.size() < 60; ++layer) {
      if (layer_marks_[layer] != open_)
        missing += (missing.empty() ? "" : ", ") + std::to_string(layer);
    }
    raise<ReservationError>(
        "{}: {} of the batch's {} layers were appended (missing: {}{}); append every layer "
        "before commit",
        what, appended_layers_, layer_marks_.size(), missing, missing.size() >= 60 ? ", ..." : "");
  }

  // The open batch's sequences with their new tokens' count and ids (empty
  // when the engine passed none), in batch order.
  template <class Visit>
  void for_each(Visit visit) const {
    std::size_t next_id = 0;
    for (std::size_t i = 0; i < sequences_.size(); ++i) {
      const auto count = static_cast<std::size_t>(counts_[i]);
      std::span<const std::int32_t> ids;
      if (!token_ids_.empty())
        ids = std::span<const std::int32_t>(token_ids_).subspan(next_id, count);
      next_id += count;
      visit(sequences_[i], counts_[i], ids);
    }
  }

 private:
  std::uint64_t id_;
  std::uint64_t serial_ = 0;  // of the last batch prepared
  std::int32_t max_sequences_;
  std::int32_t max_tokens_;
  DoubleStaging<Backend> slot_staging_;
  std::uint64_t open_ = 0;
  std::vector<std::uint64_t> layer_marks_;  // per layer: the batch that last appended it
  std::int64_t appended_layers_ = 0;        // layers of the open batch appended
  std::vector<SeqId> sequences_;
  std::vector<std::int32_t> counts_;
  std::vector<std::int32_t> token_ids_;
  std::vector<Entry*> entries_;
};

}  // namespace kvcache::detail
