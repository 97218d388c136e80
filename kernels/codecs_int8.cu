// The int8 codec configurations the library's CUDA kernels are built for
// (the list is KVCACHE_CUDA_INT8_CODECS in kvcache/kernels/cuda.hpp).
#include "row_codec.cuh"

namespace kvcache::kernels::cuda {
KVCACHE_CUDA_INT8_CODECS(KVCACHE_CUDA_INSTANTIATE_ROW_CODEC)
}  // namespace kvcache::kernels::cuda
