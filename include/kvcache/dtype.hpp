// Element types of keys and values, and bit-exact host/device conversions.
//
// The conversions round to nearest even and keep Inf, exactly as the CUDA
// intrinsics do, so the CPU backend produces the same bits as the GPU. A NaN
// is stored as the one canonical quiet NaN of the type (fp16 0x7e00, bf16
// 0x7fc0, fp32 0x7fc00000, sign dropped): a NaN made by arithmetic has a
// different sign and payload on each processor (0x7fffffff on the GPU,
// 0xffc00000 on x86, 0x7fc00000 on aarch64), and a stored result must not
// depend on which one computed it. (Plain pages copy bytes and keep every NaN
// as it came.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "kvcache/config.hpp"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

namespace kvcache {

enum class DType : std::uint8_t { kF16 = 0, kBF16 = 1, kF32 = 2 };

KVCACHE_HD constexpr std::int32_t dtype_size(DType dtype) {
  return dtype == DType::kF32 ? 4 : 2;
}

constexpr std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return "fp16";
    case DType::kBF16:
      return "bf16";
    case DType::kF32:
      return "fp32";
  }
  return "unknown";
}

// Storage types for 16-bit floats on the host: plain bit containers, so that
// host code never depends on cuda_fp16.h. They are layout-compatible with
// __half and __nv_bfloat16.
struct Half {
  std::uint16_t bits;
};
struct BFloat16 {
  std::uint16_t bits;
};

namespace detail {

KVCACHE_HD std::uint32_t float_bits(float value) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(value);
#else
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
#endif
}

KVCACHE_HD float bits_float(std::uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
#endif
}

}  // namespace detail

inline constexpr std::uint16_t kCanonicalHalfNaN = 0x7e00u;
inline constexpr std::uint16_t kCanonicalBFloat16NaN = 0x7fc0u;
inline constexpr std::uint32_t kCanonicalFloatNaN = 0x7fc00000u;

// IEEE binary16, round to nearest even; overflow gives Inf, NaN the canonical NaN.
KVCACHE_HD std::uint16_t float_to_half_bits(float value) {
#if defined(__CUDA_ARCH__)
  // The hardware conversion rounds the same way; NaN is made canonical here.
  if ((__float_as_uint(value) & 0x7fffffffu) > 0x7f800000u) return kCanonicalHalfNaN;
  return __half_as_ushort(__float2half_rn(value));
#else
  std::uint32_t bits = detail::float_bits(value);
  const std::uint32_t sign = (bits >> 16) & 0x8000u;
  bits &= 0x7fffffffu;
  if (bits > 0x7f800000u) return kCanonicalHalfNaN;
  if (bits >= 0x47800000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65536: Inf
  if (bits < 0x38800000u) {
    // Result is subnormal or zero: adding 0.5f puts the 10 result bits at the
    // bottom of the mantissa, and the float adder rounds to nearest even.
    const float aligned = detail::bits_float(bits) + 0.5f;
    return static_cast<std::uint16_t>(sign | (detail::float_bits(aligned) - 0x3f000000u));
  }
  const std::uint32_t odd = (bits >> 13) & 1u;
  // Rebias the exponent from 127 to 15 and round half to even; a carry out of
  // the mantissa correctly bumps the exponent (up to Inf for >= 65520).
  bits += 0xc8000fffu + odd;  // (15 - 127) << 23, plus 0xfff, mod 2^32
  return static_cast<std::uint16_t>(sign | (bits >> 13));
#endif
}

KVCACHE_HD float half_bits_to_float(std::uint16_t half) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(half));  // exact
#else
  const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
  const std::uint32_t exponent = (half >> 10) & 0x1fu;
  const std::uint32_t mantissa = half & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24 is exact in float.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return detail::bits_float(sign | detail::float_bits(magnitude));
  }
  if (exponent == 31) return detail::bits_float(sign | 0x7f800000u | (mantissa << 13));
  return detail::bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
#endif
}

// bfloat16, round to nearest even; NaN gives the canonical NaN.
KVCACHE_HD std::uint16_t float_to_bfloat16_bits(float value) {
  const std::uint32_t bits = detail::float_bits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return kCanonicalBFloat16NaN;
  const std::uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

KVCACHE_HD float bfloat16_bits_to_float(std::uint16_t value) {
  return detail::bits_float(static_cast<std::uint32_t>(value) << 16);
}

// fp32 as stored: NaN made canonical, everything else kept.
KVCACHE_HD float canonical_float(float value) {
  return (detail::float_bits(value) & 0x7fffffffu) > 0x7f800000u
             ? detail::bits_float(kCanonicalFloatNaN)
             : value;
}

// Loads element `index` of a buffer of `dtype` as float.
KVCACHE_HD float load_as_float(const void* data, DType dtype, std::int64_t index) {
  switch (dtype) {
    case DType::kF16:
      return half_bits_to_float(static_cast<const std::uint16_t*>(data)[index]);
    case DType::kBF16:
      return bfloat16_bits_to_float(static_cast<const std::uint16_t*>(data)[index]);
    case DType::kF32:
    default:
      return static_cast<const float*>(data)[index];
  }
}

// Stores `value` rounded to `dtype` at element `index`.
KVCACHE_HD void store_from_float(void* data, DType dtype, std::int64_t index, float value) {
  switch (dtype) {
    case DType::kF16:
      static_cast<std::uint16_t*>(data)[index] = float_to_half_bits(value);
      break;
    case DType::kBF16:
      static_cast<std::uint16_t*>(data)[index] = float_to_bfloat16_bits(value);
      break;
    case DType::kF32:
    default:
      static_cast<float*>(data)[index] = canonical_float(value);
      break;
  }
}

// ---- typed access: T is Half, BFloat16 or float (the kernels' template
// parameter; one dispatch per launch instead of a switch per element) ----------

template <class T>
inline constexpr DType kDTypeOf = DType::kF32;
template <>
inline constexpr DType kDTypeOf<Half> = DType::kF16;
template <>
inline constexpr DType kDTypeOf<BFloat16> = DType::kBF16;

template <class T>
KVCACHE_HD float load_element(const void* data, std::int64_t index) {
  if constexpr (kDTypeOf<T> == DType::kF16) {
    return half_bits_to_float(static_cast<const std::uint16_t*>(data)[index]);
  } else if constexpr (kDTypeOf<T> == DType::kBF16) {
    return bfloat16_bits_to_float(static_cast<const std::uint16_t*>(data)[index]);
  } else {
    return static_cast<const float*>(data)[index];
  }
}

template <class T>
KVCACHE_HD void store_element(void* data, std::int64_t index, float value) {
  if constexpr (kDTypeOf<T> == DType::kF16) {
    static_cast<std::uint16_t*>(data)[index] = float_to_half_bits(value);
  } else if constexpr (kDTypeOf<T> == DType::kBF16) {
    static_cast<std::uint16_t*>(data)[index] = float_to_bfloat16_bits(value);
  } else {
    static_cast<float*>(data)[index] = canonical_float(value);
  }
}

// Calls f.template operator()<T>() with the element type of `dtype`.
template <class F>
decltype(auto) dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF16:
      return f.template operator()<Half>();
    case DType::kBF16:
      return f.template operator()<BFloat16>();
    case DType::kF32:
    default:
      return f.template operator()<float>();
  }
}

}  // namespace kvcache
