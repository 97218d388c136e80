// The CUDA backend (built only when the library is built with CUDA).
#include "kvcache/backend/cuda.hpp"

#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <algorithm>
#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "kvcache/error.hpp"
#include "kvcache/kernels/cuda.hpp"

namespace kvcache {

namespace kernels::cuda {
std::string describe_error(std::string_view call, int device, cudaError_t status) {
  if (is_sticky_error(status)) {
    return fmt::format(
        "{} on device {} found the CUDA context broken by an earlier asynchronous operation (a "
        "kernel or copy enqueued before this call faulted): {} ({}); this call did not run, and "
        "the context cannot be used again (set_debug_sync(true) makes each launch report its own "
        "fault)",
        call, device, cudaGetErrorString(status), cudaGetErrorName(status));
  }
  return fmt::format("{} on device {} failed: {} ({})", call, device, cudaGetErrorString(status),
                     cudaGetErrorName(status));
}

}  // namespace kernels::cuda

namespace {

void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) {
    int device = -1;
    (void)cudaGetDevice(&device);
    detail::raise<CudaError>("{}", kernels::cuda::describe_error(call, device, status));
  }
}

void check_solver(cusolverStatus_t status, const char* call) {
  if (status != CUSOLVER_STATUS_SUCCESS) {
    detail::raise<CudaError>("{} failed: cuSOLVER status {}", call, static_cast<int>(status));
  }
}

// What the low-rank fit of a (heads, head_dim) sample needs, allocated once
// (low_rank_fit_workspace) so that a fit on the append path allocates
// nothing: the cuSOLVER handle, the covariance matrices, eigenvalues, one
// status per head, the batched solver's scratch, and host copies.
struct LowRankWorkspace {
  int device = 0;
  std::int32_t heads = 0;
  std::int32_t dim = 0;
  cusolverDnHandle_t handle = nullptr;
  cusolverDnParams_t params = nullptr;
  Buffer covariance;   // [heads][dim][dim]
  Buffer eigenvalues;  // [heads][dim], ascending per head
  Buffer info;         // [heads]
  Buffer device_work;
  std::size_t device_work_bytes = 0;
  std::vector<std::byte> host_work;
  std::vector<float> host_eigenvalues;
  std::vector<int> host_info;

  ~LowRankWorkspace() {
    if (params != nullptr) (void)cusolverDnDestroyParams(params);
    if (handle != nullptr) (void)cusolverDnDestroy(handle);
  }
};

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

std::int64_t cuda_device_memory(int device) noexcept {
  if (device < 0 || device >= cuda_device_count()) return 0;
  int current = 0;
  if (cudaGetDevice(&current) != cudaSuccess || cudaSetDevice(device) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  std::size_t free = 0, total = 0;
  const bool ok = cudaMemGetInfo(&free, &total) == cudaSuccess;
  (void)cudaGetLastError();
  (void)cudaSetDevice(current);
  return ok ? static_cast<std::int64_t>(total) : 0;
}

void CudaBackend::unsupported() {
  throw Unsupported("CudaBackend: this operation is not supported");
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
  activate();
}

// Every entry point that touches the device makes the backend's device
// current first: an engine may drive several devices from one thread.
void CudaBackend::activate() {
  check(cudaSetDevice(device_), "cudaSetDevice");
}

void CudaBackend::check_launch(const char* kernel, int status) {
  const auto error = static_cast<cudaError_t>(status);
  if (error != cudaSuccess) {
    detail::raise<CudaError>(
        "{}", kernels::cuda::describe_error(fmt::format("{} launch", kernel), device_, error));
  }
}

Buffer CudaBackend::allocate(std::size_t bytes) {
  activate();
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
  activate();
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
    activate();
    check(cudaEventSynchronize(staging.uploaded_), "cudaEventSynchronize");
    staging.pending_ = false;
  }
  return staging.host_.data();
}

const void* CudaBackend::upload(Staging& staging, std::size_t bytes) {
  if (bytes != 0) {
    activate();
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
  activate();
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync(H2D)");
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

void CudaBackend::copy_to_host(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  activate();
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync(D2H)");
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

void CudaBackend::copy_within(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  activate();
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_),
        "cudaMemcpyAsync(D2D)");
}

void CudaBackend::fill_zero(void* dst, std::size_t bytes) {
  if (bytes == 0) return;
  activate();
  check(cudaMemsetAsync(dst, 0, bytes, stream_), "cudaMemsetAsync");
}

void CudaBackend::synchronize() {
  activate();
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

// ---- tier transfers -------------------------------------------------------------

struct CudaBackend::Transfers {
  int device = 0;
  cudaStream_t stream = nullptr;
  cudaEvent_t queued = nullptr;  // the backend stream's work so far
  cudaEvent_t copied = nullptr;  // the transfer just queued
  ~Transfers() {
    if (stream == nullptr) return;
    int current = 0;
    (void)cudaGetDevice(&current);
    (void)cudaSetDevice(device);
    (void)cudaStreamSynchronize(stream);
    (void)cudaEventDestroy(queued);
    (void)cudaEventDestroy(copied);
    (void)cudaStreamDestroy(stream);
    (void)cudaSetDevice(current);
  }
};

Buffer CudaBackend::allocate_host(std::size_t bytes) {
  activate();
  void* host = nullptr;
  if (bytes != 0) {
    const cudaError_t status = cudaMallocHost(&host, bytes);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      detail::raise<OutOfMemory>("cudaMallocHost of {} bytes (a tier's pinned memory) failed: {}",
                                 bytes, cudaGetErrorString(status));
    }
  }
  return Buffer(host, bytes, [](void* p) noexcept { (void)cudaFreeHost(p); });
}

void CudaBackend::transfer(void* dst, const void* src, std::size_t bytes, int kind) {
  if (bytes == 0) return;
  activate();
  if (!transfers_) {
    auto t = std::make_shared<Transfers>();
    t->device = device_;
    check(cudaStreamCreateWithFlags(&t->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaEventCreateWithFlags(&t->queued, cudaEventDisableTiming), "cudaEventCreate");
    check(cudaEventCreateWithFlags(&t->copied, cudaEventDisableTiming), "cudaEventCreate");
    transfers_ = std::move(t);
  }
  Transfers& t = *transfers_;
  check(cudaEventRecord(t.queued, stream_), "cudaEventRecord");
  check(cudaStreamWaitEvent(t.stream, t.queued, 0), "cudaStreamWaitEvent");
  check(cudaMemcpyAsync(dst, src, bytes, static_cast<cudaMemcpyKind>(kind), t.stream),
        kind == cudaMemcpyDeviceToHost ? "cudaMemcpyAsync(offload)" : "cudaMemcpyAsync(onboard)");
  check(cudaEventRecord(t.copied, t.stream), "cudaEventRecord");
  check(cudaStreamWaitEvent(stream_, t.copied, 0), "cudaStreamWaitEvent");
}

void CudaBackend::offload(void* host_dst, const void* page, std::size_t bytes) {
  transfer(host_dst, page, bytes, cudaMemcpyDeviceToHost);
}

void CudaBackend::onboard(void* page, const void* host_src, std::size_t bytes) {
  transfer(page, host_src, bytes, cudaMemcpyHostToDevice);
}

void CudaBackend::wait_transfers() {
  if (!transfers_) return;
  activate();
  check(cudaStreamSynchronize(transfers_->stream), "cudaStreamSynchronize(transfers)");
}

Buffer low_rank_fit_workspace(CudaBackend& backend, std::int32_t heads, std::int32_t head_dim,
                              std::int32_t /*rank*/) {
  auto workspace = std::make_unique<LowRankWorkspace>();
  workspace->device = backend.device();
  workspace->heads = heads;
  workspace->dim = head_dim;
  const auto cells = static_cast<std::size_t>(head_dim) * static_cast<std::size_t>(head_dim);
  workspace->covariance = backend.allocate(static_cast<std::size_t>(heads) * cells * sizeof(float));
  workspace->eigenvalues = backend.allocate(static_cast<std::size_t>(heads) *
                                            static_cast<std::size_t>(head_dim) * sizeof(float));
  workspace->info = backend.allocate(static_cast<std::size_t>(heads) * sizeof(int));
  check_solver(cusolverDnCreate(&workspace->handle), "cusolverDnCreate");
  check_solver(cusolverDnSetStream(workspace->handle, backend.stream()), "cusolverDnSetStream");
  check_solver(cusolverDnCreateParams(&workspace->params), "cusolverDnCreateParams");
  std::size_t host_bytes = 0;
  check_solver(cusolverDnXsyevBatched_bufferSize(
                   workspace->handle, workspace->params, CUSOLVER_EIG_MODE_VECTOR,
                   CUBLAS_FILL_MODE_LOWER, head_dim, CUDA_R_32F, workspace->covariance.data(),
                   head_dim, CUDA_R_32F, workspace->eigenvalues.data(), CUDA_R_32F,
                   &workspace->device_work_bytes, &host_bytes, heads),
               "cusolverDnXsyevBatched_bufferSize");
  workspace->device_work =
      backend.allocate(std::max<std::size_t>(workspace->device_work_bytes, 16));
  workspace->host_work.resize(std::max<std::size_t>(host_bytes, 1));
  workspace->host_eigenvalues.resize(static_cast<std::size_t>(heads) *
                                     static_cast<std::size_t>(head_dim));
  workspace->host_info.resize(static_cast<std::size_t>(heads));
  return Buffer(workspace.release(), sizeof(LowRankWorkspace),
                [](void* p) noexcept { delete static_cast<LowRankWorkspace*>(p); });
}

// Per head: the covariance X^T X of the sample, its eigen-decomposition by
// cuSOLVER (one batched syev over the heads: eigenvalues ascending,
// eigenvectors in place), and the top `rank` eigenvectors as the basis. The
// eigenvalues are the squared singular values of X, so the energy kept is
// the CPU SVD's figure; directions past the sample's own rank are zero, as
// on the CPU.
void CudaBackend::low_rank_fit(const kernels::LowRankFitParams& params) {
  const kernels::SampleView& sample = params.sample;
  const std::int32_t heads = sample.num_heads;
  const std::int32_t dim = sample.head_dim;
  auto* workspace = static_cast<LowRankWorkspace*>(params.workspace);
  if (workspace == nullptr || workspace->heads != heads || workspace->dim != dim ||
      workspace->device != device_) {
    detail::raise<InvalidArgument>(
        "CudaBackend::low_rank_fit: the workspace was not made by low_rank_fit_workspace for {} "
        "heads x {} on device {}",
        heads, dim, device_);
  }
  activate();
  check_launch("covariance", static_cast<int>(kernels::cuda::launch_covariance(
                                 sample, workspace->covariance.as<float>(), stream_)));
  check_solver(
      cusolverDnXsyevBatched(workspace->handle, workspace->params, CUSOLVER_EIG_MODE_VECTOR,
                             CUBLAS_FILL_MODE_LOWER, dim, CUDA_R_32F, workspace->covariance.data(),
                             dim, CUDA_R_32F, workspace->eigenvalues.data(), CUDA_R_32F,
                             workspace->device_work.data(), workspace->device_work_bytes,
                             workspace->host_work.data(), workspace->host_work.size(),
                             workspace->info.as<int>(), heads),
      "cusolverDnXsyevBatched");
  const std::int32_t valid = std::min(sample.num_tokens, dim);
  check_launch("take_top_eigenvectors",
               static_cast<int>(kernels::cuda::launch_take_top_eigenvectors(
                   workspace->covariance.as<float>(), heads, dim, params.rank, valid, params.basis,
                   stream_)));
  check(cudaMemcpyAsync(workspace->host_eigenvalues.data(), workspace->eigenvalues.data(),
                        workspace->host_eigenvalues.size() * sizeof(float), cudaMemcpyDeviceToHost,
                        stream_),
        "cudaMemcpyAsync(eigenvalues)");
  check(cudaMemcpyAsync(workspace->host_info.data(), workspace->info.data(),
                        workspace->host_info.size() * sizeof(int), cudaMemcpyDeviceToHost, stream_),
        "cudaMemcpyAsync(info)");
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  for (std::int32_t h = 0; h < heads; ++h) {
    const int status = workspace->host_info[static_cast<std::size_t>(h)];
    if (status != 0) {
      detail::raise<CudaError>("cusolverDnXsyevBatched did not converge for head {} (info {})", h,
                               status);
    }
  }
  for (std::int32_t h = 0; h < heads; ++h) {
    double kept = 0.0, total = 0.0;
    for (std::int32_t i = 0; i < dim; ++i) {
      const double value =
          std::max(0.0f, workspace->host_eigenvalues[static_cast<std::size_t>(h) * dim + i]);
      total += value;
      if (i >= dim - params.rank) kept += value;
    }
    params.energy_kept[h] = total > 0.0 ? static_cast<float>(kept / total) : 1.0f;
  }
}

}  // namespace kvcache
