// Launchers of the CUDA cache kernels (compiled into the kvcache library when
// it is built with CUDA). One overload of launch() per parameter struct:
// each takes an explicit stream, validates its parameters
// (kvcache/kernels/launch_checks.hpp: cudaErrorMisalignedAddress or
// cudaErrorInvalidValue), checks the launch and returns the CUDA status of
// this launch; nothing throws. A plain error left by an earlier call is
// cleared first; a sticky one (an earlier kernel's fault) is returned without
// launching (is_sticky_error, describe_error). With set_debug_sync(true) every
// launcher also synchronizes the stream so that an asynchronous fault is
// reported by the launch that caused it.
//
// The codec kernels are templates on the codec's row math, dispatched on the
// dtype once per launch. The library instantiates them for the codecs listed
// in kernels/codecs_*.cu (KVCACHE_CUDA_*_CODECS below); a codec configuration
// not listed there links only after one line is added to that list.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "kvcache/codec/fp8/rows.hpp"
#include "kvcache/codec/int8/rows.hpp"
#include "kvcache/codec/kivi/rows.hpp"
#include "kvcache/codec/low_rank/rows.hpp"
#include "kvcache/kernels/attention.hpp"
#include "kvcache/kernels/codec_attention.hpp"
#include "kvcache/kernels/params.hpp"

namespace kvcache::kernels::cuda {

cudaError_t launch(const AppendParams& params, cudaStream_t stream);
cudaError_t launch(const GatherParams& params, cudaStream_t stream);
cudaError_t launch(const CopyBlocksParams& params, cudaStream_t stream);
cudaError_t launch(const AbsMaxParams& params, cudaStream_t stream);
cudaError_t launch(const AttentionParams& params, cudaStream_t stream);

template <class Rows>
cudaError_t launch(const CodecAppendParams<Rows>& params, cudaStream_t stream);
template <class Rows>
cudaError_t launch(const CodecGatherParams<Rows>& params, cudaStream_t stream);
template <class Rows>
cudaError_t launch(const KiviFlushParams<Rows>& params, cudaStream_t stream);
template <class Rows>
cudaError_t launch(const KiviGatherParams<Rows>& params, cudaStream_t stream);
template <class Rows>
cudaError_t launch(const CodecAttentionParams<Rows>& params, cudaStream_t stream);

// The low-rank fit's kernels (CudaBackend::low_rank_fit runs them around
// cuSOLVER). Per head: covariance X^T X of the sample into `covariance`
// ([heads][head_dim][head_dim] fp32, device).
cudaError_t launch_covariance(const SampleView& sample, float* covariance, cudaStream_t stream);
// basis[h][d][j] = eigenvectors[h][(head_dim - 1 - j) * head_dim + d] (column-major,
// eigenvalues ascending): the top `rank` directions, as the codec stores them;
// columns j >= valid_columns (past the sample's own rank) are zero, as on the CPU.
cudaError_t launch_take_top_eigenvectors(const float* eigenvectors, std::int32_t heads,
                                         std::int32_t head_dim, std::int32_t rank,
                                         std::int32_t valid_columns, float* basis,
                                         cudaStream_t stream);

void set_debug_sync(bool enabled);
bool debug_sync();

// Errors a kernel's fault leaves in the context (an illegal or misaligned
// address, a trap, a timeout): sticky, every later call returns them. A
// launcher that finds one returns it without launching.
bool is_sticky_error(cudaError_t status);
// The message for `call` failing with `status` on `device`: a sticky error is
// named as coming from an earlier asynchronous operation that this call
// found, not as this call's own failure.
std::string describe_error(std::string_view call, int device, cudaError_t status);

// The codec row types the library's kernels are built for, one list per
// kernels/codecs_*.cu. Adding a codec configuration is one entry here (the
// small ones are the test suites' shapes).
// clang-format off
#define KVCACHE_CUDA_INT8_CODECS(X)    \
  X(::kvcache::Int8Rows<32, 2>)        \
  X(::kvcache::Int8Rows<64, 2>)        \
  X(::kvcache::Int8Rows<128, 2>)       \
  X(::kvcache::Int8Rows<32, 4>)        \
  X(::kvcache::Int8Rows<128, 4>)       \
  X(::kvcache::Int8Rows<4, 2>)         \
  X(::kvcache::Int8Rows<4, 4>)
#define KVCACHE_CUDA_FP8_CODECS(X)     \
  X(::kvcache::Fp8Rows)
#define KVCACHE_CUDA_KIVI_CODECS(X)    \
  X(::kvcache::KiviRows<4, 32, 2>)     \
  X(::kvcache::KiviRows<2, 32, 2>)     \
  X(::kvcache::KiviRows<4, 4, 2>)      \
  X(::kvcache::KiviRows<2, 4, 2>)
#define KVCACHE_CUDA_LOW_RANK_CODECS(X) \
  X(::kvcache::LowRankRows<16, 2>)      \
  X(::kvcache::LowRankRows<32, 2>)      \
  X(::kvcache::LowRankRows<64, 2>)      \
  X(::kvcache::LowRankRows<2, 2>)       \
  X(::kvcache::LowRankRows<3, 4>)
// clang-format on

#define KVCACHE_CUDA_DECLARE_ROW_CODEC(...)                                                 \
  extern template cudaError_t launch<__VA_ARGS__>(const CodecAppendParams<__VA_ARGS__>&,    \
                                                  cudaStream_t);                            \
  extern template cudaError_t launch<__VA_ARGS__>(const CodecGatherParams<__VA_ARGS__>&,    \
                                                  cudaStream_t);                            \
  extern template cudaError_t launch<__VA_ARGS__>(const CodecAttentionParams<__VA_ARGS__>&, \
                                                  cudaStream_t);
#define KVCACHE_CUDA_DECLARE_KIVI_CODEC(...)                                                \
  extern template cudaError_t launch<__VA_ARGS__>(const KiviFlushParams<__VA_ARGS__>&,      \
                                                  cudaStream_t);                            \
  extern template cudaError_t launch<__VA_ARGS__>(const KiviGatherParams<__VA_ARGS__>&,     \
                                                  cudaStream_t);                            \
  extern template cudaError_t launch<__VA_ARGS__>(const CodecAttentionParams<__VA_ARGS__>&, \
                                                  cudaStream_t);
KVCACHE_CUDA_INT8_CODECS(KVCACHE_CUDA_DECLARE_ROW_CODEC)
KVCACHE_CUDA_FP8_CODECS(KVCACHE_CUDA_DECLARE_ROW_CODEC)
KVCACHE_CUDA_LOW_RANK_CODECS(KVCACHE_CUDA_DECLARE_ROW_CODEC)
KVCACHE_CUDA_KIVI_CODECS(KVCACHE_CUDA_DECLARE_KIVI_CODEC)
#undef KVCACHE_CUDA_DECLARE_ROW_CODEC
#undef KVCACHE_CUDA_DECLARE_KIVI_CODEC

}  // namespace kvcache::kernels::cuda
