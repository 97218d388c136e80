// Host-memory backend: the arena is ordinary (256-byte aligned) host memory
// and the kernels are the CPU versions in detail/cpu/ (the low-rank fit,
// Eigen's SVD, is compiled into the library). Header-only otherwise.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string_view>

#include "kvcache/backend/concepts.hpp"
#include "kvcache/buffer.hpp"
#include "kvcache/detail/cpu/attention.hpp"
#include "kvcache/detail/cpu/codec_kernels.hpp"
#include "kvcache/detail/cpu/copy_kernels.hpp"
#include "kvcache/detail/launch_check.hpp"
#include "kvcache/dtype.hpp"
#include "kvcache/error.hpp"
#include "kvcache/kernels/params.hpp"

namespace kvcache {

class HostBackend {
 public:
  static constexpr bool kDeviceMemory = false;
  static constexpr std::size_t kAlignment = 256;
  static constexpr bool kHoldsData = true;

  // Host staging needs no copy: the kernels read the host tables directly.
  struct Staging {
    Buffer buffer;
  };

  std::string_view name() const { return "cpu"; }

  Buffer allocate(std::size_t bytes) {
    if (bytes > std::numeric_limits<std::size_t>::max() - kAlignment) {
      detail::raise<OutOfMemory>("HostBackend: cannot allocate {} bytes of host memory", bytes);
    }
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
  void synchronize() {}

  // Tiers (tier/host_tier.hpp): host memory for a tier's slots, and the
  // copies between a page and a slot (plain memcpy here).
  Buffer allocate_host(std::size_t bytes) { return allocate(bytes); }
  void offload(void* host_dst, const void* page, std::size_t bytes) { copy(host_dst, page, bytes); }
  void onboard(void* page, const void* host_src, std::size_t bytes) { copy(page, host_src, bytes); }
  void wait_transfers() {}

 private:
  static void copy(void* dst, const void* src, std::size_t bytes) {
    if (bytes != 0) std::memmove(dst, src, bytes);
  }
};

static_assert(MemoryBackend<HostBackend>);

namespace detail::cpu {
// Per head, the top `rank` right singular vectors of the sample (Eigen's
// BDCSVD), compiled into the library so that the headers do not parse Eigen.
void low_rank_fit(const kernels::LowRankFitParams& params);
}  // namespace detail::cpu

// ---- kernel launches on the host ---------------------------------------------------

// Each cache kernel's parameters are checked first, as the CUDA launchers
// check them (detail/launch_check.hpp: InvalidArgument, nothing touched).
inline void launch(HostBackend&, const kernels::AppendParams& p) {
  detail::check_launch(p);
  detail::cpu::append(p);
}
inline void launch(HostBackend&, const kernels::GatherParams& p) {
  detail::check_launch(p);
  detail::cpu::gather(p);
}
inline void launch(HostBackend&, const kernels::CopyBlocksParams& p) {
  detail::check_launch(p);
  detail::cpu::copy_blocks(p);
}
template <class Rows>
void launch(HostBackend&, const kernels::CodecAppendParams<Rows>& p) {
  detail::check_launch(p);
  dispatch_dtype(p.cache.dtype, [&]<class T>() { detail::cpu::codec_append<Rows, T>(p); });
}
template <class Rows>
void launch(HostBackend&, const kernels::CodecGatherParams<Rows>& p) {
  detail::check_launch(p);
  dispatch_dtype(p.cache.dtype, [&]<class T>() { detail::cpu::codec_gather<Rows, T>(p); });
}
template <class Rows>
void launch(HostBackend&, const kernels::KiviFlushParams<Rows>& p) {
  detail::check_launch(p);
  dispatch_dtype(p.cache.dtype, [&]<class T>() { detail::cpu::kivi_flush<Rows, T>(p); });
}
template <class Rows>
void launch(HostBackend&, const kernels::KiviGatherParams<Rows>& p) {
  detail::check_launch(p);
  dispatch_dtype(p.cache.dtype, [&]<class T>() { detail::cpu::kivi_gather<Rows, T>(p); });
}
inline void launch(HostBackend&, const kernels::AbsMaxParams& p) {
  dispatch_dtype(p.sample.dtype, [&]<class T>() { detail::cpu::abs_max<T>(p); });
}
inline void launch(HostBackend&, const kernels::LowRankFitParams& p) {
  detail::cpu::low_rank_fit(p);
}
// Attention: throws InvalidArgument naming what is wrong, before reading
// anything.
namespace detail {
template <class Params>
void check_attention(const char* problem, const Params& p) {
  if (problem == nullptr) return;
  raise<InvalidArgument>(
      "{}: {} (layer {} of {}, head_dim {}, {} query heads over {} KV heads, {} rows, {} "
      "sequences)",
      Params::kName, problem, p.layer, p.cache.num_layers, p.cache.head_dim, p.num_q_heads,
      p.cache.num_heads, p.num_rows, p.table.batch_size);
}
}  // namespace detail
inline void launch(HostBackend&, const kernels::AttentionParams& p) {
  detail::check_attention(kernels::attention_problem(p), p);
  dispatch_dtype(p.cache.dtype, [&]<class T>() { detail::cpu::paged_attention<T>(p); });
}
template <class Rows>
void launch(HostBackend&, const kernels::CodecAttentionParams<Rows>& p) {
  detail::check_attention(kernels::codec_attention_problem(p), p);
  dispatch_dtype(p.cache.dtype, [&]<class T>() { detail::cpu::codec_attention<Rows, T>(p); });
}

}  // namespace kvcache
