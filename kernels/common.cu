#include <atomic>

#include "common.cuh"
#include "kvcache/kernels/cuda.hpp"

namespace kvcache::kernels::cuda {

namespace {
std::atomic<bool> g_debug_sync{false};
}  // namespace

void set_debug_sync(bool enabled) {
  g_debug_sync.store(enabled, std::memory_order_relaxed);
}

bool debug_sync() {
  return g_debug_sync.load(std::memory_order_relaxed);
}

bool is_sticky_error(cudaError_t status) {
  switch (status) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
      return true;
    default:
      return false;
  }
}

namespace detail {

cudaError_t take_earlier_error() {
  const cudaError_t earlier = cudaGetLastError();  // clears a plain error
  return is_sticky_error(earlier) ? earlier : cudaSuccess;
}

cudaError_t finish_launch(cudaStream_t stream) {
  cudaError_t status = cudaGetLastError();  // this launch's error, and clear it
  if (status != cudaSuccess) return status;
  if (debug_sync()) status = cudaStreamSynchronize(stream);
  return status;
}

}  // namespace detail
}  // namespace kvcache::kernels::cuda
