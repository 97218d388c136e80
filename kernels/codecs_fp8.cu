// The fp8 codec's CUDA kernels (KVCACHE_CUDA_FP8_CODECS in kvcache/kernels/cuda.hpp).
#include "row_codec.cuh"

namespace kvcache::kernels::cuda {
KVCACHE_CUDA_FP8_CODECS(KVCACHE_CUDA_INSTANTIATE_ROW_CODEC)
}  // namespace kvcache::kernels::cuda
