// The CUDA backend (built only when the library is built with CUDA).
#include "kvcache/backend/cuda.hpp"

#include <cuda_runtime_api.h>

#include <utility>

#include "kvcache/error.hpp"
#include "kvcache/kernels/cuda.hpp"

namespace kvcache {
namespace {

void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) {
    detail::raise<CudaError>("{} failed: {} ({})", call, cudaGetErrorString(status),
                             cudaGetErrorName(status));
  }
}

void check_launch(cudaError_t status, const char* kernel, const PagedKVView& cache) {
  if (status != cudaSuccess) {
    detail::raise<CudaError>("{} launch failed: {} ({}); cache of {} pages x {} bytes", kernel,
                             cudaGetErrorString(status), cudaGetErrorName(status), cache.num_pages,
                             cache.page_bytes);
  }
}

}  // namespace

bool built_with_cuda() noexcept {
  return true;
}

int cuda_device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

CudaBackend::Staging::Staging(Staging&& other) noexcept
    : host_(std::move(other.host_)),
      device_(std::move(other.device_)),
      uploaded_(std::exchange(other.uploaded_, nullptr)),
      pending_(std::exchange(other.pending_, false)) {}

CudaBackend::Staging& CudaBackend::Staging::operator=(Staging&& other) noexcept {
  if (this != &other) {
    if (uploaded_ != nullptr) (void)cudaEventDestroy(uploaded_);
    host_ = std::move(other.host_);
    device_ = std::move(other.device_);
    uploaded_ = std::exchange(other.uploaded_, nullptr);
    pending_ = std::exchange(other.pending_, false);
  }
  return *this;
}

CudaBackend::Staging::~Staging() {
  if (uploaded_ != nullptr) (void)cudaEventDestroy(uploaded_);
}

CudaBackend::CudaBackend(int device, Stream stream) : device_(device), stream_(stream) {
  const int count = cuda_device_count();
  if (device < 0 || device >= count) {
    detail::raise<CudaError>("CudaBackend: device {} is outside the {} visible CUDA device(s)",
                             device, count);
  }
  check(cudaSetDevice(device_), "cudaSetDevice");
}

Buffer CudaBackend::allocate(std::size_t bytes) {
  check(cudaSetDevice(device_), "cudaSetDevice");
  void* data = nullptr;
  if (bytes != 0) {
    const cudaError_t status = cudaMalloc(&data, bytes);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      detail::raise<OutOfMemory>("cudaMalloc of {} bytes on device {} failed: {}", bytes, device_,
                                 cudaGetErrorString(status));
    }
  }
  return Buffer(data, bytes, [](void* p) noexcept { (void)cudaFree(p); });
}

CudaBackend::Staging CudaBackend::make_staging(std::size_t bytes) {
  check(cudaSetDevice(device_), "cudaSetDevice");
  Staging staging;
  void* host = nullptr;
  check(cudaMallocHost(&host, bytes == 0 ? 1 : bytes), "cudaMallocHost");
  staging.host_ = Buffer(host, bytes, [](void* p) noexcept { (void)cudaFreeHost(p); });
  staging.device_ = allocate(bytes == 0 ? 16 : bytes);
  check(cudaEventCreateWithFlags(&staging.uploaded_, cudaEventDisableTiming), "cudaEventCreate");
  return staging;
}

void* CudaBackend::staging_host(Staging& staging) {
  if (staging.pending_) {
    // The previous upload may still be reading the pinned buffer.
    check(cudaEventSynchronize(staging.uploaded_), "cudaEventSynchronize");
    staging.pending_ = false;
  }
  return staging.host_.data();
}

const void* CudaBackend::upload(Staging& staging, std::size_t bytes) {
  if (bytes != 0) {
    check(cudaMemcpyAsync(staging.device_.data(), staging.host_.data(), bytes,
                          cudaMemcpyHostToDevice, stream_),
          "cudaMemcpyAsync(staging)");
    check(cudaEventRecord(staging.uploaded_, stream_), "cudaEventRecord");
    staging.pending_ = true;
  }
  return staging.device_.data();
}

void CudaBackend::copy_to_backend(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync(H2D)");
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

void CudaBackend::copy_to_host(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync(D2H)");
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

void CudaBackend::copy_within(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_),
        "cudaMemcpyAsync(D2D)");
}

void CudaBackend::fill_zero(void* dst, std::size_t bytes) {
  if (bytes == 0) return;
  check(cudaMemsetAsync(dst, 0, bytes, stream_), "cudaMemsetAsync");
}

void CudaBackend::append(const kernels::AppendParams& params) {
  check_launch(kernels::cuda::launch_append(params, stream_), "append", params.cache);
}

void CudaBackend::gather(const kernels::GatherParams& params) {
  check_launch(kernels::cuda::launch_gather(params, stream_), "gather", params.cache);
}

void CudaBackend::copy_blocks(const kernels::CopyBlocksParams& params) {
  check_launch(kernels::cuda::launch_copy_blocks(params, stream_), "copy_blocks", params.cache);
}

void CudaBackend::synchronize() {
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

}  // namespace kvcache
