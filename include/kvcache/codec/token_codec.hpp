// What the per-token codecs (int8, fp8, low-rank) have in common as strategy
// classes: each row of a page is encoded on its own by the codec's Rows, so
// a region is [page_size][heads] rows of codes then their scales, no token
// stays outside the pages, and the storage is codec::TokenCodecStorage.
#pragma once

#include <cstdint>

#include "kvcache/codec/page_view.hpp"
#include "kvcache/codec/storage.hpp"
#include "kvcache/model_shape.hpp"

namespace kvcache::codec {

template <class RowMath>
struct TokenCodec {
  using Rows = RowMath;
  static constexpr std::int32_t kResidualTokens = 0;
  struct SequenceState {};

  static RegionLayout region(const ModelShape& shape, std::int32_t page_size, std::int32_t) {
    return token_major_region(page_size, shape.num_kv_heads, Rows::code_bytes(shape.head_dim),
                              Rows::scale_bytes(shape.head_dim));
  }
  static std::int64_t block_bytes(const ModelShape& shape, std::int32_t block_size) {
    return shape.num_layers * 2 * region(shape, block_size, 0).bytes;
  }
};

}  // namespace kvcache::codec
