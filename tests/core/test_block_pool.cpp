#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/block_pool.hpp"

namespace kvcache {
namespace {

using kvcache::testing::throws_with;

TEST(BlockPool, AllocatesEveryBlockOnceThenReportsFull) {
  BlockPool pool(64);
  std::set<BlockId> seen;
  for (int i = 0; i < 64; ++i) {
    const auto id = pool.try_allocate();
    ASSERT_TRUE(id.has_value());
    EXPECT_TRUE(seen.insert(*id).second);
    EXPECT_EQ(pool.ref_count(*id), 1);
  }
  EXPECT_EQ(pool.num_free(), 0);
  EXPECT_FALSE(pool.try_allocate().has_value());  // full is a value, not an error
  EXPECT_TRUE(pool.release(17));
  EXPECT_EQ(pool.try_allocate(), BlockId{17});  // LIFO: the block just freed comes back first
}

TEST(BlockPool, BulkAllocationIsAllOrNothing) {
  BlockPool pool(10);
  std::vector<BlockId> seven(7), four(4);
  EXPECT_TRUE(pool.try_allocate(seven));
  EXPECT_FALSE(pool.try_allocate(four));
  EXPECT_EQ(pool.num_free(), 3);
  std::vector<BlockId> three(3);
  EXPECT_TRUE(pool.try_allocate(three));
  EXPECT_EQ(pool.num_free(), 0);
}

TEST(BlockPool, ReferenceCountsKeepSharedBlocksAlive) {
  BlockPool pool(4);
  const BlockId id = *pool.try_allocate();
  pool.retain(id);
  pool.retain(id);
  EXPECT_EQ(pool.ref_count(id), 3);
  EXPECT_FALSE(pool.release(id));
  EXPECT_FALSE(pool.release(id));
  EXPECT_EQ(pool.num_free(), 3);
  EXPECT_TRUE(pool.release(id));
  EXPECT_EQ(pool.num_free(), 4);
  EXPECT_TRUE(pool.is_free(id));
}

TEST(BlockPool, MisuseThrowsAndChangesNothing) {
  BlockPool pool(8);
  const BlockId id = *pool.try_allocate();
  EXPECT_TRUE(throws_with<InvalidArgument>([] { BlockPool bad(0); }, {"num_blocks 0"}));
  EXPECT_TRUE(throws_with<OutOfRange>([&] { pool.release(8); }, {"block id 8", "[0, 8)"}));
  EXPECT_TRUE(throws_with<OutOfRange>([&] { pool.retain(-1); }, {"block id -1"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { pool.release(5); }, {"block 5 is free"}));
  EXPECT_TRUE(pool.release(id));
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { pool.release(id); }, {"is free"}));  // double free
  EXPECT_EQ(pool.num_free(), 8);
}

TEST(BlockPool, RandomOperationsMatchASimpleModel) {
  const std::uint64_t seed = kvcache::testing::test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  BlockPool pool(97);
  std::vector<int> model(97, 0);  // reference counts
  for (int step = 0; step < 20000; ++step) {
    const int op = static_cast<int>(rng() % 3);
    std::vector<BlockId> live;
    for (BlockId b = 0; b < 97; ++b) {
      if (model[static_cast<std::size_t>(b)] > 0) live.push_back(b);
    }
    if (op == 0) {
      const auto id = pool.try_allocate();
      ASSERT_EQ(id.has_value(), live.size() < 97);
      if (id) {
        ASSERT_EQ(model[static_cast<std::size_t>(*id)], 0);
        model[static_cast<std::size_t>(*id)] = 1;
      }
    } else if (!live.empty()) {
      const BlockId b = live[rng() % live.size()];
      if (op == 1) {
        pool.retain(b);
        ++model[static_cast<std::size_t>(b)];
      } else {
        ASSERT_EQ(pool.release(b), --model[static_cast<std::size_t>(b)] == 0);
      }
    }
    const auto free_count = std::count(model.begin(), model.end(), 0);
    ASSERT_EQ(pool.num_free(), free_count);
  }
  for (BlockId b = 0; b < 97; ++b)
    EXPECT_EQ(pool.ref_count(b), model[static_cast<std::size_t>(b)]);
}

}  // namespace
}  // namespace kvcache
