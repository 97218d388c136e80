// The CUDA backend (built only when the library is built with CUDA).
#include "kvcache/backend/cuda.hpp"

#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <algorithm>
#include <memory>
#include <vector>

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

void check_launch(cudaError_t status, const char* kernel, std::int64_t pages,
                  std::int64_t page_bytes) {
  if (status != cudaSuccess) {
    detail::raise<CudaError>("{} launch failed: {} ({}); cache of {} pages x {} bytes", kernel,
                             cudaGetErrorString(status), cudaGetErrorName(status), pages,
                             page_bytes);
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
  check_launch(kernels::cuda::launch_append(params, stream_), "append", params.cache.num_pages,
               params.cache.page_bytes);
}

void CudaBackend::gather(const kernels::GatherParams& params) {
  check_launch(kernels::cuda::launch_gather(params, stream_), "gather", params.cache.num_pages,
               params.cache.page_bytes);
}

void CudaBackend::copy_blocks(const kernels::CopyBlocksParams& params) {
  check_launch(kernels::cuda::launch_copy_blocks(params, stream_), "copy_blocks", params.num_pages,
               params.page_bytes);
}

void CudaBackend::codec_append(const kernels::CodecAppendParams& params) {
  check_launch(kernels::cuda::launch_codec_append(params, stream_), "codec_append",
               params.cache.num_pages, params.cache.page_bytes);
}

void CudaBackend::codec_gather(const kernels::CodecGatherParams& params) {
  check_launch(kernels::cuda::launch_codec_gather(params, stream_), "codec_gather",
               params.cache.num_pages, params.cache.page_bytes);
}

void CudaBackend::kivi_flush(const kernels::KiviFlushParams& params) {
  check_launch(kernels::cuda::launch_kivi_flush(params, stream_), "kivi_flush",
               params.cache.num_pages, params.cache.page_bytes);
}

void CudaBackend::kivi_gather(const kernels::KiviGatherParams& params) {
  check_launch(kernels::cuda::launch_kivi_gather(params, stream_), "kivi_gather",
               params.cache.num_pages, params.cache.page_bytes);
}

void CudaBackend::abs_max(const kernels::AbsMaxParams& params) {
  check_launch(kernels::cuda::launch_abs_max(params, stream_), "abs_max", 0, 0);
}

namespace {

void check_solver(cusolverStatus_t status, const char* call) {
  if (status != CUSOLVER_STATUS_SUCCESS) {
    detail::raise<CudaError>("{} failed: cuSOLVER status {}", call, static_cast<int>(status));
  }
}

struct SolverDeleter {
  void operator()(cusolverDnContext* handle) const noexcept { (void)cusolverDnDestroy(handle); }
};

}  // namespace

// Per head: the covariance X^T X of the sample, its eigen-decomposition by
// cuSOLVER (syevd: eigenvalues ascending, eigenvectors in place), and the
// top `rank` eigenvectors as the basis. The eigenvalues are the squared
// singular values of X, so the energy kept is the same figure as the SVD's.
void CudaBackend::low_rank_fit(const kernels::LowRankFitParams& params) {
  const kernels::SampleView& sample = params.sample;
  const std::int32_t heads = sample.num_heads;
  const std::int32_t dim = sample.head_dim;
  const auto cells = static_cast<std::size_t>(dim) * static_cast<std::size_t>(dim);
  Buffer covariance = allocate(static_cast<std::size_t>(heads) * cells * sizeof(float));
  Buffer eigenvalues =
      allocate(static_cast<std::size_t>(heads) * static_cast<std::size_t>(dim) * sizeof(float));
  check_launch(kernels::cuda::launch_covariance(sample, covariance.as<float>(), stream_),
               "covariance", 0, 0);
  cusolverDnHandle_t raw = nullptr;
  check_solver(cusolverDnCreate(&raw), "cusolverDnCreate");
  std::unique_ptr<cusolverDnContext, SolverDeleter> handle(raw);
  check_solver(cusolverDnSetStream(raw, stream_), "cusolverDnSetStream");
  int work_size = 0;
  check_solver(
      cusolverDnSsyevd_bufferSize(raw, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, dim,
                                  covariance.as<float>(), dim, eigenvalues.as<float>(), &work_size),
      "cusolverDnSsyevd_bufferSize");
  Buffer work = allocate(static_cast<std::size_t>(std::max(work_size, 1)) * sizeof(float));
  Buffer info = allocate(sizeof(int));
  for (std::int32_t h = 0; h < heads; ++h) {
    check_solver(cusolverDnSsyevd(raw, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, dim,
                                  covariance.as<float>() + static_cast<std::size_t>(h) * cells, dim,
                                  eigenvalues.as<float>() + static_cast<std::size_t>(h) * dim,
                                  work.as<float>(), work_size, info.as<int>()),
                 "cusolverDnSsyevd");
  }
  check_launch(kernels::cuda::launch_take_top_eigenvectors(covariance.as<float>(), heads, dim,
                                                           params.rank, params.basis, stream_),
               "take_top_eigenvectors", 0, 0);
  std::vector<float> values(static_cast<std::size_t>(heads) * static_cast<std::size_t>(dim));
  copy_to_host(values.data(), eigenvalues.data(), values.size() * sizeof(float));
  int status = 0;
  copy_to_host(&status, info.data(), sizeof(int));
  if (status != 0) detail::raise<CudaError>("cusolverDnSsyevd did not converge (info {})", status);
  for (std::int32_t h = 0; h < heads; ++h) {
    double kept = 0.0, total = 0.0;
    for (std::int32_t i = 0; i < dim; ++i) {
      const double value = std::max(0.0f, values[static_cast<std::size_t>(h) * dim + i]);
      total += value;
      if (i >= dim - params.rank) kept += value;
    }
    params.energy_kept[h] = total > 0.0 ? static_cast<float>(kept / total) : 1.0f;
  }
}

void CudaBackend::synchronize() {
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

}  // namespace kvcache
