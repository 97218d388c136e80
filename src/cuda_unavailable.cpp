// The CUDA backend of a build without CUDA: it reports, it never pretends.
// Every member is defined (a program naming CudaBackend links) and throws
// Unsupported.
#include "kvcache/backend/cuda.hpp"
#include "kvcache/error.hpp"

namespace kvcache {

void CudaBackend::unsupported() {
  throw Unsupported(
      "this build of kvcache has no CUDA backend (configured with KVCACHE_CUDA=OFF or without "
      "nvcc); use HostBackend or rebuild with -DKVCACHE_CUDA=ON");
}

bool built_with_cuda() noexcept {
  return false;
}
int cuda_device_count() noexcept {
  return 0;
}
std::int64_t cuda_device_memory(int) noexcept {
  return 0;
}

CudaBackend::Staging::Staging(Staging&&) noexcept = default;
CudaBackend::Staging& CudaBackend::Staging::operator=(Staging&&) noexcept = default;
CudaBackend::Staging::~Staging() = default;

CudaBackend::CudaBackend(int, Stream) {
  unsupported();
}
Buffer CudaBackend::allocate(std::size_t) {
  unsupported();
}
CudaBackend::Staging CudaBackend::make_staging(std::size_t) {
  unsupported();
}
void* CudaBackend::staging_host(Staging&) {
  unsupported();
}
const void* CudaBackend::upload(Staging&, std::size_t) {
  unsupported();
}
void CudaBackend::copy_to_backend(void*, const void*, std::size_t) {
  unsupported();
}
void CudaBackend::copy_to_host(void*, const void*, std::size_t) {
  unsupported();
}
void CudaBackend::copy_within(void*, const void*, std::size_t) {
  unsupported();
}
void CudaBackend::fill_zero(void*, std::size_t) {
  unsupported();
}
void CudaBackend::synchronize() {
  unsupported();
}
Buffer CudaBackend::allocate_host(std::size_t) {
  unsupported();
}
void CudaBackend::offload(void*, const void*, std::size_t) {
  unsupported();
}
void CudaBackend::onboard(void*, const void*, std::size_t) {
  unsupported();
}
void CudaBackend::wait_transfers() {
  unsupported();
}
void CudaBackend::low_rank_fit(const kernels::LowRankFitParams&) {
  unsupported();
}
Buffer low_rank_fit_workspace(CudaBackend&, std::int32_t, std::int32_t, std::int32_t) {
  CudaBackend::unsupported();
}
void CudaBackend::activate() {
  unsupported();
}
void CudaBackend::check_launch(const char*, int) {
  unsupported();
}

}  // namespace kvcache
