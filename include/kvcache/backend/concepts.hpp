// What the manager needs from a memory backend: memory, and a way to move
// bytes. Kernels are not part of it: each kernel's parameter struct has a
// `launch(backend, params)` overload per backend (backend/host.hpp,
// backend/cuda.hpp, backend/metadata.hpp), and a codec's storage calls only
// the launches it uses.
//
// A backend allocates buffers in its memory (the arena in one allocation at
// construction) and moves bytes between host and its memory. Staging areas
// carry small host-built tables (slot mappings, page tables) to the kernels:
// the host writes into staging_host(), then upload() returns the pointer the
// kernels read, ordered before the next launch; staging_host() waits until
// that area's previous upload has left it. The manager uses its per-step
// areas in pairs (detail/double_staging.hpp), so preparing a step never waits
// for the kernels of the step before.
#pragma once

#include <concepts>
#include <cstddef>
#include <string_view>

#include "kvcache/buffer.hpp"

namespace kvcache {

template <class B>
concept MemoryBackend = requires(B& backend, const B& const_backend, void* dst, const void* src,
                                 std::size_t bytes, typename B::Staging& staging) {
  { B::kDeviceMemory } -> std::convertible_to<bool>;
  // False for a backend that keeps no K/V bytes (bookkeeping only).
  { B::kHoldsData } -> std::convertible_to<bool>;
  { const_backend.name() } -> std::convertible_to<std::string_view>;
  { backend.allocate(bytes) } -> std::same_as<Buffer>;
  { backend.make_staging(bytes) } -> std::same_as<typename B::Staging>;
  { backend.staging_host(staging) } -> std::same_as<void*>;
  { backend.upload(staging, bytes) } -> std::same_as<const void*>;
  backend.copy_to_backend(dst, src, bytes);
  backend.copy_to_host(dst, src, bytes);
  backend.copy_within(dst, src, bytes);
  backend.fill_zero(dst, bytes);
  backend.synchronize();
};

}  // namespace kvcache
