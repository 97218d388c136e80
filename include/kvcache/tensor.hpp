// A non-owning [tokens][heads][head_dim] tensor in a backend's memory: the
// K or V an engine passes in (append) or gets back (gather). Strides are in
// elements, as in PyTorch; 0 means packed.
#pragma once

#include <cstdint>

#include "kvcache/dtype.hpp"

namespace kvcache {

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF16;
  std::int64_t num_tokens = 0;
  std::int32_t num_heads = 0;
  std::int32_t head_dim = 0;
  std::int64_t token_stride = 0;  // elements between tokens; 0: num_heads x head_dim
  std::int64_t head_stride = 0;   // elements between heads; 0: head_dim

  static TensorView packed(void* data, DType dtype, std::int64_t num_tokens, std::int32_t num_heads,
                           std::int32_t head_dim) {
    return TensorView{data, dtype, num_tokens, num_heads, head_dim, 0, 0};
  }
  static TensorView packed(const void* data, DType dtype, std::int64_t num_tokens,
                           std::int32_t num_heads, std::int32_t head_dim) {
    return packed(const_cast<void*>(data), dtype, num_tokens, num_heads, head_dim);
  }

  std::int64_t effective_head_stride() const { return head_stride != 0 ? head_stride : head_dim; }
  std::int64_t effective_token_stride() const {
    return token_stride != 0 ? token_stride : static_cast<std::int64_t>(num_heads) * head_dim;
  }
  bool is_packed() const {
    return effective_head_stride() == head_dim &&
           effective_token_stride() == static_cast<std::int64_t>(num_heads) * head_dim;
  }
  std::int64_t packed_bytes() const {
    return num_tokens * num_heads * head_dim * dtype_size(dtype);
  }
};

}  // namespace kvcache
