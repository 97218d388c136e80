// Where every key and value row lives inside a pool's arena.
//
// The arena is one allocation holding `num_pages` pages (blocks). A page holds
// `page_size` tokens for every layer, K and V, so one block id is valid in
// every layer and one block table serves the whole model:
//
//   arena  [num_pages] pages, `page_bytes` apart
//   page   [num_layers] layer slabs, `layer_bytes` apart
//   slab   K region, then V region, `kv_bytes` apart
//   region NHD: [page_size][num_heads][head_dim]   (token-major)
//          HND: [num_heads][page_size][head_dim]   (head-major)
//
// A row is the head_dim elements of one (token, head); rows are contiguous.
// All strides are in bytes. The view is plain data passed by value to the
// kernels, and its index math is shared by the CUDA and CPU backends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kvcache/config.hpp"
#include "kvcache/dtype.hpp"

namespace kvcache {

enum class KVLayout : std::uint8_t { kNHD = 0, kHND = 1 };

constexpr std::string_view layout_name(KVLayout layout) {
  return layout == KVLayout::kNHD ? "NHD" : "HND";
}

struct PagedKVView {
  std::byte* data = nullptr;     // arena base, 256-byte aligned
  std::int64_t page_bytes = 0;   // between consecutive pages
  std::int64_t layer_bytes = 0;  // between consecutive layers in a page
  std::int64_t kv_bytes = 0;     // from a layer's K region to its V region
  std::int64_t token_bytes = 0;  // between consecutive tokens in a region
  std::int64_t head_bytes = 0;   // between consecutive heads in a region
  std::int32_t num_pages = 0;
  std::int32_t page_size = 0;  // tokens per page (block size)
  std::int32_t num_layers = 0;
  std::int32_t num_heads = 0;
  std::int32_t head_dim = 0;
  DType dtype = DType::kF16;

  KVCACHE_HD std::int64_t row_bytes() const {
    return static_cast<std::int64_t>(head_dim) * dtype_size(dtype);
  }

  // Byte offset of the row of (page, layer, kv, token-in-page, head); kv is 0
  // for K and 1 for V.
  KVCACHE_HD std::int64_t row_offset(std::int64_t page, std::int32_t layer, std::int32_t kv,
                                     std::int32_t token, std::int32_t head) const {
    return page * page_bytes + layer * layer_bytes + kv * kv_bytes + token * token_bytes +
           head * head_bytes;
  }

  // Byte offset of a slot (page * page_size + token-in-page).
  KVCACHE_HD std::int64_t slot_offset(std::int64_t slot, std::int32_t layer, std::int32_t kv,
                                      std::int32_t head) const {
    const std::int64_t page = slot / page_size;
    const auto token = static_cast<std::int32_t>(slot - page * page_size);
    return row_offset(page, layer, kv, token, head);
  }
};

// A page view (plain or compressed) with its geometry set; the strides are
// the caller's.
template <class View>
constexpr View with_geometry(std::byte* data, std::int32_t num_pages, std::int32_t page_size,
                             std::int32_t num_layers, std::int32_t num_heads, std::int32_t head_dim,
                             DType dtype) {
  View view;
  view.data = data;
  view.num_pages = num_pages;
  view.page_size = page_size;
  view.num_layers = num_layers;
  view.num_heads = num_heads;
  view.head_dim = head_dim;
  view.dtype = dtype;
  return view;
}

// The plain (uncompressed) layout of a page for the given geometry.
constexpr PagedKVView make_plain_view(std::byte* data, std::int32_t num_pages,
                                      std::int32_t page_size, std::int32_t num_layers,
                                      std::int32_t num_heads, std::int32_t head_dim, DType dtype,
                                      KVLayout layout) {
  PagedKVView view = with_geometry<PagedKVView>(data, num_pages, page_size, num_layers, num_heads,
                                                head_dim, dtype);
  const std::int64_t row = static_cast<std::int64_t>(head_dim) * dtype_size(dtype);
  if (layout == KVLayout::kNHD) {
    view.head_bytes = row;
    view.token_bytes = row * num_heads;
  } else {
    view.token_bytes = row;
    view.head_bytes = row * page_size;
  }
  view.kv_bytes = row * num_heads * page_size;
  view.layer_bytes = 2 * view.kv_bytes;
  view.page_bytes = view.layer_bytes * num_layers;
  return view;
}

}  // namespace kvcache
