// Pieces shared by the codecs' storages: paged geometry (a sequence of n
// tokens needs ceil(n / block) pages and holds nothing beside them), the
// paged slot mapping, and the storage of the per-token codecs (int8, fp8,
// low-rank), which differ only in their row math and their calibration.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "kvcache/buffer.hpp"
#include "kvcache/codec/concepts.hpp"
#include "kvcache/codec/page_view.hpp"
#include "kvcache/error.hpp"
#include "kvcache/kernels/page_math.hpp"
#include "kvcache/kernels/params.hpp"
#include "kvcache/page_table.hpp"
#include "kvcache/types.hpp"

namespace kvcache::codec {

// Groups a lane of N values (16 bytes of input: 8 fp16 / bf16, 4 fp32) holds
// whole or spans whole: 1, 2, 4 or a multiple of 8.
constexpr bool lane_compatible(std::int32_t group) {
  return group == 1 || group == 2 || group == 4 || group % 8 == 0;
}

inline void require_nhd(KVLayout layout, const std::string& codec) {
  if (layout != KVLayout::kNHD) {
    detail::raise<InvalidArgument>(
        "{}: compressed pages are token-major; layout {} is not supported (use NHD)", codec,
        layout_name(layout));
  }
}

// Slots of a batch's new tokens when every token goes to its sequence's
// pages: walks the blocks instead of dividing per token (prefill of a long
// prompt maps every token). Seq has `blocks` and `num_tokens`.
template <class Seq>
void paged_slot_mapping(std::span<Seq* const> seqs, std::span<const std::int32_t> counts,
                        std::int32_t block_size, std::int64_t* slots) {
  std::int64_t next = 0;
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    const Seq& s = *seqs[i];
    std::int64_t page = s.num_tokens / block_size;
    std::int64_t offset = s.num_tokens - page * block_size;
    for (std::int64_t t = 0; t < counts[i];) {
      const std::int64_t base = std::int64_t{s.blocks[static_cast<std::size_t>(page)]} * block_size;
      const std::int64_t run = std::min<std::int64_t>(counts[i] - t, block_size - offset);
      for (std::int64_t j = 0; j < run; ++j)
        slots[next++] = base + offset + j;
      t += run;
      ++page;
      offset = 0;
    }
  }
}

// The geometry every exported addressing carries; the caller sets the
// strides.
template <class View>
CacheAddressing addressing_of(const View& view, KVLayout layout, CodecKind codec) {
  CacheAddressing a;
  a.base = view.data;
  a.layer_stride_bytes = view.layer_bytes;
  a.num_pages = view.num_pages;
  a.page_size = view.page_size;
  a.num_heads = view.num_heads;
  a.head_dim = view.head_dim;
  a.dtype = view.dtype;
  a.layout = layout;
  a.codec = codec;
  return a;
}

// Compressed pages: base and byte strides of the K codes (the view has the
// scales).
inline CacheAddressing codes_addressing(const CodecPageView& view, KVLayout layout,
                                        CodecKind codec) {
  CacheAddressing a = addressing_of(view, layout, codec);
  a.kv_stride_bytes = view.region[0].bytes;
  a.stride_page = view.page_bytes;
  a.stride_token = view.region[0].code_token_bytes;
  a.stride_head = view.region[0].code_head_bytes;
  return a;
}

// A sample of K or V rows as the calibration kernels read it.
inline kernels::SampleView sample_of(const kernels::AppendSource& source, std::int32_t kv,
                                     DType dtype, std::int32_t tokens, std::int32_t heads,
                                     std::int32_t head_dim) {
  return kernels::SampleView{kv == 0 ? source.k : source.v,
                             dtype,
                             tokens,
                             heads,
                             head_dim,
                             source.token_bytes,
                             source.head_bytes};
}

// Geometry and lifecycle of a codec whose sequences keep every token in their
// pages and need nothing else: the defaults the codecs build on.
template <class Backend, class State>
class PagedStorage {
 public:
  using SequenceState = State;
  static constexpr bool kWritesPartialPages = true;
  static constexpr bool kExportsPageTable = true;

  PagedStorage(const CacheConfig& config, Backend& backend)
      : backend_(&backend), shape_(config.shape), block_size_(config.block_size) {}

  std::int64_t pages_needed(std::int64_t tokens) const {
    return kernels::pages_for_tokens(tokens, block_size_);
  }
  std::int64_t token_capacity(std::int64_t blocks) const { return blocks * block_size_; }
  std::int64_t paged_tokens(const State&, std::int64_t tokens) const { return tokens; }
  std::int64_t side_slot(const State&) const { return -1; }

  bool try_attach(State&) { return true; }
  void detach(State&) {}
  void fork(const State& parent, State& child) { child = parent; }
  void on_prefix_hit(State&, std::int64_t) {}
  void commit(State&, std::int64_t) {}

  template <class Seq>
  void plan(std::span<Seq* const> seqs, std::span<const std::int32_t> counts, std::int64_t* slots) {
    paged_slot_mapping(seqs, counts, block_size_, slots);
  }

  std::int64_t side_bytes() const { return 0; }
  // Checkpoints: bytes a sequence keeps beside the pages (none here).
  std::int64_t side_bytes_per_sequence() const { return 0; }
  void save_side(const State&, std::byte*) const {}
  void load_side(const State&, const std::byte*) {}

 protected:
  Backend* backend_;
  ModelShape shape_;
  std::int32_t block_size_;
};

// Counts non-finite inputs in backend memory; read back on demand.
template <class Backend>
class NonfiniteCounter {
 public:
  explicit NonfiniteCounter(Backend& backend)
      : counter_(backend.allocate(sizeof(unsigned long long))) {
    backend.fill_zero(counter_.data(), sizeof(unsigned long long));
  }
  unsigned long long* device() const { return counter_.template as<unsigned long long>(); }
  std::int64_t read(Backend& backend) const {
    unsigned long long count = 0;
    backend.copy_to_host(&count, counter_.data(), sizeof(count));
    return static_cast<std::int64_t>(count);
  }

 private:
  Buffer counter_;
};

// Codecs without calibrated state (int8).
template <class Backend>
struct NoCalibration {
  static constexpr bool kFits = false;
  NoCalibration(const CacheConfig&, Backend&) {}
  void fit(Backend&, const kernels::SampleView&, float*, float*) {}
};

// Storage of a per-token codec: every row of a page is encoded on its own
// (Codec::Rows), optionally with calibrated state per (layer, K/V, head)
// fitted by Codec::Calibration (fp8 scales, low-rank bases): from the first
// batch appended to a layer, or from calibrate().
template <class Codec, class Backend>
class TokenCodecStorage : public PagedStorage<Backend, typename Codec::SequenceState> {
  using Base = PagedStorage<Backend, typename Codec::SequenceState>;
  using Base::backend_;
  using Base::block_size_;
  using Base::shape_;

 public:
  using Rows = typename Codec::Rows;
  using Calibration = typename Codec::template Calibration<Backend>;
  static constexpr bool kCalibrated = Calibration::kFits;

  TokenCodecStorage(const CacheConfig& config, Backend& backend, std::byte* arena)
      : Base(config, backend),
        view_(make_codec_view(arena, static_cast<std::int32_t>(config.num_blocks),
                              config.block_size, shape_.num_layers, shape_.num_kv_heads,
                              shape_.head_dim, shape_.dtype, Codec::region(shape_, block_size_, 0),
                              Codec::region(shape_, block_size_, 1))),
        counter_(backend),
        calibration_(config, backend),
        calibrated_(static_cast<std::size_t>(shape_.num_layers), 0) {
    const std::int64_t state = state_rows() * Rows::state_floats(shape_.head_dim);
    if (state > 0) {
      state_ = backend.allocate(static_cast<std::size_t>(state) * sizeof(float));
      backend.fill_zero(state_.data(), state_.size());
      energy_.assign(static_cast<std::size_t>(state_rows()),
                     std::numeric_limits<float>::quiet_NaN());
    }
  }

  const CodecPageView& view() const { return view_; }
  // The calibrated state in backend memory (kernels::row_state), or null.
  const float* state_data() const { return state_.template as<const float>(); }

  void append(std::int32_t layer, const kernels::AppendSource& source,
              const kernels::SlotMapping& slots) {
    if constexpr (kCalibrated) {
      if (calibrated_[static_cast<std::size_t>(layer)] == 0 && slots.num_tokens > 0) {
        calibrate(layer,
                  sample_of(source, 0, shape_.dtype, slots.num_tokens, shape_.num_kv_heads,
                            shape_.head_dim),
                  sample_of(source, 1, shape_.dtype, slots.num_tokens, shape_.num_kv_heads,
                            shape_.head_dim));
      }
    }
    kernels::CodecAppendParams<Rows> params;
    params.cache = view_;
    params.layer = layer;
    params.source = source;
    params.slots = slots;
    params.state = state_.template as<const float>();
    params.nonfinite = counter_.device();
    launch(*backend_, params);
  }

  void gather(const GatherRequest& request) {
    kernels::CodecGatherParams<Rows> params;
    params.cache = view_;
    params.layer = request.layer;
    params.table = request.table;
    params.out = request.out;
    params.state = state_.template as<const float>();
    launch(*backend_, params);
  }

  // Fits the layer's state to samples of its K and V rows (backend memory).
  void calibrate(std::int32_t layer, const kernels::SampleView& k,
                 const kernels::SampleView& v) requires kCalibrated {
    const std::int64_t per_head = Rows::state_floats(shape_.head_dim);
    for (std::int32_t kv = 0; kv < 2; ++kv) {
      const std::int64_t first_row = (std::int64_t{layer} * 2 + kv) * shape_.num_kv_heads;
      calibration_.fit(*backend_, kv == 0 ? k : v,
                       state_.template as<float>() + first_row * per_head,
                       energy_.data() + first_row);
    }
    calibrated_[static_cast<std::size_t>(layer)] = 1;
    ++calibrations_;
  }
  // Calibrations so far: the state changed when this did.
  std::uint64_t calibrations() const { return calibrations_; }

  bool is_calibrated(std::int32_t layer) const {
    return !kCalibrated || calibrated_.at(static_cast<std::size_t>(layer)) != 0;
  }
  // Checkpoints: which layers are calibrated, and their state put back
  // (`state`: state() of a cache of the same shape and codec).
  const std::vector<std::uint8_t>& calibrated_layers() const { return calibrated_; }
  void load_calibration(const std::vector<std::uint8_t>& layers, const std::vector<float>& state) {
    if (!state.empty()) backend_->copy_to_backend(state_.data(), state.data(), state_.size());
    calibrated_ = layers;
    ++calibrations_;
  }

  // The calibrated state, copied to the host: [layers][2][heads][state floats].
  std::vector<float> state() const {
    std::vector<float> host(state_.size() / sizeof(float));
    if (!host.empty()) backend_->copy_to_host(host.data(), state_.data(), state_.size());
    return host;
  }

  // Low-rank: fraction of the calibration rows' energy kept by the basis of
  // (layer, K = 0 / V = 1, head); NaN before the layer is calibrated.
  float energy_kept(std::int32_t layer, std::int32_t kv, std::int32_t head) const {
    if (layer < 0 || layer >= shape_.num_layers || kv < 0 || kv > 1 || head < 0 ||
        head >= shape_.num_kv_heads) {
      detail::raise<OutOfRange>(
          "energy_kept: (layer {}, kv {}, head {}) is outside [0, {}) x [0, 2) x [0, {})", layer,
          kv, head, shape_.num_layers, shape_.num_kv_heads);
    }
    if (energy_.empty()) return std::numeric_limits<float>::quiet_NaN();
    return energy_[static_cast<std::size_t>((layer * 2 + kv) * shape_.num_kv_heads + head)];
  }

  CacheAddressing addressing(KVLayout layout) const {
    return codes_addressing(view_, layout, Codec::kKind);
  }

  void add_stats(CacheStats& stats) { stats.nonfinite_values = counter_.read(*backend_); }

 private:
  std::int64_t state_rows() const {
    return std::int64_t{shape_.num_layers} * 2 * shape_.num_kv_heads;
  }

  CodecPageView view_;
  NonfiniteCounter<Backend> counter_;
  Calibration calibration_;
  Buffer state_;               // [layers][2][heads][Rows::state_floats], backend memory
  std::vector<float> energy_;  // [layers][2][heads], low-rank only
  std::vector<std::uint8_t> calibrated_;
  std::uint64_t calibrations_ = 0;
};

}  // namespace kvcache::codec
