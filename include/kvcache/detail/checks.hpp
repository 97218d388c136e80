// Validation of what an engine passes in: the configuration (before anything
// is allocated) and the tensors of append, gather and calibrate. Each check
// throws a kvcache::Error naming the bad value and what is allowed.
#pragma once

#include <cstdint>
#include <cstring>

#include "kvcache/block_pool.hpp"
#include "kvcache/detail/checked.hpp"
#include "kvcache/error.hpp"
#include "kvcache/kernels/params.hpp"
#include "kvcache/model_shape.hpp"
#include "kvcache/tensor.hpp"
#include "kvcache/types.hpp"

namespace kvcache::detail {

// Most new tokens and sequences one append batch may hold: the staging that
// carries a batch to the kernels is sized by them at construction.
inline constexpr std::int32_t kMaxBatchTokens = 1 << 24;
inline constexpr std::int32_t kMaxBatchSequences = 1 << 20;

// The configuration with num_blocks derived from budget_bytes when that was set.
template <class Codec, class Allocation>
CacheConfig validated_config(CacheConfig config) {
  config.shape.validate();
  const ModelShape& shape = config.shape;
  const std::int64_t row_bytes = std::int64_t{shape.head_dim} * dtype_size(shape.dtype);
  if (row_bytes % 16 != 0) {
    raise<InvalidArgument>(
        "CacheConfig: head_dim {} x {} bytes ({}) = {} bytes per row is not a multiple of 16; "
        "allowed head_dim for {} is a multiple of {}",
        shape.head_dim, dtype_size(shape.dtype), dtype_name(shape.dtype), row_bytes,
        dtype_name(shape.dtype), 16 / dtype_size(shape.dtype));
  }
  Allocation::validate_block_size(config.block_size);
  if (config.layout != KVLayout::kNHD && config.layout != KVLayout::kHND) {
    raise<InvalidArgument>("CacheConfig: layout {} is not NHD (0) or HND (1)",
                           static_cast<int>(config.layout));
  }
  Codec::validate(config);
  if ((config.num_blocks == 0) == (config.budget_bytes == 0)) {
    raise<InvalidArgument>("CacheConfig: set exactly one of num_blocks ({}) and budget_bytes ({})",
                           config.num_blocks, config.budget_bytes);
  }
  const std::int64_t block_bytes = Codec::block_bytes(shape, config.block_size);
  if (config.budget_bytes != 0) {
    if (config.budget_bytes < block_bytes) {
      raise<InvalidArgument>(
          "CacheConfig: budget_bytes {} is below one block of {} bytes ({} tokens under the {} "
          "codec)",
          config.budget_bytes, block_bytes, config.block_size, Codec::name());
    }
    config.num_blocks = config.budget_bytes / block_bytes;
    if (config.num_blocks > BlockPool::kMaxBlocks) {
      raise<InvalidArgument>(
          "CacheConfig: budget_bytes {} makes {} blocks of {} bytes; a pool holds at most {} "
          "blocks (use larger blocks or a smaller budget)",
          config.budget_bytes, config.num_blocks, block_bytes, BlockPool::kMaxBlocks);
    }
  }
  if (config.num_blocks < 1 || config.num_blocks > BlockPool::kMaxBlocks) {
    raise<InvalidArgument>("CacheConfig: num_blocks {} is outside [1, {}]", config.num_blocks,
                           BlockPool::kMaxBlocks);
  }
  // The arena: num_blocks x block bytes, checked (the budget already bounds it).
  to_size(mul_or_throw(config.num_blocks, block_bytes, "CacheConfig: num_blocks x block bytes"),
          "CacheConfig: the arena");
  if (config.max_batch_tokens < 1 || config.max_batch_tokens > kMaxBatchTokens) {
    raise<InvalidArgument>("CacheConfig: max_batch_tokens {} is outside [1, {}]",
                           config.max_batch_tokens, kMaxBatchTokens);
  }
  if (config.max_batch_sequences < 1 || config.max_batch_sequences > kMaxBatchSequences) {
    raise<InvalidArgument>("CacheConfig: max_batch_sequences {} is outside [1, {}]",
                           config.max_batch_sequences, kMaxBatchSequences);
  }
  if (config.initial_tokens < 1) {
    raise<InvalidArgument>("CacheConfig: initial_tokens {} must be at least 1",
                           config.initial_tokens);
  }
  return config;
}

inline void check_layer(const ModelShape& shape, std::int32_t layer, const char* what) {
  if (layer < 0 || layer >= shape.num_layers) {
    raise<OutOfRange>("{}: layer {} is outside [0, {})", what, layer, shape.num_layers);
  }
}

// A [tokens][kv_heads][head_dim] tensor of the cache's dtype with `tokens`
// tokens, 16-byte aligned rows and strides.
inline void check_tensor(const ModelShape& shape, const TensorView& t, std::int64_t tokens,
                         const char* what, const char* name) {
  if (t.data == nullptr && tokens > 0) {
    raise<InvalidArgument>("{}: {} is a null pointer", what, name);
  }
  if (reinterpret_cast<std::uintptr_t>(t.data) % 16 != 0) {
    raise<InvalidArgument>("{}: {} at {} is not 16-byte aligned", what, name,
                           static_cast<const void*>(t.data));
  }
  if (t.dtype != shape.dtype) {
    raise<InvalidArgument>("{}: {} has dtype {}, the cache holds {}", what, name,
                           dtype_name(t.dtype), dtype_name(shape.dtype));
  }
  if (t.num_heads != shape.num_kv_heads) {
    raise<InvalidArgument>("{}: {} has {} heads, the model has {} KV heads", what, name,
                           t.num_heads, shape.num_kv_heads);
  }
  if (t.head_dim != shape.head_dim) {
    raise<InvalidArgument>("{}: {} has head_dim {}, the model has {}", what, name, t.head_dim,
                           shape.head_dim);
  }
  if (t.num_tokens != tokens) {
    raise<InvalidArgument>("{}: {} has {} tokens, expected {}", what, name, t.num_tokens, tokens);
  }
  const std::int64_t element = dtype_size(t.dtype);
  const std::int64_t token_stride = t.effective_token_stride();
  const std::int64_t head_stride = t.effective_head_stride();
  if (token_stride < t.head_dim || head_stride < t.head_dim ||
      token_stride > (std::int64_t{1} << 40) || head_stride > (std::int64_t{1} << 40)) {
    raise<InvalidArgument>(
        "{}: {} strides (token {}, head {} elements) must be at least head_dim {} and at most "
        "2^40",
        what, name, token_stride, head_stride, t.head_dim);
  }
  if ((token_stride * element) % 16 != 0 || (head_stride * element) % 16 != 0) {
    raise<InvalidArgument>(
        "{}: {} strides (token {}, head {} elements) must be multiples of 16 bytes", what, name,
        token_stride, head_stride);
  }
  if (tokens > (std::int64_t{1} << 31) - 1 || !checked_mul(tokens, token_stride * element)) {
    raise<InvalidArgument>("{}: {} has {} tokens of {} elements each: too large to address", what,
                           name, tokens, token_stride);
  }
}

// A calibration sample of K and V rows for `layer` (at least one token).
inline void check_sample(const ModelShape& shape, std::int32_t layer, const TensorView& k,
                         const TensorView& v) {
  check_layer(shape, layer, "calibrate");
  check_tensor(shape, k, k.num_tokens, "calibrate", "k_sample");
  check_tensor(shape, v, k.num_tokens, "calibrate", "v_sample");
  if (k.num_tokens < 1) {
    raise<InvalidArgument>("calibrate: layer {} needs at least one token, got 0", layer);
  }
}

// Packed outputs of `tokens` rows for a gather of `layer`.
inline void check_gather(const ModelShape& shape, std::int32_t layer, std::int64_t tokens,
                         const TensorView& k_out, const TensorView& v_out) {
  check_layer(shape, layer, "gather");
  check_tensor(shape, k_out, tokens, "gather", "k_out");
  check_tensor(shape, v_out, tokens, "gather", "v_out");
  if (!k_out.is_packed() || !v_out.is_packed()) {
    raise<InvalidArgument>("gather: outputs must be packed [tokens][heads][head_dim]");
  }
}

// K and V as one append source (their strides must agree).
inline kernels::AppendSource append_source(const TensorView& k, const TensorView& v,
                                           const char* what) {
  if (k.effective_token_stride() != v.effective_token_stride() ||
      k.effective_head_stride() != v.effective_head_stride()) {
    raise<InvalidArgument>(
        "{}: k strides (token {}, head {}) differ from v strides (token {}, head {})", what,
        k.effective_token_stride(), k.effective_head_stride(), v.effective_token_stride(),
        v.effective_head_stride());
  }
  const std::int64_t element = dtype_size(k.dtype);
  return kernels::AppendSource{k.data, v.data, k.effective_token_stride() * element,
                               k.effective_head_stride() * element};
}

inline kernels::SampleView sample_view(const TensorView& t) {
  const std::int64_t element = dtype_size(t.dtype);
  return kernels::SampleView{t.data,
                             t.dtype,
                             static_cast<std::int32_t>(t.num_tokens),
                             t.num_heads,
                             t.head_dim,
                             t.effective_token_stride() * element,
                             t.effective_head_stride() * element};
}

}  // namespace kvcache::detail
