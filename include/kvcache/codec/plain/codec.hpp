// PlainCodec: pages hold K and V in the model's dtype, in the NHD or HND
// layout of layout.hpp; appends and gathers are copies.
#pragma once

#include <cstdint>
#include <string>

#include "kvcache/codec/storage.hpp"
#include "kvcache/kernels/params.hpp"
#include "kvcache/layout.hpp"
#include "kvcache/page_table.hpp"
#include "kvcache/types.hpp"

namespace kvcache {

struct PlainCodec {
  static constexpr CodecKind kKind = CodecKind::kPlain;
  static constexpr std::int32_t kResidualTokens = 0;
  struct SequenceState {};

  static std::string name() { return "plain"; }
  static void validate(const CacheConfig&) {}
  static std::int64_t block_bytes(const ModelShape& shape, std::int32_t block_size) {
    return shape.bytes_per_token() * block_size;
  }

  template <class Backend>
  class Storage : public codec::PagedStorage<Backend, SequenceState> {
    using Base = codec::PagedStorage<Backend, SequenceState>;
    using Base::backend_;

   public:
    static constexpr bool kCalibrated = false;

    Storage(const CacheConfig& config, Backend& backend, std::byte* arena)
        : Base(config, backend),
          view_(make_plain_view(arena, static_cast<std::int32_t>(config.num_blocks),
                                config.block_size, config.shape.num_layers,
                                config.shape.num_kv_heads, config.shape.head_dim,
                                config.shape.dtype, config.layout)) {}

    const PagedKVView& view() const { return view_; }

    void append(std::int32_t layer, const kernels::AppendSource& source,
                const kernels::SlotMapping& slots) {
      launch(*backend_, kernels::AppendParams{view_, layer, source, slots});
    }
    void gather(const GatherRequest& request) {
      launch(*backend_, kernels::GatherParams{view_, request.layer, request.table, request.out});
    }

    // Element strides of the model dtype.
    CacheAddressing addressing(KVLayout layout) const {
      const std::int64_t element = dtype_size(view_.dtype);
      CacheAddressing a = codec::addressing_of(view_, layout, kKind);
      a.kv_stride_bytes = view_.kv_bytes;
      a.stride_page = view_.page_bytes / element;
      a.stride_token = view_.token_bytes / element;
      a.stride_head = view_.head_bytes / element;
      return a;
    }
    void add_stats(CacheStats&) {}

   private:
    PagedKVView view_;
  };
};

}  // namespace kvcache
