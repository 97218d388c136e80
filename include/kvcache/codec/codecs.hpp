// The storage codecs: the fourth strategy axis of a KVCacheManager. A codec
// decides how a page stores K and V; the manager's API is the same for all
// (append takes and gather returns fp16 / bf16 / fp32 tensors of the model's
// dtype).
//
//   PlainCodec                  the model dtype as is
//   Int8Codec<G, S>             symmetric int8, one scale per G values along head_dim (per
//                               token), S-byte scales (2: fp16, 4: fp32); G == head_dim: per head
//   Fp8Codec<Mode>              OCP e4m3 with a static scale per tensor (layer, K/V) or per head,
//                               calibrated from the first batch of each layer (or calibrate())
//   KiviCodec<B, G, R>          KIVI: B-bit (4 or 2) asymmetric; keys per channel over groups of
//                               G tokens (a page is one group), values per token over groups of
//                               G channels; the last R tokens (R a multiple of G) stay in full
//                               precision and are flushed into pages a group at a time
//   LowRankCodec<Rank, C>       per layer, K/V and head a basis of Rank directions fitted by SVD to
//                               calibration tokens; pages hold Rank coefficients per row (C bytes
//                               each: 2 = fp16, 4 = fp32), never the reconstructed rows
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "kvcache/codec/layout.hpp"
#include "kvcache/error.hpp"
#include "kvcache/layout.hpp"
#include "kvcache/model_shape.hpp"

namespace kvcache {

namespace detail {
inline void require_nhd(KVLayout layout, const std::string& codec) {
  if (layout != KVLayout::kNHD) {
    raise<InvalidArgument>(
        "{}: compressed pages are token-major; layout {} is not supported (use NHD)", codec,
        layout_name(layout));
  }
}
}  // namespace detail

struct PlainCodec {
  static constexpr CodecKind kKind = CodecKind::kPlain;
  static constexpr std::int32_t kResidualTokens = 0;
  static std::string name() { return "plain"; }
  static void validate(const ModelShape&, std::int32_t, KVLayout) {}
};

template <std::int32_t Group = 32, std::int32_t ScaleBytes = 2>
struct Int8Codec {
  static_assert(ScaleBytes == 2 || ScaleBytes == 4, "scales are fp16 (2) or fp32 (4)");
  static_assert(Group >= 1, "a group holds at least one value");
  static constexpr CodecKind kKind = CodecKind::kInt8;
  static constexpr std::int32_t kResidualTokens = 0;
  static std::string name() {
    return fmt::format("int8-g{}{}", Group, ScaleBytes == 4 ? "-f32" : "");
  }

  static void validate(const ModelShape& shape, std::int32_t, KVLayout layout) {
    detail::require_nhd(layout, name());
    if (shape.head_dim % Group != 0) {
      detail::raise<InvalidArgument>("{}: group size {} does not divide head_dim {}", name(), Group,
                                     shape.head_dim);
    }
  }
  static CodecPageView layout(const ModelShape& shape, std::int32_t page_size) {
    CodecPageView view;
    view.kind = kKind;
    view.group_size = Group;
    view.bits = 8;
    view.scale_bytes = ScaleBytes;
    const std::int64_t scales = std::int64_t{shape.head_dim / Group} * ScaleBytes;
    view.region[0] = view.region[1] =
        token_major_region(page_size, shape.num_kv_heads, shape.head_dim, scales);
    return view;
  }
};

enum class Fp8Scale { kPerTensor, kPerHead };

template <Fp8Scale Mode = Fp8Scale::kPerHead>
struct Fp8Codec {
  static constexpr CodecKind kKind = CodecKind::kFp8;
  static constexpr std::int32_t kResidualTokens = 0;
  static constexpr Fp8Scale kMode = Mode;
  static std::string name() {
    return Mode == Fp8Scale::kPerHead ? "fp8-e4m3-head" : "fp8-e4m3-tensor";
  }

  static void validate(const ModelShape& shape, std::int32_t, KVLayout layout) {
    detail::require_nhd(layout, name());
    (void)shape;
  }
  static CodecPageView layout(const ModelShape& shape, std::int32_t page_size) {
    CodecPageView view;
    view.kind = kKind;
    view.bits = 8;
    view.group_size = shape.head_dim;
    view.region[0] = view.region[1] =
        token_major_region(page_size, shape.num_kv_heads, shape.head_dim, 0);
    return view;
  }
};

template <std::int32_t Bits = 4, std::int32_t Group = 32, std::int32_t Residual = 128,
          std::int32_t ScaleBytes = 2>
struct KiviCodec {
  static_assert(Bits == 4 || Bits == 2, "KIVI stores 4-bit or 2-bit codes");
  static_assert(ScaleBytes == 2 || ScaleBytes == 4, "scales are fp16 (2) or fp32 (4)");
  static constexpr CodecKind kKind = CodecKind::kKivi;
  static constexpr std::int32_t kBits = Bits;
  static constexpr std::int32_t kGroup = Group;
  static constexpr std::int32_t kResidualTokens = Residual;
  static std::string name() { return fmt::format("int{}-kivi-g{}-r{}", Bits, Group, Residual); }

  static void validate(const ModelShape& shape, std::int32_t block_size, KVLayout layout) {
    detail::require_nhd(layout, name());
    if (Residual % Group != 0 || Residual < 0) {
      detail::raise<InvalidArgument>(
          "{}: residual window {} is not a multiple of the group size {}", name(), Residual, Group);
    }
    if (block_size != Group) {
      detail::raise<InvalidArgument>(
          "{}: block_size {} must equal the key group size {} (a page is one group)", name(),
          block_size, Group);
    }
    if (shape.head_dim % Group != 0) {
      detail::raise<InvalidArgument>("{}: group size {} does not divide head_dim {} (value groups)",
                                     name(), Group, shape.head_dim);
    }
    if ((Group * Bits) % 8 != 0) {
      detail::raise<InvalidArgument>("{}: a group of {} codes of {} bits is not whole bytes",
                                     name(), Group, Bits);
    }
  }
  static CodecPageView layout(const ModelShape& shape, std::int32_t page_size) {
    CodecPageView view;
    view.kind = kKind;
    view.bits = Bits;
    view.group_size = Group;
    view.scale_bytes = ScaleBytes;
    view.region[0] =
        channel_major_region(page_size, shape.num_kv_heads, shape.head_dim, Bits, ScaleBytes);
    view.region[1] =
        token_major_region(page_size, shape.num_kv_heads, std::int64_t{shape.head_dim} * Bits / 8,
                           std::int64_t{shape.head_dim / Group} * 2 * ScaleBytes);
    return view;
  }
};

template <std::int32_t Rank = 32, std::int32_t CoefficientBytes = 2>
struct LowRankCodec {
  static_assert(CoefficientBytes == 2 || CoefficientBytes == 4, "coefficients are 16-bit or fp32");
  static constexpr CodecKind kKind = CodecKind::kLowRank;
  static constexpr std::int32_t kResidualTokens = 0;
  static constexpr std::int32_t kRank = Rank;
  static std::string name() { return fmt::format("low-rank-r{}", Rank); }

  static void validate(const ModelShape& shape, std::int32_t, KVLayout layout) {
    detail::require_nhd(layout, name());
    if (Rank < 1 || Rank > shape.head_dim) {
      detail::raise<InvalidArgument>("{}: rank {} is outside [1, head_dim {}]", name(), Rank,
                                     shape.head_dim);
    }
  }
  static CodecPageView layout(const ModelShape& shape, std::int32_t page_size) {
    CodecPageView view;
    view.kind = kKind;
    view.rank = Rank;
    view.scale_bytes = CoefficientBytes;
    view.region[0] = view.region[1] =
        token_major_region(page_size, shape.num_kv_heads, std::int64_t{Rank} * CoefficientBytes, 0);
    return view;
  }
};

// Bytes of one block (all layers, K and V) under codec C.
template <class C>
std::int64_t codec_block_bytes(const ModelShape& shape, std::int32_t block_size) {
  if constexpr (C::kKind == CodecKind::kPlain) {
    return shape.bytes_per_token() * block_size;
  } else {
    CodecPageView view = C::layout(shape, block_size);
    view.num_layers = shape.num_layers;
    return finish_layout(view).page_bytes;
  }
}

}  // namespace kvcache
