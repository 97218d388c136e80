// The staged tables of a gather: a FlashInfer-style page table of a chunk of
// the requested sequences plus the side table (rows a codec keeps beside the
// pages), filled on the host and uploaded once per chunk. The page indices
// come last, so an upload carries only the pages the chunk uses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kvcache/codec/concepts.hpp"
#include "kvcache/detail/double_staging.hpp"
#include "kvcache/detail/staging_layout.hpp"
#include "kvcache/kernels/page_math.hpp"
#include "kvcache/types.hpp"

namespace kvcache::detail {

template <class Backend>
class GatherStaging {
 public:
  GatherStaging(Backend& backend, const CacheConfig& config)
      : max_batch_(static_cast<std::size_t>(config.max_batch_sequences)),
        max_pages_(config.num_blocks),
        staging_(backend, plan().bytes()) {}

  // Stages seqs[first..] as long as they fit (max_batch_sequences sequences,
  // num_blocks pages), fills `request`'s tables, and returns the index of the
  // first sequence left for the next chunk. `out_row` advances past the
  // staged rows.
  template <class Table, class Storage>
  std::size_t stage(Backend& backend, std::span<const SeqId> seqs, std::size_t first,
                    const Table& table, const Storage& codec, std::int32_t block_size,
                    std::int64_t& out_row, GatherRequest& request) {
    void* host = staging_.host(backend);
    std::int32_t* indptr = indptr_.in(host);
    std::int32_t* last = last_.in(host);
    std::int64_t* offsets = offsets_.in(host);
    std::int64_t* paged = paged_.in(host);
    std::int64_t* totals = totals_.in(host);
    std::int64_t* side = side_.in(host);
    std::int32_t* indices = indices_.in(host);
    std::size_t end = first;
    std::int32_t pages = 0;
    indptr[0] = 0;
    offsets[0] = out_row;
    const std::int64_t first_row = out_row;
    while (end < seqs.size() && end - first < max_batch_) {
      const auto& s = table.find(seqs[end], "gather");
      const std::int64_t in_pages = codec.paged_tokens(s.codec, s.num_tokens);
      const auto n = static_cast<std::int32_t>(kernels::pages_for_tokens(in_pages, block_size));
      if (pages + n > max_pages_) break;
      std::copy(s.blocks.begin(), s.blocks.begin() + n, indices + pages);
      const std::size_t b = end - first;
      pages += n;
      indptr[b + 1] = pages;
      last[b] = kernels::last_page_length(s.num_tokens, block_size);
      paged[b] = in_pages;
      totals[b] = s.num_tokens;
      side[b] = codec.side_slot(s.codec);
      out_row += s.num_tokens;
      offsets[b + 1] = out_row;
      ++end;
    }
    const void* device =
        staging_.upload(backend, indices_.bytes_through(static_cast<std::size_t>(pages)));
    const auto batch = static_cast<std::int32_t>(end - first);
    request.table = kernels::PageTableView{indptr_.in(device),
                                           indices_.in(device),
                                           last_.in(device),
                                           offsets_.in(device),
                                           batch,
                                           pages};
    request.side = kernels::SideTable{paged_.in(device), totals_.in(device), side_.in(device),
                                      out_row - first_row};
    return end;
  }

  // The whole gather of `seqs`' rows of one layer into `out`: the sequences
  // are staged chunk by chunk, one codec gather each.
  template <class Table, class Storage>
  void run(Backend& backend, std::span<const SeqId> seqs, const Table& table, Storage& codec,
           std::int32_t block_size, std::int32_t layer, const kernels::GatherOutput& out) {
    GatherRequest request{layer, {}, {}, out};
    std::int64_t out_row = 0;
    for (std::size_t next = 0; next < seqs.size();) {
      next = stage(backend, seqs, next, table, codec, block_size, out_row, request);
      codec.gather(request);
    }
  }

 private:
  // The tables' places in one staging area (the slices are set here).
  StagingLayout plan() {
    StagingLayout layout;
    indptr_ = layout.add<std::int32_t>(max_batch_ + 1);
    last_ = layout.add<std::int32_t>(max_batch_);
    offsets_ = layout.add<std::int64_t>(max_batch_ + 1);
    paged_ = layout.add<std::int64_t>(max_batch_);
    totals_ = layout.add<std::int64_t>(max_batch_);
    side_ = layout.add<std::int64_t>(max_batch_);
    indices_ = layout.add<std::int32_t>(static_cast<std::size_t>(max_pages_));
    return layout;
  }

  std::size_t max_batch_;
  std::int64_t max_pages_;
  StagingSlice<std::int32_t> indptr_, last_;
  StagingSlice<std::int64_t> offsets_, paged_, totals_, side_;
  StagingSlice<std::int32_t> indices_;
  DoubleStaging<Backend> staging_;
};

}  // namespace kvcache::detail
