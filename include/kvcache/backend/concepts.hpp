// What the manager needs from a memory backend.
//
// A backend allocates buffers in its memory (the arena in one allocation at
// construction), moves bytes between host and its memory, and runs the cache
// kernels. Staging areas carry small host-built tables (slot mappings, page
// tables) to the kernels: the host writes into host_data(), then upload()
// returns the pointer the kernels read, ordered before the next launch.
// Compressed caches add the codec kernels (quantize-append, dequantize-
// gather, KIVI flush and gather) and the calibration steps (abs-max for fp8
// scales, the low-rank fit).
#pragma once

#include <concepts>
#include <cstddef>
#include <string_view>

#include "kvcache/buffer.hpp"
#include "kvcache/kernels/codec_params.hpp"
#include "kvcache/kernels/params.hpp"

namespace kvcache {

template <class B>
concept MemoryBackend = requires(
    B& backend, const B& const_backend, void* dst, const void* src, std::size_t bytes,
    typename B::Staging& staging, const kernels::AppendParams& append,
    const kernels::GatherParams& gather, const kernels::CopyBlocksParams& copy,
    const kernels::CodecAppendParams& codec_append, const kernels::CodecGatherParams& codec_gather,
    const kernels::KiviFlushParams& kivi_flush, const kernels::KiviGatherParams& kivi_gather,
    const kernels::AbsMaxParams& abs_max, const kernels::LowRankFitParams& low_rank_fit) {
  { B::kDeviceMemory } -> std::convertible_to<bool>;
  { const_backend.name() } -> std::convertible_to<std::string_view>;
  { backend.allocate(bytes) } -> std::same_as<Buffer>;
  { backend.make_staging(bytes) } -> std::same_as<typename B::Staging>;
  { backend.staging_host(staging) } -> std::same_as<void*>;
  { backend.upload(staging, bytes) } -> std::same_as<const void*>;
  backend.copy_to_backend(dst, src, bytes);
  backend.copy_to_host(dst, src, bytes);
  backend.copy_within(dst, src, bytes);
  backend.fill_zero(dst, bytes);
  backend.append(append);
  backend.gather(gather);
  backend.copy_blocks(copy);
  backend.codec_append(codec_append);
  backend.codec_gather(codec_gather);
  backend.kivi_flush(kivi_flush);
  backend.kivi_gather(kivi_gather);
  backend.abs_max(abs_max);
  backend.low_rank_fit(low_rank_fit);
  backend.synchronize();
};

}  // namespace kvcache
