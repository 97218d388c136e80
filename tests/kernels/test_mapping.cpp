// The CUDA kernels' thread mappings, run on the CPU over the full grid of
// the launch shapes the launchers use (head_dim 64 / 128 / 256, fp16 and
// fp32, block sizes 16 / 64, one token up to 262144, ragged tails): every
// output element is written exactly once, and by the thread that read the
// matching input. The kernels call these same host-device functions, so an
// index bug shows here without a GPU.
#include <gtest/gtest.h>

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

TEST(GatherMapping, EveryOutputVectorOnceFromItsOwnRow) {
  for (const Shape& s : shapes()) {
    const auto vecs_per_row = s.head_dim * s.element_bytes / 16;
    for (std::int32_t tokens : {1, 5, 16, 64}) {
      const std::int32_t total = 2 * vecs_per_row * s.heads * tokens;
      std::vector<std::int32_t> out(static_cast<std::size_t>(total), 0);
      for (std::int32_t t = 0; t < 256; ++t) {
        for (std::int32_t base = t; base < total; base += 256 * kUnroll) {
          for (std::int32_t i = 0; i < kUnroll; ++i) {
            const std::int32_t index = base + i * 256;
            if (index >= total) continue;
            const mapping::GatherVector v =
                mapping::gather_vector(index, tokens, s.heads, vecs_per_row);
            ASSERT_LT(v.token, tokens);
            ASSERT_LT(v.head, s.heads);
            // The packed output vector is the one of the row it read.
            ASSERT_EQ(v.in_kv, (v.token * s.heads + v.head) * vecs_per_row + v.vec);
            ++out[static_cast<std::size_t>(v.kv * total / 2 + v.in_kv)];
          }
        }
      }
      ASSERT_TRUE(all_once(out, "gather"));
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

TEST(LaneGatherMapping, EveryTokenOfEverySequenceOnceFromItsPage) {
  const std::uint64_t seed = kvcache::testing::test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (const Shape& s : shapes()) {
    for (std::int32_t page_size : {16, 64}) {
      const Table table = random_table(6, page_size, rng);
      const auto tiling = mapping::LaneTiling::of(s.head_dim, s.element_bytes, kThreads);
      const std::int64_t rows = std::int64_t{table.indptr.back()} * page_size * 2 * s.heads;
      const std::int64_t out_rows = table.offsets.back();
      std::vector<std::int32_t> hits(
          static_cast<std::size_t>(out_rows * 2 * s.heads * tiling.lanes), 0);
      for (std::int64_t cta = 0; cta < tiling.ctas(rows); ++cta) {
        for (std::int32_t t = 0; t < kThreads; ++t) {
          const std::int32_t row_in_cta = tiling.row_in_cta(t);
          const std::int64_t row = cta * tiling.rows_per_cta + row_in_cta;
          if (row_in_cta >= tiling.rows_per_cta || row >= rows) continue;
          const mapping::GatherRow g = mapping::gather_row(row, page_size, s.heads);
          const std::int32_t b = owning_sequence(table.indptr.data(), table.batch, g.flat_page);
          const std::int32_t in_sequence = g.flat_page - table.indptr[b];
          ASSERT_GE(in_sequence, 0);
          ASSERT_LT(g.flat_page, table.indptr[b + 1]);
          const std::int32_t tokens = tokens_in_page(
              in_sequence, table.indptr[b + 1] - table.indptr[b], table.last[b], page_size);
          if (g.token >= tokens) continue;
          const std::int64_t out_row =
              table.offsets[b] + std::int64_t{in_sequence} * page_size + g.token;
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
      // Append: tiles of tokens x coefficients.
      const auto append = mapping::LowRankTiling::of(rank, head_dim, kThreads);
      ASSERT_LE(append.threads(), kThreads);
      ASSERT_LE(append.tile_tokens * head_dim, std::max(head_dim, mapping::kLowRankTileFloats));
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
      // Gather: tiles of a page's tokens x output values.
      const auto gather = mapping::LowRankTiling::of(head_dim, 1, kThreads);
      ASSERT_LE(gather.threads(), kThreads);
      for (std::int32_t page_size : {16, 64}) {
        std::vector<std::int32_t> hits(static_cast<std::size_t>(page_size * head_dim), 0);
        const std::int32_t tiles = (page_size + gather.tile_tokens - 1) / gather.tile_tokens;
        for (std::int32_t tile = 0; tile < tiles; ++tile) {
          for (std::int32_t t = 0; t < gather.threads(); ++t) {
            const std::int32_t token = tile * gather.tile_tokens + gather.token_in_tile(t);
            if (token >= page_size) continue;
            for (std::int32_t i = gather.first_item(t); i < head_dim; i += gather.per_token)
              ++hits[static_cast<std::size_t>(token * head_dim + i)];
          }
        }
        ASSERT_TRUE(all_once(hits, "low-rank gather"));
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
