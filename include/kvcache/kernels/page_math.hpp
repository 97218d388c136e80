// Page-table arithmetic shared by the CUDA kernels and the CPU backend.
#pragma once

#include <cstdint>

#include "kvcache/config.hpp"

namespace kvcache::kernels {

// The sequence that owns flat page `page` of a page table: the b with
// indptr[b] <= page < indptr[b + 1]. indptr is non-decreasing, so empty
// sequences (indptr[b] == indptr[b + 1]) are skipped.
KVCACHE_HD std::int32_t owning_sequence(const std::int32_t* indptr, std::int32_t batch_size,
                                        std::int32_t page) {
  std::int32_t low = 0;
  std::int32_t high = batch_size;  // answer in [low, high)
  while (high - low > 1) {
    const std::int32_t mid = low + (high - low) / 2;
    if (indptr[mid] <= page) {
      low = mid;
    } else {
      high = mid;
    }
  }
  return low;
}

// Tokens held by the `page_in_sequence`-th page of a sequence of `num_pages`
// pages whose last page holds `last_page_len` tokens.
KVCACHE_HD std::int32_t tokens_in_page(std::int32_t page_in_sequence, std::int32_t num_pages,
                                       std::int32_t last_page_len, std::int32_t page_size) {
  return page_in_sequence + 1 == num_pages ? last_page_len : page_size;
}

// Number of pages and last-page length for a sequence of `tokens` tokens
// (0 <= tokens; no overflow for any such count).
KVCACHE_HD std::int64_t pages_for_tokens(std::int64_t tokens, std::int32_t page_size) {
  return tokens / page_size + (tokens % page_size != 0 ? 1 : 0);
}

KVCACHE_HD std::int32_t last_page_length(std::int64_t tokens, std::int32_t page_size) {
  if (tokens == 0) return 0;
  return static_cast<std::int32_t>(tokens - (pages_for_tokens(tokens, page_size) - 1) *
                                                static_cast<std::int64_t>(page_size));
}

// Visits the pages of a FlashInfer-style table in order: visit(b, page,
// tokens, first_row) for sequence b's pages (its id, the tokens it holds, the
// output row of its first token). The CPU kernels' loop over a gather's pages.
template <class Table, class Visit>
void for_each_page(const Table& table, std::int32_t page_size, Visit visit) {
  for (std::int32_t b = 0; b < table.batch_size; ++b) {
    const std::int32_t first = table.indptr[b];
    const std::int32_t pages = table.indptr[b + 1] - first;
    for (std::int32_t i = 0; i < pages; ++i) {
      visit(b, std::int64_t{table.indices[first + i]},
            tokens_in_page(i, pages, table.last_page_len[b], page_size),
            table.out_row_offset[b] + std::int64_t{i} * page_size);
    }
  }
}

}  // namespace kvcache::kernels
