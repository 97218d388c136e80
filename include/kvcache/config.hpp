// Compile-time configuration shared by host and device code.
#pragma once

#include "kvcache/version.hpp"

// Functions marked KVCACHE_HD are compiled for the device by nvcc and as plain
// C++ by the host compiler, so the CPU backend runs the same per-element math
// as the CUDA kernels.
#if defined(__CUDACC__)
#define KVCACHE_HD __host__ __device__ __forceinline__
#define KVCACHE_DEVICE_COMPILE 1
#else
#define KVCACHE_HD inline
#define KVCACHE_DEVICE_COMPILE 0
#endif

// Unrolls the next loop in device code (a lane's values, a packed word), so
// that its small arrays stay in registers; nothing on the host.
#if defined(__CUDA_ARCH__)
#define KVCACHE_UNROLL _Pragma("unroll")
#else
#define KVCACHE_UNROLL
#endif

// The shared math promises the GPU's bits on the CPU, so no product may be
// fused with a sum into an FMA there (nvcc is told --fmad=false and the exact
// intrinsics for the device half). The CPU backend's headers compile in the
// user's translation unit with the user's flags, and g++ contracts a * b + c
// by default wherever FMA exists (aarch64, -march=native, x86-64-v3). So the
// headers that hold that math and the CPU kernels that run it are wrapped in
// KVCACHE_EXACT_FP_BEGIN / END: under g++, their functions are compiled with
// -ffp-contract=off whatever the command line says (and, having their own
// options, are not inlined into the user's functions, only into each other);
// under clang the pragma turns contraction off for the region, which clang
// honours in its default mode (-ffp-contract=on) and with
// -ffp-contract=fast-honor-pragmas, not with plain -ffp-contract=fast. The
// user's own code keeps the user's flags.
#if defined(__CUDACC__) || !defined(__GNUC__)
#define KVCACHE_EXACT_FP_BEGIN
#define KVCACHE_EXACT_FP_END
#elif defined(__clang__)
#define KVCACHE_EXACT_FP_BEGIN _Pragma("float_control(push)") _Pragma("clang fp contract(off)")
#define KVCACHE_EXACT_FP_END _Pragma("float_control(pop)")
#else
#define KVCACHE_EXACT_FP_BEGIN \
  _Pragma("GCC push_options") _Pragma("GCC optimize(\"fp-contract=off\")")
#define KVCACHE_EXACT_FP_END _Pragma("GCC pop_options")
#endif
