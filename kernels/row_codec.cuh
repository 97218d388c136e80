// Fused quantize-append and dequantize-gather for the per-token codecs, as
// templates on the codec's row math (Rows) and the element type T, so every
// codec parameter is a compile-time constant; instantiated per codec in
// kernels/codecs_*.cu (KVCACHE_CUDA_*_CODECS in kvcache/kernels/cuda.hpp).
//
// Lane codecs (int8, fp8, KIVI values; Rows::kLaneCodec): a row's head_dim
// values are split into lanes of 16 bytes of input, one thread each
// (mapping::LaneTiling), so a warp reads and writes neighbouring rows with
// 16-byte loads and adjacent code bytes. A scale group spanning several
// lanes (int8 g32 over fp16: 4 lanes) combines the lanes' partial statistics
// through shared memory; the per-element math is the codec's host-device
// code (encode_lane / decode_lane), bit for bit what the CPU computes.
//
// Low-rank: an append CTA takes a tile of tokens of one (K/V, head), holds
// their rows in shared memory (row stride head_dim + 1: no bank conflicts),
// and each thread computes coefficients with the codec's own in-order sums,
// reading the basis through the cache. A gather CTA takes several pages of
// one (K/V, head), copies the basis once into shared memory, transposed and
// padded, and each thread computes output values (neighbouring threads,
// neighbouring words), again in the codec's order.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "kvcache/kernels/cuda.hpp"
#include "kvcache/kernels/mapping.hpp"
#include "kvcache/kernels/page_math.hpp"

namespace kvcache::kernels::cuda {
namespace rows_detail {

using detail::kThreads;

// ---- lane codecs ------------------------------------------------------------------

// The statistics of the scale group of the calling thread's lane: combined
// over the group's lanes through shared memory when the group spans lanes.
// Every thread of the CTA must call it (it synchronizes).
template <class Rows, int N>
__device__ __forceinline__ typename Rows::Partial group_partial(bool active, std::int32_t lane,
                                                                const float (&x)[N]) {
  using Partial = typename Rows::Partial;
  Partial group{};
  if constexpr (Rows::template kGroupSpansLanes<N>) {
    __shared__ Partial partials[kThreads];
    partials[threadIdx.x] = active ? Rows::template lane_partial<N>(x) : Partial{};
    __syncthreads();
    if (active) {
      constexpr int kGroupLanes = Rows::kGroup / N;
      const int first = static_cast<int>(threadIdx.x) - lane % kGroupLanes;
      group = partials[first];
#pragma unroll
      for (int i = 1; i < kGroupLanes; ++i)
        group = Rows::combine(group, partials[first + i]);
    }
    __syncthreads();
  }
  return group;
}

template <class Rows, class T>
__global__ void __launch_bounds__(kThreads)
    lane_append_kernel(CodecAppendParams<Rows> p, mapping::LaneTiling tiling) {
  constexpr int N = detail::kLaneValues<T>;
  const CodecPageView& view = p.cache;
  const std::int32_t row_in_cta = tiling.row_in_cta(static_cast<std::int32_t>(threadIdx.x));
  const std::int32_t lane = tiling.lane(static_cast<std::int32_t>(threadIdx.x));
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * tiling.rows_per_cta + row_in_cta;
  bool active = row_in_cta < tiling.rows_per_cta &&
                row < std::int64_t{p.slots.num_tokens} * 2 * view.num_heads;
  mapping::AppendRow r;
  std::int64_t slot = -1;
  if (active) {
    r = mapping::append_row(row, view.num_heads);
    slot = p.slots.slots[r.token];
    active = slot >= 0;
  }
  float x[N] = {};
  if (active) detail::load_lane<T>(p.source.row(r.kv, r.token, r.head) + lane * 16, x);
  const typename Rows::Partial group = group_partial<Rows, N>(active, lane, x);
  int nonfinite = 0;
  if (active) {
    const std::int64_t page = slot / view.page_size;
    const auto in_page = static_cast<std::int32_t>(slot - page * view.page_size);
    nonfinite = Rows::template encode_lane<N>(
        lane, x, group, view.row_codes(page, p.layer, r.kv, in_page, r.head),
        view.row_scales(page, p.layer, r.kv, in_page, r.head),
        row_state<Rows>(p.state, view, p.layer, r.kv, r.head));
  }
  detail::add_nonfinite(p.nonfinite, nonfinite);
}

template <class Rows, class T>
__global__ void __launch_bounds__(kThreads)
    lane_gather_kernel(CodecGatherParams<Rows> p, mapping::LaneTiling tiling,
                       std::int32_t ctas_per_page) {
  constexpr int N = detail::kLaneValues<T>;
  const CodecPageView& view = p.cache;
  // A CTA takes rows of one page: (page, chunk of its rows).
  const auto flat_page = static_cast<std::int32_t>(blockIdx.x / ctas_per_page);
  const auto chunk =
      static_cast<std::int32_t>(blockIdx.x - std::int64_t{flat_page} * ctas_per_page);
  const PageOfTable at = page_of_table(p.table, flat_page, view.page_size);
  const std::int32_t row_in_cta = tiling.row_in_cta(static_cast<std::int32_t>(threadIdx.x));
  const std::int32_t lane = tiling.lane(static_cast<std::int32_t>(threadIdx.x));
  const std::int32_t row = chunk * tiling.rows_per_cta + row_in_cta;
  if (row_in_cta >= tiling.rows_per_cta || row >= view.page_size * 2 * view.num_heads) return;
  const mapping::GatherRow g = mapping::gather_row(row, view.page_size, view.num_heads);
  if (g.token >= at.tokens) return;
  const std::int64_t page = p.table.indices[flat_page];
  float values[N];
  Rows::template decode_lane<N>(lane, view.row_codes(page, p.layer, g.kv, g.token, g.head),
                                view.row_scales(page, p.layer, g.kv, g.token, g.head),
                                row_state<Rows>(p.state, view, p.layer, g.kv, g.head), values);
  auto* out = static_cast<std::byte*>(g.kv == 0 ? p.out.k : p.out.v);
  detail::store_lane<T>(
      out + (((at.first_row + g.token) * view.num_heads + g.head) * view.head_dim + lane * N) *
                std::int64_t{sizeof(T)},
      values);
}

// ---- low-rank ----------------------------------------------------------------------

// Grid (token tiles, K/V x heads); thread (token in tile, coefficient j).
// The tile's rows sit in shared memory (dynamic, tile_tokens x (head_dim + 1)
// floats: the odd stride keeps the threads of a warp, which read one column
// of several rows, on distinct banks).
template <class Rows, class T>
__global__ void __launch_bounds__(kThreads)
    low_rank_append_kernel(CodecAppendParams<Rows> p, mapping::LowRankTiling tiling) {
  constexpr std::int32_t kRank = Rows::kRank;
  constexpr std::int32_t kBytes = Rows::kCoefficientBytes;
  extern __shared__ float rows[];
  const CodecPageView& view = p.cache;
  const std::int32_t d = view.head_dim;
  const std::int32_t stride = mapping::low_rank_row_stride(d);
  const auto kv = static_cast<std::int32_t>(blockIdx.y) / view.num_heads;
  const auto head = static_cast<std::int32_t>(blockIdx.y) - kv * view.num_heads;
  const std::int64_t first_token = static_cast<std::int64_t>(blockIdx.x) * tiling.tile_tokens;
  // The tile's rows: neighbouring threads read neighbouring values of a row
  // (one division per row, not per value).
  for (std::int32_t t = 0; t < tiling.tile_tokens; ++t) {
    const std::int64_t token = first_token + t;
    const bool present = token < p.slots.num_tokens && p.slots.slots[token] >= 0;
    const std::byte* source = present ? p.source.row(kv, token, head) : nullptr;
    for (std::int32_t i = static_cast<std::int32_t>(threadIdx.x); i < d; i += kThreads)
      rows[t * stride + i] = present ? load_element<T>(source, i) : 0.0f;
  }
  __syncthreads();
  const std::int32_t t = tiling.token_in_tile(static_cast<std::int32_t>(threadIdx.x));
  const std::int64_t token = first_token + t;
  int nonfinite = 0;
  if (static_cast<std::int32_t>(threadIdx.x) < tiling.threads() && token < p.slots.num_tokens) {
    const std::int64_t slot = p.slots.slots[token];
    if (slot >= 0) {
      const std::int64_t page = slot / view.page_size;
      const auto in_page = static_cast<std::int32_t>(slot - page * view.page_size);
      std::uint8_t* codes = view.row_codes(page, p.layer, kv, in_page, head);
      const float* basis = row_state<Rows>(p.state, view, p.layer, kv, head);
      const float* row = rows + t * stride;
      auto load = [&](std::int32_t i) { return row[i]; };
      const std::int32_t j0 = tiling.first_item(static_cast<std::int32_t>(threadIdx.x));
      for (std::int32_t j = j0; j < kRank; j += tiling.per_token)
        codec::store_scale(codes + j * kBytes, Rows::coefficient(d, load, basis, j), kBytes);
      if (j0 == 0) {
        for (std::int32_t i = 0; i < d; ++i)
          nonfinite += codec::is_finite(row[i]) ? 0 : 1;
      }
    }
  }
  detail::add_nonfinite(p.nonfinite, nonfinite);
}

// Grid (groups of kLowRankPagesPerCta pages, K/V x heads); thread (token of
// a pass, output value i). One copy of the basis per CTA serves all its
// pages' tokens: [rank][head_dim + 1] floats in shared memory (dynamic),
// written once from a coalesced read (at most 4-way bank conflicts, 2-way
// from rank 16 on) and read
// by a warp along i without any; when it does not fit in 47 KB
// (low_rank_basis_fits), read from global memory. Each pass's coefficients
// are decoded once into shared memory (not once per output value).
template <class Rows, class T, bool kSharedBasis>
__global__ void __launch_bounds__(kThreads)
    low_rank_gather_kernel(CodecGatherParams<Rows> p, mapping::LowRankTiling tiling) {
  constexpr std::int32_t kRank = Rows::kRank;
  constexpr std::int32_t kBytes = Rows::kCoefficientBytes;
  constexpr std::int32_t kPages = mapping::kLowRankPagesPerCta;
  static_assert(kRank <= kThreads, "a pass's coefficients fit one float a thread");
  extern __shared__ float basis_t[];
  __shared__ PageOfTable pages[kPages];
  // [tile_tokens][rank]: tile_tokens = threads / min(head_dim, threads) and
  // rank <= head_dim (the launch checks), so at most one float a thread.
  __shared__ float coefficients[kThreads];
  static_assert(sizeof(pages) + sizeof(coefficients) <= mapping::kLowRankStaticSharedBytes);
  const CodecPageView& view = p.cache;
  const PageTableView& table = p.table;
  const std::int32_t d = view.head_dim;
  const std::int32_t stride = mapping::low_rank_row_stride(d);
  const auto thread = static_cast<std::int32_t>(threadIdx.x);
  const auto kv = static_cast<std::int32_t>(blockIdx.y) / view.num_heads;
  const auto head = static_cast<std::int32_t>(blockIdx.y) - kv * view.num_heads;
  const std::int32_t first_page = static_cast<std::int32_t>(blockIdx.x) * kPages;
  const float* basis = row_state<Rows>(p.state, view, p.layer, kv, head);
  if constexpr (kSharedBasis) {
    // basis [d][rank] -> basis_t [rank][stride]
    for (std::int32_t e = thread; e < d * kRank; e += kThreads) {
      const std::int32_t i = e / kRank;
      const std::int32_t j = e - i * kRank;
      basis_t[j * stride + i] = basis[e];
    }
  }
  // The CTA's pages' sequences, found once each.
  if (thread < kPages && first_page + thread < table.total_pages)
    pages[thread] = locate_page(table, first_page + thread, view.page_size);
  __syncthreads();
  void* out = kv == 0 ? p.out.k : p.out.v;
  const std::int32_t t = tiling.token_in_tile(thread);
  const std::int32_t i0 = tiling.first_item(thread);
  const bool computes = thread < tiling.threads();
  for (std::int32_t k = 0; k < kPages && first_page + k < table.total_pages; ++k) {
    const PageOfTable at = pages[k];
    const std::int64_t page = table.indices[first_page + k];
    // Passes of tile_tokens tokens; the same count for every thread.
    for (std::int32_t first = 0; first < at.tokens; first += tiling.tile_tokens) {
      for (std::int32_t e = thread; e < tiling.tile_tokens * kRank; e += kThreads) {
        const std::int32_t token = first + e / kRank;
        const std::int32_t j = e % kRank;
        coefficients[e] =
            token < at.tokens
                ? codec::load_scale(view.row_codes(page, p.layer, kv, token, head) + j * kBytes,
                                    kBytes)
                : 0.0f;
      }
      __syncthreads();
      const std::int32_t token = first + t;
      if (computes && token < at.tokens) {
        const float* c = coefficients + t * kRank;
        const std::int64_t base = ((at.first_row + token) * view.num_heads + head) * d;
        for (std::int32_t i = i0; i < d; i += tiling.per_token) {
          // LowRankRows::value's sum, in the same order.
          float value = 0.0f;
#pragma unroll 4
          for (std::int32_t j = 0; j < kRank; ++j) {
            const float b = kSharedBasis ? basis_t[j * stride + i] : basis[i * kRank + j];
            value = codec::add_exact(value, codec::mul_exact(c[j], b));
          }
          store_element<T>(out, base + i, value);
        }
      }
      __syncthreads();
    }
  }
}

}  // namespace rows_detail

// ---- launchers ---------------------------------------------------------------------

template <class Rows>
cudaError_t launch(const CodecAppendParams<Rows>& p, cudaStream_t stream) {
  using rows_detail::kThreads;
  if (const LaunchProblem problem = launch_problem(p)) return detail::status_of(problem);
  if (p.slots.num_tokens == 0) return cudaSuccess;
  if (const cudaError_t earlier = detail::take_earlier_error()) return earlier;
  return dispatch_dtype(p.cache.dtype, [&]<class T>() {
    if constexpr (Rows::kLaneCodec) {
      const std::int64_t rows = std::int64_t{p.slots.num_tokens} * 2 * p.cache.num_heads;
      const auto tiling = mapping::LaneTiling::of(p.cache.head_dim, sizeof(T), kThreads);
      rows_detail::lane_append_kernel<Rows, T>
          <<<static_cast<unsigned>(tiling.ctas(rows)), kThreads, 0, stream>>>(p, tiling);
    } else {
      const auto tiling = mapping::LowRankTiling::append(Rows::kRank, p.cache.head_dim, kThreads);
      const dim3 grid(detail::blocks_for(p.slots.num_tokens, tiling.tile_tokens),
                      static_cast<unsigned>(2 * p.cache.num_heads));
      const auto shared = static_cast<std::size_t>(tiling.tile_tokens) *
                          mapping::low_rank_row_stride(p.cache.head_dim) * sizeof(float);
      rows_detail::low_rank_append_kernel<Rows, T><<<grid, kThreads, shared, stream>>>(p, tiling);
    }
    return detail::finish_launch(stream);
  });
}

template <class Rows>
cudaError_t launch(const CodecGatherParams<Rows>& p, cudaStream_t stream) {
  using rows_detail::kThreads;
  const PageTableView& table = p.table;
  if (const LaunchProblem problem = launch_problem(p)) return detail::status_of(problem);
  if (table.batch_size == 0 || table.total_pages == 0) return cudaSuccess;
  if (const cudaError_t earlier = detail::take_earlier_error()) return earlier;
  return dispatch_dtype(p.cache.dtype, [&]<class T>() {
    if constexpr (Rows::kLaneCodec) {
      const auto tiling = mapping::LaneTiling::of(p.cache.head_dim, sizeof(T), kThreads);
      const std::int32_t per_page = tiling.ctas_per_page(p.cache.page_size, p.cache.num_heads);
      const std::int64_t ctas = std::int64_t{table.total_pages} * per_page;
      if (ctas > 0x7fffffff) return cudaErrorInvalidConfiguration;
      rows_detail::lane_gather_kernel<Rows, T>
          <<<static_cast<unsigned>(ctas), kThreads, 0, stream>>>(p, tiling, per_page);
    } else {
      const auto tiling = mapping::LowRankTiling::gather(p.cache.head_dim, kThreads);
      const dim3 grid(detail::blocks_for(table.total_pages, mapping::kLowRankPagesPerCta),
                      static_cast<unsigned>(2 * p.cache.num_heads));
      if (mapping::low_rank_basis_fits(p.cache.head_dim, Rows::kRank)) {
        const auto shared = static_cast<std::size_t>(Rows::kRank) *
                            mapping::low_rank_row_stride(p.cache.head_dim) * sizeof(float);
        rows_detail::low_rank_gather_kernel<Rows, T, true>
            <<<grid, kThreads, shared, stream>>>(p, tiling);
      } else {
        rows_detail::low_rank_gather_kernel<Rows, T, false>
            <<<grid, kThreads, 0, stream>>>(p, tiling);
      }
    }
    return detail::finish_launch(stream);
  });
}

// Explicit instantiation of a row codec's launchers (kernels/codecs_*.cu).
#define KVCACHE_CUDA_INSTANTIATE_ROW_CODEC(...)                                                  \
  template cudaError_t launch<__VA_ARGS__>(const CodecAppendParams<__VA_ARGS__>&, cudaStream_t); \
  template cudaError_t launch<__VA_ARGS__>(const CodecGatherParams<__VA_ARGS__>&, cudaStream_t);

}  // namespace kvcache::kernels::cuda
