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
// Low-rank: a CTA takes a tile of tokens of one (K/V, head), holds their rows
// (append) in shared memory, and each thread computes coefficients (append)
// or output values (gather) with the codec's own in-order sums; the basis is
// read through the cache (append) or from a transposed copy in shared memory
// (gather) so neighbouring threads read neighbouring words.
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
    lane_gather_kernel(CodecGatherParams<Rows> p, mapping::LaneTiling tiling) {
  constexpr int N = detail::kLaneValues<T>;
  const CodecPageView& view = p.cache;
  const PageTableView& table = p.table;
  const std::int32_t row_in_cta = tiling.row_in_cta(static_cast<std::int32_t>(threadIdx.x));
  const std::int32_t lane = tiling.lane(static_cast<std::int32_t>(threadIdx.x));
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * tiling.rows_per_cta + row_in_cta;
  if (row_in_cta >= tiling.rows_per_cta ||
      row >= std::int64_t{table.total_pages} * view.page_size * 2 * view.num_heads) {
    return;
  }
  const mapping::GatherRow g = mapping::gather_row(row, view.page_size, view.num_heads);
  const std::int32_t b = owning_sequence(table.indptr, table.batch_size, g.flat_page);
  const std::int32_t first = table.indptr[b];
  const std::int32_t page_in_sequence = g.flat_page - first;
  if (g.token >= tokens_in_page(page_in_sequence, table.indptr[b + 1] - first,
                                table.last_page_len[b], view.page_size)) {
    return;
  }
  const std::int64_t page = table.indices[g.flat_page];
  const std::int64_t out_row =
      table.out_row_offset[b] + std::int64_t{page_in_sequence} * view.page_size + g.token;
  float values[N];
  Rows::template decode_lane<N>(lane, view.row_codes(page, p.layer, g.kv, g.token, g.head),
                                view.row_scales(page, p.layer, g.kv, g.token, g.head),
                                row_state<Rows>(p.state, view, p.layer, g.kv, g.head), values);
  auto* out = static_cast<std::byte*>(g.kv == 0 ? p.out.k : p.out.v);
  detail::store_lane<T>(out + ((out_row * view.num_heads + g.head) * view.head_dim + lane * N) *
                                  std::int64_t{sizeof(T)},
                        values);
}

// ---- low-rank ----------------------------------------------------------------------

constexpr std::int32_t kTileFloats = mapping::kLowRankTileFloats;
constexpr std::int32_t kSharedBasisFloats = mapping::kLowRankSharedBasisFloats;

// Grid (token tiles, K/V x heads); thread (token in tile, coefficient j).
template <class Rows, class T>
__global__ void __launch_bounds__(kThreads)
    low_rank_append_kernel(CodecAppendParams<Rows> p, mapping::LowRankTiling tiling) {
  constexpr std::int32_t kRank = Rows::kRank;
  constexpr std::int32_t kBytes = Rows::kCoefficientBytes;
  __shared__ float rows[kTileFloats];
  const CodecPageView& view = p.cache;
  const std::int32_t d = view.head_dim;
  const auto kv = static_cast<std::int32_t>(blockIdx.y) / view.num_heads;
  const auto head = static_cast<std::int32_t>(blockIdx.y) - kv * view.num_heads;
  const std::int64_t first_token = static_cast<std::int64_t>(blockIdx.x) * tiling.tile_tokens;
  const std::int32_t threads = tiling.threads();
  // The tile's rows: neighbouring threads read neighbouring values of a row.
  for (std::int32_t e = static_cast<std::int32_t>(threadIdx.x); e < tiling.tile_tokens * d;
       e += kThreads) {
    const std::int64_t token = first_token + e / d;
    float value = 0.0f;
    if (token < p.slots.num_tokens && p.slots.slots[token] >= 0)
      value = load_element<T>(p.source.row(kv, token, head), e % d);
    rows[e] = value;
  }
  __syncthreads();
  const std::int32_t t = tiling.token_in_tile(static_cast<std::int32_t>(threadIdx.x));
  const std::int64_t token = first_token + t;
  int nonfinite = 0;
  if (static_cast<std::int32_t>(threadIdx.x) < threads && token < p.slots.num_tokens) {
    const std::int64_t slot = p.slots.slots[token];
    if (slot >= 0) {
      const std::int64_t page = slot / view.page_size;
      const auto in_page = static_cast<std::int32_t>(slot - page * view.page_size);
      std::uint8_t* codes = view.row_codes(page, p.layer, kv, in_page, head);
      const float* basis = row_state<Rows>(p.state, view, p.layer, kv, head);
      const float* row = rows + t * d;
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

// Grid (pages x token tiles of a page, K/V x heads); thread (token, dim i).
template <class Rows, class T, bool kSharedBasis>
__global__ void __launch_bounds__(kThreads)
    low_rank_gather_kernel(CodecGatherParams<Rows> p, mapping::LowRankTiling tiling,
                           std::int32_t tiles_per_page) {
  constexpr std::int32_t kRank = Rows::kRank;
  constexpr std::int32_t kBytes = Rows::kCoefficientBytes;
  __shared__ float basis_t[kSharedBasis ? kSharedBasisFloats : 1];
  const CodecPageView& view = p.cache;
  const PageTableView& table = p.table;
  const std::int32_t d = view.head_dim;
  const auto kv = static_cast<std::int32_t>(blockIdx.y) / view.num_heads;
  const auto head = static_cast<std::int32_t>(blockIdx.y) - kv * view.num_heads;
  const auto flat_page = static_cast<std::int32_t>(blockIdx.x) / tiles_per_page;
  const std::int32_t tile = static_cast<std::int32_t>(blockIdx.x) - flat_page * tiles_per_page;
  const float* basis = row_state<Rows>(p.state, view, p.layer, kv, head);
  const std::int32_t threads = tiling.threads();
  if constexpr (kSharedBasis) {
    // basis [d][rank] -> basis_t [rank][d]: threads of one output row read
    // neighbouring words.
    for (std::int32_t e = static_cast<std::int32_t>(threadIdx.x); e < d * kRank; e += kThreads) {
      const std::int32_t i = e / kRank;
      const std::int32_t j = e - i * kRank;
      basis_t[j * d + i] = basis[e];
    }
    __syncthreads();
  }
  const std::int32_t b = owning_sequence(table.indptr, table.batch_size, flat_page);
  const std::int32_t first = table.indptr[b];
  const std::int32_t page_in_sequence = flat_page - first;
  const std::int32_t tokens = tokens_in_page(page_in_sequence, table.indptr[b + 1] - first,
                                             table.last_page_len[b], view.page_size);
  const std::int32_t token =
      tile * tiling.tile_tokens + tiling.token_in_tile(static_cast<std::int32_t>(threadIdx.x));
  if (static_cast<std::int32_t>(threadIdx.x) >= threads || token >= tokens) return;
  const std::int64_t page = table.indices[flat_page];
  const std::uint8_t* codes = view.row_codes(page, p.layer, kv, token, head);
  const std::int64_t out_row =
      table.out_row_offset[b] + std::int64_t{page_in_sequence} * view.page_size + token;
  void* out = kv == 0 ? p.out.k : p.out.v;
  const std::int64_t base = (out_row * view.num_heads + head) * d;
  for (std::int32_t i = tiling.first_item(static_cast<std::int32_t>(threadIdx.x)); i < d;
       i += tiling.per_token) {
    float value;
    if constexpr (kSharedBasis) {
      // LowRankRows::value's sum, in the same order, over the transposed copy.
      value = 0.0f;
      for (std::int32_t j = 0; j < kRank; ++j) {
        value = codec::add_exact(
            value,
            codec::mul_exact(codec::load_scale(codes + j * kBytes, kBytes), basis_t[j * d + i]));
      }
    } else {
      value = Rows::value(codes, basis, i);
    }
    store_element<T>(out, base + i, value);
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
      const auto tiling = mapping::LowRankTiling::of(Rows::kRank, p.cache.head_dim, kThreads);
      const dim3 grid(detail::blocks_for(p.slots.num_tokens, tiling.tile_tokens),
                      static_cast<unsigned>(2 * p.cache.num_heads));
      rows_detail::low_rank_append_kernel<Rows, T><<<grid, kThreads, 0, stream>>>(p, tiling);
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
      const std::int64_t rows =
          std::int64_t{table.total_pages} * p.cache.page_size * 2 * p.cache.num_heads;
      rows_detail::lane_gather_kernel<Rows, T>
          <<<static_cast<unsigned>(tiling.ctas(rows)), kThreads, 0, stream>>>(p, tiling);
    } else {
      const auto tiling = mapping::LowRankTiling::of(p.cache.head_dim, 1, kThreads);
      const auto tiles =
          static_cast<std::int32_t>(detail::blocks_for(p.cache.page_size, tiling.tile_tokens));
      const dim3 grid(static_cast<unsigned>(std::int64_t{table.total_pages} * tiles),
                      static_cast<unsigned>(2 * p.cache.num_heads));
      if (std::int64_t{p.cache.head_dim} * Rows::kRank <= rows_detail::kSharedBasisFloats) {
        rows_detail::low_rank_gather_kernel<Rows, T, true>
            <<<grid, kThreads, 0, stream>>>(p, tiling, tiles);
      } else {
        rows_detail::low_rank_gather_kernel<Rows, T, false>
            <<<grid, kThreads, 0, stream>>>(p, tiling, tiles);
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
