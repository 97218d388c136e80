// KiviCodec<B, G, R, S>: KIVI (Liu et al., ICML'24). B-bit (4 or 2)
// asymmetric codes with a scale and zero point (S bytes each):
//   keys   per channel, over a group of G tokens (a page is one group);
//   values per token, over groups of G channels;
// and the last R tokens of each sequence (R a multiple of G) in full
// precision, in a ring of R + G tokens beside the arena, flushed into a fresh
// page one group at a time as they leave the window.
//
// Everything KIVI-specific lives here: the row and channel math (KiviRows),
// the rings and the flush plan (KiviCodec::Storage), the page count of a
// sequence (only whole flushed groups take pages).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include <fmt/format.h>

#include "kvcache/block_pool.hpp"
#include "kvcache/buffer.hpp"
#include "kvcache/codec/kivi/rows.hpp"
#include "kvcache/codec/page_view.hpp"
#include "kvcache/codec/quant_math.hpp"
#include "kvcache/codec/storage.hpp"
#include "kvcache/detail/checked.hpp"
#include "kvcache/detail/staging_layout.hpp"
#include "kvcache/error.hpp"
#include "kvcache/kernels/params.hpp"
#include "kvcache/layout.hpp"
#include "kvcache/types.hpp"

namespace kvcache {

template <std::int32_t Bits = 4, std::int32_t Group = 32, std::int32_t Residual = 128,
          std::int32_t ScaleBytes = 2>
struct KiviCodec {
  static_assert(Bits == 4 || Bits == 2, "KIVI stores 4-bit or 2-bit codes");
  static_assert(ScaleBytes == 2 || ScaleBytes == 4, "scales are fp16 (2) or fp32 (4)");
  static_assert(codec::lane_compatible(Group), "the group is 1, 2, 4 or a multiple of 8");
  static constexpr CodecKind kKind = CodecKind::kKivi;
  static constexpr std::int32_t kBits = Bits;
  static constexpr std::int32_t kGroup = Group;
  static constexpr std::int32_t kResidualTokens = Residual;
  using Rows = KiviRows<Bits, Group, ScaleBytes>;

  struct SequenceState {
    std::int64_t quantized = 0;  // tokens in pages; the rest are in the ring
    BlockId ring = -1;           // its full-precision ring
  };

  static std::string name() { return fmt::format("int{}-kivi-g{}-r{}", Bits, Group, Residual); }

  static void validate(const CacheConfig& config) {
    codec::require_nhd(config.layout, name());
    if (Residual % Group != 0 || Residual < 0) {
      detail::raise<InvalidArgument>(
          "{}: residual window {} is not a multiple of the group size {}", name(), Residual, Group);
    }
    if (config.block_size != Group) {
      detail::raise<InvalidArgument>(
          "{}: block_size {} must equal the key group size {} (a page is one group)", name(),
          config.block_size, Group);
    }
    if (config.shape.head_dim % Group != 0) {
      detail::raise<InvalidArgument>("{}: group size {} does not divide head_dim {} (value groups)",
                                     name(), Group, config.shape.head_dim);
    }
    if ((Group * Bits) % 8 != 0) {
      detail::raise<InvalidArgument>("{}: a group of {} codes of {} bits is not whole bytes",
                                     name(), Group, Bits);
    }
    if (config.max_sequences < 1 || config.max_sequences > (1 << 20)) {
      detail::raise<InvalidArgument>(
          "CacheConfig: max_sequences {} is outside [1, 2^20] for the {} codec",
          config.max_sequences, name());
    }
    const auto ring_bytes =
        detail::checked_mul(std::int64_t{Group + Residual}, config.shape.bytes_per_token());
    if (!ring_bytes || !detail::checked_mul(*ring_bytes, std::int64_t{config.max_sequences})) {
      detail::raise<InvalidArgument>(
          "CacheConfig: max_sequences {} rings of {} tokens overflow 64-bit bytes ({} codec)",
          config.max_sequences, Group + Residual, name());
    }
  }
  static RegionLayout region(const ModelShape& shape, std::int32_t page_size, std::int32_t kv) {
    if (kv == 0) {
      return channel_major_region(page_size, shape.num_kv_heads, shape.head_dim, Bits, ScaleBytes);
    }
    return token_major_region(page_size, shape.num_kv_heads, Rows::code_bytes(shape.head_dim),
                              Rows::scale_bytes(shape.head_dim));
  }
  static std::int64_t block_bytes(const ModelShape& shape, std::int32_t block_size) {
    return shape.num_layers *
           (region(shape, block_size, 0).bytes + region(shape, block_size, 1).bytes);
  }

  // Tokens in pages once a sequence holds `tokens`: whole groups, leaving at
  // least R (and fewer than R + G) tokens in the ring.
  static constexpr std::int64_t quantized_tokens(std::int64_t tokens) {
    return tokens < Residual + Group ? 0 : (tokens - Residual) / Group * Group;
  }

  template <class Backend>
  class Storage {
   public:
    using SequenceState = KiviCodec::SequenceState;
    static constexpr bool kCalibrated = false;
    static constexpr bool kWritesPartialPages = false;  // only whole flushed groups take pages
    static constexpr bool kExportsPageTable = false;    // the last tokens are in the ring

    Storage(const CacheConfig& config, Backend& backend, std::byte* arena)
        : backend_(&backend),
          shape_(config.shape),
          view_(make_codec_view(arena, static_cast<std::int32_t>(config.num_blocks), Group,
                                shape_.num_layers, shape_.num_kv_heads, shape_.head_dim,
                                shape_.dtype, region(shape_, Group, 0), region(shape_, Group, 1))),
          counter_(backend),
          rings_(config.max_sequences) {
      const std::int64_t rings = config.max_sequences;
      residual_ =
          backend.allocate(static_cast<std::size_t>(rings * kRingSize * shape_.bytes_per_token()));
      residual_view_ = make_plain_view(residual_.bytes_data(), static_cast<std::int32_t>(rings),
                                       kRingSize, shape_.num_layers, shape_.num_kv_heads,
                                       shape_.head_dim, shape_.dtype, KVLayout::kNHD);
      // Most groups one batch can flush: every sequence's ring emptied down
      // to R, plus the new tokens.
      const auto groups = static_cast<std::size_t>(
          (std::int64_t{config.max_batch_sequences} * kRingSize + config.max_batch_tokens) / Group +
          config.max_batch_sequences);
      detail::StagingLayout layout;
      flush_pages_ = layout.add<std::int32_t>(groups);
      flush_sources_ = layout.add<std::int64_t>(groups * Group);
      flush_staging_ = backend.make_staging(layout.bytes());
      ring_copy_staging_ = backend.make_staging(2 * sizeof(std::int32_t));
    }

    const CodecPageView& view() const { return view_; }
    const PagedKVView& residual_view() const { return residual_view_; }

    std::int64_t pages_needed(std::int64_t tokens) const {
      return quantized_tokens(tokens) / Group;
    }
    std::int64_t token_capacity(std::int64_t blocks) const {
      return (blocks + 1) * Group + Residual - 1;
    }
    // Tokens in pages once the sequence holds `tokens` (within a step, before
    // its commit, the groups this step's append flushed count too).
    std::int64_t paged_tokens(const SequenceState& s, std::int64_t tokens) const {
      return std::max(s.quantized, quantized_tokens(tokens));
    }
    std::int64_t side_slot(const SequenceState& s) const { return s.ring; }

    bool try_attach(SequenceState& s) {
      const std::optional<BlockId> ring = rings_.try_allocate();
      if (!ring) return false;
      s.ring = *ring;
      return true;
    }
    void detach(SequenceState& s) {
      if (s.ring >= 0) rings_.release(s.ring);
      s.ring = -1;
    }
    // The child (attached: it has its own ring) gets a copy of the parent's
    // recent tokens.
    void fork(const SequenceState& parent, SequenceState& child) {
      child.quantized = parent.quantized;
      auto* pair = static_cast<std::int32_t*>(backend_->staging_host(ring_copy_staging_));
      pair[0] = parent.ring;
      pair[1] = child.ring;
      const auto* device = static_cast<const std::int32_t*>(
          backend_->upload(ring_copy_staging_, 2 * sizeof(std::int32_t)));
      launch(*backend_, kernels::CopyBlocksParams{residual_view_.data, residual_view_.page_bytes,
                                                  residual_view_.num_pages, device, 1});
      ++rings_copied_;
    }
    // Matched prefix pages hold whole quantized groups.
    void on_prefix_hit(SequenceState& s, std::int64_t tokens) { s.quantized = tokens; }
    void commit(SequenceState& s, std::int64_t tokens) {
      const std::int64_t quantized = std::max(s.quantized, quantized_tokens(tokens));
      flushed_groups_ += (quantized - s.quantized) / Group;
      s.quantized = quantized;
    }

    // The step's ring slots (or -1 for tokens quantized at once) and the
    // groups leaving the residual window, uploaded once for every layer.
    template <class Seq>
    void plan(std::span<Seq* const> seqs, std::span<const std::int32_t> counts,
              std::int64_t* slots) {
      void* host = backend_->staging_host(flush_staging_);
      std::int32_t* pages = flush_pages_.in(host);
      std::int64_t* sources = flush_sources_.in(host);
      std::int64_t groups = 0;
      std::int64_t next = 0;
      for (std::size_t i = 0; i < seqs.size(); ++i) {
        const Seq& s = *seqs[i];
        const std::int64_t before = s.num_tokens;
        const std::int64_t after = before + counts[i];
        const std::int64_t ring = std::int64_t{s.codec.ring} * kRingSize;
        // A prefix hit can leave more in pages than the window rule asks for.
        const std::int64_t quantized = std::max(s.codec.quantized, quantized_tokens(after));
        for (std::int64_t first = s.codec.quantized; first < quantized; first += Group, ++groups) {
          pages[groups] = s.blocks[static_cast<std::size_t>(first / Group)];
          for (std::int64_t j = 0; j < Group; ++j) {
            const std::int64_t position = first + j;
            sources[groups * Group + j] =
                position < before ? ring + position % kRingSize : -(next + position - before) - 1;
          }
        }
        for (std::int64_t t = 0; t < counts[i]; ++t) {
          const std::int64_t position = before + t;
          slots[next + t] = position >= quantized ? ring + position % kRingSize : -1;
        }
        next += counts[i];
      }
      groups_ = static_cast<std::int32_t>(groups);
      const void* device = backend_->upload(
          flush_staging_, flush_sources_.bytes_through(static_cast<std::size_t>(groups * Group)));
      device_pages_ = flush_pages_.in(device);
      device_sources_ = flush_sources_.in(device);
    }

    // Groups leaving the window are quantized first (they may read ring rows
    // that this step's tokens then overwrite), then the tokens that stay go
    // into their sequences' rings.
    void append(std::int32_t layer, const kernels::AppendSource& source,
                const kernels::SlotMapping& slots) {
      if (groups_ > 0) {
        launch(*backend_,
               kernels::KiviFlushParams<Rows>{view_, residual_view_, layer, source, device_sources_,
                                              device_pages_, groups_, counter_.device()});
      }
      launch(*backend_, kernels::AppendParams{residual_view_, layer, source, slots});
    }

    void gather(const GatherRequest& request) {
      kernels::KiviGatherParams<Rows> params;
      params.cache = view_;
      params.residual = residual_view_;
      params.layer = request.layer;
      params.table = request.table;
      params.side = request.side;
      params.out = request.out;
      launch(*backend_, params);
    }

    // Pages hold codes (byte strides); the ring is not described: KIVI caches
    // are read with gather() or attended by PagedAttention.
    CacheAddressing addressing(KVLayout layout) const {
      return codec::codes_addressing(view_, layout, kKind);
    }
    std::int64_t side_bytes() const { return static_cast<std::int64_t>(residual_.size()); }
    // Checkpoints: a sequence's ring (every layer's K and V of its last
    // tokens), copied out and back.
    std::int64_t side_bytes_per_sequence() const { return residual_view_.page_bytes; }
    void save_side(const SequenceState& s, std::byte* host) const {
      backend_->copy_to_host(host, residual_.bytes_data() + s.ring * residual_view_.page_bytes,
                             static_cast<std::size_t>(residual_view_.page_bytes));
    }
    void load_side(const SequenceState& s, const std::byte* host) {
      backend_->copy_to_backend(residual_.bytes_data() + s.ring * residual_view_.page_bytes, host,
                                static_cast<std::size_t>(residual_view_.page_bytes));
    }
    void add_stats(CacheStats& stats) {
      stats.nonfinite_values = counter_.read(*backend_);
      stats.flushed_groups = flushed_groups_;
      stats.blocks_copied += rings_copied_;
    }

   private:
    static constexpr std::int32_t kRingSize = Group + Residual;

    Backend* backend_;
    ModelShape shape_;
    CodecPageView view_;
    codec::NonfiniteCounter<Backend> counter_;
    BlockPool rings_;
    Buffer residual_;  // the rings: [max_sequences] plain pages of kRingSize tokens
    PagedKVView residual_view_;
    detail::StagingSlice<std::int32_t> flush_pages_;
    detail::StagingSlice<std::int64_t> flush_sources_;
    typename Backend::Staging flush_staging_;
    typename Backend::Staging ring_copy_staging_;
    std::int32_t groups_ = 0;  // groups the open batch flushes
    const std::int32_t* device_pages_ = nullptr;
    const std::int64_t* device_sources_ = nullptr;
    std::int64_t flushed_groups_ = 0;
    std::int64_t rings_copied_ = 0;  // by fork (counted with the blocks copied)
  };
};

}  // namespace kvcache
