// KIVI kernels: flush whole token groups out of the full-precision rings
// into quantized pages (keys per channel, values per token), and gather
// (dequantize pages, copy ring rows).
//
// Flush units: (group, head, channel) for keys, reading the channel across
// the group's tokens; (group, token, head) for values. Gather units:
// (output row, K/V, head).
#include "common.cuh"
#include "kvcache/codec/row_codec.hpp"
#include "kvcache/kernels/cuda.hpp"

namespace kvcache::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) kivi_flush_kernel(KiviFlushParams p) {
  const CodecPageView& view = p.cache;
  const std::int32_t group = view.page_size;
  const std::int64_t key_units = std::int64_t{view.num_heads} * view.head_dim;
  const std::int64_t value_units = std::int64_t{group} * view.num_heads;
  const std::int64_t per_group = key_units + value_units;
  const std::int64_t index = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= per_group * p.num_groups) return;
  const auto g = static_cast<std::int32_t>(index / per_group);
  const std::int64_t unit = index - std::int64_t{g} * per_group;
  const std::int64_t page = p.pages[g];
  const std::int64_t* sources = p.sources + std::int64_t{g} * group;
  std::int32_t nonfinite = 0;
  if (unit < key_units) {
    const auto head = static_cast<std::int32_t>(unit / view.head_dim);
    const auto channel = static_cast<std::int32_t>(unit - std::int64_t{head} * view.head_dim);
    auto* keys = reinterpret_cast<std::uint8_t*>(view.region_base(page, p.layer, 0));
    nonfinite = codec::encode_key_channel(
        view,
        [&](std::int32_t t) {
          return load_as_float(flush_source_row(p, sources[t], 0, head), view.dtype, channel);
        },
        keys, head, channel);
  } else {
    const std::int64_t rest = unit - key_units;
    const auto token = static_cast<std::int32_t>(rest / view.num_heads);
    const auto head = static_cast<std::int32_t>(rest - std::int64_t{token} * view.num_heads);
    const RegionLayout& r = view.region[1];
    auto* region = reinterpret_cast<std::uint8_t*>(view.region_base(page, p.layer, 1));
    nonfinite = codec::encode_row(
        view,
        [&](std::int32_t d) {
          return load_as_float(flush_source_row(p, sources[token], 1, head), view.dtype, d);
        },
        region + token * r.code_token_bytes + head * r.code_head_bytes,
        region + r.scales_offset + token * r.scale_token_bytes + head * r.scale_head_bytes,
        nullptr);
  }
  if (nonfinite != 0 && p.nonfinite != nullptr)
    atomicAdd(p.nonfinite, static_cast<unsigned long long>(nonfinite));
}

// The sequence whose rows [offset[b], offset[b + 1]) hold `row`.
__device__ std::int32_t row_owner(const std::int64_t* offsets, std::int32_t batch,
                                  std::int64_t row) {
  std::int32_t low = 0, high = batch;
  while (high - low > 1) {
    const std::int32_t mid = low + (high - low) / 2;
    if (offsets[mid] <= row) {
      low = mid;
    } else {
      high = mid;
    }
  }
  return low;
}

__global__ void __launch_bounds__(kThreads) kivi_gather_kernel(KiviGatherParams p) {
  const CodecPageView& view = p.cache;
  const std::int64_t per_row = std::int64_t{2} * view.num_heads;
  const std::int64_t index = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= per_row * p.total_rows) return;
  const std::int64_t row = p.out_row_offset[0] + index / per_row;
  const std::int64_t rest = index % per_row;
  const auto kv = static_cast<std::int32_t>(rest / view.num_heads);
  const auto head = static_cast<std::int32_t>(rest - std::int64_t{kv} * view.num_heads);
  const std::int32_t b = row_owner(p.out_row_offset, p.batch_size, row);
  const std::int64_t t = row - p.out_row_offset[b];
  void* out = kv == 0 ? p.k_out : p.v_out;
  const std::int64_t base = (row * view.num_heads + head) * view.head_dim;
  if (t < p.quantized_tokens[b]) {
    const std::int64_t page = p.page_indices[p.page_indptr[b] + t / view.page_size];
    const auto in_page = static_cast<std::int32_t>(t % view.page_size);
    const auto* region = reinterpret_cast<const std::uint8_t*>(view.region_base(page, p.layer, kv));
    if (kv == 0) {
      for (std::int32_t d = 0; d < view.head_dim; ++d) {
        store_from_float(out, view.dtype, base + d,
                         codec::decode_key(view, region, head, d, in_page));
      }
    } else {
      const RegionLayout& r = view.region[1];
      codec::decode_row(
          view, region + in_page * r.code_token_bytes + head * r.code_head_bytes,
          region + r.scales_offset + in_page * r.scale_token_bytes + head * r.scale_head_bytes,
          nullptr,
          [&](std::int32_t d, float value) { store_from_float(out, view.dtype, base + d, value); });
    }
  } else {
    const std::int64_t ring = p.residual.page_size;
    const std::int64_t slot = p.ring[b] * ring + t % ring;
    const std::byte* source = p.residual.data + p.residual.slot_offset(slot, p.layer, kv, head);
    std::byte* target = static_cast<std::byte*>(out) + base * dtype_size(view.dtype);
    for (std::int64_t i = 0; i < p.residual.row_bytes(); i += 16) {
      *reinterpret_cast<uint4*>(target + i) = *reinterpret_cast<const uint4*>(source + i);
    }
  }
}

unsigned blocks_for(std::int64_t threads) {
  return static_cast<unsigned>((threads + kThreads - 1) / kThreads);
}

}  // namespace

cudaError_t launch_kivi_flush(const KiviFlushParams& p, cudaStream_t stream) {
  if (p.num_groups < 0 || p.layer < 0 || p.layer >= p.cache.num_layers)
    return cudaErrorInvalidValue;
  if (p.num_groups == 0) return cudaSuccess;
  if (p.cache.data == nullptr || p.residual.data == nullptr || p.sources == nullptr ||
      p.pages == nullptr || p.cache.kind != CodecKind::kKivi) {
    return cudaErrorInvalidValue;
  }
  const std::int64_t units =
      std::int64_t{p.num_groups} * (std::int64_t{p.cache.num_heads} * p.cache.head_dim +
                                    std::int64_t{p.cache.page_size} * p.cache.num_heads);
  kivi_flush_kernel<<<blocks_for(units), kThreads, 0, stream>>>(p);
  return detail::finish_launch(stream);
}

cudaError_t launch_kivi_gather(const KiviGatherParams& p, cudaStream_t stream) {
  if (p.batch_size < 0 || p.total_rows < 0 || p.layer < 0 || p.layer >= p.cache.num_layers) {
    return cudaErrorInvalidValue;
  }
  if (p.total_rows == 0) return cudaSuccess;
  if (p.cache.data == nullptr || p.residual.data == nullptr || p.k_out == nullptr ||
      p.v_out == nullptr || p.out_row_offset == nullptr || p.quantized_tokens == nullptr ||
      p.total_tokens == nullptr || p.ring == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (!detail::aligned16(p.k_out) || !detail::aligned16(p.v_out) ||
      !detail::multiple_of_16(p.residual.row_bytes())) {
    return cudaErrorMisalignedAddress;
  }
  kivi_gather_kernel<<<blocks_for(p.total_rows * 2 * p.cache.num_heads), kThreads, 0, stream>>>(p);
  return detail::finish_launch(stream);
}

}  // namespace kvcache::kernels::cuda
