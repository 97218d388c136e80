// KVCacheManager: one preallocated block pool and the sequences that use it.
//
// An engine step, for a batch of sequences:
//
//   for each sequence: manager.try_reserve(seq, new_tokens)    // may say kPoolFull
//   AppendBatch batch = manager.prepare_append(seqs, new_tokens);
//   auto table = manager.export_flashinfer(batch);   // or export_vllm(batch)
//   for each layer: manager.append(layer, batch, k, v);  // then attention
//   manager.commit(batch);                               // lengths advance
//
// The manager owns the arena (one allocation at construction) and the
// staging buffers that carry slot mappings and page tables to the kernels,
// so nothing on the append path allocates. Every method that throws leaves
// the manager as it was before the call.
//
// Its behaviour comes from the CachePolicy it is built with (allocation,
// eviction, prefix sharing; see policy/cache_policy.hpp); the API is the same
// for every policy.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "kvcache/backend/concepts.hpp"
#include "kvcache/backend/host.hpp"
#include "kvcache/block_pool.hpp"
#include "kvcache/error.hpp"
#include "kvcache/kernels/page_math.hpp"
#include "kvcache/kernels/params.hpp"
#include "kvcache/layout.hpp"
#include "kvcache/model_shape.hpp"
#include "kvcache/page_table.hpp"
#include "kvcache/policy/cache_policy.hpp"
#include "kvcache/tensor.hpp"

namespace kvcache {

using SeqId = std::uint64_t;

struct CacheConfig {
  ModelShape shape;
  std::int32_t block_size = 16;  // tokens per block: a power of two in [1, 1024]
  // The pool's size: set exactly one of the two.
  std::int64_t num_blocks = 0;
  std::int64_t budget_bytes = 0;
  KVLayout layout = KVLayout::kNHD;
  std::int32_t max_batch_tokens = 8192;     // most new tokens in one append batch
  std::int32_t max_batch_sequences = 1024;  // most sequences in one append batch
  // DynamicAllocation: capacity of a new sequence's region, in tokens.
  std::int64_t initial_tokens = 256;
  // KiviCodec: live sequences at most (each holds a full-precision ring of
  // its most recent tokens, preallocated beside the arena).
  std::int32_t max_sequences = 256;
};

enum class ReserveStatus { kOk, kPoolFull };

struct SequenceInfo {
  SeqId id = 0;
  std::int64_t num_tokens = 0;       // committed tokens (after create: the cached prefix)
  std::int64_t reserved_tokens = 0;  // capacity of its blocks
  std::int64_t known_tokens = 0;     // token ids known (prompt and appended)
  std::int64_t quantized_tokens =
      0;  // KIVI: tokens in pages (the rest in its ring); else num_tokens
  bool parked = false;
  std::vector<BlockId> blocks;
};

struct MemoryStats {
  std::int64_t arena_bytes = 0;
  std::int64_t bytes_per_block = 0;
  std::int64_t num_blocks = 0;
  std::int64_t used_blocks = 0;    // referenced by a sequence
  std::int64_t cached_blocks = 0;  // unreferenced, kept for prefix reuse (evictable)
  std::int64_t free_blocks = 0;
  std::int64_t num_sequences = 0;
  std::int64_t parked_sequences = 0;
  std::int64_t stored_tokens = 0;    // committed tokens over all sequences
  std::int64_t reserved_tokens = 0;  // token capacity of the used blocks
  std::int64_t residual_bytes = 0;   // KIVI: the full-precision rings beside the arena
  std::int64_t used_bytes() const { return used_blocks * bytes_per_block; }
};

template <class Policy, MemoryBackend Backend>
class KVCacheManager;

// Counters over the manager's life.
struct CacheStats {
  std::int64_t prefix_lookups = 0;           // create_sequence calls with a prompt
  std::int64_t prefix_blocks_requested = 0;  // full blocks in those prompts
  std::int64_t prefix_blocks_hit = 0;        // ... found cached, up to the first miss
  std::int64_t evicted_blocks = 0;           // cached prefix blocks dropped
  std::int64_t evicted_sequences = 0;        // parked sequences dropped
  std::int64_t unpark_hits = 0;              // unpark found the sequence
  std::int64_t unpark_misses = 0;            // unpark found it evicted
  std::int64_t copy_on_write = 0;            // shared blocks copied before a write
  std::int64_t blocks_copied = 0;            // blocks moved by the copy kernel (COW, growth, fork)
  std::int64_t nonfinite_values = 0;  // NaN / Inf inputs met by a codec (saturated, see README)
  std::int64_t flushed_groups = 0;    // KIVI: token groups quantized out of the residual window
  AllocationStats allocation;
  double prefix_hit_rate() const {
    return prefix_blocks_requested == 0 ? 0.0
                                        : static_cast<double>(prefix_blocks_hit) /
                                              static_cast<double>(prefix_blocks_requested);
  }
};

enum class EvictionKind { kBlock, kSequence };

// What an eviction took away: a cached prefix block (its id and key) or a
// parked sequence (its id; unpark will report the miss).
struct EvictionEvent {
  EvictionKind kind = EvictionKind::kBlock;
  SeqId sequence = 0;
  BlockId block = -1;
  EvictionKey key = 0;
};

// The new tokens of one engine step. Valid until commit() or until a call
// that changes block tables (try_reserve, release); the spans point into the
// manager's staging memory.
class AppendBatch {
 public:
  std::span<const SeqId> sequences() const { return sequences_; }
  std::span<const std::int32_t> new_tokens() const { return new_tokens_; }
  std::int32_t num_tokens() const { return num_tokens_; }
  // Slot of every new token, in batch order (host copy).
  std::span<const std::int64_t> slot_mapping() const { return {host_slots_, size()}; }
  // The same slots in the backend's memory, for the engine's own kernels.
  const std::int64_t* backend_slot_mapping() const { return backend_slots_; }

 private:
  template <class P, MemoryBackend B>
  friend class KVCacheManager;
  std::size_t size() const { return static_cast<std::size_t>(num_tokens_); }

  std::uint64_t generation_ = 0;
  std::span<const SeqId> sequences_;
  std::span<const std::int32_t> new_tokens_;
  std::int32_t num_tokens_ = 0;
  const std::int64_t* host_slots_ = nullptr;
  const std::int64_t* backend_slots_ = nullptr;
};

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
  static constexpr bool kPlain = Codec::kKind == CodecKind::kPlain;
  static constexpr bool kKivi = Codec::kKind == CodecKind::kKivi;
  static constexpr bool kCalibrated =
      Codec::kKind == CodecKind::kFp8 || Codec::kKind == CodecKind::kLowRank;

  explicit KVCacheManager(const CacheConfig& config, Backend backend = Backend())
      : config_(validated(config)),
        backend_(std::move(backend)),
        allocation_(config_.num_blocks,
                    kernels::pages_for_tokens(config_.initial_tokens, config_.block_size)),
        eviction_(config_.num_blocks),
        arena_(
            backend_.allocate(static_cast<std::size_t>(bytes_per_block() * config_.num_blocks))) {
    view_ = make_plain_view(arena_.bytes_data(), static_cast<std::int32_t>(config_.num_blocks),
                            config_.block_size, shape().num_layers, shape().num_kv_heads,
                            shape().head_dim, shape().dtype, config_.layout);
    if constexpr (!kPlain) setup_codec();
    slot_staging_ = backend_.make_staging(sizeof(std::int64_t) *
                                          static_cast<std::size_t>(config_.max_batch_tokens));
    table_staging_ = backend_.make_staging(table_staging_bytes());
    copy_staging_ = backend_.make_staging(2 * sizeof(std::int32_t) *
                                          static_cast<std::size_t>(config_.num_blocks));
    batch_sequences_.reserve(static_cast<std::size_t>(config_.max_batch_sequences));
    batch_tokens_.reserve(static_cast<std::size_t>(config_.max_batch_sequences));
    batch_token_ids_.reserve(static_cast<std::size_t>(config_.max_batch_tokens));
    moves_.reserve(static_cast<std::size_t>(config_.num_blocks));
    if constexpr (Sharing::kEnabled)
      block_key_.assign(static_cast<std::size_t>(config_.num_blocks), 0);
  }

  KVCacheManager(const KVCacheManager&) = delete;
  KVCacheManager& operator=(const KVCacheManager&) = delete;

  // ---- configuration and state -------------------------------------------

  const CacheConfig& config() const { return config_; }
  const ModelShape& shape() const { return config_.shape; }
  std::int32_t block_size() const { return config_.block_size; }
  // Bytes of one block under the codec (codes and scales of every layer, K and V).
  std::int64_t bytes_per_block() const { return codec_block_bytes<Codec>(shape(), block_size()); }
  std::int64_t num_blocks() const { return allocation_.num_blocks(); }
  std::int64_t num_free_blocks() const { return allocation_.num_free(); }
  std::int64_t num_cached_blocks() const { return allocation_.num_cached(); }
  std::int64_t num_sequences() const { return static_cast<std::int64_t>(sequences_.size()); }
  bool contains(SeqId seq) const { return sequences_.count(seq) != 0; }
  std::int32_t ref_count(BlockId block) const { return allocation_.ref_count(block); }
  Backend& backend() { return backend_; }
  // The arena's layout: plain pages (view) or compressed ones (codec_view).
  const PagedKVView& view() const { return view_; }
  const CodecPageView& codec_view() const { return codec_view_; }
  const Allocation& allocation() const { return allocation_; }

  SequenceInfo sequence(SeqId seq) const {
    const Sequence& s = find(seq, "sequence");
    return SequenceInfo{seq,
                        s.num_tokens,
                        token_capacity(s),
                        static_cast<std::int64_t>(s.tokens.size()),
                        kKivi ? s.quantized : s.num_tokens,
                        s.parked,
                        s.blocks};
  }

  MemoryStats memory() const {
    MemoryStats stats;
    stats.arena_bytes = static_cast<std::int64_t>(arena_.size());
    stats.bytes_per_block = bytes_per_block();
    stats.num_blocks = num_blocks();
    stats.free_blocks = num_free_blocks();
    stats.cached_blocks = num_cached_blocks();
    stats.used_blocks = num_blocks() - stats.free_blocks - stats.cached_blocks;
    stats.num_sequences = num_sequences();
    for (const auto& [id, s] : sequences_) {
      stats.stored_tokens += s.num_tokens;
      stats.reserved_tokens += capacity_of(s);
      stats.parked_sequences += s.parked ? 1 : 0;
    }
    stats.residual_bytes = static_cast<std::int64_t>(residual_.size());
    return stats;
  }

  // Counters; reading the codecs' non-finite count waits for the backend.
  CacheStats stats() {
    CacheStats stats = stats_;
    stats.allocation = allocation_.stats();
    if constexpr (!kPlain) {
      unsigned long long count = 0;
      backend_.copy_to_host(&count, counter_.data(), sizeof(count));
      stats.nonfinite_values = static_cast<std::int64_t>(count);
    }
    return stats;
  }

  // Low-rank codec: fraction of the calibration rows' energy the basis of
  // (layer, K = 0 / V = 1, head) keeps; NaN before the layer is calibrated.
  float energy_kept(std::int32_t layer, std::int32_t kv, std::int32_t head) const {
    static_assert(Codec::kKind == CodecKind::kLowRank, "energy_kept is a low-rank codec figure");
    check_layer(layer, "energy_kept");
    return energy_[static_cast<std::size_t>((layer * 2 + kv) * shape().num_kv_heads + head)];
  }

  // The codec's calibrated state, copied to the host: fp8 scales
  // [layers][2][heads] or low-rank bases [layers][2][heads][head_dim][rank].
  std::vector<float> codec_state() {
    std::vector<float> host(state_.size() / sizeof(float));
    if (!host.empty()) backend_.copy_to_host(host.data(), state_.data(), state_.size());
    return host;
  }

  bool is_calibrated(std::int32_t layer) const {
    check_layer(layer, "is_calibrated");
    return !kCalibrated || calibrated_[static_cast<std::size_t>(layer)] != 0;
  }

  // fp8 and low-rank codecs: fits the layer's scales (fp8: abs-max / 448, per
  // head or per tensor) or bases (low-rank: SVD) to a sample of K and V rows
  // ([tokens][kv_heads][head_dim] in the backend's memory). Without a call,
  // the first batch appended to a layer is its sample.
  void calibrate(std::int32_t layer, const TensorView& k_sample, const TensorView& v_sample) {
    static_assert(kCalibrated, "only the fp8 and low-rank codecs are calibrated");
    check_layer(layer, "calibrate");
    check_tensor(k_sample, k_sample.num_tokens, "calibrate", "k_sample");
    check_tensor(v_sample, k_sample.num_tokens, "calibrate", "v_sample");
    if (k_sample.num_tokens < 1) {
      detail::raise<InvalidArgument>("calibrate: layer {} needs at least one token, got 0", layer);
    }
    fit_layer(layer, k_sample, v_sample);
  }

  // Called for every eviction, inside the call that needed the room; it must
  // not throw (an exception from it is dropped) nor call back into the manager.
  void set_eviction_listener(std::function<void(const EvictionEvent&)> listener) {
    listener_ = std::move(listener);
  }

  // ---- sequences -----------------------------------------------------------

  SeqId create_sequence() { return create_sequence(std::span<const std::int32_t>()); }

  // A sequence whose prompt is `prompt` (token ids). With prefix sharing the
  // longest cached prefix of full blocks is reused at once: sequence(id)
  // .num_tokens then says how many prompt tokens are already in the cache, and
  // the engine appends the rest (their ids are known, so full blocks become
  // shareable as they complete).
  SeqId create_sequence(std::span<const std::int32_t> prompt) {
    Sequence s;
    if constexpr (kKivi) {
      const auto ring = try_take_ring();
      if (!ring) {
        detail::raise<OutOfMemory>(
            "create_sequence: all {} full-precision rings of the {} codec are in use by live "
            "sequences "
            "(raise CacheConfig::max_sequences)",
            config_.max_sequences, Codec::name());
      }
      s.ring = *ring;
    }
    s.blocks.reserve(16);
    s.tokens.assign(prompt.begin(), prompt.end());
    if constexpr (Sharing::kEnabled) {
      if (!prompt.empty()) match_prefix(s);
    }
    const SeqId id = next_id_;
    sequences_.emplace(id, std::move(s));
    ++next_id_;
    return id;
  }

  // A child sharing the parent's tokens (parallel sampling, beam search).
  // Paged: the blocks are shared and copied on the first write. Dynamic: the
  // child gets its own region and a copy now; nullopt when there is no room.
  std::optional<SeqId> fork(SeqId parent_id) {
    const Sequence& parent = find_active(parent_id, "fork");
    Sequence child;
    child.num_tokens = parent.num_tokens;
    child.quantized = parent.quantized;
    child.tokens = parent.tokens;
    child.hashes = parent.hashes;
    child.hashable = parent.hashable;
    const std::int64_t used = written_blocks(parent);
    if constexpr (kKivi) {
      // The child's own ring, a copy of the parent's recent tokens.
      const auto ring = try_take_ring();
      if (!ring) return std::nullopt;
      child.ring = *ring;
      moves_.clear();
      moves_.emplace_back(parent.ring, child.ring);
      run_moves(residual_view_.data, residual_view_.page_bytes, residual_view_.num_pages);
    }
    if constexpr (Allocation::kContiguous) {
      if (used > 0) {
        moves_.clear();
        if (!grow_with_eviction(child.blocks, 0, used)) {
          if constexpr (kKivi) rings_->release(child.ring);
          return std::nullopt;
        }
        const Sequence& source = sequences_.find(parent_id)->second;
        moves_.clear();
        for (std::int64_t i = 0; i < used; ++i) {
          moves_.emplace_back(source.blocks[static_cast<std::size_t>(i)],
                              child.blocks[static_cast<std::size_t>(i)]);
        }
        run_moves();
      }
    } else {
      child.blocks.assign(parent.blocks.begin(), parent.blocks.begin() + used);
      for (BlockId block : child.blocks)
        allocation_.pool().retain(block);
    }
    const SeqId id = next_id_;
    sequences_.emplace(id, std::move(child));
    ++next_id_;
    invalidate_batch();
    return id;
  }

  // Drops the sequence. Its blocks go to their other owners; unshared full
  // blocks with a prefix key stay cached when the eviction policy keeps
  // entries (tail first, so deeper blocks are evicted before their parents).
  void release(SeqId seq) {
    auto it = find_iterator(seq, "release");
    Sequence s = std::move(it->second);
    if (s.parked && Eviction::kRetains) eviction_.forget(sequence_key(seq));
    sequences_.erase(it);
    release_blocks(s);
    invalidate_batch();
  }

  // The engine is done with the sequence for now (a finished conversation
  // turn) but may continue it: with an evicting policy it becomes a
  // candidate for eviction; unpark() says whether it survived.
  void park(SeqId seq) {
    Sequence& s = find(seq, "park");
    if (s.parked) detail::raise<InvalidArgument>("park: sequence {} is already parked", seq);
    s.parked = true;
    if constexpr (Eviction::kRetains) {
      eviction_.on_access(sequence_key(seq));
      eviction_.insert(sequence_key(seq));
    }
    invalidate_batch();
  }

  // True (a hit) when the parked sequence is still cached, and it is active
  // again; false (a miss) when it was evicted, after which its id is gone.
  bool unpark(SeqId seq) {
    auto it = sequences_.find(seq);
    if (it != sequences_.end()) {
      if (!it->second.parked)
        detail::raise<InvalidArgument>("unpark: sequence {} is not parked", seq);
      it->second.parked = false;
      if constexpr (Eviction::kRetains) eviction_.erase(sequence_key(seq));
      ++stats_.unpark_hits;
      return true;
    }
    if (evicted_.erase(seq) != 0) {
      ++stats_.unpark_misses;
      return false;
    }
    detail::raise<UnknownSequence>("unpark: sequence {} is unknown (never created or released)",
                                   seq);
  }

  // Makes room for `tokens` more tokens (copying a shared block that would be
  // written first). With an evicting policy, evicts what it must; kPoolFull
  // when even that is not enough (then the sequence is unchanged).
  ReserveStatus try_reserve(SeqId seq, std::int64_t tokens) {
    Sequence& s = find_active(seq, "try_reserve");
    if (tokens < 0) {
      detail::raise<InvalidArgument>("try_reserve: token count {} for sequence {} is negative",
                                     tokens, seq);
    }
    const std::int64_t needed = pages_needed(s.num_tokens + tokens);
    const std::int64_t missing =
        std::max<std::int64_t>(0, needed - static_cast<std::int64_t>(s.blocks.size()));
    const bool copy = tokens > 0 && shared_write_block(s) >= 0;
    if (missing == 0 && !copy) return ReserveStatus::kOk;
    if constexpr (Allocation::kContiguous) {
      moves_.clear();
      if (!grow_with_eviction(s.blocks, written_blocks(s), needed)) {
        return ReserveStatus::kPoolFull;
      }
      run_moves();
    } else {
      if (!make_room(missing + (copy ? 1 : 0))) return ReserveStatus::kPoolFull;
      if (copy) copy_on_write(s);
      moves_.clear();
      allocation_.try_grow(s.blocks, 0, needed, moves_);
    }
    invalidate_batch();
    return ReserveStatus::kOk;
  }

  // ---- the append path -----------------------------------------------------

  // Validates a step's batch and computes its slot mapping. `token_ids`
  // (optional; all new tokens in batch order) lets prefix sharing key the
  // blocks they complete. Nothing changes until commit(); a new
  // prepare_append replaces an uncommitted batch.
  AppendBatch prepare_append(std::span<const SeqId> seqs, std::span<const std::int32_t> counts,
                             std::span<const std::int32_t> token_ids = {}) {
    if (seqs.size() != counts.size()) {
      detail::raise<InvalidArgument>(
          "prepare_append: {} sequence ids but {} token counts; they must match", seqs.size(),
          counts.size());
    }
    if (seqs.size() > static_cast<std::size_t>(config_.max_batch_sequences)) {
      detail::raise<InvalidArgument>("prepare_append: {} sequences exceed max_batch_sequences {}",
                                     seqs.size(), config_.max_batch_sequences);
    }
    const std::uint64_t mark = ++generation_;
    std::int64_t total = 0;
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      Sequence& s = find_active(seqs[i], "prepare_append");
      if (s.batch_mark == mark) {
        detail::raise<InvalidArgument>("prepare_append: sequence {} appears twice in the batch",
                                       seqs[i]);
      }
      s.batch_mark = mark;
      if (counts[i] < 0) {
        detail::raise<InvalidArgument>("prepare_append: token count {} for sequence {} is negative",
                                       counts[i], seqs[i]);
      }
      const std::int64_t room = token_capacity(s) - s.num_tokens;
      if (counts[i] > room) {
        detail::raise<ReservationError>(
            "prepare_append: sequence {} appends {} tokens but has room for {} (holds {} of {} "
            "reserved); call try_reserve first",
            seqs[i], counts[i], room, s.num_tokens, token_capacity(s));
      }
      if (counts[i] > 0) {
        if (const BlockId shared = shared_write_block(s); shared >= 0) {
          detail::raise<ReservationError>(
              "prepare_append: sequence {} would write into block {} shared by {} sequences; call "
              "try_reserve first (it copies the block)",
              seqs[i], shared, allocation_.ref_count(shared));
        }
      }
      total += counts[i];
    }
    if (total > config_.max_batch_tokens) {
      detail::raise<InvalidArgument>("prepare_append: {} new tokens exceed max_batch_tokens {}",
                                     total, config_.max_batch_tokens);
    }
    if (!token_ids.empty() && static_cast<std::int64_t>(token_ids.size()) != total) {
      detail::raise<InvalidArgument>(
          "prepare_append: {} token ids for {} new tokens; pass one id per token or none",
          token_ids.size(), total);
    }
    // Validated: from here on nothing throws but the backend.
    batch_sequences_.assign(seqs.begin(), seqs.end());
    batch_tokens_.assign(counts.begin(), counts.end());
    batch_token_ids_.assign(token_ids.begin(), token_ids.end());
    auto* slots = static_cast<std::int64_t*>(backend_.staging_host(slot_staging_));
    if constexpr (kKivi) {
      plan_kivi_step(seqs, counts, slots);
    } else {
      std::int64_t next = 0;
      for (std::size_t i = 0; i < seqs.size(); ++i) {
        const Sequence& s = sequences_.find(seqs[i])->second;
        // Walk the blocks instead of dividing per token: prefill of a long
        // prompt maps every token.
        std::int64_t page = s.num_tokens / block_size();
        std::int64_t offset = s.num_tokens - page * block_size();
        for (std::int64_t t = 0; t < counts[i];) {
          const std::int64_t base =
              std::int64_t{s.blocks[static_cast<std::size_t>(page)]} * block_size();
          const std::int64_t run = std::min<std::int64_t>(counts[i] - t, block_size() - offset);
          for (std::int64_t j = 0; j < run; ++j)
            slots[next++] = base + offset + j;
          t += run;
          ++page;
          offset = 0;
        }
      }
    }
    AppendBatch batch;
    batch.generation_ = mark;
    batch.sequences_ = batch_sequences_;
    batch.new_tokens_ = batch_tokens_;
    batch.num_tokens_ = static_cast<std::int32_t>(total);
    batch.host_slots_ = slots;
    batch.backend_slots_ = static_cast<const std::int64_t*>(
        backend_.upload(slot_staging_, sizeof(std::int64_t) * static_cast<std::size_t>(total)));
    open_batch_ = mark;
    return batch;
  }

  // Writes one layer's new K and V ([batch.num_tokens()][kv_heads][head_dim],
  // in the backend's memory) into the batch's slots, in one launch.
  void append(std::int32_t layer, const AppendBatch& batch, const TensorView& k,
              const TensorView& v) {
    check_batch(batch, "append");
    check_layer(layer, "append");
    check_tensor(k, batch.num_tokens(), "append", "k");
    check_tensor(v, batch.num_tokens(), "append", "v");
    if (k.effective_token_stride() != v.effective_token_stride() ||
        k.effective_head_stride() != v.effective_head_stride()) {
      detail::raise<InvalidArgument>(
          "append: k strides (token {}, head {}) differ from v strides (token {}, head {})",
          k.effective_token_stride(), k.effective_head_stride(), v.effective_token_stride(),
          v.effective_head_stride());
    }
    const std::int64_t token_bytes = k.effective_token_stride() * dtype_size(k.dtype);
    const std::int64_t head_bytes = k.effective_head_stride() * dtype_size(k.dtype);
    if constexpr (kKivi) {
      // Groups leaving the residual window are quantized first (they may
      // read ring rows this step's tokens then overwrite), then the tokens
      // that stay go into their sequences' rings.
      if (flush_groups_ > 0) {
        kernels::KiviFlushParams flush;
        flush.cache = codec_view_;
        flush.residual = residual_view_;
        flush.layer = layer;
        flush.k = k.data;
        flush.v = v.data;
        flush.src_token_bytes = token_bytes;
        flush.src_head_bytes = head_bytes;
        flush.sources = flush_sources_;
        flush.pages = flush_pages_;
        flush.num_groups = static_cast<std::int32_t>(flush_groups_);
        flush.nonfinite = counter_.template as<unsigned long long>();
        backend_.kivi_flush(flush);
      }
    } else if constexpr (!kPlain) {
      if constexpr (kCalibrated) {
        if (calibrated_[static_cast<std::size_t>(layer)] == 0 && batch.num_tokens() > 0)
          fit_layer(layer, k, v);
      }
      kernels::CodecAppendParams params;
      params.cache = codec_view_;
      params.layer = layer;
      params.k = k.data;
      params.v = v.data;
      params.src_token_bytes = token_bytes;
      params.src_head_bytes = head_bytes;
      params.slot_mapping = batch.backend_slots_;
      params.num_tokens = batch.num_tokens();
      params.state = state_.template as<const float>();
      params.nonfinite = counter_.template as<unsigned long long>();
      backend_.codec_append(params);
      return;
    }
    kernels::AppendParams params;
    params.cache = kKivi ? residual_view_ : view_;
    params.layer = layer;
    params.k = k.data;
    params.v = v.data;
    params.src_token_bytes = token_bytes;
    params.src_head_bytes = head_bytes;
    params.slot_mapping = batch.backend_slots_;
    params.num_tokens = batch.num_tokens();
    backend_.append(params);
  }

  // The batch's tokens become part of their sequences; with prefix sharing,
  // blocks they complete get their keys.
  void commit(const AppendBatch& batch) {
    check_batch(batch, "commit");
    std::size_t next_id = 0;
    for (std::size_t i = 0; i < batch_sequences_.size(); ++i) {
      Sequence& s = sequences_.find(batch_sequences_[i])->second;
      const std::int64_t count = batch_tokens_[i];
      if (!batch_token_ids_.empty()) {
        s.tokens.resize(static_cast<std::size_t>(s.num_tokens));
        s.tokens.insert(s.tokens.end(),
                        batch_token_ids_.begin() + static_cast<std::ptrdiff_t>(next_id),
                        batch_token_ids_.begin() +
                            static_cast<std::ptrdiff_t>(next_id + static_cast<std::size_t>(count)));
        next_id += static_cast<std::size_t>(count);
      } else if (static_cast<std::int64_t>(s.tokens.size()) < s.num_tokens + count) {
        s.hashable = false;  // ids of these tokens are unknown: no further keys
      }
      s.num_tokens += count;
      if constexpr (kKivi) s.quantized = std::max(s.quantized, kivi_quantized(s.num_tokens));
      if constexpr (Sharing::kEnabled) register_full_blocks(s);
    }
    stats_.flushed_groups += flush_groups_;
    flush_groups_ = 0;
    invalidate_batch();
  }

  // ---- reading the cache ---------------------------------------------------

  // Copies the committed K and V of `seqs` for one layer into packed buffers
  // ([sum of lengths][kv_heads][head_dim], sequences in order).
  void gather(std::span<const SeqId> seqs, std::int32_t layer, const TensorView& k_out,
              const TensorView& v_out) {
    check_layer(layer, "gather");
    std::int64_t total = 0;
    for (SeqId seq : seqs)
      total += find(seq, "gather").num_tokens;
    check_tensor(k_out, total, "gather", "k_out");
    check_tensor(v_out, total, "gather", "v_out");
    if (!k_out.is_packed() || !v_out.is_packed()) {
      detail::raise<InvalidArgument>("gather: outputs must be packed [tokens][heads][head_dim]");
    }
    std::int64_t out_row = 0;
    std::size_t next = 0;
    while (next < seqs.size())
      next = gather_chunk(seqs, next, layer, k_out, v_out, out_row);
  }

  void gather(SeqId seq, std::int32_t layer, const TensorView& k_out, const TensorView& v_out) {
    gather(std::span<const SeqId>(&seq, 1), layer, k_out, v_out);
  }

  // ---- page tables for the engine's attention kernels ----------------------

  // Committed tokens of `seqs`.
  FlashInferPageTable export_flashinfer(std::span<const SeqId> seqs) const {
    require_page_tables("export_flashinfer");
    for (SeqId seq : seqs)
      find(seq, "export_flashinfer");
    return flashinfer_table(seqs, [](std::size_t) { return std::int64_t{0}; });
  }

  // Committed tokens plus the batch's new ones: the table the attention of
  // this step reads after append().
  FlashInferPageTable export_flashinfer(const AppendBatch& batch) const {
    require_page_tables("export_flashinfer");
    check_batch(batch, "export_flashinfer");
    return flashinfer_table(batch.sequences(),
                            [&](std::size_t i) { return std::int64_t{batch.new_tokens()[i]}; });
  }

  // vLLM's form for this step; slot_mapping padded with -1 to
  // `pad_tokens_to` entries (at least the batch's token count).
  VllmPageTable export_vllm(const AppendBatch& batch, std::int64_t pad_tokens_to = 0) const {
    require_page_tables("export_vllm");
    check_batch(batch, "export_vllm");
    if (pad_tokens_to != 0 && pad_tokens_to < batch.num_tokens()) {
      detail::raise<InvalidArgument>("export_vllm: pad_tokens_to {} is below the batch's {} tokens",
                                     pad_tokens_to, batch.num_tokens());
    }
    VllmPageTable table;
    table.cache = addressing();
    const auto seqs = batch.sequences();
    std::int32_t widest = 0;
    for (SeqId seq : seqs) {
      const Sequence& s = sequences_.find(seq)->second;
      widest = std::max(widest, static_cast<std::int32_t>(s.blocks.size()));
    }
    table.max_blocks_per_seq = widest;
    table.block_table.assign(seqs.size() * static_cast<std::size_t>(widest), -1);
    table.query_start_loc.push_back(0);
    for (std::size_t b = 0; b < seqs.size(); ++b) {
      const Sequence& s = sequences_.find(seqs[b])->second;
      std::copy(s.blocks.begin(), s.blocks.end(),
                table.block_table.begin() + static_cast<std::ptrdiff_t>(b * widest));
      table.seq_lens.push_back(static_cast<std::int32_t>(s.num_tokens + batch.new_tokens()[b]));
      table.query_start_loc.push_back(table.query_start_loc.back() + batch.new_tokens()[b]);
    }
    table.slot_mapping.assign(batch.slot_mapping().begin(), batch.slot_mapping().end());
    table.slot_mapping.resize(
        static_cast<std::size_t>(std::max<std::int64_t>(pad_tokens_to, batch.num_tokens())), -1);
    return table;
  }

  // How a layer's cache is addressed. For a compressed codec, base and
  // strides describe the codes (strides in bytes); codec_view() has the
  // scales.
  CacheAddressing addressing() const {
    CacheAddressing a;
    if constexpr (!kPlain) {
      const RegionLayout& k = codec_view_.region[0];
      a.base = codec_view_.data;
      a.layer_stride_bytes = codec_view_.layer_bytes;
      a.kv_stride_bytes = k.bytes;
      a.stride_page = codec_view_.page_bytes;
      a.stride_token = k.code_token_bytes;
      a.stride_head = k.code_head_bytes;
      a.num_pages = codec_view_.num_pages;
      a.page_size = codec_view_.page_size;
      a.num_heads = codec_view_.num_heads;
      a.head_dim = codec_view_.head_dim;
      a.dtype = codec_view_.dtype;
      a.layout = config_.layout;
      a.codec = Codec::kKind;
      return a;
    }
    const std::int64_t element = dtype_size(shape().dtype);
    a.base = view_.data;
    a.layer_stride_bytes = view_.layer_bytes;
    a.kv_stride_bytes = view_.kv_bytes;
    a.stride_page = view_.page_bytes / element;
    a.stride_token = view_.token_bytes / element;
    a.stride_head = view_.head_bytes / element;
    a.num_pages = view_.num_pages;
    a.page_size = view_.page_size;
    a.num_heads = view_.num_heads;
    a.head_dim = view_.head_dim;
    a.dtype = view_.dtype;
    a.layout = config_.layout;
    return a;
  }

  // Throws Error describing the first broken invariant: every block's
  // reference count equals the number of block tables holding it; a block is
  // exactly one of in use, cached, free; cached blocks are keyed and
  // evictable; the counts add up.
  void check_invariants() const {
    std::vector<std::int32_t> owners(static_cast<std::size_t>(num_blocks()), 0);
    std::int64_t parked = 0;
    for (const auto& [id, s] : sequences_) {
      if (token_capacity(s) < s.num_tokens ||
          written_blocks(s) > static_cast<std::int64_t>(s.blocks.size())) {
        detail::raise<Error>("invariant: sequence {} holds {} tokens in {} blocks", id,
                             s.num_tokens, s.blocks.size());
      }
      parked += s.parked ? 1 : 0;
      for (std::size_t i = 0; i < s.blocks.size(); ++i) {
        const BlockId block = s.blocks[i];
        if (block < 0 || block >= num_blocks()) {
          detail::raise<Error>("invariant: sequence {} holds block id {}", id, block);
        }
        if (Allocation::kContiguous && block != s.blocks.front() + static_cast<BlockId>(i)) {
          detail::raise<Error>("invariant: sequence {}'s region is not contiguous at {}", id, i);
        }
        ++owners[static_cast<std::size_t>(block)];
      }
    }
    std::int64_t used = 0, cached = 0, keyed = 0;
    for (BlockId block = 0; block < num_blocks(); ++block) {
      const std::int32_t expected = owners[static_cast<std::size_t>(block)];
      if (allocation_.ref_count(block) != expected) {
        detail::raise<Error>("invariant: block {} has reference count {} but {} owners", block,
                             allocation_.ref_count(block), expected);
      }
      used += expected > 0 ? 1 : 0;
      if constexpr (!Allocation::kContiguous) {
        const bool is_cached = allocation_.pool().is_cached(block);
        if (is_cached && expected > 0)
          detail::raise<Error>("invariant: block {} is cached and in use", block);
        cached += is_cached ? 1 : 0;
        if constexpr (Sharing::kEnabled) {
          const EvictionKey key = block_key_[static_cast<std::size_t>(block)];
          if (key != 0) {
            ++keyed;
            auto it = index_.find(key);
            if (it == index_.end() || it->second != block) {
              detail::raise<Error>(
                  "invariant: block {} has key {} that the index does not map to it", block, key);
            }
          } else if (is_cached) {
            detail::raise<Error>("invariant: cached block {} has no key", block);
          }
        }
      }
    }
    if constexpr (Sharing::kEnabled) {
      if (keyed != static_cast<std::int64_t>(index_.size())) {
        detail::raise<Error>("invariant: {} keyed blocks but {} index entries", keyed,
                             index_.size());
      }
    }
    if (cached != allocation_.num_cached() ||
        used + cached + allocation_.num_free() != num_blocks()) {
      detail::raise<Error>("invariant: {} used + {} cached + {} free blocks != {}", used, cached,
                           allocation_.num_free(), num_blocks());
    }
    if constexpr (Eviction::kRetains) {
      if (eviction_.size() != cached + parked) {
        detail::raise<Error>(
            "invariant: eviction policy holds {} entries, expected {} cached + {} parked",
            eviction_.size(), cached, parked);
      }
    }
  }

 private:
  struct Sequence {
    std::vector<BlockId> blocks;
    std::int64_t num_tokens = 0;
    std::uint64_t batch_mark = 0;      // generation of the last batch that listed it
    std::vector<std::int32_t> tokens;  // known token ids (may run ahead: the prompt)
    std::vector<EvictionKey> hashes;   // prefix key of each full block, in order
    bool hashable = true;              // every committed token's id is known
    bool parked = false;
    std::int64_t quantized = 0;  // KIVI: tokens in pages; the rest are in the ring
    BlockId ring = -1;           // KIVI: its full-precision ring
  };

  static EvictionKey sequence_key(SeqId seq) { return kSequenceKeyBit | seq; }

  static CacheConfig validated(CacheConfig config) {
    config.shape.validate();
    const ModelShape& shape = config.shape;
    const std::int64_t row_bytes = std::int64_t{shape.head_dim} * dtype_size(shape.dtype);
    if (row_bytes % 16 != 0) {
      detail::raise<InvalidArgument>(
          "CacheConfig: head_dim {} x {} bytes ({}) = {} bytes per row is not a multiple of 16; "
          "allowed head_dim for {} is a multiple of {}",
          shape.head_dim, dtype_size(shape.dtype), dtype_name(shape.dtype), row_bytes,
          dtype_name(shape.dtype), 16 / dtype_size(shape.dtype));
    }
    Allocation::validate_block_size(config.block_size);
    Codec::validate(config.shape, config.block_size, config.layout);
    if (config.layout != KVLayout::kNHD && config.layout != KVLayout::kHND) {
      detail::raise<InvalidArgument>("CacheConfig: layout {} is not NHD (0) or HND (1)",
                                     static_cast<int>(config.layout));
    }
    if ((config.num_blocks == 0) == (config.budget_bytes == 0)) {
      detail::raise<InvalidArgument>(
          "CacheConfig: set exactly one of num_blocks ({}) and budget_bytes ({})",
          config.num_blocks, config.budget_bytes);
    }
    const std::int64_t block_bytes = codec_block_bytes<Codec>(shape, config.block_size);
    if (config.budget_bytes != 0) {
      if (config.budget_bytes < block_bytes) {
        detail::raise<InvalidArgument>(
            "CacheConfig: budget_bytes {} is below one block of {} bytes ({} tokens under the {} "
            "codec)",
            config.budget_bytes, block_bytes, config.block_size, Codec::name());
      }
      config.num_blocks =
          size_cache(shape, config.block_size, config.budget_bytes, block_bytes).num_blocks;
    }
    if (config.num_blocks < 1 || config.num_blocks > BlockPool::kMaxBlocks) {
      detail::raise<InvalidArgument>("CacheConfig: num_blocks {} is outside [1, {}]",
                                     config.num_blocks, BlockPool::kMaxBlocks);
    }
    if (config.max_batch_tokens < 1 || config.max_batch_sequences < 1) {
      detail::raise<InvalidArgument>(
          "CacheConfig: max_batch_tokens {} and max_batch_sequences {} must be at least 1",
          config.max_batch_tokens, config.max_batch_sequences);
    }
    if (kKivi && config.max_sequences < 1) {
      detail::raise<InvalidArgument>(
          "CacheConfig: max_sequences {} must be at least 1 for the {} codec", config.max_sequences,
          Codec::name());
    }
    if (config.initial_tokens < 1) {
      detail::raise<InvalidArgument>("CacheConfig: initial_tokens {} must be at least 1",
                                     config.initial_tokens);
    }
    return config;
  }

  // Gather tables: indptr and last_page_len of up to max_batch_sequences
  // sequences, the page indices of up to num_blocks pages, output offsets.
  std::size_t table_staging_bytes() const {
    const auto batch = static_cast<std::size_t>(config_.max_batch_sequences);
    const std::size_t int32s = (batch + 1) + batch + static_cast<std::size_t>(num_blocks());
    return (int32s * sizeof(std::int32_t) + 7) / 8 * 8 + (4 * batch + 1) * sizeof(std::int64_t);
  }

  // ---- codec geometry -------------------------------------------------------

  // KIVI: tokens in pages once `tokens` are held: whole groups, leaving at
  // least R (and fewer than R + G) tokens in the ring.
  static std::int64_t kivi_quantized(std::int64_t tokens) {
    constexpr std::int64_t kResidual = Codec::kResidualTokens;
    if constexpr (!kKivi) {
      return tokens;
    } else {
      constexpr std::int64_t kGroup = Codec::kGroup;
      return tokens < kResidual + kGroup ? 0 : (tokens - kResidual) / kGroup * kGroup;
    }
  }
  // Blocks a sequence of `tokens` tokens needs.
  std::int64_t pages_needed(std::int64_t tokens) const {
    if constexpr (kKivi) return kivi_quantized(tokens) / block_size();
    return kernels::pages_for_tokens(tokens, block_size());
  }
  // Tokens the sequence can hold in the blocks it has.
  std::int64_t token_capacity(const Sequence& s) const {
    const auto blocks = static_cast<std::int64_t>(s.blocks.size());
    if constexpr (kKivi) return (blocks + 1) * block_size() + Codec::kResidualTokens - 1;
    return blocks * block_size();
  }
  // Blocks holding data (read by gather, shared by fork, moved on growth).
  std::int64_t table_pages(const Sequence& s) const {
    if constexpr (kKivi) return s.quantized / block_size();
    return kernels::pages_for_tokens(s.num_tokens, block_size());
  }
  std::int64_t written_blocks(const Sequence& s) const { return table_pages(s); }
  // Blocks completely written (the ones prefix sharing can key).
  std::int64_t full_blocks(const Sequence& s) const {
    if constexpr (kKivi) return s.quantized / block_size();
    return s.num_tokens / block_size();
  }
  std::int64_t ring_size() const { return block_size() + Codec::kResidualTokens; }

  // Most flush groups one batch can produce: every sequence's ring emptied
  // down to R, plus the new tokens.
  std::int64_t max_flush_groups() const {
    return (std::int64_t{config_.max_batch_sequences} * ring_size() + config_.max_batch_tokens) /
               block_size() +
           config_.max_batch_sequences;
  }

  // Codec state, rings and staging, allocated once at construction.
  void setup_codec() {
    CodecPageView view = Codec::layout(shape(), block_size());
    view.data = arena_.bytes_data();
    view.num_pages = static_cast<std::int32_t>(config_.num_blocks);
    view.page_size = block_size();
    view.num_layers = shape().num_layers;
    view.num_heads = shape().num_kv_heads;
    view.head_dim = shape().head_dim;
    view.dtype = shape().dtype;
    codec_view_ = finish_layout(view);
    counter_ = backend_.allocate(sizeof(unsigned long long));
    backend_.fill_zero(counter_.data(), sizeof(unsigned long long));
    const std::int64_t rows = std::int64_t{shape().num_layers} * 2 * shape().num_kv_heads;
    if constexpr (Codec::kKind == CodecKind::kFp8) {
      state_ = backend_.allocate(static_cast<std::size_t>(rows) * sizeof(float));
    } else if constexpr (Codec::kKind == CodecKind::kLowRank) {
      state_ = backend_.allocate(static_cast<std::size_t>(rows * shape().head_dim * Codec::kRank) *
                                 sizeof(float));
      energy_.assign(static_cast<std::size_t>(rows), std::numeric_limits<float>::quiet_NaN());
    }
    calibrated_.assign(static_cast<std::size_t>(shape().num_layers), 0);
    if constexpr (kKivi) {
      const std::int64_t rings = config_.max_sequences;
      residual_ = backend_.allocate(
          static_cast<std::size_t>(rings * ring_size() * shape().bytes_per_token()));
      residual_view_ =
          make_plain_view(residual_.bytes_data(), static_cast<std::int32_t>(rings),
                          static_cast<std::int32_t>(ring_size()), shape().num_layers,
                          shape().num_kv_heads, shape().head_dim, shape().dtype, KVLayout::kNHD);
      rings_.emplace(rings);
      const auto groups = static_cast<std::size_t>(max_flush_groups());
      flush_staging_ = backend_.make_staging((groups * sizeof(std::int32_t) + 7) / 8 * 8 +
                                             groups * static_cast<std::size_t>(block_size()) *
                                                 sizeof(std::int64_t));
    }
  }

  std::optional<BlockId> try_take_ring() {
    while (true) {
      if (auto ring = rings_->try_allocate()) return ring;
      const auto victim = eviction_.pop_victim();
      if (!victim) return std::nullopt;
      evict(*victim);
    }
  }

  // KIVI: the step's ring slots (or -1 for tokens quantized at once) and the
  // groups leaving the residual window, uploaded once for every layer.
  void plan_kivi_step(std::span<const SeqId> seqs, std::span<const std::int32_t> counts,
                      std::int64_t* slots) {
    const std::int64_t group = block_size();
    const std::int64_t ring = ring_size();
    const auto max_groups = static_cast<std::size_t>(max_flush_groups());
    auto* base = static_cast<std::byte*>(backend_.staging_host(flush_staging_));
    auto* pages = reinterpret_cast<std::int32_t*>(base);
    const std::size_t sources_offset = (max_groups * sizeof(std::int32_t) + 7) / 8 * 8;
    auto* sources = reinterpret_cast<std::int64_t*>(base + sources_offset);
    std::int64_t groups = 0;
    std::int64_t next = 0;
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      const Sequence& s = sequences_.find(seqs[i])->second;
      const std::int64_t before = s.num_tokens;
      const std::int64_t after = before + counts[i];
      // A prefix hit can leave more in pages than the window rule asks for.
      const std::int64_t quantized = std::max(s.quantized, kivi_quantized(after));
      for (std::int64_t first = s.quantized; first < quantized; first += group, ++groups) {
        pages[groups] = s.blocks[static_cast<std::size_t>(first / group)];
        for (std::int64_t j = 0; j < group; ++j) {
          const std::int64_t position = first + j;
          sources[groups * group + j] = position < before
                                            ? std::int64_t{s.ring} * ring + position % ring
                                            : -(next + position - before) - 1;
        }
      }
      for (std::int64_t t = 0; t < counts[i]; ++t) {
        const std::int64_t position = before + t;
        slots[next + t] =
            position >= quantized ? std::int64_t{s.ring} * ring + position % ring : -1;
      }
      next += counts[i];
    }
    flush_groups_ = groups;
    const std::size_t used =
        sources_offset + static_cast<std::size_t>(groups * group) * sizeof(std::int64_t);
    const auto* device = static_cast<const std::byte*>(backend_.upload(flush_staging_, used));
    flush_pages_ = reinterpret_cast<const std::int32_t*>(device);
    flush_sources_ = reinterpret_cast<const std::int64_t*>(device + sources_offset);
  }

  // fp8: scales from the sample's abs-max; low-rank: bases by SVD.
  void fit_layer(std::int32_t layer, const TensorView& k, const TensorView& v) {
    const std::int32_t heads = shape().num_kv_heads;
    for (std::int32_t kv = 0; kv < 2; ++kv) {
      const TensorView& t = kv == 0 ? k : v;
      kernels::SampleView sample;
      sample.data = t.data;
      sample.dtype = t.dtype;
      sample.num_tokens = static_cast<std::int32_t>(t.num_tokens);
      sample.num_heads = heads;
      sample.head_dim = t.head_dim;
      sample.token_bytes = t.effective_token_stride() * dtype_size(t.dtype);
      sample.head_bytes = t.effective_head_stride() * dtype_size(t.dtype);
      const std::int64_t first_row = (std::int64_t{layer} * 2 + kv) * heads;
      if constexpr (Codec::kKind == CodecKind::kFp8) {
        Buffer amax = backend_.allocate(static_cast<std::size_t>(heads) * sizeof(float));
        backend_.abs_max(kernels::AbsMaxParams{sample, amax.template as<float>()});
        std::vector<float> scales(static_cast<std::size_t>(heads));
        backend_.copy_to_host(scales.data(), amax.data(), scales.size() * sizeof(float));
        float tensor_max = 0.0f;
        for (float a : scales)
          tensor_max = std::max(tensor_max, a);
        for (float& scale : scales) {
          const float amax_used = Codec::kMode == Fp8Scale::kPerTensor ? tensor_max : scale;
          scale = amax_used > 0.0f ? amax_used / kFp8E4M3Max : 1.0f;
        }
        backend_.copy_to_backend(state_.template as<float>() + first_row, scales.data(),
                                 scales.size() * sizeof(float));
      } else if constexpr (Codec::kKind == CodecKind::kLowRank) {
        kernels::LowRankFitParams fit;
        fit.sample = sample;
        fit.rank = Codec::kRank;
        fit.basis = state_.template as<float>() + first_row * shape().head_dim * Codec::kRank;
        fit.energy_kept = energy_.data() + first_row;
        backend_.low_rank_fit(fit);
      }
    }
    calibrated_[static_cast<std::size_t>(layer)] = 1;
  }

  std::int64_t capacity_of(const Sequence& s) const {
    return static_cast<std::int64_t>(s.blocks.size()) * block_size();
  }

  // The block the next token goes into, when it is partly written and shared
  // with another sequence (after fork); -1 otherwise.
  BlockId shared_write_block(const Sequence& s) const {
    if constexpr (Allocation::kContiguous || kKivi) {
      return -1;  // KIVI writes whole fresh pages only
    } else {
      if (s.num_tokens % block_size() == 0) return -1;  // the next token starts a block
      const BlockId block = s.blocks[static_cast<std::size_t>(s.num_tokens / block_size())];
      return allocation_.ref_count(block) > 1 ? block : -1;
    }
  }

  using SequenceMap = std::unordered_map<SeqId, Sequence>;

  typename SequenceMap::iterator find_iterator(SeqId seq, const char* what) {
    auto it = sequences_.find(seq);
    if (it == sequences_.end()) {
      detail::raise<UnknownSequence>("{}: sequence {} is unknown (never created, released{})", what,
                                     seq, evicted_.count(seq) ? " or evicted" : "");
    }
    return it;
  }
  Sequence& find(SeqId seq, const char* what) { return find_iterator(seq, what)->second; }
  const Sequence& find(SeqId seq, const char* what) const {
    auto it = sequences_.find(seq);
    if (it == sequences_.end()) {
      detail::raise<UnknownSequence>("{}: sequence {} is unknown (never created, released{})", what,
                                     seq, evicted_.count(seq) ? " or evicted" : "");
    }
    return it->second;
  }
  // A sequence that may change: known and not parked.
  Sequence& find_active(SeqId seq, const char* what) {
    Sequence& s = find(seq, what);
    if (s.parked) {
      detail::raise<InvalidArgument>("{}: sequence {} is parked; unpark it first", what, seq);
    }
    return s;
  }

  void invalidate_batch() { open_batch_ = 0; }

  // KIVI keeps a sequence's recent tokens in a ring, not in pages: a page
  // table alone does not describe its cache.
  void require_page_tables(const char* what) const {
    if constexpr (kKivi) {
      detail::raise<Unsupported>(
          "{}: the {} codec keeps each sequence's last tokens in a full-precision ring outside the "
          "pages; "
          "read it with gather()",
          what, Codec::name());
    }
  }

  void check_batch(const AppendBatch& batch, const char* what) const {
    if (batch.generation_ == 0 || batch.generation_ != open_batch_) {
      detail::raise<ReservationError>(
          "{}: the append batch is stale (committed, replaced, or invalidated by a "
          "try_reserve/release/fork/park since prepare_append)",
          what);
    }
  }

  void check_layer(std::int32_t layer, const char* what) const {
    if (layer < 0 || layer >= shape().num_layers) {
      detail::raise<OutOfRange>("{}: layer {} is outside [0, {})", what, layer, shape().num_layers);
    }
  }

  void check_tensor(const TensorView& t, std::int64_t tokens, const char* what,
                    const char* name) const {
    if (t.data == nullptr && tokens > 0) {
      detail::raise<InvalidArgument>("{}: {} is a null pointer", what, name);
    }
    if (reinterpret_cast<std::uintptr_t>(t.data) % 16 != 0) {
      detail::raise<InvalidArgument>("{}: {} at {} is not 16-byte aligned", what, name,
                                     static_cast<const void*>(t.data));
    }
    if (t.dtype != shape().dtype) {
      detail::raise<InvalidArgument>("{}: {} has dtype {}, the cache holds {}", what, name,
                                     dtype_name(t.dtype), dtype_name(shape().dtype));
    }
    if (t.num_heads != shape().num_kv_heads) {
      detail::raise<InvalidArgument>("{}: {} has {} heads, the model has {} KV heads", what, name,
                                     t.num_heads, shape().num_kv_heads);
    }
    if (t.head_dim != shape().head_dim) {
      detail::raise<InvalidArgument>("{}: {} has head_dim {}, the model has {}", what, name,
                                     t.head_dim, shape().head_dim);
    }
    if (t.num_tokens != tokens) {
      detail::raise<InvalidArgument>("{}: {} has {} tokens, expected {}", what, name, t.num_tokens,
                                     tokens);
    }
    const std::int64_t element = dtype_size(t.dtype);
    if ((t.effective_token_stride() * element) % 16 != 0 ||
        (t.effective_head_stride() * element) % 16 != 0 || t.effective_head_stride() < t.head_dim) {
      detail::raise<InvalidArgument>(
          "{}: {} strides (token {}, head {} elements) must be multiples of 16 bytes and the "
          "head stride at least head_dim {}",
          what, name, t.effective_token_stride(), t.effective_head_stride(), t.head_dim);
    }
  }

  // ---- prefix sharing ------------------------------------------------------

  EvictionKey block_key_at(const Sequence& s, std::size_t index) const {
    const EvictionKey parent = index == 0 ? PrefixSharing::kRootKey : s.hashes[index - 1];
    const auto first = static_cast<std::ptrdiff_t>(index * static_cast<std::size_t>(block_size()));
    return Sharing::block_hash(
        parent, std::span<const std::int32_t>(s.tokens.data() + first,
                                              static_cast<std::size_t>(block_size())));
  }

  // Takes the cached blocks of the longest prefix of `s.tokens` (full blocks,
  // up to the first miss).
  void match_prefix(Sequence& s) {
    const std::size_t full = s.tokens.size() / static_cast<std::size_t>(block_size());
    ++stats_.prefix_lookups;
    stats_.prefix_blocks_requested += static_cast<std::int64_t>(full);
    for (std::size_t i = 0; i < full; ++i) {
      const EvictionKey key = block_key_at(s, i);
      auto it = index_.find(key);
      if (it == index_.end()) break;
      const BlockId block = it->second;
      if (allocation_.pool().is_cached(block)) {
        allocation_.pool().revive(block);
        eviction_.erase(key);
      } else {
        allocation_.pool().retain(block);
      }
      eviction_.on_access(key);
      s.blocks.push_back(block);
      s.hashes.push_back(key);
      ++stats_.prefix_blocks_hit;
    }
    s.num_tokens = static_cast<std::int64_t>(s.blocks.size()) * block_size();
    s.quantized = s.num_tokens;  // KIVI: matched pages are whole quantized groups
  }

  // Keys the blocks `s` has completed since the last call.
  void register_full_blocks(Sequence& s) {
    const auto full = static_cast<std::size_t>(full_blocks(s));
    while (s.hashable && s.hashes.size() < full &&
           s.tokens.size() >= (s.hashes.size() + 1) * static_cast<std::size_t>(block_size())) {
      const std::size_t i = s.hashes.size();
      const EvictionKey key = block_key_at(s, i);
      s.hashes.push_back(key);
      const BlockId block = s.blocks[i];
      if (block_key_[static_cast<std::size_t>(block)] != 0) continue;  // shared from the cache
      auto it = index_.find(key);
      if (it == index_.end()) {
        index_.emplace(key, block);
      } else if (allocation_.pool().is_cached(it->second)) {
        // The same content sat cached after this prompt's first miss: the new
        // copy replaces it, so the key's recency is this use (the policy keeps
        // what it knew of the key).
        const BlockId stale = it->second;
        eviction_.erase(key);
        block_key_[static_cast<std::size_t>(stale)] = 0;
        allocation_.pool().reclaim(stale);
        it->second = block;
      } else {
        continue;  // in use by another sequence: that copy stays the keyed one
      }
      block_key_[static_cast<std::size_t>(block)] = key;
      eviction_.on_access(key);
    }
  }

  // ---- giving blocks back and evicting -------------------------------------

  void release_blocks(const Sequence& s) {
    if constexpr (kKivi) {
      if (s.ring >= 0) rings_->release(s.ring);
    }
    if constexpr (Allocation::kContiguous) {
      allocation_.release_table(s.blocks);
    } else {
      for (std::size_t i = s.blocks.size(); i-- > 0;)
        release_block(s.blocks[i]);  // tail first
    }
  }

  void release_block(BlockId block) {
    BlockPool& pool = allocation_.pool();
    EvictionKey key = 0;
    if constexpr (Sharing::kEnabled) key = block_key_[static_cast<std::size_t>(block)];
    if (key != 0 && Eviction::kRetains) {
      if (pool.release_to_cache(block)) eviction_.insert(key);
      return;
    }
    if (pool.release(block) && key != 0) {
      if constexpr (Sharing::kEnabled) {
        index_.erase(key);
        block_key_[static_cast<std::size_t>(block)] = 0;
        eviction_.forget(key);
      }
    }
  }

  // Evicts until `blocks` blocks are free; false when nothing is left to evict.
  bool make_room(std::int64_t blocks) {
    while (allocation_.num_free() < blocks) {
      const auto victim = eviction_.pop_victim();
      if (!victim) return false;
      evict(*victim);
    }
    return true;
  }

  // Grows a contiguous region, evicting until it fits.
  bool grow_with_eviction(std::vector<BlockId>& table, std::int64_t used, std::int64_t needed) {
    while (!allocation_.try_grow(table, used, needed, moves_)) {
      const auto victim = eviction_.pop_victim();
      if (!victim) return false;
      evict(*victim);
    }
    return true;
  }

  void evict(EvictionKey key) {
    EvictionEvent event;
    if ((key & kSequenceKeyBit) != 0) {
      const SeqId seq = key & ~kSequenceKeyBit;
      auto it = sequences_.find(seq);
      Sequence s = std::move(it->second);
      sequences_.erase(it);
      release_blocks(s);
      evicted_.insert(seq);
      ++stats_.evicted_sequences;
      event.kind = EvictionKind::kSequence;
      event.sequence = seq;
    } else if constexpr (Sharing::kEnabled) {
      auto it = index_.find(key);
      const BlockId block = it->second;
      index_.erase(it);
      block_key_[static_cast<std::size_t>(block)] = 0;
      allocation_.pool().reclaim(block);
      ++stats_.evicted_blocks;
      event.kind = EvictionKind::kBlock;
      event.block = block;
    }
    event.key = key;
    if (listener_) {
      try {
        listener_(event);
      } catch (...) {  // documented: a listener must not throw
      }
    }
  }

  // Copies a shared, partly written block before the sequence writes to it.
  void copy_on_write(Sequence& s) {
    const auto index = static_cast<std::size_t>(s.num_tokens / block_size());
    const BlockId shared = s.blocks[index];
    const BlockId fresh = *allocation_.pool().try_allocate();
    moves_.clear();
    moves_.emplace_back(shared, fresh);
    run_moves();
    allocation_.pool().release(shared);  // another owner keeps it
    s.blocks[index] = fresh;
    ++stats_.copy_on_write;
  }

  // Launches the copy kernel for `moves_` (in the arena, or another set of pages).
  void run_moves() {
    run_moves(arena_.bytes_data(), bytes_per_block(), static_cast<std::int32_t>(num_blocks()));
  }
  void run_moves(std::byte* data, std::int64_t page_bytes, std::int32_t num_pages) {
    if (moves_.empty()) return;
    auto* pairs = static_cast<std::int32_t*>(backend_.staging_host(copy_staging_));
    for (std::size_t i = 0; i < moves_.size(); ++i) {
      pairs[2 * i] = moves_[i].first;
      pairs[2 * i + 1] = moves_[i].second;
    }
    const auto* device = static_cast<const std::int32_t*>(
        backend_.upload(copy_staging_, moves_.size() * 2 * sizeof(std::int32_t)));
    backend_.copy_blocks(kernels::CopyBlocksParams{data, page_bytes, num_pages, device,
                                                   static_cast<std::int32_t>(moves_.size())});
    stats_.blocks_copied += static_cast<std::int64_t>(moves_.size());
    moves_.clear();
  }

  // ---- page tables ----------------------------------------------------------

  template <class ExtraTokens>
  FlashInferPageTable flashinfer_table(std::span<const SeqId> seqs, ExtraTokens extra) const {
    FlashInferPageTable table;
    table.cache = addressing();
    table.indptr.reserve(seqs.size() + 1);
    table.indptr.push_back(0);
    for (std::size_t b = 0; b < seqs.size(); ++b) {
      const Sequence& s = sequences_.find(seqs[b])->second;
      const std::int64_t tokens = s.num_tokens + extra(b);
      const std::int32_t pages = kernels::pages_for_tokens(tokens, block_size());
      table.indices.insert(table.indices.end(), s.blocks.begin(), s.blocks.begin() + pages);
      table.indptr.push_back(table.indptr.back() + pages);
      table.last_page_len.push_back(kernels::last_page_length(tokens, block_size()));
    }
    return table;
  }

  // Stages and launches the gather of seqs[first..] that fit the staging
  // tables; returns the index of the first sequence not gathered.
  std::size_t gather_chunk(std::span<const SeqId> seqs, std::size_t first, std::int32_t layer,
                           const TensorView& k_out, const TensorView& v_out,
                           std::int64_t& out_row) {
    // Staging: int32 indptr [B + 1], last_page_len [B], indices [num_blocks];
    // then int64 out offsets [B + 1], and for KIVI quantized, total, ring [B].
    const auto max_batch = static_cast<std::size_t>(config_.max_batch_sequences);
    auto* base = static_cast<std::byte*>(backend_.staging_host(table_staging_));
    auto* indptr = reinterpret_cast<std::int32_t*>(base);
    auto* last = indptr + max_batch + 1;
    auto* indices = last + max_batch;
    auto* offsets = reinterpret_cast<std::int64_t*>(
        base +
        ((2 * max_batch + 1 + static_cast<std::size_t>(num_blocks())) * sizeof(std::int32_t) + 7) /
            8 * 8);
    auto* quantized = offsets + max_batch + 1;
    auto* totals = quantized + max_batch;
    auto* rings = totals + max_batch;
    std::size_t end = first;
    std::int32_t pages = 0;
    indptr[0] = 0;
    offsets[0] = out_row;
    while (end < seqs.size() && end - first < max_batch) {
      const Sequence& s = sequences_.find(seqs[end])->second;
      const auto n = static_cast<std::int32_t>(table_pages(s));
      if (pages + n > num_blocks()) break;
      std::copy(s.blocks.begin(), s.blocks.begin() + n, indices + pages);
      const std::size_t b = end - first;
      pages += n;
      indptr[b + 1] = pages;
      last[b] = kernels::last_page_length(s.num_tokens, block_size());
      offsets[b] = out_row;
      quantized[b] = s.quantized;
      totals[b] = s.num_tokens;
      rings[b] = s.ring;
      out_row += s.num_tokens;
      offsets[b + 1] = out_row;
      ++end;
    }
    const std::size_t used = reinterpret_cast<std::byte*>(rings + max_batch) - base;
    const auto* device = static_cast<const std::byte*>(backend_.upload(table_staging_, used));
    auto on_device = [&](const void* host) {
      return device + (static_cast<const std::byte*>(host) - base);
    };
    const auto batch = static_cast<std::int32_t>(end - first);
    const auto* device_indptr = reinterpret_cast<const std::int32_t*>(device);
    const auto* device_last = reinterpret_cast<const std::int32_t*>(on_device(last));
    const auto* device_indices = reinterpret_cast<const std::int32_t*>(on_device(indices));
    const auto* device_offsets = reinterpret_cast<const std::int64_t*>(on_device(offsets));
    // The fields every gather takes; the plain and per-row codec gathers also
    // take the last page's length and the page count.
    auto page_table = [&](auto& params) {
      params.layer = layer;
      params.page_indptr = device_indptr;
      params.page_indices = device_indices;
      params.out_row_offset = device_offsets;
      params.k_out = k_out.data;
      params.v_out = v_out.data;
      params.batch_size = batch;
      if constexpr (requires { params.last_page_len; }) {
        params.last_page_len = device_last;
        params.total_pages = pages;
      }
    };
    if constexpr (kPlain) {
      kernels::GatherParams params;
      params.cache = view_;
      page_table(params);
      backend_.gather(params);
    } else if constexpr (kKivi) {
      kernels::KiviGatherParams params;
      params.cache = codec_view_;
      params.residual = residual_view_;
      page_table(params);
      params.quantized_tokens = reinterpret_cast<const std::int64_t*>(on_device(quantized));
      params.total_tokens = reinterpret_cast<const std::int64_t*>(on_device(totals));
      params.ring = reinterpret_cast<const std::int64_t*>(on_device(rings));
      params.total_rows = out_row - offsets[0];
      backend_.kivi_gather(params);
    } else {
      kernels::CodecGatherParams params;
      params.cache = codec_view_;
      page_table(params);
      params.state = state_.template as<const float>();
      backend_.codec_gather(params);
    }
    return end;
  }

  CacheConfig config_;
  Backend backend_;
  Allocation allocation_;
  Eviction eviction_;
  Buffer arena_;
  PagedKVView view_;
  CodecPageView codec_view_;
  Buffer counter_;                        // codecs: non-finite inputs met (backend memory)
  Buffer state_;                          // fp8 scales / low-rank bases (backend memory)
  std::vector<float> energy_;             // low-rank: energy kept per (layer, K/V, head)
  std::vector<std::uint8_t> calibrated_;  // fp8 / low-rank: per layer
  Buffer residual_;                       // KIVI: the rings
  PagedKVView residual_view_;
  std::optional<BlockPool> rings_;
  typename Backend::Staging flush_staging_;
  std::int64_t flush_groups_ = 0;
  const std::int32_t* flush_pages_ = nullptr;
  const std::int64_t* flush_sources_ = nullptr;
  typename Backend::Staging slot_staging_;
  typename Backend::Staging table_staging_;
  typename Backend::Staging copy_staging_;
  SequenceMap sequences_;
  SeqId next_id_ = 1;
  std::uint64_t generation_ = 0;
  std::uint64_t open_batch_ = 0;
  std::vector<SeqId> batch_sequences_;
  std::vector<std::int32_t> batch_tokens_;
  std::vector<std::int32_t> batch_token_ids_;
  BlockMoves moves_;
  std::unordered_map<EvictionKey, BlockId> index_;  // prefix key -> block holding it
  std::vector<EvictionKey> block_key_;              // per block, 0 when unkeyed
  std::unordered_set<SeqId> evicted_;               // evicted, not yet reported by unpark
  std::function<void(const EvictionEvent&)> listener_;
  CacheStats stats_;
};

}  // namespace kvcache
