// KVCacheManager: one preallocated block pool and the sequences that use it.
//
// An engine step, for a batch of sequences:
//
//   for each sequence: manager.try_reserve(seq, new_tokens)    // may say kPoolFull
//   AppendBatch batch = manager.prepare_append(seqs, new_tokens);
//   auto table = export_flashinfer(manager, batch);      // export.hpp, or export_vllm
//   for each layer: manager.append(layer, batch, k, v);  // then attention
//   manager.commit(batch);                               // lengths advance
//
// A facade over components with one job each (detail/): the sequence table,
// the block ledger (allocation, eviction, prefix index, copy-on-write), the
// codec's storage (codec/), the staged tables that carry slot mappings and
// page tables to the kernels, and the per-call counters (metrics/). It owns
// the arena and the staging buffers, so nothing on the append path
// allocates. Every method that throws leaves the manager as it was.
// Its behaviour comes from its CachePolicy (allocation, eviction, prefix
// sharing, codec; policy/cache_policy.hpp); the API is the same for all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <utility>

#include "kvcache/append_batch.hpp"
#include "kvcache/buffer.hpp"
#include "kvcache/codec/concepts.hpp"
#include "kvcache/detail/batch_builder.hpp"
#include "kvcache/detail/block_copier.hpp"
#include "kvcache/detail/block_ledger.hpp"
#include "kvcache/detail/checks.hpp"
#include "kvcache/detail/gather_staging.hpp"
#include "kvcache/detail/invariants.hpp"
#include "kvcache/detail/reports.hpp"
#include "kvcache/detail/sequence_table.hpp"
#include "kvcache/detail/tier_link.hpp"
#include "kvcache/error.hpp"
#include "kvcache/fwd.hpp"
#include "kvcache/kernels/page_math.hpp"
#include "kvcache/metrics/op_stats.hpp"
#include "kvcache/policy/cache_policy.hpp"
#include "kvcache/tensor.hpp"
#include "kvcache/types.hpp"

namespace kvcache {

template <class Policy = CachePolicy<>, MemoryBackend Backend = HostBackend>
class KVCacheManager;

template <class Policy, MemoryBackend Backend>
class KVCacheManager {
 public:
  using policy_type = Policy;
  using backend_type = Backend;
  using Allocation = typename Policy::allocation;
  using Eviction = typename Policy::eviction;
  using Sharing = typename Policy::sharing;
  using Codec = typename Policy::codec;
  using Storage = typename Codec::template Storage<Backend>;
  static_assert(CodecStorage<Storage>);

  explicit KVCacheManager(const CacheConfig& config, Backend backend = Backend())
      : config_(detail::validated_config<Codec, Allocation>(config)),
        backend_(std::move(backend)),
        ledger_(config_),
        arena_(backend_.allocate(static_cast<std::size_t>(bytes_per_block() * num_blocks()))),
        codec_(config_, backend_, arena_.bytes_data()),
        gather_(backend_, config_),
        batches_(backend_, config_),
        copier_(backend_, config_.num_blocks),
        tiers_(backend_, arena_.bytes_data(), Backend::kHoldsData ? bytes_per_block() : 0) {}

  KVCacheManager(const KVCacheManager&) = delete;
  KVCacheManager& operator=(const KVCacheManager&) = delete;

  // ---- configuration and state -------------------------------------------

  const CacheConfig& config() const { return config_; }
  const ModelShape& shape() const { return config_.shape; }
  std::int32_t block_size() const { return config_.block_size; }
  // Bytes of one block under the codec (codes and scales of every layer, K and V).
  std::int64_t bytes_per_block() const { return Codec::block_bytes(shape(), block_size()); }
  std::int64_t num_blocks() const { return config_.num_blocks; }
  std::int64_t num_free_blocks() const { return ledger_.num_free(); }
  std::int64_t num_cached_blocks() const { return ledger_.num_cached(); }
  std::int64_t num_sequences() const { return sequences_.size(); }
  bool contains(SeqId seq) const { return sequences_.contains(seq); }
  std::int32_t ref_count(BlockId block) const { return ledger_.allocation().ref_count(block); }
  Backend& backend() { return backend_; }
  const Allocation& allocation() const { return ledger_.allocation(); }
  // The codec's storage: its page layout (view()), calibrated state, counters.
  Storage& codec() { return codec_; }
  const Storage& codec() const { return codec_; }

  SequenceInfo sequence(SeqId seq) const {
    return detail::sequence_info(seq, sequences_.find(seq, "sequence"), codec_);
  }
  // The sequence's block table (valid until the next call that changes it).
  std::span<const BlockId> block_table(SeqId seq) const {
    return sequences_.find(seq, "block_table").blocks;
  }

  MemoryStats memory() const {
    return detail::memory_stats(static_cast<std::int64_t>(arena_.size()), bytes_per_block(),
                                num_blocks(), ledger_, sequences_, codec_, block_size());
  }

  // Counters; reading a codec's non-finite count waits for the backend.
  CacheStats stats() {
    CacheStats stats = ledger_.counters();
    stats.allocation = ledger_.allocation().stats();
    codec_.add_stats(stats);
    tiers_.add_stats(stats);
    return stats;
  }

  // Calibrated codecs (fp8, low-rank): fits the layer's scales or bases to a
  // sample of K and V rows ([tokens][kv_heads][head_dim] in the backend's
  // memory). Without a call, the first batch appended to a layer is its sample.
  void calibrate(std::int32_t layer, const TensorView& k_sample,
                 const TensorView& v_sample) requires Storage::kCalibrated {
    detail::check_sample(shape(), layer, k_sample, v_sample);
    codec_.calibrate(layer, detail::sample_view(k_sample), detail::sample_view(v_sample));
    tiers_.refresh(codec_.calibrations(), [&] { return fingerprint(); });
  }

  // Called for every eviction, inside the call that needed the room; it must
  // not throw (an exception from it is dropped) nor call back into the manager.
  void set_eviction_listener(std::function<void(const EvictionEvent&)> listener) {
    ledger_.set_listener(std::move(listener));
  }

  // ---- tiers (tier/block_store.hpp, detail/tier_link.hpp) --------------------

  // Evicted prefix blocks (and an evicted parked sequence's partial last
  // block) go to `store` instead of being dropped and come back on a prefix
  // hit. Needs PagedAllocation and PrefixSharing; detach before the store goes.
  void attach_tier(BlockStore& store) {
    detail::check_tier<Allocation, Sharing, Backend::kHoldsData>(store, bytes_per_block());
    tiers_.attach(store, fingerprint());
    ledger_.set_sink(&tiers_);
  }
  void detach_tier() { ledger_.set_sink(nullptr), tiers_.detach(); }
  // Shape, block size, layout, codec and calibrated state: blocks move only between equals.
  std::uint64_t fingerprint() const {
    return detail::fingerprint_of<Codec>(config_, codec_, bytes_per_block());
  }

  // ---- sequences -----------------------------------------------------------

  SeqId create_sequence() { return create_sequence(std::span<const std::int32_t>()); }

  // A sequence whose prompt is `prompt` (token ids). With prefix sharing the
  // longest cached prefix of full blocks is reused at once: sequence(id).num_tokens
  // says how many prompt tokens are cached; the engine appends the rest (full
  // blocks become shareable as they complete).
  SeqId create_sequence(std::span<const std::int32_t> prompt) {
    const auto timer = meter_.time(Op::kCreateSequence);
    Entry s;
    if (!attach(s)) {
      detail::raise<OutOfMemory>(
          "create_sequence: the {} codec's per-sequence storage is exhausted: all {} slots "
          "(CacheConfig::max_sequences) are held by live sequences",
          Codec::name(), config_.max_sequences);
    }
    s.blocks.reserve(16);
    s.tokens.assign(prompt.begin(), prompt.end());
    if (!prompt.empty()) {
      s.num_tokens =
          static_cast<std::int64_t>(ledger_.acquire_prefix(s, block_size())) * block_size();
      s.num_tokens += tiers_.onboard(ledger_, s, prompt, block_size(), kTierTails, drop_sequence());
      codec_.on_prefix_hit(s.codec, s.num_tokens);
    }
    return sequences_.insert(std::move(s));
  }

  // A child sharing the parent's tokens (parallel sampling, beam search).
  // Paged: the blocks are shared and copied on the first write. Dynamic: the
  // child gets its own region and a copy now; nullopt when there is no room.
  std::optional<SeqId> fork(SeqId parent_id) {
    const auto timer = meter_.time(Op::kFork);
    const Entry& parent = sequences_.find_active(parent_id, "fork");
    Entry child;
    if (!attach(child)) return std::nullopt;
    if (!ledger_.fork(parent.blocks, written_blocks(parent), child.blocks, drop_sequence())) {
      codec_.detach(child.codec);
      return std::nullopt;
    }
    codec_.fork(parent.codec, child.codec);
    run_moves();
    child.num_tokens = parent.num_tokens;
    child.tokens = parent.tokens;
    child.hashes = parent.hashes;
    child.hashable = parent.hashable;
    batches_.invalidate();
    return sequences_.insert(std::move(child));
  }

  // Drops the sequence. Its blocks go to their other owners; unshared full
  // blocks with a prefix key stay cached when the eviction policy keeps
  // entries (tail first, so deeper blocks are evicted before their parents).
  void release(SeqId seq) {
    const auto timer = meter_.time(Op::kRelease);
    Entry s = sequences_.take(seq, "release");
    if (s.parked) ledger_.forget(seq);
    codec_.detach(s.codec);
    ledger_.release(s.blocks);
    batches_.invalidate();
  }

  // The engine is done with the sequence for now (a finished conversation
  // turn) but may continue it: with an evicting policy it becomes a
  // candidate for eviction; unpark() says whether it survived.
  void park(SeqId seq) {
    const auto timer = meter_.time(Op::kPark);
    Entry& s = sequences_.find(seq, "park");
    if (s.parked) detail::raise<InvalidArgument>("park: sequence {} is already parked", seq);
    s.parked = true;
    ledger_.park(seq);
    batches_.invalidate();
  }

  // True (a hit) when the parked sequence is still cached, and it is active
  // again; false (a miss) when it was evicted, after which its id is gone.
  // With a tier attached, create_sequence(its tokens) then brings back what
  // went there (its full blocks, and its partial last one).
  bool unpark(SeqId seq) {
    const auto timer = meter_.time(Op::kUnpark);
    return detail::unpark_sequence(sequences_, ledger_, seq);
  }

  // Makes room for `tokens` more tokens (copying a shared block that would be
  // written first). With an evicting policy, evicts what it must; kPoolFull
  // when even that is not enough (then the sequence is unchanged).
  ReserveStatus try_reserve(SeqId seq, std::int64_t tokens) {
    const auto timer = meter_.time(Op::kTryReserve);
    Entry& s = sequences_.find_active(seq, "try_reserve");
    if (tokens < 0) {
      detail::raise<InvalidArgument>("try_reserve: token count {} for sequence {} is negative",
                                     tokens, seq);
    }
    // More than a whole pool could hold: refused before anything is evicted.
    if (tokens > codec_.token_capacity(ledger_.budget()) - s.num_tokens)
      return ReserveStatus::kPoolFull;
    const std::int64_t needed = codec_.pages_needed(s.num_tokens + tokens);
    const BlockId shared = tokens > 0 ? shared_write_block(s) : -1;
    if (needed <= static_cast<std::int64_t>(s.blocks.size()) && shared < 0)
      return ReserveStatus::kOk;
    const std::int64_t copy_index = shared >= 0 ? s.num_tokens / block_size() : -1;
    if (!ledger_.reserve(s.blocks, written_blocks(s), needed, copy_index, drop_sequence()))
      return ReserveStatus::kPoolFull;
    run_moves();
    batches_.invalidate();
    return ReserveStatus::kOk;
  }

  // ---- the append path -----------------------------------------------------

  // Validates a step's batch and computes its slot mapping. `token_ids`
  // (optional; all new tokens in batch order) lets prefix sharing key the
  // blocks they complete. Nothing changes until commit(); a new
  // prepare_append replaces an uncommitted batch.
  AppendBatch prepare_append(std::span<const SeqId> seqs, std::span<const std::int32_t> counts,
                             std::span<const std::int32_t> token_ids = {}) {
    const auto timer = meter_.time(Op::kPrepareAppend);
    return batches_.prepare(
        backend_, seqs, counts, token_ids,
        [&](SeqId seq) -> Entry& { return sequences_.find_active(seq, "prepare_append"); },
        [&](const Entry& s, SeqId seq, std::int32_t count) {
          const BlockId shared = count > 0 ? shared_write_block(s) : -1;
          detail::check_room(seq, count, s.num_tokens,
                             codec_.token_capacity(static_cast<std::int64_t>(s.blocks.size())),
                             shared, shared >= 0 ? ref_count(shared) : 0);
        },
        [&](std::span<Entry* const> entries, std::span<const std::int32_t> n, std::int64_t* slots) {
          codec_.plan(entries, n, slots);
        });
  }

  // Writes one layer's new K and V ([batch.num_tokens()][kv_heads][head_dim],
  // in the backend's memory) into the batch's slots, in one launch.
  void append(std::int32_t layer, const AppendBatch& batch, const TensorView& k,
              const TensorView& v) {
    const auto timer = meter_.time(Op::kAppend);
    batches_.check(batch, "append");
    detail::check_layer(shape(), layer, "append");
    detail::check_tensor(shape(), k, batch.num_tokens(), "append", "k");
    detail::check_tensor(shape(), v, batch.num_tokens(), "append", "v");
    codec_.append(layer, detail::append_source(k, v, "append"),
                  kernels::SlotMapping{batch.backend_slot_mapping(), batch.num_tokens()});
    if constexpr (Storage::kCalibrated)  // the first batch of a layer may calibrate it
      tiers_.refresh(codec_.calibrations(), [&] { return fingerprint(); });
    batches_.mark_appended(layer);
  }

  // The batch's tokens become part of their sequences; with prefix sharing,
  // blocks they complete get their keys.
  // When the cache holds data, every layer of a batch with new tokens must have
  // been appended: committing rows never written would hand stale K/V (maybe
  // another sequence's) to attention. ReservationError names the layers
  // missing, and the batch stays open.
  void commit(const AppendBatch& batch) {
    batches_.check(batch, "commit");
    if constexpr (Backend::kHoldsData) batches_.check_layers(batch, "commit");
    const auto timer = meter_.time(Op::kCommit);
    batches_.for_each([&](SeqId seq, std::int32_t count, std::span<const std::int32_t> ids) {
      Entry& s = sequences_.find(seq, "commit");
      detail::advance_tokens(s, count, ids);
      codec_.commit(s.codec, s.num_tokens);
      ledger_.publish(s, full_blocks(s), block_size());
    });
    batches_.invalidate();
  }

  // ---- reading the cache ---------------------------------------------------

  // Copies the committed K and V of `seqs` for one layer into packed buffers
  // ([sum of lengths][kv_heads][head_dim], sequences in order).
  void gather(std::span<const SeqId> seqs, std::int32_t layer, const TensorView& k_out,
              const TensorView& v_out) {
    const auto timer = meter_.time(Op::kGather);
    std::int64_t total = 0;
    for (SeqId seq : seqs)
      total += sequences_.find(seq, "gather").num_tokens;
    detail::check_gather(shape(), layer, total, k_out, v_out);
    gather_.run(backend_, seqs, sequences_, codec_, block_size(), layer,
                kernels::GatherOutput{k_out.data, v_out.data});
  }

  void gather(SeqId seq, std::int32_t layer, const TensorView& k_out, const TensorView& v_out) {
    gather(std::span<const SeqId>(&seq, 1), layer, k_out, v_out);
  }

  // Throws Error describing the first broken bookkeeping invariant.
  void check_invariants() const {
    detail::check_invariants(sequences_, ledger_, codec_, block_size());
  }

 private:
  friend struct detail::ManagerAccess;
  using Entry = detail::Sequence<typename Codec::SequenceState>;
  // A partial last block is in pages and keyed by its tokens: a tier takes it.
  static constexpr bool kTierTails = Storage::kWritesPartialPages && Sharing::kEnabled;

  // Per-sequence codec resources, evicting until they are free.
  bool attach(Entry& s) {
    return ledger_.evict_until([&] { return codec_.try_attach(s.codec); }, drop_sequence());
  }

  // Drops a parked sequence the eviction policy chose.
  auto drop_sequence() {
    return [this](SeqId seq) {
      Entry s = sequences_.take(seq, "evict");
      tiers_.spill_tail(s, block_size(), kTierTails);
      codec_.detach(s.codec);
      ledger_.release(s.blocks);
      sequences_.mark_evicted(seq);
    };
  }

  // Blocks holding data (read by gather, shared by fork, moved on growth), and full ones.
  std::int64_t written_blocks(const Entry& s) const {
    return kernels::pages_for_tokens(codec_.paged_tokens(s.codec, s.num_tokens), block_size());
  }
  std::size_t full_blocks(const Entry& s) const {
    return static_cast<std::size_t>(codec_.paged_tokens(s.codec, s.num_tokens) / block_size());
  }

  // The block the next token goes into, when it is partly written and shared
  // with another sequence (after fork); -1 otherwise.
  BlockId shared_write_block(const Entry& s) const {
    if (!Storage::kWritesPartialPages || s.num_tokens % block_size() == 0) return -1;
    const BlockId block = s.blocks[static_cast<std::size_t>(s.num_tokens / block_size())];
    return ledger_.allocation().ref_count(block) > 1 ? block : -1;
  }

  void run_moves() {
    ledger_.counters().blocks_copied += copier_.run(backend_, ledger_.moves(), arena_.bytes_data(),
                                                    bytes_per_block(), num_blocks());
  }

  CacheConfig config_;
  Backend backend_;
  detail::BlockLedger<Allocation, Eviction, Sharing> ledger_;
  Buffer arena_;
  Storage codec_;
  detail::GatherStaging<Backend> gather_;
  detail::BatchBuilder<Backend, Entry> batches_;
  detail::BlockCopier<Backend> copier_;
  detail::SequenceTable<typename Codec::SequenceState> sequences_;
  detail::TierLink<Backend> tiers_;  // after the arena and the codec it reads
  OpMeter meter_;
};

}  // namespace kvcache
