// Metadata-only backend: no arena and no data movement, only the bookkeeping.
// For capacity planning and trace replay, where a million requests must run
// in a second and no K/V bytes exist. Buffers have null data; every kernel
// launch does nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kvcache/backend/concepts.hpp"
#include "kvcache/buffer.hpp"
#include "kvcache/kernels/params.hpp"

namespace kvcache {

class MetadataBackend {
 public:
  static constexpr bool kDeviceMemory = false;
  static constexpr bool kHoldsData = false;  // nothing is written: commit needs no appends

  // Staging still holds the host-side tables (slot mappings) an engine reads.
  struct Staging {
    Buffer buffer;
  };

  std::string_view name() const { return "metadata"; }
  Buffer allocate(std::size_t bytes) { return Buffer(nullptr, bytes, nullptr); }
  Staging make_staging(std::size_t bytes) {
    return Staging{Buffer(bytes == 0 ? nullptr : ::operator new(bytes), bytes,
                          [](void* p) noexcept { ::operator delete(p); })};
  }
  void* staging_host(Staging& staging) { return staging.buffer.data(); }
  const void* upload(Staging& staging, std::size_t) { return staging.buffer.data(); }
  void copy_to_backend(void*, const void*, std::size_t) {}
  void copy_to_host(void*, const void*, std::size_t) {}
  void copy_within(void*, const void*, std::size_t) {}
  void fill_zero(void*, std::size_t) {}
  void synchronize() {}
  // Tiers hold keys only: nothing to copy.
  Buffer allocate_host(std::size_t bytes) { return Buffer(nullptr, bytes, nullptr); }
  void offload(void*, const void*, std::size_t) {}
  void onboard(void*, const void*, std::size_t) {}
  void wait_transfers() {}
};

static_assert(MemoryBackend<MetadataBackend>);

// Every kernel is a no-op; calibration without data gives unit fp8 scales
// and a zero basis that keeps no energy.
template <class Params>
void launch(MetadataBackend&, const Params&) {}
inline void launch(MetadataBackend&, const kernels::LowRankFitParams& params) {
  for (std::int32_t h = 0; h < params.sample.num_heads; ++h)
    params.energy_kept[h] = 0.0f;
}

}  // namespace kvcache
