// Where codes and scales live in a compressed page.
//
// As for plain pages, a page holds page_size tokens of every layer, K and V,
// so one block id serves the whole model; a layer's K region is followed by
// its V region, each a multiple of 16 bytes:
//
//   per-token codecs (int8, fp8, low-rank; KIVI values):
//     codes  [page_size][heads][code bytes of a row]
//     scales [page_size][heads][scale bytes of a row]     (none for fp8, low-rank)
//   KIVI keys (per channel; a page is one group of page_size tokens):
//     codes  [heads][head_dim][page_size x bits / 8]
//     scales [heads][head_dim][scale, zero]
//
// Scales are fp16 (2 bytes) or fp32 (4 bytes), little-endian, stored in the
// same page as the codes they scale. The view holds geometry only: what a
// byte means is the codec's (its Rows type, a template parameter of the
// kernels).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kvcache/config.hpp"
#include "kvcache/dtype.hpp"
#include "kvcache/layout.hpp"

namespace kvcache {

// The codec families, as an engine reading an exported page table sees them.
enum class CodecKind : std::uint8_t { kPlain = 0, kInt8 = 1, kFp8 = 2, kKivi = 3, kLowRank = 4 };

constexpr std::string_view codec_kind_name(CodecKind kind) {
  switch (kind) {
    case CodecKind::kPlain:
      return "plain";
    case CodecKind::kInt8:
      return "int8";
    case CodecKind::kFp8:
      return "fp8";
    case CodecKind::kKivi:
      return "kivi";
    case CodecKind::kLowRank:
      return "low-rank";
  }
  return "unknown";
}

struct RegionLayout {
  std::int64_t code_token_bytes = 0;  // per-token codes: between tokens
  std::int64_t code_head_bytes = 0;   // between heads
  std::int64_t scales_offset = 0;     // from the region's start
  std::int64_t scale_token_bytes = 0;
  std::int64_t scale_head_bytes = 0;
  std::int64_t bytes = 0;  // the region, a multiple of 16
};

struct CodecPageView {
  std::byte* data = nullptr;
  std::int64_t page_bytes = 0;
  std::int64_t layer_bytes = 0;
  RegionLayout region[2];  // K, V
  std::int32_t num_pages = 0;
  std::int32_t page_size = 0;
  std::int32_t num_layers = 0;
  std::int32_t num_heads = 0;
  std::int32_t head_dim = 0;
  DType dtype = DType::kF16;  // of the tensors going in (append) and out (gather)

  KVCACHE_HD std::byte* region_base(std::int64_t page, std::int32_t layer, std::int32_t kv) const {
    return data + page * page_bytes + layer * layer_bytes + (kv != 0 ? region[0].bytes : 0);
  }

  // Codes and scales of the token-major row (page, layer, kv, token, head).
  KVCACHE_HD std::uint8_t* row_codes(std::int64_t page, std::int32_t layer, std::int32_t kv,
                                     std::int32_t token, std::int32_t head) const {
    const RegionLayout& r = region[kv];
    return reinterpret_cast<std::uint8_t*>(region_base(page, layer, kv)) +
           token * r.code_token_bytes + head * r.code_head_bytes;
  }
  KVCACHE_HD std::uint8_t* row_scales(std::int64_t page, std::int32_t layer, std::int32_t kv,
                                      std::int32_t token, std::int32_t head) const {
    const RegionLayout& r = region[kv];
    return reinterpret_cast<std::uint8_t*>(region_base(page, layer, kv)) + r.scales_offset +
           token * r.scale_token_bytes + head * r.scale_head_bytes;
  }
};

constexpr std::int64_t round_up_16(std::int64_t bytes) {
  return (bytes + 15) / 16 * 16;
}

// A region of per-token rows: codes then scales.
constexpr RegionLayout token_major_region(std::int32_t page_size, std::int32_t heads,
                                          std::int64_t code_row_bytes,
                                          std::int64_t scale_row_bytes) {
  RegionLayout r;
  r.code_head_bytes = code_row_bytes;
  r.code_token_bytes = code_row_bytes * heads;
  r.scales_offset = round_up_16(r.code_token_bytes * page_size);
  r.scale_head_bytes = scale_row_bytes;
  r.scale_token_bytes = scale_row_bytes * heads;
  r.bytes = round_up_16(r.scales_offset + r.scale_token_bytes * page_size);
  return r;
}

// KIVI keys: channel-major codes, one (scale, zero) per channel.
constexpr RegionLayout channel_major_region(std::int32_t page_size, std::int32_t heads,
                                            std::int32_t head_dim, std::int32_t bits,
                                            std::int32_t scale_bytes) {
  RegionLayout r;
  const std::int64_t channel_bytes = std::int64_t{page_size} * bits / 8;
  r.code_token_bytes = 0;
  r.code_head_bytes = channel_bytes * head_dim;
  r.scales_offset = round_up_16(r.code_head_bytes * heads);
  r.scale_head_bytes = std::int64_t{head_dim} * 2 * scale_bytes;
  r.scale_token_bytes = 0;
  r.bytes = round_up_16(r.scales_offset + r.scale_head_bytes * heads);
  return r;
}

// The whole page of `num_layers` layers of two regions (K, V).
constexpr CodecPageView make_codec_view(std::byte* data, std::int32_t num_pages,
                                        std::int32_t page_size, std::int32_t num_layers,
                                        std::int32_t num_heads, std::int32_t head_dim, DType dtype,
                                        RegionLayout k, RegionLayout v) {
  CodecPageView view = with_geometry<CodecPageView>(data, num_pages, page_size, num_layers,
                                                    num_heads, head_dim, dtype);
  view.region[0] = k;
  view.region[1] = v;
  view.layer_bytes = k.bytes + v.bytes;
  view.page_bytes = view.layer_bytes * num_layers;
  return view;
}

}  // namespace kvcache
