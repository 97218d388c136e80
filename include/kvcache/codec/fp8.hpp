// OCP fp8 e4m3 ("e4m3fn": 4 exponent bits with bias 7, 3 mantissa bits, no
// infinities, 0x7f/0xff NaN, largest finite 448), converted exactly as the
// CUDA toolkit's __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3) does:
// round to nearest even, anything beyond 448 (Inf too) saturates to +-448,
// NaN gives 0x7f. The GPU kernels call the toolkit; the CPU uses these.
#pragma once

#include <cstdint>

#include "kvcache/config.hpp"
#include "kvcache/dtype.hpp"

namespace kvcache {

inline constexpr float kFp8E4M3Max = 448.0f;

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

}  // namespace kvcache
