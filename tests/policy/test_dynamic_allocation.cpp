// Dynamic allocation on its own: doubling, growth in place, relocation,
// best-fit reuse of released regions, and fragmentation.
#include <gtest/gtest.h>

#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/policy/dynamic.hpp"

namespace kvcache {
namespace {

std::vector<BlockId> run(BlockId first, std::int64_t count) {
  std::vector<BlockId> ids;
  for (std::int64_t i = 0; i < count; ++i)
    ids.push_back(static_cast<BlockId>(first + i));
  return ids;
}

TEST(DynamicAllocation, GrowsByDoublingInPlaceWhenTheNextBlocksAreFree) {
  DynamicAllocation dynamic(64, 4);
  std::vector<BlockId> table;
  BlockMoves moves;
  ASSERT_TRUE(dynamic.try_grow(table, 0, 1, moves));
  EXPECT_EQ(table, run(0, 4));  // the initial capacity
  ASSERT_TRUE(dynamic.try_grow(table, 4, 5, moves));
  EXPECT_EQ(table, run(0, 8));  // doubled, in place
  ASSERT_TRUE(dynamic.try_grow(table, 8, 20, moves));
  EXPECT_EQ(table, run(0, 20));  // more than double when asked for more
  EXPECT_TRUE(moves.empty());
  EXPECT_EQ(dynamic.stats().grown_in_place, 2);
  EXPECT_EQ(dynamic.num_free(), 44);
}

TEST(DynamicAllocation, RelocatesWhenBlockedAndReportsTheCopies) {
  DynamicAllocation dynamic(64, 4);
  std::vector<BlockId> a, b;
  BlockMoves moves;
  ASSERT_TRUE(dynamic.try_grow(a, 0, 4, moves));  // [0, 4)
  ASSERT_TRUE(dynamic.try_grow(b, 0, 4, moves));  // [4, 8): blocks a's growth
  ASSERT_TRUE(dynamic.try_grow(a, 3, 5, moves));  // 3 blocks in use
  EXPECT_EQ(a, run(8, 8));
  EXPECT_EQ(moves, (BlockMoves{{0, 8}, {1, 9}, {2, 10}}));
  EXPECT_EQ(dynamic.stats().relocations, 1);
  EXPECT_EQ(dynamic.stats().blocks_moved, 3);
  EXPECT_EQ(dynamic.largest_free_extent(), 48);  // [16, 64)
  EXPECT_EQ(dynamic.num_free(), 64 - 12);
}

TEST(DynamicAllocation, ReleasedRegionsAreReusedBestFit) {
  DynamicAllocation dynamic(100, 10);
  std::vector<BlockId> r1, r2, r3, r4;
  BlockMoves moves;
  ASSERT_TRUE(dynamic.try_grow(r1, 0, 10, moves));  // [0, 10)
  ASSERT_TRUE(dynamic.try_grow(r2, 0, 30, moves));  // [10, 40)
  ASSERT_TRUE(dynamic.try_grow(r3, 0, 10, moves));  // [40, 50)
  ASSERT_TRUE(dynamic.try_grow(r4, 0, 20, moves));  // [50, 70)
  dynamic.release_table(r2);                        // a 30-block hole
  dynamic.release_table(r4);                        // 20 + the 30-block tail merge: [50, 100)
  EXPECT_EQ(dynamic.num_free_extents(), 2);
  std::vector<BlockId> fits;
  ASSERT_TRUE(dynamic.try_grow(fits, 0, 25, moves));
  EXPECT_EQ(fits.front(), 10);  // best fit: the 30-block hole, not the 50-block tail
  EXPECT_EQ(dynamic.stats().regions, 5);
  EXPECT_EQ(dynamic.stats().regions_reused, 1);
  EXPECT_DOUBLE_EQ(dynamic.stats().reuse_rate(), 0.2);
}

TEST(DynamicAllocation, FragmentationCanRefuseWhatTheFreeCountWouldAllow) {
  DynamicAllocation dynamic(12, 4);
  std::vector<BlockId> a, b, c;
  BlockMoves moves;
  ASSERT_TRUE(dynamic.try_grow(a, 0, 4, moves));
  ASSERT_TRUE(dynamic.try_grow(b, 0, 4, moves));
  ASSERT_TRUE(dynamic.try_grow(c, 0, 4, moves));
  dynamic.release_table(a);
  dynamic.release_table(c);
  EXPECT_EQ(dynamic.num_free(), 8);
  std::vector<BlockId> wide;
  EXPECT_FALSE(dynamic.try_grow(wide, 0, 6, moves));  // 8 free, but no 6 in a row
  EXPECT_TRUE(wide.empty());
  EXPECT_EQ(dynamic.num_free(), 8);
}

TEST(DynamicAllocation, RejectsWhatIsNotARegion) {
  DynamicAllocation dynamic(16, 4);
  std::vector<BlockId> a;
  BlockMoves moves;
  ASSERT_TRUE(dynamic.try_grow(a, 0, 4, moves));
  EXPECT_TRUE(kvcache::testing::throws_with<InvalidArgument>(
      [&] {
        dynamic.release_table(std::vector<BlockId>{0, 2});
      },
      {"not an allocated region"}));
  EXPECT_TRUE(kvcache::testing::throws_with<InvalidArgument>(
      [&] {
        dynamic.release_table(std::vector<BlockId>{8, 9});
      },
      {"not an allocated region"}));
  EXPECT_EQ(dynamic.num_free(), 12);
  EXPECT_TRUE(kvcache::testing::throws_with<InvalidArgument>([] { DynamicAllocation bad(0, 4); },
                                                             {"num_blocks 0"}));
}

}  // namespace
}  // namespace kvcache
