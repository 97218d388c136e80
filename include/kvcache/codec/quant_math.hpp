// Quantize / dequantize one group of values: the per-element math of every
// codec, compiled for the device by nvcc and as plain C++ for the CPU
// backend, so both produce the same codes (bit for bit) and scales.
//
// Non-finite input (the chosen policy, documented in the README): values
// that are NaN or +-Inf do not take part in a group's scale; NaN is stored as
// 0 and +-Inf saturates to the group's extreme code. Each one is counted, and
// the count reaches CacheStats::nonfinite_values.
#pragma once

#include <cstdint>

#include "kvcache/config.hpp"
#include "kvcache/dtype.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache::codec {

KVCACHE_HD bool is_finite(float value) {
  return (detail::float_bits(value) & 0x7f800000u) != 0x7f800000u;
}

KVCACHE_HD bool is_nan(float value) {
  return (detail::float_bits(value) & 0x7fffffffu) > 0x7f800000u;
}

// Round to nearest, ties to even, for |value| < 2^22 (every caller clamps
// first). Adding and removing 1.5 x 2^23 leaves the integer part, rounded by
// the adder in its default mode (to nearest even), like CUDA's rintf.
KVCACHE_HD float round_even(float value) {
#if defined(__CUDA_ARCH__)
  return rintf(value);
#else
  // Without -ffast-math (never used for kvcache) the compiler keeps both steps.
  constexpr float kMagic = 12582912.0f;  // 1.5 x 2^23
  return (value + kMagic) - kMagic;
#endif
}

KVCACHE_HD float clamp(float value, float low, float high) {
  return value < low ? low : (value > high ? high : value);
}

// Products and sums that nvcc must not fuse into an FMA (the CPU does not),
// so the GPU's dequantized values match the CPU's bit for bit.
KVCACHE_HD float mul_exact(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
KVCACHE_HD float add_exact(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
KVCACHE_HD float div_exact(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// The largest finite scale or zero point a storage holds: fp16's 65504, or
// fp32's largest. Scales and zero points are clamped to it, so an input past
// the range saturates (like int8's +-127 codes, fp8's +-448) instead of
// storing an infinite scale that would decode 0 x Inf = NaN.
KVCACHE_HD float storage_max(std::int32_t scale_bytes) {
  return scale_bytes == 2 ? 65504.0f : 3.40282347e+38f;
}

// A scale or zero point as stored (fp16 when scale_bytes == 2, else fp32),
// clamped to the storage's finite range, and read back.
KVCACHE_HD float round_to_storage(float value, std::int32_t scale_bytes) {
  const float bound = storage_max(scale_bytes);
  value = value > bound ? bound : (value < -bound ? -bound : value);
  return scale_bytes == 2 ? half_bits_to_float(float_to_half_bits(value)) : value;
}
// Stores a scale, zero point or coefficient, clamped to the storage's range.
KVCACHE_HD void store_scale(std::uint8_t* at, float value, std::int32_t scale_bytes) {
  const float bound = storage_max(scale_bytes);
  value = value > bound ? bound : (value < -bound ? -bound : value);
  if (scale_bytes == 2) {
    const std::uint16_t bits = float_to_half_bits(value);
    at[0] = static_cast<std::uint8_t>(bits & 0xffu);
    at[1] = static_cast<std::uint8_t>(bits >> 8);
  } else {
    const std::uint32_t bits = detail::float_bits(value);
    for (int i = 0; i < 4; ++i)
      at[i] = static_cast<std::uint8_t>((bits >> (8 * i)) & 0xffu);
  }
}
KVCACHE_HD float load_scale(const std::uint8_t* at, std::int32_t scale_bytes) {
  if (scale_bytes == 2) return half_bits_to_float(static_cast<std::uint16_t>(at[0] | (at[1] << 8)));
  std::uint32_t bits = 0;
  for (int i = 0; i < 4; ++i)
    bits |= static_cast<std::uint32_t>(at[i]) << (8 * i);
  return detail::bits_float(bits);
}

// ---- int8, symmetric: code = round(x / s), s = amax / 127 -------------------

// The stored scale of a group whose largest finite magnitude is `amax`, and
// the multiplier its codes use (0 for an all-zero group).
KVCACHE_HD float int8_scale(float amax, std::int32_t scale_bytes) {
  return round_to_storage(div_exact(amax, 127.0f), scale_bytes);
}
KVCACHE_HD float inverse_of(float scale) {
  return scale > 0.0f ? div_exact(1.0f, scale) : 0.0f;
}
// |value| when finite, else 0 (non-finite values take no part in a scale).
KVCACHE_HD float finite_magnitude(float value) {
  return is_finite(value) ? (value < 0.0f ? -value : value) : 0.0f;
}
// NaN -> 0, +-Inf -> +-127, else round(clamp(value x inverse)). A product
// that is NaN (0 x an infinite inverse, when a group's largest magnitude is
// so small that 1 / scale overflows) gives 0, the code of a 0: never a NaN
// converted to an integer, which is undefined.
KVCACHE_HD std::int8_t int8_code(float value, float inverse) {
  float code = 0.0f;
  if (!is_nan(value)) {
    if (is_finite(value)) {
      const float scaled = mul_exact(value, inverse);
      code = is_nan(scaled) ? 0.0f : round_even(clamp(scaled, -127.0f, 127.0f));
    } else {
      code = value > 0.0f ? 127.0f : -127.0f;
    }
  }
  return static_cast<std::int8_t>(code);
}

KVCACHE_HD float int8_decode(std::int8_t code, float scale) {
  return mul_exact(static_cast<float>(code), scale);
}

// ---- asymmetric b-bit (KIVI): code = round((x - z) / s), s = (max - min) / (2^b - 1), z = min

// Codes are packed little-end first: value i sits in bits (i % per_byte) * b
// of byte i / per_byte.
KVCACHE_HD std::uint32_t get_code(const std::uint8_t* packed, std::int32_t index,
                                  std::int32_t bits) {
  const std::int32_t per_byte = 8 / bits;
  return (packed[index / per_byte] >> ((index % per_byte) * bits)) & ((1u << bits) - 1u);
}

// Finite minimum and maximum of a group (both 0 when none is finite), folded
// one value at a time: order-free, so any split of the group gives the same.
struct MinMax {
  float low = 0.0f;
  float high = 0.0f;
  bool any = false;

  KVCACHE_HD void add(float value) {
    if (!is_finite(value)) return;
    if (!any) {
      low = high = value;
      any = true;
    } else {
      low = value < low ? value : low;
      high = value > high ? value : high;
    }
  }
  KVCACHE_HD void merge(const MinMax& other) {
    if (!other.any) return;
    if (!any) {
      *this = other;
      return;
    }
    low = other.low < low ? other.low : low;
    high = other.high > high ? other.high : high;
  }
};

// Stored zero point and scale of a group with range `range`.
struct AsymmetricScale {
  float zero = 0.0f;
  float scale = 0.0f;
  float inverse = 0.0f;
};
KVCACHE_HD AsymmetricScale asymmetric_scale(const MinMax& range, std::int32_t bits,
                                            std::int32_t scale_bytes) {
  const float levels = static_cast<float>((1 << bits) - 1);
  AsymmetricScale s;
  s.zero = round_to_storage(range.low, scale_bytes);
  // The range is measured from the stored zero so that `high` stays reachable.
  s.scale = round_to_storage(div_exact(add_exact(range.high, -s.zero), levels), scale_bytes);
  s.inverse = inverse_of(s.scale);
  return s;
}
KVCACHE_HD std::uint32_t asymmetric_code(float value, const AsymmetricScale& s, std::int32_t bits) {
  const float levels = static_cast<float>((1 << bits) - 1);
  float code = 0.0f;
  if (is_finite(value)) {
    // NaN only as 0 x an infinite inverse: the value is the zero point, code 0.
    const float scaled = mul_exact(add_exact(value, -s.zero), s.inverse);
    code = is_nan(scaled) ? 0.0f : round_even(clamp(scaled, 0.0f, levels));
  } else if (!is_nan(value)) {
    code = value > 0.0f ? levels : 0.0f;
  }
  return static_cast<std::uint32_t>(code);
}

KVCACHE_HD float asymmetric_decode(std::uint32_t code, float scale, float zero) {
  return add_exact(mul_exact(static_cast<float>(code), scale), zero);
}

}  // namespace kvcache::codec
KVCACHE_EXACT_FP_END
