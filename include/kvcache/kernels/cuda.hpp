// Launchers of the CUDA cache kernels (compiled into the kvcache library when
// it is built with CUDA). Each takes an explicit stream, validates its
// parameters, checks the launch, and returns the CUDA status; nothing throws.
// With set_debug_sync(true) every launcher also synchronizes the stream so
// that an asynchronous fault is reported by the launch that caused it.
#pragma once

#include <cuda_runtime_api.h>

#include "kvcache/kernels/params.hpp"

namespace kvcache::kernels::cuda {

cudaError_t launch_append(const AppendParams& params, cudaStream_t stream);
cudaError_t launch_gather(const GatherParams& params, cudaStream_t stream);
cudaError_t launch_copy_blocks(const CopyBlocksParams& params, cudaStream_t stream);

void set_debug_sync(bool enabled);
bool debug_sync();

}  // namespace kvcache::kernels::cuda
