// The low-rank codec configurations the library's CUDA kernels are built for
// (KVCACHE_CUDA_LOW_RANK_CODECS in kvcache/kernels/cuda.hpp).
#include "row_codec.cuh"

namespace kvcache::kernels::cuda {
KVCACHE_CUDA_LOW_RANK_CODECS(KVCACHE_CUDA_INSTANTIATE_ROW_CODEC)
}  // namespace kvcache::kernels::cuda
