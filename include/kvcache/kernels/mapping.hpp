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

// Floats of rows a low-rank append CTA keeps for its tile; the largest basis
// (head_dim x rank floats) a gather CTA copies into shared memory.
inline constexpr std::int32_t kLowRankTileFloats = 4096;
inline constexpr std::int32_t kLowRankSharedBasisFloats = 8192;

struct LowRankTiling {
  std::int32_t tile_tokens = 1;  // tokens a CTA handles
  std::int32_t per_token = 1;    // threads per token: coefficients (append) or dims (gather)

  // `work` is rank (append) or head_dim (gather): per_token = min(work,
  // threads); as many tokens as the threads allow, and at most
  // kLowRankTileFloats / `width` (the row floats an append tile holds).
  KVCACHE_HD static LowRankTiling of(std::int32_t work, std::int32_t width, std::int32_t threads) {
    LowRankTiling t;
    t.per_token = work < threads ? work : threads;
    t.tile_tokens = threads / t.per_token;
    const std::int32_t fit = kLowRankTileFloats / width;
    t.tile_tokens = t.tile_tokens < fit ? t.tile_tokens : (fit > 0 ? fit : 1);
    return t;
  }
  KVCACHE_HD std::int32_t threads() const { return tile_tokens * per_token; }
  KVCACHE_HD std::int32_t token_in_tile(std::int32_t thread) const { return thread / per_token; }
  KVCACHE_HD std::int32_t first_item(std::int32_t thread) const {
    return thread - thread / per_token * per_token;
  }
};

}  // namespace kvcache::kernels::mapping
