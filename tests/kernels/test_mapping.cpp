// The CUDA kernels' thread mappings, run on the CPU over the full grid of
// the launch shapes the launchers use (head_dim 64 / 128 / 256, fp16 and
// fp32, block sizes 16 / 64, one token up to 262144, ragged tails): every
// output element is written exactly once, and by the thread that read the
// matching input. The kernels call these same host-device functions, so an
// index bug shows here without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/codec/kivi/codec.hpp"
#include "kvcache/kernels/mapping.hpp"
#include "kvcache/kernels/page_math.hpp"
#include "kvcache/layout.hpp"

namespace kvcache::kernels {
namespace {

constexpr std::int32_t kThreads = 256;  // the codec kernels' CTA (kernels/common.cuh)
constexpr std::int32_t kUnroll = 4;     // the plain kernels' loads in flight

struct Shape {
  std::int32_t heads;
  std::int32_t head_dim;
  std::int32_t element_bytes;
};

std::vector<Shape> shapes() {
  std::vector<Shape> out;
  for (std::int32_t heads : {1, 2, 8})
    for (std::int32_t head_dim : {64, 128, 256})
      for (std::int32_t element : {2, 4})
        out.push_back({heads, head_dim, element});
  out.push_back({3, 96, 2});    // a row of 12 lanes: rows do not fill a CTA evenly
  out.push_back({2, 1024, 4});  // the widest row: one row per CTA
  return out;
}

::testing::AssertionResult all_once(const std::vector<std::int32_t>& hits, const char* what) {
  for (std::size_t i = 0; i < hits.size(); ++i) {
    if (hits[i] != 1) {
      return ::testing::AssertionFailure()
             << what << ": element " << i << " written " << hits[i] << " times";
    }
  }
  return ::testing::AssertionSuccess();
}

// A random FlashInfer table over shuffled pages: sequence lengths with ragged
// last pages, some empty.
struct Table {
  std::vector<std::int32_t> indptr{0}, indices, last;
  std::vector<std::int64_t> offsets{0};
  std::int32_t batch = 0;
};

Table random_table(std::int32_t batch, std::int32_t page_size, std::mt19937_64& rng) {
  Table t;
  t.batch = batch;
  std::uniform_int_distribution<std::int64_t> length(0, 5 * page_size);
  std::int32_t next_page = 0;
  for (std::int32_t b = 0; b < batch; ++b) {
    const std::int64_t tokens = length(rng);
    const auto pages = static_cast<std::int32_t>(pages_for_tokens(tokens, page_size));
    for (std::int32_t p = 0; p < pages; ++p)
      t.indices.push_back(next_page++);
    t.indptr.push_back(t.indptr.back() + pages);
    t.last.push_back(last_page_length(tokens, page_size));
    t.offsets.push_back(t.offsets.back() + tokens);
  }
  std::shuffle(t.indices.begin(), t.indices.end(), rng);
  return t;
}

TEST(AppendMapping, EveryVectorOfATokenOnceForEveryLayout) {
  for (const Shape& s : shapes()) {
    for (KVLayout layout : {KVLayout::kNHD, KVLayout::kHND}) {
      const DType dtype = s.element_bytes == 2 ? DType::kF16 : DType::kF32;
      const PagedKVView view =
          make_plain_view(nullptr, 1, 16, 1, s.heads, s.head_dim, dtype, layout);
      const auto vecs_per_row = static_cast<std::int32_t>(view.row_bytes() / 16);
      const std::int32_t total = 2 * s.heads * vecs_per_row;
      const std::int32_t threads = mapping::append_threads(total, kUnroll);
      ASSERT_EQ(threads % 32, 0);
      ASSERT_LE(threads, 256);
      for (std::int32_t token_in_page : {0, 7, 15}) {
        // Bytes of the page, 16 at a time: each of the token's rows once.
        std::vector<std::int32_t> page(static_cast<std::size_t>(view.page_bytes / 16), 0);
        for (std::int32_t t = 0; t < threads; ++t) {
          for (std::int32_t base = t; base < total; base += threads * kUnroll) {
            for (std::int32_t i = 0; i < kUnroll; ++i) {
              const std::int32_t index = base + i * threads;
              if (index >= total) continue;
              const mapping::AppendVector v = mapping::append_vector(index, s.heads, vecs_per_row);
              // The kernel's target, as append.cu computes it.
              const std::int64_t target = view.row_offset(0, 0, 0, token_in_page, 0) +
                                          v.kv * view.kv_bytes + v.head * view.head_bytes +
                                          v.vec * 16;
              ASSERT_EQ(target, view.row_offset(0, 0, v.kv, token_in_page, v.head) + v.vec * 16);
              ++page[static_cast<std::size_t>(target / 16)];
            }
          }
        }
        std::vector<std::int32_t> expected(page.size(), 0);
        for (std::int32_t kv = 0; kv < 2; ++kv)
          for (std::int32_t h = 0; h < s.heads; ++h)
            for (std::int32_t v = 0; v < vecs_per_row; ++v)
              ++expected[static_cast<std::size_t>(
                  (view.row_offset(0, 0, kv, token_in_page, h) + v * 16) / 16)];
        ASSERT_EQ(page, expected) << "heads " << s.heads << " head_dim " << s.head_dim;
      }
    }
  }
}

// The plain gather: each thread keeps vector tid % vecs of a row and walks
// rows tid / vecs, + rows_per_pass, ... with a RowCursor (gather.cu).
TEST(GatherMapping, EveryOutputVectorOnceFromItsOwnRow) {
  for (const Shape& s : shapes()) {
    const auto vecs_per_row = s.head_dim * s.element_bytes / 16;
    const std::int32_t rows_per_pass = 256 / vecs_per_row;
    ASSERT_GE(rows_per_pass, 1);
    const std::int32_t step_tokens = rows_per_pass / s.heads;
    const std::int32_t step_heads = rows_per_pass - step_tokens * s.heads;
    for (std::int32_t tokens : {1, 5, 16, 64}) {
      const std::int32_t rows = 2 * tokens * s.heads;
      std::vector<std::int32_t> out(static_cast<std::size_t>(rows * vecs_per_row), 0);
      for (std::int32_t t = 0; t < 256; ++t) {
        const std::int32_t first_row = t / vecs_per_row;
        const std::int32_t vec = t - first_row * vecs_per_row;
        if (first_row >= rows_per_pass || first_row >= rows) continue;
        mapping::RowCursor row = mapping::RowCursor::at(first_row, tokens, s.heads);
        std::int32_t expected_row = first_row;
        while (!row.done()) {
          ASSERT_LT(row.token, tokens);
          ASSERT_LT(row.head, s.heads);
          // The cursor is where the flat row index is.
          ASSERT_EQ((row.kv * tokens + row.token) * s.heads + row.head, expected_row);
          ++out[static_cast<std::size_t>(expected_row * vecs_per_row + vec)];
          row.advance(step_tokens, step_heads, tokens, s.heads);
          expected_row += rows_per_pass;
        }
        ASSERT_GE(expected_row, rows) << "a cursor stopped early";
      }
      ASSERT_TRUE(all_once(out, "gather"));
    }
  }
}

// abs_max's walk over a [tokens][head_dim] sample by flat index, advanced by
// the grid's stride with adds only.
TEST(SampleMapping, EveryValueOnceWithoutDivisions) {
  for (std::int32_t head_dim : {8, 64, 128, 1024}) {
    for (std::int64_t tokens : {1, 3, 1000}) {
      for (std::int64_t chunks : {1, 3, 1024}) {
        const std::int64_t stride = chunks * 256;
        std::vector<std::int32_t> hits(static_cast<std::size_t>(tokens * head_dim), 0);
        const mapping::SampleCursor step = mapping::SampleCursor::at(stride, head_dim);
        for (std::int64_t start = 0; start < stride; ++start) {
          mapping::SampleCursor at = mapping::SampleCursor::at(start, head_dim);
          for (std::int64_t index = start; at.token < tokens; index += stride) {
            ASSERT_EQ(at.token * head_dim + at.dim, index);
            ++hits[static_cast<std::size_t>(index)];
            at.advance(step, head_dim);
          }
        }
        ASSERT_TRUE(all_once(hits, "abs_max"));
      }
    }
  }
}

// Lane codecs' append (int8, fp8) over every (token, K/V, head, lane), and
// the lanes of a scale group side by side in one CTA.
TEST(LaneAppendMapping, EveryLaneOnceAndGroupsInOneCta) {
  const std::uint64_t seed = kvcache::testing::test_seed();
  std::mt19937_64 rng(seed);
  for (const Shape& s : shapes()) {
    const auto tiling = mapping::LaneTiling::of(s.head_dim, s.element_bytes, kThreads);
    ASSERT_GE(tiling.rows_per_cta, 1);
    const std::int32_t values = 16 / s.element_bytes;
    for (std::int64_t tokens : {1, 3, 17, 300}) {
      const std::int64_t rows = tokens * 2 * s.heads;
      std::vector<std::int32_t> hits(static_cast<std::size_t>(rows * tiling.lanes), 0);
      for (std::int64_t cta = 0; cta < tiling.ctas(rows); ++cta) {
        for (std::int32_t t = 0; t < kThreads; ++t) {
          const std::int32_t row_in_cta = tiling.row_in_cta(t);
          const std::int64_t row = cta * tiling.rows_per_cta + row_in_cta;
          if (row_in_cta >= tiling.rows_per_cta || row >= rows) continue;
          const mapping::AppendRow r = mapping::append_row(row, s.heads);
          ASSERT_LT(r.token, tokens);
          ASSERT_EQ((r.token * 2 + r.kv) * s.heads + r.head, row);
          const std::int32_t lane = tiling.lane(t);
          ++hits[static_cast<std::size_t>(row * tiling.lanes + lane)];
          // A group of G values spans G / values lanes: they are the threads
          // just before this one, in the same row (group_partial's window).
          for (std::int32_t group : {8, 16, 32, 64, 128}) {
            if (group <= values || s.head_dim % group != 0) continue;
            const std::int32_t group_lanes = group / values;
            const std::int32_t first = t - lane % group_lanes;
            ASSERT_GE(first, 0);
            ASSERT_LT(first + group_lanes - 1, kThreads);
            ASSERT_EQ(tiling.row_in_cta(first), row_in_cta);
            ASSERT_EQ(tiling.row_in_cta(first + group_lanes - 1), row_in_cta);
          }
        }
      }
      ASSERT_TRUE(all_once(hits, "lane append"));
    }
  }
  (void)rng;
}

TEST(LaneAppendMapping, TheLargestBatchIsCoveredToo) {
  // 262144 tokens of 8 heads x 128 fp16: 4M rows of 16 lanes.
  const auto tiling = mapping::LaneTiling::of(128, 2, kThreads);
  const std::int64_t rows = std::int64_t{262144} * 2 * 8;
  std::vector<std::uint8_t> hits(static_cast<std::size_t>(rows), 0);
  std::int64_t covered = 0;
  for (std::int64_t cta = 0; cta < tiling.ctas(rows); ++cta) {
    for (std::int32_t t = 0; t < kThreads; t += tiling.lanes) {  // lane 0 of each row
      const std::int64_t row = cta * tiling.rows_per_cta + tiling.row_in_cta(t);
      if (tiling.row_in_cta(t) >= tiling.rows_per_cta || row >= rows) continue;
      ASSERT_EQ(hits[static_cast<std::size_t>(row)], 0);
      hits[static_cast<std::size_t>(row)] = 1;
      ++covered;
    }
  }
  EXPECT_EQ(covered, rows);
}

// The lane gather: CTAs of one page each (ctas_per_page per page), so the
// page's sequence is found once per CTA.
TEST(LaneGatherMapping, EveryTokenOfEverySequenceOnceFromItsPage) {
  const std::uint64_t seed = kvcache::testing::test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (const Shape& s : shapes()) {
    for (std::int32_t page_size : {16, 64}) {
      const Table table = random_table(6, page_size, rng);
      const auto tiling = mapping::LaneTiling::of(s.head_dim, s.element_bytes, kThreads);
      const std::int32_t per_page = tiling.ctas_per_page(page_size, s.heads);
      const std::int64_t out_rows = table.offsets.back();
      std::vector<std::int32_t> hits(
          static_cast<std::size_t>(out_rows * 2 * s.heads * tiling.lanes), 0);
      for (std::int64_t cta = 0; cta < std::int64_t{table.indptr.back()} * per_page; ++cta) {
        const auto flat_page = static_cast<std::int32_t>(cta / per_page);
        const auto chunk = static_cast<std::int32_t>(cta - std::int64_t{flat_page} * per_page);
        // Thread 0's search, shared by the CTA.
        const std::int32_t b = owning_sequence(table.indptr.data(), table.batch, flat_page);
        const std::int32_t in_sequence = flat_page - table.indptr[b];
        ASSERT_GE(in_sequence, 0);
        ASSERT_LT(flat_page, table.indptr[b + 1]);
        const std::int32_t tokens = tokens_in_page(
            in_sequence, table.indptr[b + 1] - table.indptr[b], table.last[b], page_size);
        const std::int64_t first_row = table.offsets[b] + std::int64_t{in_sequence} * page_size;
        for (std::int32_t t = 0; t < kThreads; ++t) {
          const std::int32_t row_in_cta = tiling.row_in_cta(t);
          const std::int32_t row = chunk * tiling.rows_per_cta + row_in_cta;
          if (row_in_cta >= tiling.rows_per_cta || row >= page_size * 2 * s.heads) continue;
          const mapping::GatherRow g = mapping::gather_row(row, page_size, s.heads);
          ASSERT_EQ(g.flat_page, 0);
          if (g.token >= tokens) continue;
          const std::int64_t out_row = first_row + g.token;
          ASSERT_LT(out_row, table.offsets[b + 1]);
          ++hits[static_cast<std::size_t>(((out_row * 2 + g.kv) * s.heads + g.head) * tiling.lanes +
                                          tiling.lane(t))];
        }
      }
      ASSERT_TRUE(all_once(hits, "lane gather"));
    }
  }
}

TEST(LowRankMapping, EveryCoefficientAndValueOnce) {
  for (std::int32_t head_dim : {8, 64, 128, 256, 1024}) {
    for (std::int32_t rank : {2, 3, 16, 32, 64, 128, 256}) {
      if (rank > head_dim) continue;
      SCOPED_TRACE(::testing::Message() << "head_dim " << head_dim << ", rank " << rank);
      const std::int32_t stride = mapping::low_rank_row_stride(head_dim);
      // Dynamic and static shared memory stay within the 48 KB a CTA gets
      // without opting in.
      ASSERT_LE(mapping::kLowRankSharedFloats * 4 + mapping::kLowRankStaticSharedBytes, 49152);
      ASSERT_EQ(stride % 2, 1) << "an even stride puts a column of rows on few banks";
      // Append: tiles of tokens x coefficients, the rows in shared memory.
      const auto append = mapping::LowRankTiling::append(rank, head_dim, kThreads);
      ASSERT_LE(append.threads(), kThreads);
      ASSERT_LE(append.tile_tokens * stride, std::max(stride, mapping::kLowRankSharedFloats));
      if (rank <= 16 && head_dim <= 128) {
        // Small ranks keep most threads busy (at rank 2 a quarter did before).
        EXPECT_GE(append.threads(), kThreads * 2 / 3);
      }
      for (std::int64_t tokens : {1, 7, 300}) {
        std::vector<std::int32_t> hits(static_cast<std::size_t>(tokens * rank), 0);
        const std::int64_t tiles = (tokens + append.tile_tokens - 1) / append.tile_tokens;
        for (std::int64_t tile = 0; tile < tiles; ++tile) {
          for (std::int32_t t = 0; t < append.threads(); ++t) {
            const std::int64_t token = tile * append.tile_tokens + append.token_in_tile(t);
            if (token >= tokens) continue;
            for (std::int32_t j = append.first_item(t); j < rank; j += append.per_token)
              ++hits[static_cast<std::size_t>(token * rank + j)];
          }
        }
        ASSERT_TRUE(all_once(hits, "low-rank append"));
      }
      // Bank conflicts of the append's reads: the threads of a warp read
      // element i of their own tokens' rows, at most 2 to a bank.
      for (std::int32_t warp = 0; warp * 32 < append.threads(); ++warp) {
        std::vector<std::int32_t> banks(32, 0);
        std::vector<std::int32_t> tokens_seen;
        for (std::int32_t t = warp * 32; t < std::min(append.threads(), warp * 32 + 32); ++t) {
          const std::int32_t token = append.token_in_tile(t);
          if (std::find(tokens_seen.begin(), tokens_seen.end(), token) != tokens_seen.end())
            continue;  // same address: a broadcast
          tokens_seen.push_back(token);
          ++banks[static_cast<std::size_t>((token * stride + 5) % 32)];
        }
        ASSERT_LE(*std::max_element(banks.begin(), banks.end()), 1) << "warp " << warp;
      }
      // Gather: passes of tile_tokens tokens over the CTA's pages; the
      // coefficient tile fits its shared array (one float per thread).
      const auto gather = mapping::LowRankTiling::gather(head_dim, kThreads);
      ASSERT_LE(gather.threads(), kThreads);
      ASSERT_LE(gather.tile_tokens * rank, kThreads);
      for (std::int32_t page_tokens : {1, 16, 29, 64}) {
        std::vector<std::int32_t> hits(static_cast<std::size_t>(page_tokens * head_dim), 0);
        for (std::int32_t first = 0; first < page_tokens; first += gather.tile_tokens) {
          for (std::int32_t t = 0; t < gather.threads(); ++t) {
            const std::int32_t token = first + gather.token_in_tile(t);
            if (token >= page_tokens) continue;
            for (std::int32_t i = gather.first_item(t); i < head_dim; i += gather.per_token)
              ++hits[static_cast<std::size_t>(token * head_dim + i)];
          }
        }
        ASSERT_TRUE(all_once(hits, "low-rank gather"));
      }
      // The basis copy: [rank][stride] floats, written from a coalesced read
      // (element e = i x rank + j) with at most 4 threads of a warp on a bank
      // (2 from rank 16 on); it is done once per CTA.
      if (mapping::low_rank_basis_fits(head_dim, rank)) {
        for (std::int32_t e0 = 0; e0 < head_dim * rank; e0 += 32) {
          std::vector<std::int32_t> banks(32, 0);
          for (std::int32_t e = e0; e < std::min(e0 + 32, head_dim * rank); ++e) {
            const std::int32_t i = e / rank, j = e % rank;
            ++banks[static_cast<std::size_t>((j * stride + i) % 32)];
          }
          ASSERT_LE(*std::max_element(banks.begin(), banks.end()), rank >= 16 ? 2 : 4)
              << "elements " << e0;
        }
      }
    }
  }
}

// KIVI's flush and page gather: keys by channel, values by lanes of rows.
TEST(KiviMapping, EveryChannelAndValueLaneOnce) {
  for (const Shape& s : shapes()) {
    for (std::int32_t group : {4, 32, 64}) {
      const auto tiling = mapping::LaneTiling::of(s.head_dim, s.element_bytes, kThreads);
      std::vector<std::int32_t> channels(static_cast<std::size_t>(s.head_dim), 0);
      std::vector<std::int32_t> lanes(static_cast<std::size_t>(group * tiling.lanes), 0);
      for (std::int32_t t = 0; t < kThreads; ++t) {
        for (std::int32_t c = t; c < s.head_dim; c += kThreads)
          ++channels[static_cast<std::size_t>(c)];
        const std::int32_t row_in_cta = tiling.row_in_cta(t);
        for (std::int32_t first = 0; first < group; first += tiling.rows_per_cta) {
          const std::int32_t token = first + row_in_cta;
          if (row_in_cta >= tiling.rows_per_cta || token >= group) continue;
          ++lanes[static_cast<std::size_t>(token * tiling.lanes + tiling.lane(t))];
        }
      }
      ASSERT_TRUE(all_once(channels, "kivi key channels"));
      ASSERT_TRUE(all_once(lanes, "kivi value lanes"));
    }
  }
  // Ring rows: grid (sequences, ring size), position y past the paged tokens:
  // every token outside the pages has a position, since fewer than
  // ring size = G + R tokens ever stay outside.
  using Kivi = KiviCodec<4, 32, 128>;
  for (std::int64_t tokens = 0; tokens < 2000; ++tokens) {
    ASSERT_LT(tokens - Kivi::quantized_tokens(tokens), Kivi::kGroup + Kivi::kResidualTokens)
        << tokens;
  }
}

}  // namespace
}  // namespace kvcache::kernels
