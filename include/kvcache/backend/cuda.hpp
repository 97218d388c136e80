// CUDA device-memory backend: the arena comes from one cudaMalloc, the cache
// kernels are the ones in kernels/*.cu, and every operation is ordered on the
// backend's stream. Implemented in src/cuda_backend.cpp; this header needs no
// CUDA headers, so it compiles (and the backend reports Unsupported at
// construction) in a build without CUDA.
#pragma once

#include <cstddef>
#include <string_view>

#include "kvcache/backend/concepts.hpp"
#include "kvcache/buffer.hpp"
#include "kvcache/kernels/codec_params.hpp"
#include "kvcache/kernels/params.hpp"

struct CUstream_st;
struct CUevent_st;

namespace kvcache {

// True when this build of the library contains the CUDA backend.
bool built_with_cuda() noexcept;
// Devices visible to the CUDA runtime; 0 without CUDA or without a device.
int cuda_device_count() noexcept;

class CudaBackend {
 public:
  static constexpr bool kDeviceMemory = true;
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

  void append(const kernels::AppendParams& params);
  void gather(const kernels::GatherParams& params);
  void copy_blocks(const kernels::CopyBlocksParams& params);
  void codec_append(const kernels::CodecAppendParams& params);
  void codec_gather(const kernels::CodecGatherParams& params);
  void kivi_flush(const kernels::KiviFlushParams& params);
  void kivi_gather(const kernels::KiviGatherParams& params);
  void abs_max(const kernels::AbsMaxParams& params);           // CUB block reductions
  void low_rank_fit(const kernels::LowRankFitParams& params);  // covariance + cuSOLVER syevd
  void synchronize();

 private:
  int device_ = 0;
  Stream stream_ = nullptr;
};

static_assert(MemoryBackend<CudaBackend>);

}  // namespace kvcache
