// A CUDA engine's includes: the manager and the CUDA backend parse none of
// the CPU backend (its kernels, AVX2 intrinsics, fp16 tables).
#include "kvcache/backend/cuda.hpp"
#include "kvcache/export.hpp"
#include "kvcache/manager.hpp"

#if defined(KVCACHE_INT8_SIMD)
#error "manager.hpp or backend/cuda.hpp pulled in the CPU backend's kernels"
#endif
