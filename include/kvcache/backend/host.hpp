// Host-memory backend: the arena is ordinary (256-byte aligned) host memory
// and the kernels are the CPU versions in kernels/cpu.hpp and
// kernels/codec_cpu.hpp (the low-rank fit uses Eigen). Header-only.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>

#include "kvcache/backend/concepts.hpp"
#include "kvcache/buffer.hpp"
#include "kvcache/codec/low_rank_fit.hpp"
#include "kvcache/error.hpp"
#include "kvcache/kernels/codec_cpu.hpp"
#include "kvcache/kernels/cpu.hpp"

namespace kvcache {

class HostBackend {
 public:
  static constexpr bool kDeviceMemory = false;
  static constexpr std::size_t kAlignment = 256;

  // Host staging needs no copy: the kernels read the host tables directly.
  struct Staging {
    Buffer buffer;
  };

  std::string_view name() const { return "cpu"; }

  Buffer allocate(std::size_t bytes) {
    const std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* data = rounded == 0 ? nullptr : std::aligned_alloc(kAlignment, rounded);
    if (rounded != 0 && data == nullptr) {
      detail::raise<OutOfMemory>("HostBackend: cannot allocate {} bytes of host memory", bytes);
    }
    return Buffer(data, bytes, [](void* p) noexcept { std::free(p); });
  }

  Staging make_staging(std::size_t bytes) { return Staging{allocate(bytes)}; }
  void* staging_host(Staging& staging) { return staging.buffer.data(); }
  const void* upload(Staging& staging, std::size_t /*bytes*/) { return staging.buffer.data(); }

  void copy_to_backend(void* dst, const void* src, std::size_t bytes) { copy(dst, src, bytes); }
  void copy_to_host(void* dst, const void* src, std::size_t bytes) { copy(dst, src, bytes); }
  void copy_within(void* dst, const void* src, std::size_t bytes) { copy(dst, src, bytes); }
  void fill_zero(void* dst, std::size_t bytes) {
    if (bytes != 0) std::memset(dst, 0, bytes);
  }

  void append(const kernels::AppendParams& params) { kernels::cpu::append(params); }
  void gather(const kernels::GatherParams& params) { kernels::cpu::gather(params); }
  void copy_blocks(const kernels::CopyBlocksParams& params) { kernels::cpu::copy_blocks(params); }
  void codec_append(const kernels::CodecAppendParams& params) {
    kernels::cpu::codec_append(params);
  }
  void codec_gather(const kernels::CodecGatherParams& params) {
    kernels::cpu::codec_gather(params);
  }
  void kivi_flush(const kernels::KiviFlushParams& params) { kernels::cpu::kivi_flush(params); }
  void kivi_gather(const kernels::KiviGatherParams& params) { kernels::cpu::kivi_gather(params); }
  void abs_max(const kernels::AbsMaxParams& params) { kernels::cpu::abs_max(params); }
  void low_rank_fit(const kernels::LowRankFitParams& params) { kernels::cpu::low_rank_fit(params); }
  void synchronize() {}

 private:
  static void copy(void* dst, const void* src, std::size_t bytes) {
    if (bytes != 0) std::memmove(dst, src, bytes);
  }
};

static_assert(MemoryBackend<HostBackend>);

}  // namespace kvcache
