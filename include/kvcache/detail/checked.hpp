// Checked arithmetic for sizes, counts and offsets computed from what an
// engine passes in: the one place the library adds and multiplies them, so
// nothing wraps or truncates silently. The optional forms let a caller turn
// an overflow into a return value (kPoolFull); the throwing forms name what
// overflowed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>

#include "kvcache/error.hpp"

namespace kvcache::detail {

template <class T>
std::optional<T> checked_add(T a, T b) {
  T out;
  if (__builtin_add_overflow(a, b, &out)) return std::nullopt;
  return out;
}

template <class T>
std::optional<T> checked_mul(T a, T b) {
  T out;
  if (__builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

// a x b, or InvalidArgument "<what>: a x b overflows" (a and b named in `what`).
inline std::int64_t mul_or_throw(std::int64_t a, std::int64_t b, const char* what) {
  const auto out = checked_mul(a, b);
  if (!out) raise<InvalidArgument>("{}: {} x {} overflows a 64-bit count", what, a, b);
  return *out;
}

inline std::int64_t add_or_throw(std::int64_t a, std::int64_t b, const char* what) {
  const auto out = checked_add(a, b);
  if (!out) raise<InvalidArgument>("{}: {} + {} overflows a 64-bit count", what, a, b);
  return *out;
}

// A non-negative byte count as size_t (the argument of an allocation).
inline std::size_t to_size(std::int64_t bytes, const char* what) {
  if (bytes < 0 || static_cast<std::uint64_t>(bytes) > std::numeric_limits<std::size_t>::max()) {
    raise<InvalidArgument>("{}: {} bytes is not an allocation size", what, bytes);
  }
  return static_cast<std::size_t>(bytes);
}

}  // namespace kvcache::detail
