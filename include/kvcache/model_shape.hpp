// The shape of a model's KV cache and the sizing calculator.
//
// The KV cache of a decoder holds, for every layer and every cached token, one
// key and one value vector per KV head. Its size is
//   2 (K and V) x layers x tokens x kv_heads x head_dim x bytes per element,
// which for multi-head attention (kv_heads x head_dim == hidden) is the
// familiar 2 x layers x seq x hidden x batch x bytes. With grouped-query
// attention the number of KV heads is smaller than the number of query heads,
// so the cache is sized by kv_heads x head_dim, never by hidden.
#pragma once

#include <cstdint>
#include <limits>

#include "kvcache/detail/checked.hpp"
#include "kvcache/dtype.hpp"
#include "kvcache/error.hpp"

namespace kvcache {

struct ModelShape {
  std::int32_t num_layers = 0;
  std::int32_t num_kv_heads = 0;
  std::int32_t head_dim = 0;
  DType dtype = DType::kF16;

  // Multi-head attention: every query head has its own KV head.
  static ModelShape mha(std::int32_t num_layers, std::int32_t hidden, std::int32_t num_heads,
                        DType dtype) {
    if (num_heads <= 0 || hidden <= 0 || hidden % num_heads != 0) {
      detail::raise<InvalidArgument>(
          "ModelShape::mha: hidden {} must be a positive multiple of num_heads {}", hidden,
          num_heads);
    }
    return ModelShape{num_layers, num_heads, hidden / num_heads, dtype};
  }

  // Grouped-query (or multi-query) attention: fewer KV heads than query heads.
  static ModelShape gqa(std::int32_t num_layers, std::int32_t num_kv_heads, std::int32_t head_dim,
                        DType dtype) {
    return ModelShape{num_layers, num_kv_heads, head_dim, dtype};
  }

  // Elements of one token's K (or V) in one layer.
  constexpr std::int64_t kv_width() const {
    return static_cast<std::int64_t>(num_kv_heads) * head_dim;
  }

  // Bytes of K and V of one token across all layers.
  constexpr std::int64_t bytes_per_token() const {
    return 2 * static_cast<std::int64_t>(num_layers) * kv_width() * dtype_size(dtype);
  }

  // Throws InvalidArgument naming the first field outside its range.
  void validate() const {
    if (num_layers < 1 || num_layers > 4096) {
      detail::raise<InvalidArgument>("ModelShape: num_layers {} is outside [1, 4096]", num_layers);
    }
    if (num_kv_heads < 1 || num_kv_heads > 1024) {
      detail::raise<InvalidArgument>("ModelShape: num_kv_heads {} is outside [1, 1024]",
                                     num_kv_heads);
    }
    if (head_dim < 1 || head_dim > 1024) {
      detail::raise<InvalidArgument>("ModelShape: head_dim {} is outside [1, 1024]", head_dim);
    }
    const auto value = static_cast<int>(dtype);
    if (value < 0 || value > static_cast<int>(DType::kF32)) {
      detail::raise<InvalidArgument>(
          "ModelShape: dtype {} is not one of fp16 (0), bf16 (1), fp32 (2)", value);
    }
  }

  friend constexpr bool operator==(const ModelShape&, const ModelShape&) = default;
};

// Bytes of a dense cache holding `tokens` tokens for each of `batch` sequences.
// The article's example: LLaMA-7B (32 layers, hidden 4096, fp16), 2048 tokens,
// batch 4 -> 2 x 32 x 2048 x 4096 x 4 x 2 = 8,589,934,592 bytes. Negative
// counts and products past 64 bits are InvalidArgument.
inline std::int64_t kv_cache_bytes(const ModelShape& shape, std::int64_t tokens,
                                   std::int64_t batch = 1) {
  if (tokens < 0 || batch < 0) {
    detail::raise<InvalidArgument>("kv_cache_bytes: tokens {} and batch {} must not be negative",
                                   tokens, batch);
  }
  const auto per_sequence = detail::checked_mul(shape.bytes_per_token(), tokens);
  const auto total = per_sequence ? detail::checked_mul(*per_sequence, batch) : std::nullopt;
  if (!total) {
    detail::raise<InvalidArgument>(
        "kv_cache_bytes: {} bytes per token x {} tokens x {} sequences overflows 64 bits",
        shape.bytes_per_token(), tokens, batch);
  }
  return *total;
}

// How a byte budget is carved into blocks of `block_size` tokens.
struct CacheSizing {
  std::int64_t bytes_per_token = 0;
  std::int64_t bytes_per_block = 0;
  std::int64_t num_blocks = 0;  // blocks that fit the budget
  std::int64_t num_tokens = 0;  // num_blocks x block_size
  std::int64_t bytes_used = 0;  // num_blocks x bytes_per_block (<= budget)
};

// `bytes_per_block` lets a codec (compressed storage) size its own blocks; by
// default a block holds the shape's elements uncompressed.
inline CacheSizing size_cache(const ModelShape& shape, std::int32_t block_size,
                              std::int64_t budget_bytes, std::int64_t bytes_per_block = 0) {
  shape.validate();
  if (block_size < 1) {
    detail::raise<InvalidArgument>("size_cache: block_size {} must be at least 1", block_size);
  }
  if (budget_bytes < 0) {
    detail::raise<InvalidArgument>("size_cache: budget_bytes {} must not be negative",
                                   budget_bytes);
  }
  CacheSizing sizing;
  sizing.bytes_per_token = shape.bytes_per_token();
  sizing.bytes_per_block =
      bytes_per_block > 0
          ? bytes_per_block
          : detail::mul_or_throw(sizing.bytes_per_token, block_size, "size_cache: block bytes");
  sizing.num_blocks = budget_bytes / sizing.bytes_per_block;
  sizing.num_tokens =
      detail::mul_or_throw(sizing.num_blocks, block_size, "size_cache: blocks x block_size");
  sizing.bytes_used = sizing.num_blocks * sizing.bytes_per_block;  // <= budget_bytes
  return sizing;
}

}  // namespace kvcache
