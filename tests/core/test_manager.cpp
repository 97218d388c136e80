// The paged manager on the CPU backend: every public operation, on fresh
// random data, across dtypes, head sizes, layouts and block sizes.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache {
namespace {

using Manager = KVCacheManager<CachePolicy<PagedAllocation>, HostBackend>;
using kvcache::testing::StepDriver;

TensorView driver_tensor(const Manager& manager, void* data, std::int64_t tokens) {
  return TensorView::packed(data, manager.shape().dtype, tokens, manager.shape().num_kv_heads,
                            manager.shape().head_dim);
}

using Params = std::tuple<DType, std::int32_t /*head_dim*/, KVLayout, std::int32_t /*block*/>;

class ManagerTest : public ::testing::TestWithParam<Params> {
 protected:
  // By default room for 2048 tokens whatever the block size.
  CacheConfig config(std::int64_t num_blocks = 0) const {
    CacheConfig c;
    c.shape = ModelShape::gqa(3, 2, std::get<1>(GetParam()), std::get<0>(GetParam()));
    c.layout = std::get<2>(GetParam());
    c.block_size = std::get<3>(GetParam());
    c.num_blocks = num_blocks != 0 ? num_blocks : 2048 / c.block_size;
    c.max_batch_tokens = 512;
    c.max_batch_sequences = 8;
    return c;
  }
  std::uint64_t seed_ = kvcache::testing::test_seed();
};

// A backend whose uploads never finish (a GPU still busy with everything it
// was given): staging_host() on an area with an upload in flight is a wait.
struct BusyBackend : MetadataBackend {
  struct Staging {
    Buffer buffer;
    bool in_flight = false;
  };
  std::shared_ptr<int> waits = std::make_shared<int>(0);
  Staging make_staging(std::size_t bytes) {
    return Staging{MetadataBackend::make_staging(bytes).buffer};
  }
  void* staging_host(Staging& staging) {
    if (staging.in_flight) ++*waits;
    staging.in_flight = false;
    return staging.buffer.data();
  }
  const void* upload(Staging& staging, std::size_t) {
    staging.in_flight = true;
    return staging.buffer.data();
  }
};

// Preparing a step waits for the upload of the step before last, never for
// the step just prepared (whose kernels may still run): staging is double-buffered.
TEST(ManagerStaging, PreparingTheNextStepDoesNotWaitForTheLastOne) {
  CacheConfig config;
  config.shape = ModelShape::gqa(2, 2, 64, DType::kF16);
  config.num_blocks = 64;
  BusyBackend backend;
  const std::shared_ptr<int> waits = backend.waits;
  KVCacheManager<CachePolicy<PagedAllocation>, BusyBackend> m(config, backend);
  const std::vector<SeqId> seqs = {m.create_sequence(), m.create_sequence()};
  const std::vector<std::int32_t> counts = {3, 5};
  std::vector<std::uint64_t> slot_sums;
  for (int step = 0; step < 4; ++step) {
    for (SeqId seq : seqs)
      ASSERT_EQ(m.try_reserve(seq, 5), ReserveStatus::kOk);
    const int before = *waits;
    const AppendBatch batch = m.prepare_append(seqs, counts);
    // Steps 0 and 1 each find a free area; from step 2 on, each reuses the
    // area of the step before last (one wait), never the last step's.
    EXPECT_EQ(*waits - before, step < 2 ? 0 : 1) << "step " << step;
    const auto slots = batch.slot_mapping();
    ASSERT_EQ(slots.size(), 8u);
    EXPECT_EQ(slots[3] / 16, m.block_table(seqs[1])[0]) << "the second sequence's first slot";
    m.commit(batch);
  }
  // Gathers stage through their own pair of areas.
  const std::int64_t total = m.sequence(seqs[0]).num_tokens + m.sequence(seqs[1]).num_tokens;
  std::vector<std::uint16_t> k(static_cast<std::size_t>(total * 128)), v(k.size());
  const int before = *waits;
  for (int i = 0; i < 3; ++i)
    m.gather(seqs, 0, TensorView::packed(k.data(), DType::kF16, total, 2, 64),
             TensorView::packed(v.data(), DType::kF16, total, 2, 64));
  EXPECT_EQ(*waits - before, 1) << "the third gather reuses the first one's area";
}

TEST_P(ManagerTest, PrefillThenDecodeReadsBackExactly) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  Manager manager(config());
  StepDriver driver(manager, seed_);
  std::vector<SeqId> seqs = {manager.create_sequence(), manager.create_sequence(),
                             manager.create_sequence()};
  ASSERT_TRUE(
      driver.step(seqs, {37, 1, 16}));  // prefill: odd, single-token and exact-block prompts
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(driver.step(seqs, {1, 1, 1}));  // decode
  ASSERT_TRUE(driver.step({seqs[1]}, {5}));     // a chunk for one sequence only
  for (SeqId seq : seqs) {
    for (std::int32_t layer = 0; layer < 3; ++layer)
      EXPECT_TRUE(driver.reads_back(seq, layer));
  }
  EXPECT_EQ(manager.sequence(seqs[0]).num_tokens, 57);
  EXPECT_EQ(manager.sequence(seqs[1]).num_tokens, 26);
  manager.check_invariants();
}

TEST_P(ManagerTest, BatchGatherConcatenatesSequencesInOrder) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  Manager manager(config());
  StepDriver driver(manager, seed_);
  std::vector<SeqId> seqs = {manager.create_sequence(), manager.create_sequence(),
                             manager.create_sequence()};
  ASSERT_TRUE(driver.step(seqs, {9, 0, 33}));  // one empty sequence in the middle
  ASSERT_TRUE(driver.step(seqs, {1, 2, 1}));
  const ModelShape& shape = manager.shape();
  const std::vector<SeqId> order = {seqs[2], seqs[0], seqs[1]};
  const std::int64_t tokens = 34 + 10 + 2;
  const auto bytes = static_cast<std::size_t>(tokens * shape.kv_width() * dtype_size(shape.dtype));
  Buffer k(manager.backend().allocate(bytes)), v(manager.backend().allocate(bytes));
  manager.gather(order, 1, driver.tensor(k, tokens), driver.tensor(v, tokens));
  std::vector<std::byte> expected_k, expected_v;
  for (SeqId seq : order) {
    const auto& rk = driver.recorded.k[{seq, 1}];
    const auto& rv = driver.recorded.v[{seq, 1}];
    expected_k.insert(expected_k.end(), rk.begin(), rk.end());
    expected_v.insert(expected_v.end(), rv.begin(), rv.end());
  }
  EXPECT_EQ(std::memcmp(k.data(), expected_k.data(), bytes), 0);
  EXPECT_EQ(std::memcmp(v.data(), expected_v.data(), bytes), 0);
}

TEST_P(ManagerTest, StridedInputFromAFusedQkvTensor) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  Manager manager(config());
  const ModelShape& shape = manager.shape();
  const SeqId seq = manager.create_sequence();
  const std::int32_t tokens = 11;
  ASSERT_EQ(manager.try_reserve(seq, tokens), ReserveStatus::kOk);
  // qkv: [tokens][q heads (4) + k heads (2) + v heads (2)][head_dim]
  const std::int64_t width = 8 * std::int64_t{shape.head_dim};
  std::mt19937_64 rng(seed_);
  auto qkv = kvcache::testing::random_rows(shape.dtype, tokens * width, rng);
  Buffer buffer = kvcache::testing::to_backend(manager.backend(), qkv);
  const std::int64_t element = dtype_size(shape.dtype);
  auto slice = [&](int first_head) {
    TensorView t = TensorView::packed(buffer.bytes_data() + first_head * shape.head_dim * element,
                                      shape.dtype, tokens, 2, shape.head_dim);
    t.token_stride = width;
    return t;
  };
  AppendBatch batch =
      manager.prepare_append(std::vector<SeqId>{seq}, std::vector<std::int32_t>{tokens});
  for (std::int32_t layer = 0; layer < 3; ++layer)
    manager.append(layer, batch, slice(4), slice(6));
  manager.commit(batch);
  const auto row = static_cast<std::size_t>(shape.head_dim * element);
  std::vector<std::byte> k(static_cast<std::size_t>(tokens) * 2 * row), v(k.size());
  manager.gather(seq, 2, driver_tensor(manager, k.data(), tokens),
                 driver_tensor(manager, v.data(), tokens));
  for (std::int32_t t = 0; t < tokens; ++t) {
    for (int h = 0; h < 2; ++h) {
      const std::byte* source = qkv.data() + (t * width + (4 + h) * shape.head_dim) * element;
      EXPECT_EQ(std::memcmp(k.data() + (t * 2 + h) * row, source, row), 0) << t << " " << h;
      EXPECT_EQ(std::memcmp(v.data() + (t * 2 + h) * row, source + 2 * row, row), 0)
          << t << " " << h;
    }
  }
}

TEST_P(ManagerTest, PoolFullIsAValueAndReleaseMakesRoom) {
  Manager manager(config(8));
  const std::int32_t block = manager.block_size();
  const SeqId a = manager.create_sequence();
  const SeqId b = manager.create_sequence();
  ASSERT_EQ(manager.try_reserve(a, 5 * block), ReserveStatus::kOk);
  const auto before = kvcache::testing::Snapshot::of(manager, {a, b});
  EXPECT_EQ(manager.try_reserve(b, 4 * block), ReserveStatus::kPoolFull);
  EXPECT_TRUE(before == kvcache::testing::Snapshot::of(manager, {a, b}));  // nothing taken
  EXPECT_EQ(manager.try_reserve(b, 3 * block), ReserveStatus::kOk);
  EXPECT_EQ(manager.num_free_blocks(), 0);
  EXPECT_EQ(manager.try_reserve(b, 3 * block + 1), ReserveStatus::kPoolFull);
  manager.release(a);
  EXPECT_EQ(manager.num_free_blocks(), 5);
  EXPECT_EQ(manager.try_reserve(b, 3 * block + 1), ReserveStatus::kOk);
  EXPECT_EQ(manager.sequence(b).reserved_tokens, 4 * block);
  manager.check_invariants();
}

TEST_P(ManagerTest, ReserveIsIdempotentForRoomAlreadyHeld) {
  Manager manager(config());
  const SeqId seq = manager.create_sequence();
  ASSERT_EQ(manager.try_reserve(seq, 3), ReserveStatus::kOk);
  const auto blocks = manager.sequence(seq).blocks;
  ASSERT_EQ(manager.try_reserve(seq, 1), ReserveStatus::kOk);
  ASSERT_EQ(manager.try_reserve(seq, 0), ReserveStatus::kOk);
  EXPECT_EQ(manager.sequence(seq).blocks, blocks);
}

TEST_P(ManagerTest, CopyBlocksKernelCopiesEveryLayer) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  Manager manager(config(6));
  std::mt19937_64 rng(seed_);
  const auto page_bytes = static_cast<std::size_t>(manager.codec().view().page_bytes);
  auto image = kvcache::testing::random_rows(DType::kF32,
                                             static_cast<std::int64_t>(6 * page_bytes / 4), rng);
  std::memcpy(manager.codec().view().data, image.data(), image.size());
  const std::vector<std::int32_t> pairs = {4, 1, 0, 5};
  kernels::CopyBlocksParams params{manager.codec().view().data, manager.codec().view().page_bytes,
                                   6, pairs.data(), 2};
  launch(manager.backend(), params);
  auto expected = image;
  std::memcpy(expected.data() + 1 * page_bytes, image.data() + 4 * page_bytes, page_bytes);
  std::memcpy(expected.data() + 5 * page_bytes, image.data() + 0 * page_bytes, page_bytes);
  EXPECT_EQ(std::memcmp(manager.codec().view().data, expected.data(), expected.size()), 0);
}

TEST_P(ManagerTest, AppendKernelSkipsPaddingSlots) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  Manager manager(config(4));
  std::mt19937_64 rng(seed_);
  const ModelShape& shape = manager.shape();
  const auto arena = static_cast<std::size_t>(manager.codec().view().page_bytes * 4);
  auto image =
      kvcache::testing::random_rows(DType::kF32, static_cast<std::int64_t>(arena / 4), rng);
  std::memcpy(manager.codec().view().data, image.data(), arena);
  auto k = kvcache::testing::random_rows(shape.dtype, 3 * shape.kv_width(), rng);
  auto v = kvcache::testing::random_rows(shape.dtype, 3 * shape.kv_width(), rng);
  const std::int64_t slot =
      2 * manager.block_size() + manager.block_size() - 1;  // last token of block 2
  const std::vector<std::int64_t> slots = {-1, slot, -1};
  kernels::AppendParams params;
  params.cache = manager.codec().view();
  params.layer = 1;
  params.source.k = k.data();
  params.source.v = v.data();
  params.source.head_bytes = shape.head_dim * dtype_size(shape.dtype);
  params.source.token_bytes = params.source.head_bytes * shape.num_kv_heads;
  params.slots = kernels::SlotMapping{slots.data(), 3};
  launch(manager.backend(), params);
  // Only token 1's rows changed, exactly where the index math says.
  auto expected = image;
  const PagedKVView& view = manager.codec().view();
  const auto row = static_cast<std::size_t>(view.row_bytes());
  for (int kv = 0; kv < 2; ++kv) {
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      const auto source =
          (kv == 0 ? k : v).data() + (shape.num_kv_heads + h) * static_cast<std::ptrdiff_t>(row);
      std::memcpy(expected.data() + view.slot_offset(slot, 1, kv, h), source, row);
    }
  }
  EXPECT_EQ(std::memcmp(view.data, expected.data(), arena), 0);
}

INSTANTIATE_TEST_SUITE_P(
    DTypesHeadDimsLayouts, ManagerTest,
    ::testing::Combine(::testing::Values(DType::kF16, DType::kBF16, DType::kF32),
                       ::testing::Values(64, 128, 256),
                       ::testing::Values(KVLayout::kNHD, KVLayout::kHND), ::testing::Values(1, 16)),
    [](const ::testing::TestParamInfo<Params>& param_info) {
      return std::string(dtype_name(std::get<0>(param_info.param))) + "_d" +
             std::to_string(std::get<1>(param_info.param)) + "_" +
             std::string(layout_name(std::get<2>(param_info.param))) + "_b" +
             std::to_string(std::get<3>(param_info.param));
    });

TEST(Manager, BudgetBytesSizesThePool) {
  CacheConfig c;
  c.shape = ModelShape::gqa(4, 2, 64, DType::kF16);
  c.block_size = 16;
  c.budget_bytes = 10 * 16 * c.shape.bytes_per_token() + 100;
  Manager manager(c);
  EXPECT_EQ(manager.num_blocks(), 10);
  EXPECT_EQ(manager.memory().arena_bytes, 10 * manager.bytes_per_block());
  EXPECT_EQ(manager.bytes_per_block(), 16 * 4 * 2 * 2 * 64 * 2);
}

TEST(Manager, MemoryStatsFollowTheSequences) {
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 2, 64, DType::kF16);
  c.block_size = 16;
  c.num_blocks = 32;
  Manager manager(c);
  StepDriver driver(manager, kvcache::testing::test_seed());
  const SeqId a = manager.create_sequence();
  const SeqId b = manager.create_sequence();
  ASSERT_TRUE(driver.step({a, b}, {40, 3}));
  const MemoryStats stats = manager.memory();
  EXPECT_EQ(stats.used_blocks, 3 + 1);
  EXPECT_EQ(stats.free_blocks, 28);
  EXPECT_EQ(stats.stored_tokens, 43);
  EXPECT_EQ(stats.reserved_tokens, 64);
  EXPECT_EQ(stats.used_bytes(), 4 * manager.bytes_per_block());
  EXPECT_EQ(stats.num_sequences, 2);
  manager.release(a);
  EXPECT_EQ(manager.memory().used_blocks, 1);
  EXPECT_EQ(manager.memory().stored_tokens, 3);
}

}  // namespace
}  // namespace kvcache
