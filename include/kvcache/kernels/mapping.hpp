// How the CUDA kernels split their work over a grid: which CTA and thread
// handle which row, vector, lane or channel. Host-device code, so the CPU
// tests run every mapping over the full grid of a launch (ragged tails
// included) and check that each output element is written exactly once and
// each input read where it should be; the kernels call the same functions.
//
// Vocabulary: a row is the head_dim values of one (token, K/V, head); a
// vector is 16 bytes; a lane is the part of a row one thread handles in the
// codec kernels: 16 bytes of the input dtype (8 fp16 / bf16, 4 fp32 values).
#pragma once

#include <cstdint>

#include "kvcache/config.hpp"

namespace kvcache::kernels::mapping {

// ---- plain append: one CTA per token, vectors over (K/V, head, vector) ----------

struct AppendVector {
  std::int32_t kv = 0;
  std::int32_t head = 0;
  std::int32_t vec = 0;  // 16-byte vector within the row
};

// Item `index` of a token's 2 x heads x vecs_per_row vectors, vector fastest.
KVCACHE_HD AppendVector append_vector(std::int32_t index, std::int32_t heads,
                                      std::int32_t vecs_per_row) {
  const std::int32_t per_kv = heads * vecs_per_row;
  AppendVector v;
  v.kv = index >= per_kv ? 1 : 0;
  const std::int32_t in_kv = index - v.kv * per_kv;
  v.head = in_kv / vecs_per_row;
  v.vec = in_kv - v.head * vecs_per_row;
  return v;
}

// Threads of an append CTA: enough that each moves about `unroll` vectors, a
// whole number of warps, at most 256.
KVCACHE_HD std::int32_t append_threads(std::int32_t vectors, std::int32_t unroll) {
  std::int32_t threads = (vectors + unroll - 1) / unroll;
  return threads < 32 ? 32 : (threads > 256 ? 256 : (threads + 31) / 32 * 32);
}

// ---- plain gather: one CTA per page of the table -------------------------------

struct GatherVector {
  std::int32_t kv = 0;
  std::int32_t token = 0;  // in the page
  std::int32_t head = 0;
  std::int32_t vec = 0;
  std::int32_t in_kv = 0;  // vector index in this page's packed output of K (or V)
};

// Item `index` of a page's 2 x tokens x heads x vecs_per_row vectors.
KVCACHE_HD GatherVector gather_vector(std::int32_t index, std::int32_t tokens, std::int32_t heads,
                                      std::int32_t vecs_per_row) {
  const std::int32_t per_token = heads * vecs_per_row;
  const std::int32_t per_kv = per_token * tokens;
  GatherVector v;
  v.kv = index >= per_kv ? 1 : 0;
  v.in_kv = index - v.kv * per_kv;
  v.token = v.in_kv / per_token;
  const std::int32_t in_token = v.in_kv - v.token * per_token;
  v.head = in_token / vecs_per_row;
  v.vec = in_token - v.head * vecs_per_row;
  return v;
}

// Rows of a page walked by a thread in steps of `step` rows, without a
// division per row (the plain gather: each thread keeps its 16-byte vector
// of the row and moves `step` rows on; rows in (K/V, token, head) order,
// heads fastest). done() once past the V rows.
struct RowCursor {
  std::int32_t kv = 0;
  std::int32_t token = 0;
  std::int32_t head = 0;

  KVCACHE_HD static RowCursor at(std::int32_t row, std::int32_t tokens, std::int32_t heads) {
    RowCursor c;
    const std::int32_t per_kv = tokens * heads;
    c.kv = row / per_kv;
    const std::int32_t in_kv = row - c.kv * per_kv;
    c.token = in_kv / heads;
    c.head = in_kv - c.token * heads;
    return c;
  }
  KVCACHE_HD bool done() const { return kv >= 2; }
  // `step` split once per thread: step_tokens = step / heads, step_heads = step % heads.
  KVCACHE_HD void advance(std::int32_t step_tokens, std::int32_t step_heads, std::int32_t tokens,
                          std::int32_t heads) {
    head += step_heads;
    token += step_tokens;
    if (head >= heads) {
      head -= heads;
      ++token;
    }
    while (token >= tokens && kv < 2) {
      token -= tokens;
      ++kv;
    }
  }
};

// A position (token, dim) in a [tokens][head_dim] walk by flat index,
// advanced by a fixed step (itself a SampleCursor) with adds only (the
// abs-max calibration's threads).
struct SampleCursor {
  std::int64_t token = 0;
  std::int32_t dim = 0;

  KVCACHE_HD static SampleCursor at(std::int64_t index, std::int32_t head_dim) {
    SampleCursor c;
    c.token = index / head_dim;
    c.dim = static_cast<std::int32_t>(index - c.token * head_dim);
    return c;
  }
  KVCACHE_HD void advance(const SampleCursor& step, std::int32_t head_dim) {
    token += step.token;
    dim += step.dim;
    if (dim >= head_dim) {
      dim -= head_dim;
      ++token;
    }
  }
};

// ---- lane codecs (int8, fp8, KIVI values): a CTA holds rows of lanes -------------

struct LaneTiling {
  std::int32_t lanes = 1;         // lanes per row
  std::int32_t rows_per_cta = 1;  // rows a CTA of `threads` threads holds

  KVCACHE_HD static LaneTiling of(std::int32_t head_dim, std::int32_t element_bytes,
                                  std::int32_t threads) {
    LaneTiling t;
    t.lanes = head_dim * element_bytes / 16;
    t.rows_per_cta = threads / t.lanes;
    return t;
  }
  // The CTA's row `thread` works on (>= rows_per_cta: idle) and its lane.
  KVCACHE_HD std::int32_t row_in_cta(std::int32_t thread) const { return thread / lanes; }
  KVCACHE_HD std::int32_t lane(std::int32_t thread) const {
    return thread - thread / lanes * lanes;
  }
  KVCACHE_HD std::int64_t ctas(std::int64_t rows) const {
    return (rows + rows_per_cta - 1) / rows_per_cta;
  }
  // Gathers take one page per CTA run (so that the page's sequence is found
  // once, by one thread): the CTAs a page of `page_size` tokens needs.
  KVCACHE_HD std::int32_t ctas_per_page(std::int32_t page_size, std::int32_t heads) const {
    return static_cast<std::int32_t>(ctas(std::int64_t{page_size} * 2 * heads));
  }
};

struct AppendRow {
  std::int64_t token = 0;
  std::int32_t kv = 0;
  std::int32_t head = 0;
};

// Row r of an append: heads fastest, then K/V, then tokens, so neighbouring
// rows are neighbouring in the source and in the page.
KVCACHE_HD AppendRow append_row(std::int64_t row, std::int32_t heads) {
  AppendRow r;
  r.token = row / (2 * heads);
  const auto rest = static_cast<std::int32_t>(row - r.token * 2 * heads);
  r.kv = rest / heads;
  r.head = rest - r.kv * heads;
  return r;
}

struct GatherRow {
  std::int32_t flat_page = 0;  // page of the table
  std::int32_t kv = 0;
  std::int32_t token = 0;  // in the page
  std::int32_t head = 0;
};

// Row r of a gather over a page table: pages, then K/V, then tokens, heads
// fastest: neighbouring rows are neighbouring in the page and the output.
KVCACHE_HD GatherRow gather_row(std::int64_t row, std::int32_t page_size, std::int32_t heads) {
  const std::int64_t per_kv = std::int64_t{page_size} * heads;
  GatherRow r;
  r.flat_page = static_cast<std::int32_t>(row / (2 * per_kv));
  const std::int64_t rest = row - std::int64_t{r.flat_page} * 2 * per_kv;
  r.kv = static_cast<std::int32_t>(rest / per_kv);
  const auto in_kv = static_cast<std::int32_t>(rest - r.kv * per_kv);
  r.token = in_kv / heads;
  r.head = in_kv - r.token * heads;
  return r;
}

// ---- low-rank: a CTA holds a tile of tokens of one (K/V, head) --------------------

// Shared memory a low-rank CTA may use without opting in: 48 KB less
// kLowRankStaticSharedBytes for its static shared memory (the gather's page
// table entries and coefficient tile: 1152 bytes; asserted in the kernels):
// an append tile's rows, a gather's copy of the basis. Both are stored with a row
// stride of head_dim + 1 floats (head_dim is a multiple of 8, so the stride
// is odd and a warp reading one column of many rows meets every bank once).
inline constexpr std::int32_t kLowRankStaticSharedBytes = 2048;
inline constexpr std::int32_t kLowRankSharedFloats = (49152 - kLowRankStaticSharedBytes) / 4;
// Pages a low-rank gather CTA decodes, so that one copy of the basis in
// shared memory serves that many pages' tokens.
inline constexpr std::int32_t kLowRankPagesPerCta = 8;

KVCACHE_HD constexpr std::int32_t low_rank_row_stride(std::int32_t head_dim) {
  return head_dim + 1;
}
// Whether the gather keeps the basis ([rank][head_dim + 1] floats) in shared memory.
KVCACHE_HD constexpr bool low_rank_basis_fits(std::int32_t head_dim, std::int32_t rank) {
  return std::int64_t{rank} * low_rank_row_stride(head_dim) <= kLowRankSharedFloats;
}

struct LowRankTiling {
  std::int32_t tile_tokens = 1;  // tokens a CTA handles
  std::int32_t per_token = 1;    // threads per token: coefficients (append) or dims (gather)

  // `work` is rank (append) or head_dim (gather): per_token = min(work,
  // threads); as many tokens as the threads allow, and at most
  // `max_tokens` (an append tile: as many rows as fit kLowRankSharedFloats).
  KVCACHE_HD static LowRankTiling of(std::int32_t work, std::int32_t max_tokens,
                                     std::int32_t threads) {
    LowRankTiling t;
    t.per_token = work < threads ? work : threads;
    t.tile_tokens = threads / t.per_token;
    t.tile_tokens = t.tile_tokens < max_tokens ? t.tile_tokens : (max_tokens > 0 ? max_tokens : 1);
    return t;
  }
  // The append's: coefficients of a tile of rows held in shared memory.
  KVCACHE_HD static LowRankTiling append(std::int32_t rank, std::int32_t head_dim,
                                         std::int32_t threads) {
    return of(rank, kLowRankSharedFloats / low_rank_row_stride(head_dim), threads);
  }
  // The gather's: output values, every token of a pass.
  KVCACHE_HD static LowRankTiling gather(std::int32_t head_dim, std::int32_t threads) {
    return of(head_dim, threads, threads);
  }
  KVCACHE_HD std::int32_t threads() const { return tile_tokens * per_token; }
  KVCACHE_HD std::int32_t token_in_tile(std::int32_t thread) const { return thread / per_token; }
  KVCACHE_HD std::int32_t first_item(std::int32_t thread) const {
    return thread - thread / per_token * per_token;
  }
};

}  // namespace kvcache::kernels::mapping
