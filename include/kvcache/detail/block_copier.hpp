// Runs the block copies the ledger queued (copy-on-write, relocation, fork of
// a region) as one copy-kernel launch over the arena, through a staging area
// sized for the whole pool at construction.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvcache/kernels/params.hpp"
#include "kvcache/policy/concepts.hpp"

namespace kvcache::detail {

template <class Backend>
class BlockCopier {
 public:
  BlockCopier(Backend& backend, std::int64_t num_blocks)
      : staging_(
            backend.make_staging(2 * sizeof(std::int32_t) * static_cast<std::size_t>(num_blocks))) {
  }

  // Copies every (source, destination) pair of `moves` (then empty) within
  // `pages`; returns how many blocks were copied.
  std::int64_t run(Backend& backend, BlockMoves& moves, std::byte* pages, std::int64_t page_bytes,
                   std::int64_t num_pages) {
    if (moves.empty()) return 0;
    auto* pairs = static_cast<std::int32_t*>(backend.staging_host(staging_));
    for (std::size_t i = 0; i < moves.size(); ++i) {
      pairs[2 * i] = moves[i].first;
      pairs[2 * i + 1] = moves[i].second;
    }
    const auto* device = static_cast<const std::int32_t*>(
        backend.upload(staging_, moves.size() * 2 * sizeof(std::int32_t)));
    launch(backend,
           kernels::CopyBlocksParams{pages, page_bytes, static_cast<std::int32_t>(num_pages),
                                     device, static_cast<std::int32_t>(moves.size())});
    const auto copied = static_cast<std::int64_t>(moves.size());
    moves.clear();
    return copied;
  }

 private:
  typename Backend::Staging staging_;
};

}  // namespace kvcache::detail
