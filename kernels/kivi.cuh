// KIVI kernels, templates on the codec's row math (KiviRows<B, G, S>) and the
// element type T: flush whole token groups out of the full-precision rings
// into quantized pages, and gather (dequantize pages, copy ring rows).
//
// Flush: one CTA per (group, head). The group's source rows (ring slots or
//   new tokens) are resolved once, into shared memory: no division or
//   reload of `sources` per element. Keys per channel: thread c reads channel
//   c of the group's G rows (neighbouring threads, neighbouring values) in
//   two passes (range, then codes: no array of G values in registers) and
//   stores its channel's packed codes, then its scale and zero, one access
//   each. Values per token: the lane split of the per-token codecs.
// Gather of the pages: one CTA per (page, head); its sequence is found once
//   (thread 0's search, shared). Keys: thread c reads its channel's codes,
//   scale and zero once and writes the channel down the page's rows; values:
//   the lane split in reverse.
// Gather of the rings: one CTA per (sequence, ring position), 16-byte copies.
// The per-element math is KiviRows' host-device code, as on the CPU.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "kvcache/kernels/cuda.hpp"
#include "kvcache/kernels/mapping.hpp"
#include "kvcache/kernels/page_math.hpp"
#include "row_codec.cuh"

namespace kvcache::kernels::cuda {
namespace kivi_detail {

using detail::kThreads;

template <class Rows, class T>
__global__ void __launch_bounds__(kThreads)
    flush_kernel(KiviFlushParams<Rows> p, mapping::LaneTiling tiling) {
  constexpr int N = detail::kLaneValues<T>;
  constexpr std::int32_t kGroup = Rows::kGroup;
  const CodecPageView& view = p.cache;
  const auto g = static_cast<std::int32_t>(blockIdx.x);
  const auto head = static_cast<std::int32_t>(blockIdx.y);
  const std::int64_t page = p.pages[g];
  // The group's K and V rows of this head, resolved once.
  __shared__ const std::byte* source_rows[2][kGroup];
  for (std::int32_t i = static_cast<std::int32_t>(threadIdx.x); i < 2 * kGroup; i += kThreads) {
    const std::int32_t kv = i / kGroup;
    const std::int32_t t = i - kv * kGroup;
    const std::int64_t from = p.sources[std::int64_t{g} * kGroup + t];
    if (from >= 0) {
      // A ring slot: ring x ring size + position, below 2^31 (the launch checks).
      const auto slot = static_cast<std::int32_t>(from);
      const std::int32_t ring = slot / p.residual.page_size;
      source_rows[kv][t] =
          p.residual.data +
          p.residual.row_offset(ring, p.layer, kv, slot - ring * p.residual.page_size, head);
    } else {
      source_rows[kv][t] = p.source.row(kv, -from - 1, head);
    }
  }
  __syncthreads();
  int nonfinite = 0;
  auto* keys = reinterpret_cast<std::uint8_t*>(view.region_base(page, p.layer, 0));
  for (std::int32_t c = static_cast<std::int32_t>(threadIdx.x); c < view.head_dim; c += kThreads) {
    nonfinite += Rows::encode_key_channel(
        view, [&](std::int32_t t) { return load_element<T>(source_rows[0][t], c); }, keys, head, c);
  }
  const std::int32_t row_in_cta = tiling.row_in_cta(static_cast<std::int32_t>(threadIdx.x));
  const std::int32_t lane = tiling.lane(static_cast<std::int32_t>(threadIdx.x));
  for (std::int32_t first = 0; first < kGroup; first += tiling.rows_per_cta) {
    const std::int32_t t = first + row_in_cta;
    const bool active = row_in_cta < tiling.rows_per_cta && t < kGroup;
    float x[N] = {};
    if (active) detail::load_lane<T>(source_rows[1][t] + lane * 16, x);
    const typename Rows::Partial group = rows_detail::group_partial<Rows, N>(active, lane, x);
    if (active) {
      nonfinite +=
          Rows::template encode_lane<N>(lane, x, group, view.row_codes(page, p.layer, 1, t, head),
                                        view.row_scales(page, p.layer, 1, t, head), nullptr);
    }
  }
  detail::add_nonfinite(p.nonfinite, nonfinite);
}

template <class Rows, class T>
__global__ void __launch_bounds__(kThreads)
    gather_pages_kernel(KiviGatherParams<Rows> p, mapping::LaneTiling tiling) {
  constexpr int N = detail::kLaneValues<T>;
  constexpr std::int32_t kGroup = Rows::kGroup;
  const CodecPageView& view = p.cache;
  const PageTableView& table = p.table;
  const auto flat_page = static_cast<std::int32_t>(blockIdx.x);
  const auto head = static_cast<std::int32_t>(blockIdx.y);
  const std::int64_t first_row = page_of_table(table, flat_page, kGroup).first_row;
  const std::int64_t page = table.indices[flat_page];
  const std::int32_t d = view.head_dim;
  auto out_at = [&](void* out, std::int32_t t) {
    return static_cast<std::byte*>(out) +
           ((first_row + t) * view.num_heads + head) * d * std::int64_t{sizeof(T)};
  };
  const auto* keys = reinterpret_cast<const std::uint8_t*>(view.region_base(page, p.layer, 0));
  for (std::int32_t c = static_cast<std::int32_t>(threadIdx.x); c < d; c += kThreads) {
    Rows::decode_key_channel(view, keys, head, c, [&](std::int32_t t, float value) {
      store_element<T>(out_at(p.out.k, t), c, value);
    });
  }
  const std::int32_t row_in_cta = tiling.row_in_cta(static_cast<std::int32_t>(threadIdx.x));
  const std::int32_t lane = tiling.lane(static_cast<std::int32_t>(threadIdx.x));
  if (row_in_cta >= tiling.rows_per_cta) return;
  for (std::int32_t t = row_in_cta; t < kGroup; t += tiling.rows_per_cta) {
    float values[N];
    Rows::template decode_lane<N>(lane, view.row_codes(page, p.layer, 1, t, head),
                                  view.row_scales(page, p.layer, 1, t, head), nullptr, values);
    detail::store_lane<T>(out_at(p.out.v, t) + lane * 16, values);
  }
}

// Grid (sequences, ring size): the ring row at position `y` past the paged
// tokens, if the sequence has it; 16-byte vectors over (K/V, head, vector).
template <class Rows>
__global__ void __launch_bounds__(kThreads) gather_ring_kernel(KiviGatherParams<Rows> p) {
  const auto b = static_cast<std::int32_t>(blockIdx.x);
  const std::int64_t t = p.side.paged_tokens[b] + blockIdx.y;
  if (t >= p.side.total_tokens[b]) return;
  const PagedKVView& ring = p.residual;
  const std::int64_t slot = p.side.side_slot[b] * ring.page_size + t % ring.page_size;
  const std::int64_t row = p.table.out_row_offset[b] + t;
  const auto vecs_per_row = static_cast<std::int32_t>(ring.row_bytes() / 16);
  const std::int32_t total = 2 * ring.num_heads * vecs_per_row;
  for (std::int32_t index = static_cast<std::int32_t>(threadIdx.x); index < total;
       index += kThreads) {
    const mapping::AppendVector v = mapping::append_vector(index, ring.num_heads, vecs_per_row);
    const std::byte* source =
        ring.data + ring.slot_offset(slot, p.layer, v.kv, v.head) + v.vec * 16;
    std::byte* target = static_cast<std::byte*>(v.kv == 0 ? p.out.k : p.out.v) +
                        (row * ring.num_heads + v.head) * ring.row_bytes() + v.vec * 16;
    detail::store(target, *reinterpret_cast<const uint4*>(source));
  }
}

}  // namespace kivi_detail

template <class Rows>
cudaError_t launch(const KiviFlushParams<Rows>& p, cudaStream_t stream) {
  using detail::kThreads;
  if (const LaunchProblem problem = launch_problem(p)) return detail::status_of(problem);
  if (p.num_groups == 0) return cudaSuccess;
  if (const cudaError_t earlier = detail::take_earlier_error()) return earlier;
  return dispatch_dtype(p.cache.dtype, [&]<class T>() {
    const auto tiling = mapping::LaneTiling::of(p.cache.head_dim, sizeof(T), kThreads);
    const dim3 grid(static_cast<unsigned>(p.num_groups), static_cast<unsigned>(p.cache.num_heads));
    kivi_detail::flush_kernel<Rows, T><<<grid, kThreads, 0, stream>>>(p, tiling);
    return detail::finish_launch(stream);
  });
}

template <class Rows>
cudaError_t launch(const KiviGatherParams<Rows>& p, cudaStream_t stream) {
  using detail::kThreads;
  const PageTableView& table = p.table;
  if (const LaunchProblem problem = launch_problem(p)) return detail::status_of(problem);
  if (table.batch_size == 0 || p.side.total_rows == 0) return cudaSuccess;
  if (const cudaError_t earlier = detail::take_earlier_error()) return earlier;
  return dispatch_dtype(p.cache.dtype, [&]<class T>() {
    if (table.total_pages > 0) {
      const auto tiling = mapping::LaneTiling::of(p.cache.head_dim, sizeof(T), kThreads);
      const dim3 grid(static_cast<unsigned>(table.total_pages),
                      static_cast<unsigned>(p.cache.num_heads));
      kivi_detail::gather_pages_kernel<Rows, T><<<grid, kThreads, 0, stream>>>(p, tiling);
      const cudaError_t status = detail::finish_launch(stream);
      if (status != cudaSuccess) return status;
    }
    if (table.batch_size == 0) return cudaSuccess;
    const dim3 grid(static_cast<unsigned>(table.batch_size),
                    static_cast<unsigned>(p.residual.page_size));
    kivi_detail::gather_ring_kernel<Rows><<<grid, kThreads, 0, stream>>>(p);
    return detail::finish_launch(stream);
  });
}

#define KVCACHE_CUDA_INSTANTIATE_KIVI_CODEC(...)                                               \
  template cudaError_t launch<__VA_ARGS__>(const KiviFlushParams<__VA_ARGS__>&, cudaStream_t); \
  template cudaError_t launch<__VA_ARGS__>(const KiviGatherParams<__VA_ARGS__>&, cudaStream_t);

}  // namespace kvcache::kernels::cuda
