// The error model of the owning layers (manager, pool, backends).
//
// Programmer errors throw a subclass of kvcache::Error whose message names the
// bad value and the allowed range; a call that throws leaves the object it was
// called on exactly as it was. Expected conditions (pool full, budget reached)
// are return values, never exceptions. Kernel launchers return a status that
// the backend turns into CudaError.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace kvcache {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A value outside what the call accepts: shape mismatch, bad size, bad enum.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// An index outside its range: layer, block id, token position.
class OutOfRange : public Error {
 public:
  using Error::Error;
};

// A sequence id that was never created or was already released.
class UnknownSequence : public Error {
 public:
  using Error::Error;
};

// Writing more tokens than the room reserved for a sequence, or using an
// append batch after the manager changed under it.
class ReservationError : public Error {
 public:
  using Error::Error;
};

// The arena (or a staging buffer) could not be allocated at construction.
class OutOfMemory : public Error {
 public:
  using Error::Error;
};

// A CUDA runtime call or kernel launch failed; carries the call and message.
class CudaError : public Error {
 public:
  using Error::Error;
};

// A feature needs something this build or machine does not have (CUDA).
class Unsupported : public Error {
 public:
  using Error::Error;
};

namespace detail {

// Formats the message and throws E. Cold and never inlined: a check on a hot
// path costs a compare and a predicted branch, not the formatting code.
#if defined(__GNUC__)
#define KVCACHE_COLD __attribute__((cold, noinline))
// The few bookkeeping checks on the hottest paths: always inlined, whatever
// the size of the translation unit around them.
#define KVCACHE_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define KVCACHE_COLD
#define KVCACHE_ALWAYS_INLINE inline
#endif

template <class E, class... Args>
[[noreturn]] KVCACHE_COLD void raise(fmt::format_string<Args...> format, Args&&... args) {
  throw E(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace detail
}  // namespace kvcache
