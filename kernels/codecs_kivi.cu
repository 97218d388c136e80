// The KIVI codec configurations the library's CUDA kernels are built for
// (KVCACHE_CUDA_KIVI_CODECS in kvcache/kernels/cuda.hpp).
#include "kivi.cuh"

namespace kvcache::kernels::cuda {
KVCACHE_CUDA_KIVI_CODECS(KVCACHE_CUDA_INSTANTIATE_KIVI_CODEC)
}  // namespace kvcache::kernels::cuda
