// Re-encode a cold sequence into a compressed pool to free memory (the
// article's "enable compression under memory pressure"): its K/V are read
// from the source manager (dequantized if the source is itself compressed),
// quantized into the target manager's codec with the fused quantize-append
// kernel, one layer at a time, and the source sequence is released, which
// frees its blocks there. Both managers live on the same backend; the
// target is typically a KVCacheManager<CachePolicy<..., Int8Codec<32>>> or a
// KIVI one sharing the device with a plain one.
//
// Returns the sequence's id in the target, or nullopt (and changes nothing)
// when the target has no room.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "kvcache/error.hpp"
#include "kvcache/manager.hpp"

namespace kvcache {

namespace detail {
template <class SourceManager, class TargetManager>
void reencode_copy(SourceManager& source, SeqId seq, TargetManager& target, SeqId moved,
                   std::int64_t tokens);
}  // namespace detail

template <class SourceManager, class TargetManager>
std::optional<SeqId> reencode_sequence(SourceManager& source, SeqId seq, TargetManager& target) {
  const ModelShape& shape = source.shape();
  if (!(shape == target.shape())) {
    detail::raise<InvalidArgument>(
        "reencode_sequence: source shape ({} layers, {} heads x {}, {}) differs from target ({} "
        "layers, {} heads x "
        "{}, {})",
        shape.num_layers, shape.num_kv_heads, shape.head_dim, dtype_name(shape.dtype),
        target.shape().num_layers, target.shape().num_kv_heads, target.shape().head_dim,
        dtype_name(target.shape().dtype));
  }
  const SequenceInfo info = source.sequence(seq);
  if (info.parked)
    detail::raise<InvalidArgument>("reencode_sequence: sequence {} is parked; unpark it first",
                                   seq);
  const std::int64_t tokens = info.num_tokens;
  SeqId moved = 0;
  try {
    moved = target.create_sequence();
  } catch (const OutOfMemory&) {
    return std::nullopt;  // a codec's per-sequence slots are all taken: no room
  }
  if (target.try_reserve(moved, tokens) != ReserveStatus::kOk) {
    target.release(moved);
    return std::nullopt;
  }
  // Anything that throws from here leaves the source as it was and takes
  // the half-written copy out of the target.
  try {
    detail::reencode_copy(source, seq, target, moved, tokens);
  } catch (...) {
    target.release(moved);
    throw;
  }
  source.backend().synchronize();
  source.release(seq);
  return moved;
}

// reencode_sequence's copy: every layer of `seq` (gathered whole) appended to
// `moved` in batches of the target's max_batch_tokens.
template <class SourceManager, class TargetManager>
void detail::reencode_copy(SourceManager& source, SeqId seq, TargetManager& target, SeqId moved,
                           std::int64_t tokens) {
  const ModelShape& shape = source.shape();
  const auto row_bytes = static_cast<std::size_t>(shape.kv_width() * dtype_size(shape.dtype));
  const auto bytes = std::max<std::size_t>(16, static_cast<std::size_t>(tokens) * row_bytes);
  // One layer of the whole sequence at a time, in the backend's memory.
  Buffer k = source.backend().allocate(bytes);
  Buffer v = source.backend().allocate(bytes);
  // Batches of at most the target's max_batch_tokens; each layer's rows are
  // gathered whole (a sequence longer than one batch is read once per batch).
  const std::int64_t chunk = target.config().max_batch_tokens;
  for (std::int64_t first = 0; first < tokens; first += chunk) {
    const auto count = static_cast<std::int32_t>(std::min(chunk, tokens - first));
    const std::vector<SeqId> seqs = {moved};
    const std::vector<std::int32_t> counts = {count};
    AppendBatch batch = target.prepare_append(seqs, counts);
    const auto offset = static_cast<std::size_t>(first) * row_bytes;
    for (std::int32_t layer = 0; layer < shape.num_layers; ++layer) {
      source.gather(
          seq, layer,
          TensorView::packed(k.data(), shape.dtype, tokens, shape.num_kv_heads, shape.head_dim),
          TensorView::packed(v.data(), shape.dtype, tokens, shape.num_kv_heads, shape.head_dim));
      target.append(layer, batch,
                    TensorView::packed(k.bytes_data() + offset, shape.dtype, count,
                                       shape.num_kv_heads, shape.head_dim),
                    TensorView::packed(v.bytes_data() + offset, shape.dtype, count,
                                       shape.num_kv_heads, shape.head_dim));
    }
    target.commit(batch);
  }
}

}  // namespace kvcache
