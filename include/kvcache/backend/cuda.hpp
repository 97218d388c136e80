// CUDA device-memory backend: the arena comes from one cudaMalloc, the cache
// kernels are the ones in kernels/ (declared in kvcache/kernels/cuda.hpp),
// and every operation is ordered on the backend's stream. Implemented in
// src/cuda_backend.cpp; this header needs no CUDA headers, so it compiles in
// a build without CUDA, where the backend throws Unsupported at construction
// (and every launch throws it too).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "kvcache/backend/concepts.hpp"
#include "kvcache/buffer.hpp"
#include "kvcache/kernels/params.hpp"

struct CUstream_st;
struct CUevent_st;

namespace kvcache {

// True when this build of the library contains the CUDA backend.
bool built_with_cuda() noexcept;
// Devices visible to the CUDA runtime; 0 without CUDA or without a device.
int cuda_device_count() noexcept;
// Total memory of device `device` in bytes (cudaMemGetInfo); 0 without CUDA,
// without that device, or when the runtime cannot tell.
std::int64_t cuda_device_memory(int device) noexcept;

class CudaBackend {
 public:
  static constexpr bool kDeviceMemory = true;
  static constexpr bool kHoldsData = true;
  using Stream = CUstream_st*;  // the same type as cudaStream_t

  // Pinned host table + device copy; the event orders reuse of the host side
  // after the previous upload.
  class Staging {
   public:
    Staging() = default;
    Staging(Staging&& other) noexcept;
    Staging& operator=(Staging&& other) noexcept;
    Staging(const Staging&) = delete;
    Staging& operator=(const Staging&) = delete;
    ~Staging();

   private:
    friend class CudaBackend;
    Buffer host_;
    Buffer device_;
    CUevent_st* uploaded_ = nullptr;
    bool pending_ = false;
  };

  // Throws Unsupported in a build without CUDA and CudaError when `device` is
  // not a valid device. The stream is borrowed; nullptr is the legacy default.
  explicit CudaBackend(int device = 0, Stream stream = nullptr);

  std::string_view name() const { return "cuda"; }
  int device() const { return device_; }
  Stream stream() const { return stream_; }

  Buffer allocate(std::size_t bytes);
  Staging make_staging(std::size_t bytes);
  void* staging_host(Staging& staging);
  const void* upload(Staging& staging, std::size_t bytes);

  void copy_to_backend(void* dst, const void* src, std::size_t bytes);  // host -> device
  void copy_to_host(void* dst, const void* src, std::size_t bytes);     // device -> host, waits
  void copy_within(void* dst, const void* src, std::size_t bytes);      // device -> device
  void fill_zero(void* dst, std::size_t bytes);
  void synchronize();

  // Tiers (tier/host_tier.hpp): pinned host memory for a tier's slots, and
  // asynchronous copies between a device page and a slot on a transfer
  // stream of the backend's own, ordered by events: an offload starts after
  // the kernels already queued (that wrote the page) and the backend's
  // stream waits for it before anything queued later (that may overwrite
  // the page); an onboard likewise, so the first kernel that reads the page
  // runs after it. The host waits for neither. wait_transfers() is for the
  // host's own reads of slots.
  Buffer allocate_host(std::size_t bytes);
  void offload(void* host_dst, const void* page, std::size_t bytes);
  void onboard(void* page, const void* host_src, std::size_t bytes);
  void wait_transfers();

  // The one launch wrapper: runs launcher(stream) on this backend's device
  // and throws CudaError naming `kernel` when it returns an error status.
  template <class Launcher>
  void run(const char* kernel, Launcher launcher) {
    activate();
    check_launch(kernel, static_cast<int>(launcher(stream_)));
  }

  // Per head: covariance of the sample, cuSOLVER syevd, the top `rank`
  // eigenvectors (see kvcache/kernels/cuda.hpp).
  void low_rank_fit(const kernels::LowRankFitParams& params);

  [[noreturn]] static void unsupported();

 private:
  void activate();
  void check_launch(const char* kernel, int status);

  void transfer(void* dst, const void* src, std::size_t bytes, int kind);

  int device_ = 0;
  Stream stream_ = nullptr;
  // The tiers' transfer stream and its two events (created on first use;
  // shared by copies of this backend, released with the last).
  struct Transfers;
  std::shared_ptr<Transfers> transfers_;
};

static_assert(MemoryBackend<CudaBackend>);

inline void launch(CudaBackend& backend, const kernels::LowRankFitParams& params) {
  backend.low_rank_fit(params);
}

// The low-rank fit's workspace for samples of `heads` x `head_dim` rows,
// allocated once by the codec's storage (the cuSOLVER handle and scratch).
Buffer low_rank_fit_workspace(CudaBackend& backend, std::int32_t heads, std::int32_t head_dim,
                              std::int32_t rank);

}  // namespace kvcache

#if defined(KVCACHE_HAS_CUDA)
#include "kvcache/detail/launch_check.hpp"
#include "kvcache/kernels/cuda.hpp"

namespace kvcache {
// Every other kernel: its launcher in kvcache/kernels/cuda.hpp, named by its
// parameter struct.
template <class Params>
requires requires(const Params& params) {
  kernels::cuda::launch(params, nullptr);
}
void launch(CudaBackend& backend, const Params& params) {
  // The launcher checks the same, but only as a status code: here the error
  // names what is wrong, as the CPU backend's does.
  if constexpr (requires { kernels::launch_problem(params); }) detail::check_launch(params);
  backend.run(Params::kName,
              [&](CudaBackend::Stream stream) { return kernels::cuda::launch(params, stream); });
}
}  // namespace kvcache
#else
namespace kvcache {
template <class Params>
void launch(CudaBackend&, const Params&) {
  CudaBackend::unsupported();
}
}  // namespace kvcache
#endif
