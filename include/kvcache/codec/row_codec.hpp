// Encode and decode one row (the head_dim values of one token and head) or,
// for KIVI keys, one channel of a group of tokens. Shared, unchanged, by the
// CUDA kernels and the CPU backend.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_fp8.h>
#endif

#include "kvcache/codec/fp8.hpp"
#include "kvcache/codec/layout.hpp"
#include "kvcache/codec/quant_math.hpp"

namespace kvcache::codec {

KVCACHE_HD std::uint8_t fp8_encode(float value) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(value, __NV_SATFINITE, __NV_E4M3));
#else
  return float_to_e4m3(value);
#endif
}

#if !defined(__CUDA_ARCH__)
// All 256 codes decoded once (the CPU path: a lookup per value).
inline const float* e4m3_table() {
  static const auto table = [] {
    struct Table {
      float values[256];
    } t{};
    for (int code = 0; code < 256; ++code)
      t.values[code] = e4m3_to_float(static_cast<std::uint8_t>(code));
    return t;
  }();
  return table.values;
}
#endif

KVCACHE_HD float fp8_decode(std::uint8_t code) {
#if defined(__CUDA_ARCH__)
  const __half_raw raw = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(code), __NV_E4M3);
  return half_bits_to_float(raw.x);
#else
  return e4m3_table()[code];
#endif
}

// Row state: the fp8 scale of the row's (layer, K/V, head), or the low-rank
// basis [head_dim][rank] of it; nullptr for int8 and KIVI.
KVCACHE_HD const float* row_state(const CodecPageView& view, const float* state, std::int32_t layer,
                                  std::int32_t kv, std::int32_t head) {
  if (state == nullptr) return nullptr;
  const std::int64_t index = (static_cast<std::int64_t>(layer) * 2 + kv) * view.num_heads + head;
  if (view.kind == CodecKind::kLowRank) return state + index * view.head_dim * view.rank;
  return state + index;
}

// Encodes a row read through load(i); returns the non-finite inputs met.
template <class Load>
KVCACHE_HD std::int32_t encode_row(const CodecPageView& view, Load load, std::uint8_t* codes,
                                   std::uint8_t* scales, const float* state) {
  const std::int32_t d = view.head_dim;
  std::int32_t nonfinite = 0;
  switch (view.kind) {
    case CodecKind::kInt8: {
      const std::int32_t group = view.group_size;
      for (std::int32_t g = 0; g * group < d; ++g) {
        nonfinite += int8_encode([&](std::int32_t i) { return load(g * group + i); }, group,
                                 reinterpret_cast<std::int8_t*>(codes) + g * group,
                                 scales + g * view.scale_bytes, view.scale_bytes);
      }
      break;
    }
    case CodecKind::kFp8: {
      const float inverse = div_exact(1.0f, *state);
      for (std::int32_t i = 0; i < d; ++i) {
        const float value = load(i);
        if (!is_finite(value)) ++nonfinite;
        codes[i] = is_nan(value) ? std::uint8_t{0} : fp8_encode(mul_exact(value, inverse));
      }
      break;
    }
    case CodecKind::kKivi: {  // values: per token, groups along head_dim
      const std::int32_t group = view.group_size;
      for (std::int32_t g = 0; g * group < d; ++g) {
        std::uint8_t* scale = scales + g * 2 * view.scale_bytes;
        nonfinite +=
            asymmetric_encode([&](std::int32_t i) { return load(g * group + i); }, group, view.bits,
                              codes, g * group, scale, scale + view.scale_bytes, view.scale_bytes);
      }
      break;
    }
    case CodecKind::kLowRank: {
      // coefficient j = sum_d x_d basis[d][j]
      for (std::int32_t j = 0; j < view.rank; ++j) {
        float sum = 0.0f;
        for (std::int32_t i = 0; i < d; ++i) {
          const float value = load(i);
          if (is_finite(value)) sum += value * state[i * view.rank + j];
        }
        if (view.scale_bytes == 2) {
          store_scale(codes + j * 2, sum, 2);
        } else {
          store_scale(codes + j * 4, sum, 4);
        }
      }
      for (std::int32_t i = 0; i < d; ++i)
        nonfinite += is_finite(load(i)) ? 0 : 1;
      break;
    }
    case CodecKind::kPlain:
      break;
  }
  return nonfinite;
}

// Decodes a row, handing value i to store(i, value).
template <class Store>
KVCACHE_HD void decode_row(const CodecPageView& view, const std::uint8_t* codes,
                           const std::uint8_t* scales, const float* state, Store store) {
  const std::int32_t d = view.head_dim;
  switch (view.kind) {
    case CodecKind::kInt8: {
      const std::int32_t group = view.group_size;
      for (std::int32_t g = 0; g * group < d; ++g) {
        const float scale = load_scale(scales + g * view.scale_bytes, view.scale_bytes);
        for (std::int32_t i = g * group; i < (g + 1) * group; ++i) {
          store(i, int8_decode(static_cast<std::int8_t>(codes[i]), scale));
        }
      }
      break;
    }
    case CodecKind::kFp8: {
      const float scale = *state;
      for (std::int32_t i = 0; i < d; ++i)
        store(i, mul_exact(fp8_decode(codes[i]), scale));
      break;
    }
    case CodecKind::kKivi: {
      const std::int32_t group = view.group_size;
      for (std::int32_t g = 0; g * group < d; ++g) {
        const std::uint8_t* scale = scales + g * 2 * view.scale_bytes;
        const float step = load_scale(scale, view.scale_bytes);
        const float zero = load_scale(scale + view.scale_bytes, view.scale_bytes);
        for (std::int32_t i = g * group; i < (g + 1) * group; ++i) {
          store(i, asymmetric_decode(get_code(codes, i, view.bits), step, zero));
        }
      }
      break;
    }
    case CodecKind::kLowRank: {
      for (std::int32_t i = 0; i < d; ++i) {
        float sum = 0.0f;
        for (std::int32_t j = 0; j < view.rank; ++j) {
          sum +=
              load_scale(codes + j * view.scale_bytes, view.scale_bytes) * state[i * view.rank + j];
        }
        store(i, sum);
      }
      break;
    }
    case CodecKind::kPlain:
      break;
  }
}

// KIVI keys: channel `channel` of one head over a group of page_size tokens
// (load(t)); codes go to the channel's packed run, scale and zero beside it.
template <class Load>
KVCACHE_HD std::int32_t encode_key_channel(const CodecPageView& view, Load load,
                                           std::uint8_t* region, std::int32_t head,
                                           std::int32_t channel) {
  const RegionLayout& r = view.region[0];
  std::uint8_t* codes = region + head * r.code_head_bytes +
                        static_cast<std::int64_t>(channel) * view.page_size * view.bits / 8;
  std::uint8_t* scale =
      region + r.scales_offset + head * r.scale_head_bytes + channel * 2 * view.scale_bytes;
  return asymmetric_encode(load, view.page_size, view.bits, codes, 0, scale,
                           scale + view.scale_bytes, view.scale_bytes);
}

KVCACHE_HD float decode_key(const CodecPageView& view, const std::uint8_t* region,
                            std::int32_t head, std::int32_t channel, std::int32_t token) {
  const RegionLayout& r = view.region[0];
  const std::uint8_t* codes = region + head * r.code_head_bytes +
                              static_cast<std::int64_t>(channel) * view.page_size * view.bits / 8;
  const std::uint8_t* scale =
      region + r.scales_offset + head * r.scale_head_bytes + channel * 2 * view.scale_bytes;
  return asymmetric_decode(get_code(codes, token, view.bits), load_scale(scale, view.scale_bytes),
                           load_scale(scale + view.scale_bytes, view.scale_bytes));
}

}  // namespace kvcache::codec
