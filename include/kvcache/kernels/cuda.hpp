// Launchers of the CUDA cache kernels (compiled into the kvcache library when
// it is built with CUDA). Each takes an explicit stream, validates its
// parameters, checks the launch, and returns the CUDA status; nothing throws.
// With set_debug_sync(true) every launcher also synchronizes the stream so
// that an asynchronous fault is reported by the launch that caused it.
#pragma once

#include <cuda_runtime_api.h>

#include "kvcache/kernels/codec_params.hpp"
#include "kvcache/kernels/params.hpp"

namespace kvcache::kernels::cuda {

cudaError_t launch_append(const AppendParams& params, cudaStream_t stream);
cudaError_t launch_gather(const GatherParams& params, cudaStream_t stream);
cudaError_t launch_copy_blocks(const CopyBlocksParams& params, cudaStream_t stream);

// Compressed caches (int8, fp8, KIVI, low-rank).
cudaError_t launch_codec_append(const CodecAppendParams& params, cudaStream_t stream);
cudaError_t launch_codec_gather(const CodecGatherParams& params, cudaStream_t stream);
cudaError_t launch_kivi_flush(const KiviFlushParams& params, cudaStream_t stream);
cudaError_t launch_kivi_gather(const KiviGatherParams& params, cudaStream_t stream);
cudaError_t launch_abs_max(const AbsMaxParams& params, cudaStream_t stream);
// Per head: covariance X^T X of the sample into `covariance` ([heads][head_dim]
// [head_dim] fp32, device), for the eigen-decomposition that follows.
cudaError_t launch_covariance(const SampleView& sample, float* covariance, cudaStream_t stream);
// basis[h][d][j] = eigenvectors[h][(head_dim - 1 - j) * head_dim + d] (column-major,
// eigenvalues ascending): the top `rank` directions, as the codec stores them.
cudaError_t launch_take_top_eigenvectors(const float* eigenvectors, std::int32_t heads,
                                         std::int32_t head_dim, std::int32_t rank, float* basis,
                                         cudaStream_t stream);

void set_debug_sync(bool enabled);
bool debug_sync();

}  // namespace kvcache::kernels::cuda
