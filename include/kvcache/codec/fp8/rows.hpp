// Fp8Rows and the e4m3 conversions: the row math of Fp8Codec
// (codec/fp8/codec.hpp), host-device code shared by the CPU and CUDA kernels.
//
// e4m3 ("e4m3fn": 4 exponent bits with bias 7, 3 mantissa bits, no
// infinities, 0x7f/0xff NaN, largest finite 448) is converted exactly as the
// CUDA toolkit's __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3) does:
// round to nearest even, anything beyond 448 (Inf too) saturates to +-448,
// NaN gives 0x7f. The GPU kernels call the toolkit; the CPU uses the code
// below, and both decode a NaN code to the same quiet NaN (sign kept).
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_fp8.h>
#endif

#include "kvcache/codec/lane_bytes.hpp"
#include "kvcache/codec/quant_math.hpp"
#include "kvcache/config.hpp"
#include "kvcache/dtype.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache {

inline constexpr float kFp8E4M3Max = 448.0f;
// The smallest normal float: a scale below it would make 1 / scale infinite.
inline constexpr float kFp8MinScale = 1.17549435e-38f;

KVCACHE_HD std::uint8_t float_to_e4m3(float value) {
  const std::uint32_t bits = detail::float_bits(value);
  const auto sign = static_cast<std::uint8_t>((bits >> 24) & 0x80u);
  const std::uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return 0x7f;           // NaN
  if (magnitude >= 0x43e00000u) return sign | 0x7eu;  // >= 448 (and Inf): saturate
  if (magnitude < 0x3c800000u) {                      // below 2^-6: subnormal or zero
    // value * 2^9 is exact; rounding it to an integer is the subnormal code
    // (8 becomes 0x08, the smallest normal, which is right).
    const float scaled = detail::bits_float(magnitude) * 512.0f;
#if defined(__CUDA_ARCH__)
    const float rounded = rintf(scaled);
#else
    // Round half to even without depending on the FP environment.
    float rounded = static_cast<float>(static_cast<std::int32_t>(scaled));
    const float fraction = scaled - rounded;
    if (fraction > 0.5f || (fraction == 0.5f && (static_cast<std::int32_t>(rounded) & 1) != 0))
      rounded += 1.0f;
#endif
    return static_cast<std::uint8_t>(sign | static_cast<std::uint8_t>(rounded));
  }
  // Normal: keep 3 mantissa bits, round half to even, rebias 127 -> 7.
  const std::uint32_t rounded = magnitude + 0x7ffffu + ((magnitude >> 20) & 1u);
  return static_cast<std::uint8_t>(sign | ((rounded >> 20) - ((127u - 7u) << 3)));
}

KVCACHE_HD float e4m3_to_float(std::uint8_t code) {
  const std::uint32_t sign = static_cast<std::uint32_t>(code & 0x80u) << 24;
  const std::uint32_t exponent = (code >> 3) & 0xfu;
  const std::uint32_t mantissa = code & 0x7u;
  if (exponent == 0xf && mantissa == 0x7) return detail::bits_float(0x7fc00000u | sign);  // NaN
  if (exponent == 0) {
    const float magnitude = static_cast<float>(mantissa) * 0.001953125f;  // m x 2^-9, exact
    return detail::bits_float(sign | detail::float_bits(magnitude));
  }
  return detail::bits_float(sign | ((exponent + 120u) << 23) | (mantissa << 20));
}

namespace codec {

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
  // NaN codes decode as on the host (the toolkit's NaN may differ in payload).
  if ((code & 0x7fu) == 0x7fu) return e4m3_to_float(code);
  const __half_raw raw = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(code), __NV_E4M3);
  return half_bits_to_float(raw.x);
#else
  return e4m3_table()[code];
#endif
}

// A row's decoder: on the host the table is looked up once per row, not once
// per value (the static's guard check in the loop cost a third of a gather).
struct Fp8Decoder {
#if defined(__CUDA_ARCH__)
  KVCACHE_HD float operator()(std::uint8_t code) const {
    return fp8_decode(code);
  }
#else
  const float* table = e4m3_table();
  float operator()(std::uint8_t code) const {
    return table[code];
  }
#endif
};

// The stored scale for a calibration abs-max: the sample's largest value maps
// to 448; an all-zero sample gets 1; never below the smallest normal float.
inline float fp8_scale(float amax) {
  if (!(amax > 0.0f)) return 1.0f;
  return std::max(amax / kFp8E4M3Max, kFp8MinScale);
}

KVCACHE_HD std::uint8_t fp8_code(float value, float inverse) {
  return is_nan(value) ? std::uint8_t{0} : fp8_encode(mul_exact(value, inverse));
}

}  // namespace codec

struct Fp8Rows {
  static constexpr bool kLaneCodec = true;
  KVCACHE_HD static constexpr std::int64_t code_bytes(std::int32_t head_dim) { return head_dim; }
  KVCACHE_HD static constexpr std::int64_t scale_bytes(std::int32_t) { return 0; }
  KVCACHE_HD static constexpr std::int64_t state_floats(std::int32_t) { return 1; }  // the scale

  template <class Load>
  KVCACHE_HD static std::int32_t encode(std::int32_t head_dim, Load load, std::uint8_t* codes,
                                        std::uint8_t*, const float* state) {
    const float inverse = codec::div_exact(1.0f, *state);
    std::int32_t nonfinite = 0;
    for (std::int32_t i = 0; i < head_dim; ++i) {
      const float value = load(i);
      nonfinite += codec::is_finite(value) ? 0 : 1;
      codes[i] = codec::fp8_code(value, inverse);
    }
    return nonfinite;
  }
  template <class Store>
  KVCACHE_HD static void decode(std::int32_t head_dim, const std::uint8_t* codes,
                                const std::uint8_t*, const float* state, Store store) {
    const float scale = *state;
    const codec::Fp8Decoder decode_code{};
    for (std::int32_t i = 0; i < head_dim; ++i)
      store(i, codec::mul_exact(decode_code(codes[i]), scale));
  }

  // One lane of a row (values are independent: no group statistics); its N
  // codes move as one access, no scales.
  template <std::int32_t N>
  static constexpr bool kGroupSpansLanes = false;
  template <std::int32_t N>
  static constexpr std::int32_t kLaneCodeBytes = N;
  template <std::int32_t N>
  static constexpr std::int32_t kLaneScaleBytes = 0;
  struct Partial {};
  template <std::int32_t N>
  KVCACHE_HD static Partial lane_partial(const float (&)[N]) {
    return {};
  }
  KVCACHE_HD static Partial combine(Partial, Partial) { return {}; }

  template <std::int32_t N>
  KVCACHE_HD static std::int32_t encode_lane(std::int32_t lane, const float (&x)[N], Partial,
                                             std::uint8_t* codes, std::uint8_t*,
                                             const float* state) {
    const float inverse = codec::div_exact(1.0f, *state);
    std::int32_t nonfinite = 0;
    codec::LaneBytes<N> lane_codes;  // stored with one access
    KVCACHE_UNROLL
    for (std::int32_t i = 0; i < N; ++i) {
      nonfinite += codec::is_finite(x[i]) ? 0 : 1;
      lane_codes.set(i, codec::fp8_code(x[i], inverse));
    }
    lane_codes.store(codes + lane * N);
    return nonfinite;
  }
  template <std::int32_t N>
  KVCACHE_HD static void decode_lane(std::int32_t lane, const std::uint8_t* codes,
                                     const std::uint8_t*, const float* state, float (&out)[N]) {
    const float scale = *state;
    const codec::Fp8Decoder decode_code{};
    const auto lane_codes = codec::LaneBytes<N>::load(codes + lane * N);  // one access
    KVCACHE_UNROLL
    for (std::int32_t i = 0; i < N; ++i)
      out[i] = codec::mul_exact(decode_code(static_cast<std::uint8_t>(lane_codes.get(i))), scale);
  }
};

}  // namespace kvcache
KVCACHE_EXACT_FP_END
