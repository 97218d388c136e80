// KVCACHE_REQUIRE_GPU(): the first line of a test that needs a CUDA device;
// without one the test skips, saying why (the CUDA kernels are built, CI has
// no GPU).
#pragma once

#include <gtest/gtest.h>

#include "kvcache/backend/cuda.hpp"

namespace kvcache::testing {

inline bool has_cuda_device() {
  static const bool found = cuda_device_count() > 0;
  return found;
}

}  // namespace kvcache::testing

#define KVCACHE_REQUIRE_GPU()                                                         \
  if (!::kvcache::testing::has_cuda_device())                                         \
  GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount found none): the CUDA kernels " \
                  "are built but cannot run here"
