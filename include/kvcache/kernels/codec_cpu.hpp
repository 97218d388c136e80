// The CPU backend's compressed-cache kernels: the row codecs of
// codec/row_codec.hpp applied over slot mappings and page tables, the same
// loops the CUDA kernels parallelize. Callers validate the parameters.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kvcache/codec/row_codec.hpp"
#include "kvcache/kernels/codec_params.hpp"
#include "kvcache/kernels/page_math.hpp"

namespace kvcache::kernels::cpu {

namespace detail {

inline std::uint8_t* row_codes(const CodecPageView& view, std::int64_t page, std::int32_t layer,
                               std::int32_t kv, std::int32_t token, std::int32_t head) {
  const RegionLayout& r = view.region[kv];
  return reinterpret_cast<std::uint8_t*>(view.region_base(page, layer, kv)) +
         token * r.code_token_bytes + head * r.code_head_bytes;
}

inline std::uint8_t* row_scales(const CodecPageView& view, std::int64_t page, std::int32_t layer,
                                std::int32_t kv, std::int32_t token, std::int32_t head) {
  const RegionLayout& r = view.region[kv];
  return reinterpret_cast<std::uint8_t*>(view.region_base(page, layer, kv)) + r.scales_offset +
         token * r.scale_token_bytes + head * r.scale_head_bytes;
}

}  // namespace detail

inline void codec_append(const CodecAppendParams& p) {
  const CodecPageView& view = p.cache;
  unsigned long long nonfinite = 0;
  for (std::int32_t t = 0; t < p.num_tokens; ++t) {
    const std::int64_t slot = p.slot_mapping[t];
    if (slot < 0) continue;
    const std::int64_t page = slot / view.page_size;
    const auto in_page = static_cast<std::int32_t>(slot - page * view.page_size);
    for (std::int32_t kv = 0; kv < 2; ++kv) {
      const auto* source =
          static_cast<const std::byte*>(kv == 0 ? p.k : p.v) + t * p.src_token_bytes;
      for (std::int32_t h = 0; h < view.num_heads; ++h) {
        const std::byte* row = source + h * p.src_head_bytes;
        nonfinite += static_cast<unsigned long long>(codec::encode_row(
            view, [&](std::int32_t i) { return load_as_float(row, view.dtype, i); },
            detail::row_codes(view, page, p.layer, kv, in_page, h),
            detail::row_scales(view, page, p.layer, kv, in_page, h),
            codec::row_state(view, p.state, p.layer, kv, h)));
      }
    }
  }
  if (p.nonfinite != nullptr) *p.nonfinite += nonfinite;
}

inline void codec_gather(const CodecGatherParams& p) {
  const CodecPageView& view = p.cache;
  const std::int64_t out_token = static_cast<std::int64_t>(view.num_heads) * view.head_dim;
  for (std::int32_t b = 0; b < p.batch_size; ++b) {
    const std::int32_t first = p.page_indptr[b];
    const std::int32_t pages = p.page_indptr[b + 1] - first;
    for (std::int32_t i = 0; i < pages; ++i) {
      const std::int64_t page = p.page_indices[first + i];
      const std::int32_t tokens = tokens_in_page(i, pages, p.last_page_len[b], view.page_size);
      for (std::int32_t t = 0; t < tokens; ++t) {
        const std::int64_t row =
            p.out_row_offset[b] + static_cast<std::int64_t>(i) * view.page_size + t;
        for (std::int32_t kv = 0; kv < 2; ++kv) {
          void* out = kv == 0 ? p.k_out : p.v_out;
          for (std::int32_t h = 0; h < view.num_heads; ++h) {
            const std::int64_t base =
                row * out_token + static_cast<std::int64_t>(h) * view.head_dim;
            codec::decode_row(view, detail::row_codes(view, page, p.layer, kv, t, h),
                              detail::row_scales(view, page, p.layer, kv, t, h),
                              codec::row_state(view, p.state, p.layer, kv, h),
                              [&](std::int32_t d, float value) {
                                store_from_float(out, view.dtype, base + d, value);
                              });
          }
        }
      }
    }
  }
}

// Reads value d of row (token source, head) for KIVI: a ring slot or a new token.
inline float kivi_source(const KiviFlushParams& p, std::int64_t source, std::int32_t kv,
                         std::int32_t head, std::int32_t d) {
  if (source >= 0) {
    const std::byte* row = p.residual.data + p.residual.slot_offset(source, p.layer, kv, head);
    return load_as_float(row, p.cache.dtype, d);
  }
  const std::int64_t token = -source - 1;
  const auto* row = static_cast<const std::byte*>(kv == 0 ? p.k : p.v) + token * p.src_token_bytes +
                    head * p.src_head_bytes;
  return load_as_float(row, p.cache.dtype, d);
}

inline void kivi_flush(const KiviFlushParams& p) {
  const CodecPageView& view = p.cache;
  const std::int32_t group = view.page_size;
  unsigned long long nonfinite = 0;
  for (std::int32_t g = 0; g < p.num_groups; ++g) {
    const std::int64_t page = p.pages[g];
    const std::int64_t* sources = p.sources + static_cast<std::int64_t>(g) * group;
    auto* keys = reinterpret_cast<std::uint8_t*>(view.region_base(page, p.layer, 0));
    for (std::int32_t h = 0; h < view.num_heads; ++h) {
      for (std::int32_t c = 0; c < view.head_dim; ++c) {
        nonfinite += static_cast<unsigned long long>(codec::encode_key_channel(
            view, [&](std::int32_t t) { return kivi_source(p, sources[t], 0, h, c); }, keys, h, c));
      }
    }
    for (std::int32_t t = 0; t < group; ++t) {
      for (std::int32_t h = 0; h < view.num_heads; ++h) {
        nonfinite += static_cast<unsigned long long>(codec::encode_row(
            view, [&](std::int32_t d) { return kivi_source(p, sources[t], 1, h, d); },
            detail::row_codes(view, page, p.layer, 1, t, h),
            detail::row_scales(view, page, p.layer, 1, t, h), nullptr));
      }
    }
  }
  if (p.nonfinite != nullptr) *p.nonfinite += nonfinite;
}

inline void kivi_gather(const KiviGatherParams& p) {
  const CodecPageView& view = p.cache;
  const std::int64_t out_token = static_cast<std::int64_t>(view.num_heads) * view.head_dim;
  const std::int64_t ring_size = p.residual.page_size;
  for (std::int32_t b = 0; b < p.batch_size; ++b) {
    const std::int64_t quantized = p.quantized_tokens[b];
    for (std::int64_t t = 0; t < p.total_tokens[b]; ++t) {
      const std::int64_t row = p.out_row_offset[b] + t;
      for (std::int32_t kv = 0; kv < 2; ++kv) {
        void* out = kv == 0 ? p.k_out : p.v_out;
        for (std::int32_t h = 0; h < view.num_heads; ++h) {
          const std::int64_t base = row * out_token + static_cast<std::int64_t>(h) * view.head_dim;
          if (t < quantized) {
            const std::int64_t page = p.page_indices[p.page_indptr[b] + t / view.page_size];
            const auto in_page = static_cast<std::int32_t>(t % view.page_size);
            if (kv == 0) {
              const auto* keys =
                  reinterpret_cast<const std::uint8_t*>(view.region_base(page, p.layer, 0));
              for (std::int32_t d = 0; d < view.head_dim; ++d) {
                store_from_float(out, view.dtype, base + d,
                                 codec::decode_key(view, keys, h, d, in_page));
              }
            } else {
              codec::decode_row(view, detail::row_codes(view, page, p.layer, 1, in_page, h),
                                detail::row_scales(view, page, p.layer, 1, in_page, h), nullptr,
                                [&](std::int32_t d, float value) {
                                  store_from_float(out, view.dtype, base + d, value);
                                });
            }
          } else {
            const std::int64_t slot = p.ring[b] * ring_size + t % ring_size;
            const std::int64_t bytes = p.residual.row_bytes();
            std::memcpy(static_cast<std::byte*>(out) + base * dtype_size(view.dtype),
                        p.residual.data + p.residual.slot_offset(slot, p.layer, kv, h),
                        static_cast<std::size_t>(bytes));
          }
        }
      }
    }
  }
}

inline void abs_max(const AbsMaxParams& p) {
  const SampleView& s = p.sample;
  for (std::int32_t h = 0; h < s.num_heads; ++h) {
    float amax = 0.0f;
    for (std::int32_t t = 0; t < s.num_tokens; ++t) {
      const auto* row =
          static_cast<const std::byte*>(s.data) + t * s.token_bytes + h * s.head_bytes;
      for (std::int32_t d = 0; d < s.head_dim; ++d) {
        const float value = load_as_float(row, s.dtype, d);
        if (codec::is_finite(value)) amax = std::max(amax, value < 0 ? -value : value);
      }
    }
    p.out[h] = amax;
  }
}

}  // namespace kvcache::kernels::cpu
