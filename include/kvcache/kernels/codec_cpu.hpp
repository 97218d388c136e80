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
#include "kvcache/kernels/int8_simd.hpp"
#include "kvcache/kernels/page_math.hpp"

namespace kvcache::kernels::cpu {

namespace detail {

// Every fp16 value as float: one lookup instead of a branchy conversion.
inline const float* half_table() {
  static const std::vector<float> table = [] {
    std::vector<float> values(65536);
    for (std::uint32_t bits = 0; bits < 65536; ++bits)
      values[bits] = half_bits_to_float(static_cast<std::uint16_t>(bits));
    return values;
  }();
  return table.data();
}

// A row of `count` values of `dtype` as floats (exactly what load_as_float gives).
inline void to_floats(const std::byte* row, DType dtype, std::int32_t count, float* out) {
  if (dtype == DType::kF32) {
    std::memcpy(out, row, static_cast<std::size_t>(count) * sizeof(float));
    return;
  }
  std::uint16_t bits[1024];
  std::memcpy(bits, row, static_cast<std::size_t>(count) * 2);
  if (dtype == DType::kF16) {
#if KVCACHE_INT8_SIMD
    if (simd::available()) return simd::halves_to_floats(bits, count, out);
#endif
    const float* table = half_table();
    for (std::int32_t i = 0; i < count; ++i)
      out[i] = table[bits[i]];
  } else {
    for (std::int32_t i = 0; i < count; ++i)
      out[i] = bfloat16_bits_to_float(bits[i]);
  }
}

// Floats stored as `dtype` (exactly what store_from_float writes).
inline void from_floats(const float* values, DType dtype, std::int32_t count, std::byte* row) {
  if (dtype == DType::kF32) {
    std::memcpy(row, values, static_cast<std::size_t>(count) * sizeof(float));
    return;
  }
  std::uint16_t bits[1024];
  if (dtype == DType::kF16) {
#if KVCACHE_INT8_SIMD
    if (simd::available()) {
      simd::floats_to_halves(values, count, bits);
      std::memcpy(row, bits, static_cast<std::size_t>(count) * 2);
      return;
    }
#endif
    for (std::int32_t i = 0; i < count; ++i)
      bits[i] = float_to_half_bits(values[i]);
  } else {
    for (std::int32_t i = 0; i < count; ++i)
      bits[i] = float_to_bfloat16_bits(values[i]);
  }
  std::memcpy(row, bits, static_cast<std::size_t>(count) * 2);
}

// Per-thread scratch for the KIVI kernels' group of rows: it grows to the
// largest group seen and is reused, so appends allocate nothing once warm.
inline float* scratch_rows(std::size_t count) {
  thread_local std::vector<float> rows;
  if (rows.size() < count) rows.resize(count);
  return rows.data();
}

}  // namespace detail

inline void codec_append(const CodecAppendParams& p) {
  const CodecPageView& view = p.cache;
  unsigned long long nonfinite = 0;
  float row[1024];
  // int8 from fp16: the vector path (bit-identical) when the CPU has AVX2 + F16C.
  const bool vector_int8 = view.kind == CodecKind::kInt8 && view.dtype == DType::kF16 &&
                           view.group_size % 8 == 0 && simd::available();
  for (std::int32_t t = 0; t < p.num_tokens; ++t) {
    const std::int64_t slot = p.slot_mapping[t];
    if (slot < 0) continue;
    const std::int64_t page = slot / view.page_size;
    const auto in_page = static_cast<std::int32_t>(slot - page * view.page_size);
    for (std::int32_t kv = 0; kv < 2; ++kv) {
      const auto* source =
          static_cast<const std::byte*>(kv == 0 ? p.k : p.v) + t * p.src_token_bytes;
      for (std::int32_t h = 0; h < view.num_heads; ++h) {
#if KVCACHE_INT8_SIMD
        if (vector_int8) {
          nonfinite += static_cast<unsigned long long>(simd::int8_encode_f16(
              reinterpret_cast<const std::uint16_t*>(source + h * p.src_head_bytes), view.head_dim,
              view.group_size,
              reinterpret_cast<std::int8_t*>(view.row_codes(page, p.layer, kv, in_page, h)),
              view.row_scales(page, p.layer, kv, in_page, h), view.scale_bytes));
          continue;
        }
#endif
        detail::to_floats(source + h * p.src_head_bytes, view.dtype, view.head_dim, row);
        nonfinite += static_cast<unsigned long long>(codec::encode_row(
            view, [&](std::int32_t i) { return row[i]; },
            view.row_codes(page, p.layer, kv, in_page, h),
            view.row_scales(page, p.layer, kv, in_page, h),
            codec::row_state(view, p.state, p.layer, kv, h)));
      }
    }
  }
  if (p.nonfinite != nullptr) *p.nonfinite += nonfinite;
}

inline void codec_gather(const CodecGatherParams& p) {
  const CodecPageView& view = p.cache;
  const std::int64_t element = dtype_size(view.dtype);
  const std::int64_t out_token = static_cast<std::int64_t>(view.num_heads) * view.head_dim;
  float row[1024];
  const bool vector_int8 = view.kind == CodecKind::kInt8 && view.dtype == DType::kF16 &&
                           view.group_size % 8 == 0 && simd::available();
  for (std::int32_t b = 0; b < p.batch_size; ++b) {
    const std::int32_t first = p.page_indptr[b];
    const std::int32_t pages = p.page_indptr[b + 1] - first;
    for (std::int32_t i = 0; i < pages; ++i) {
      const std::int64_t page = p.page_indices[first + i];
      const std::int32_t tokens = tokens_in_page(i, pages, p.last_page_len[b], view.page_size);
      for (std::int32_t t = 0; t < tokens; ++t) {
        const std::int64_t out_row =
            p.out_row_offset[b] + static_cast<std::int64_t>(i) * view.page_size + t;
        for (std::int32_t kv = 0; kv < 2; ++kv) {
          auto* out = static_cast<std::byte*>(kv == 0 ? p.k_out : p.v_out);
          for (std::int32_t h = 0; h < view.num_heads; ++h) {
            std::byte* target =
                out +
                (out_row * out_token + static_cast<std::int64_t>(h) * view.head_dim) * element;
#if KVCACHE_INT8_SIMD
            if (vector_int8) {
              simd::int8_decode_f16(
                  reinterpret_cast<const std::int8_t*>(view.row_codes(page, p.layer, kv, t, h)),
                  view.row_scales(page, p.layer, kv, t, h), view.head_dim, view.group_size,
                  view.scale_bytes, reinterpret_cast<std::uint16_t*>(target));
              continue;
            }
#endif
            codec::decode_row(view, view.row_codes(page, p.layer, kv, t, h),
                              view.row_scales(page, p.layer, kv, t, h),
                              codec::row_state(view, p.state, p.layer, kv, h),
                              [&](std::int32_t d, float value) { row[d] = value; });
            detail::from_floats(row, view.dtype, view.head_dim, target);
          }
        }
      }
    }
  }
}

inline void kivi_flush(const KiviFlushParams& p) {
  const CodecPageView& view = p.cache;
  const std::int32_t group = view.page_size;
  const std::int32_t d = view.head_dim;
  unsigned long long nonfinite = 0;
  float* rows = detail::scratch_rows(static_cast<std::size_t>(group) * static_cast<std::size_t>(d));
  auto source_row = [&](std::int64_t source, std::int32_t kv, std::int32_t head) {
    return flush_source_row(p, source, kv, head);
  };
  for (std::int32_t g = 0; g < p.num_groups; ++g) {
    const std::int64_t page = p.pages[g];
    const std::int64_t* sources = p.sources + static_cast<std::int64_t>(g) * group;
    auto* keys = reinterpret_cast<std::uint8_t*>(view.region_base(page, p.layer, 0));
    for (std::int32_t h = 0; h < view.num_heads; ++h) {
      // Keys: the group's rows of this head, then one asymmetric group per channel.
      for (std::int32_t t = 0; t < group; ++t) {
        detail::to_floats(source_row(sources[t], 0, h), view.dtype, d,
                          rows + static_cast<std::size_t>(t) * d);
      }
      for (std::int32_t c = 0; c < d; ++c) {
        nonfinite += static_cast<unsigned long long>(codec::encode_key_channel(
            view, [&](std::int32_t t) { return rows[static_cast<std::size_t>(t) * d + c]; }, keys,
            h, c));
      }
      // Values: per token.
      for (std::int32_t t = 0; t < group; ++t) {
        float* row = rows;
        detail::to_floats(source_row(sources[t], 1, h), view.dtype, d, row);
        nonfinite += static_cast<unsigned long long>(codec::encode_row(
            view, [&](std::int32_t i) { return row[i]; }, view.row_codes(page, p.layer, 1, t, h),
            view.row_scales(page, p.layer, 1, t, h), nullptr));
      }
    }
  }
  if (p.nonfinite != nullptr) *p.nonfinite += nonfinite;
}

inline void kivi_gather(const KiviGatherParams& p) {
  const CodecPageView& view = p.cache;
  const std::int32_t d = view.head_dim;
  const std::int64_t element = dtype_size(view.dtype);
  const std::int64_t out_token = static_cast<std::int64_t>(view.num_heads) * d;
  const std::int64_t ring_size = p.residual.page_size;
  float* rows =
      detail::scratch_rows(static_cast<std::size_t>(view.page_size) * static_cast<std::size_t>(d));
  float values[1024];
  for (std::int32_t b = 0; b < p.batch_size; ++b) {
    const std::int64_t quantized = p.quantized_tokens[b];
    auto* k_out = static_cast<std::byte*>(p.k_out);
    auto* v_out = static_cast<std::byte*>(p.v_out);
    // Quantized pages: keys channel by channel (one scale load per channel),
    // values row by row.
    for (std::int64_t first = 0; first < quantized; first += view.page_size) {
      const std::int64_t page = p.page_indices[p.page_indptr[b] + first / view.page_size];
      const auto* keys = reinterpret_cast<const std::uint8_t*>(view.region_base(page, p.layer, 0));
      for (std::int32_t h = 0; h < view.num_heads; ++h) {
        for (std::int32_t c = 0; c < d; ++c) {
          for (std::int32_t t = 0; t < view.page_size; ++t) {
            rows[static_cast<std::size_t>(t) * d + c] = codec::decode_key(view, keys, h, c, t);
          }
        }
        for (std::int32_t t = 0; t < view.page_size; ++t) {
          const std::int64_t row = p.out_row_offset[b] + first + t;
          detail::from_floats(
              rows + static_cast<std::size_t>(t) * d, view.dtype, d,
              k_out + (row * out_token + static_cast<std::int64_t>(h) * d) * element);
          codec::decode_row(view, view.row_codes(page, p.layer, 1, t, h),
                            view.row_scales(page, p.layer, 1, t, h), nullptr,
                            [&](std::int32_t i, float value) { values[i] = value; });
          detail::from_floats(
              values, view.dtype, d,
              v_out + (row * out_token + static_cast<std::int64_t>(h) * d) * element);
        }
      }
    }
    // The ring: plain copies.
    for (std::int64_t t = quantized; t < p.total_tokens[b]; ++t) {
      const std::int64_t row = p.out_row_offset[b] + t;
      const std::int64_t slot = p.ring[b] * ring_size + t % ring_size;
      for (std::int32_t kv = 0; kv < 2; ++kv) {
        auto* out = kv == 0 ? k_out : v_out;
        for (std::int32_t h = 0; h < view.num_heads; ++h) {
          std::memcpy(out + (row * out_token + static_cast<std::int64_t>(h) * d) * element,
                      p.residual.data + p.residual.slot_offset(slot, p.layer, kv, h),
                      static_cast<std::size_t>(p.residual.row_bytes()));
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
