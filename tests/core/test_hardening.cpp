// What an adversarial engine author found, each case failing before its fix:
// absurd reservations, another manager's batch, size arithmetic that wrapped,
// negative strides, unbounded padding, a request larger than the pool,
// prompt ids lost in a mixed batch, commits of rows never written, and
// errors that named a derived value instead of the field. Every rejected
// call leaves the manager as it was.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache {
namespace {

using kvcache::testing::Snapshot;
using kvcache::testing::StepDriver;
using kvcache::testing::throws_with;

constexpr std::int64_t kMax64 = std::numeric_limits<std::int64_t>::max();

CacheConfig small_config(std::int32_t layers = 2) {
  CacheConfig c;
  c.shape = ModelShape::gqa(layers, 2, 64, DType::kF16);
  c.block_size = 16;
  c.num_blocks = 8;  // 128 tokens
  c.max_batch_tokens = 256;
  c.max_batch_sequences = 4;
  return c;
}

std::vector<std::int32_t> ids(std::int32_t first, std::int32_t count) {
  std::vector<std::int32_t> out(static_cast<std::size_t>(count));
  for (std::int32_t i = 0; i < count; ++i)
    out[static_cast<std::size_t>(i)] = first + i;
  return out;
}

using Sharing = KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>>;

TEST(Hardening, ReservationsPastThePoolAreRefusedBeforeEvictingAnything) {
  Sharing m(small_config());
  StepDriver<Sharing> driver(m, kvcache::testing::test_seed());
  // Cached prefix blocks and a parked sequence: what an eviction would take.
  const SeqId cached = m.create_sequence(ids(0, 32));
  ASSERT_TRUE(driver.step({cached}, {32}));
  m.release(cached);
  const SeqId parked = m.create_sequence();
  ASSERT_TRUE(driver.step({parked}, {20}));
  m.park(parked);
  const SeqId seq = m.create_sequence();
  const Snapshot before = Snapshot::of(m, {parked, seq});
  for (std::int64_t tokens :
       {std::int64_t{129}, std::int64_t{1} << 32, std::int64_t{1} << 40, kMax64 - 1, kMax64}) {
    EXPECT_EQ(m.try_reserve(seq, tokens), ReserveStatus::kPoolFull) << tokens;
    EXPECT_EQ(m.sequence(seq).reserved_tokens, 0);
  }
  EXPECT_TRUE(before == Snapshot::of(m, {parked, seq}));
  EXPECT_EQ(m.stats().evicted_blocks, 0);
  EXPECT_EQ(m.stats().evicted_sequences, 0);
  EXPECT_EQ(m.num_cached_blocks(), 2);
  // What fits still fits (evicting what it must).
  EXPECT_EQ(m.try_reserve(seq, 128), ReserveStatus::kOk);
  m.check_invariants();
}

TEST(Hardening, ABatchOfAnotherManagerIsRefused) {
  using Manager = KVCacheManager<>;
  Manager first(small_config()), second(small_config());
  StepDriver<Manager> driver(first, kvcache::testing::test_seed());
  const SeqId a = first.create_sequence(), b = second.create_sequence();
  ASSERT_EQ(first.try_reserve(a, 4), ReserveStatus::kOk);
  ASSERT_EQ(second.try_reserve(b, 4), ReserveStatus::kOk);
  // Same sequence id, same serial: only the manager tells them apart.
  AppendBatch mine = first.prepare_append(std::vector<SeqId>{a}, std::vector<std::int32_t>{4});
  AppendBatch theirs = second.prepare_append(std::vector<SeqId>{b}, std::vector<std::int32_t>{4});
  const Snapshot before = Snapshot::of(first, {a});
  alignas(16) std::byte k[4 * 256] = {}, v[4 * 256] = {};
  const auto tensor = [&](std::byte* data) {
    return TensorView::packed(data, DType::kF16, 4, 2, 64);
  };
  EXPECT_TRUE(throws_with<ReservationError>([&] { first.append(0, theirs, tensor(k), tensor(v)); },
                                            {"append", "another manager"}));
  EXPECT_TRUE(throws_with<ReservationError>([&] { first.commit(theirs); }, {"commit"}));
  EXPECT_TRUE(
      throws_with<ReservationError>([&] { (void)export_vllm(first, theirs); }, {"export_vllm"}));
  EXPECT_TRUE(before == Snapshot::of(first, {a}));
  // Both managers' own batches are still open.
  driver.append_layers(mine);
  first.commit(mine);
  EXPECT_TRUE(driver.reads_back(a, 1));
  for (std::int32_t layer = 0; layer < 2; ++layer)
    second.append(layer, theirs, tensor(k), tensor(v));
  second.commit(theirs);
  EXPECT_EQ(second.sequence(b).num_tokens, 4);
}

TEST(Hardening, SizeArithmeticNeverWraps) {
  // An arena of 2^31 - 1 blocks of 2^39 bytes: the product does not fit.
  CacheConfig huge;
  huge.shape = ModelShape::gqa(4096, 1024, 1024, DType::kF32);
  huge.block_size = 32;
  huge.num_blocks = (std::int64_t{1} << 31) - 1;
  EXPECT_TRUE(
      throws_with<InvalidArgument>([&] { KVCacheManager<> m(huge); }, {"num_blocks", "overflows"}));
  const ModelShape shape = ModelShape::gqa(32, 8, 128, DType::kF16);
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { (void)kv_cache_bytes(shape, kMax64); },
                                           {"kv_cache_bytes", "9223372036854775807"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { (void)kv_cache_bytes(shape, -1); },
                                           {"kv_cache_bytes", "-1"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { (void)kv_cache_bytes(shape, 1 << 20, kMax64); },
                                           {"overflows"}));
  EXPECT_EQ(kv_cache_bytes(shape, 2048, 4), std::int64_t{2048} * 4 * 131072);
  HostBackend host;
  EXPECT_TRUE(throws_with<OutOfMemory>(
      [&] { (void)host.allocate(std::numeric_limits<std::size_t>::max()); }, {"allocate"}));
  EXPECT_TRUE(throws_with<OutOfMemory>(
      [&] { (void)host.allocate(std::numeric_limits<std::size_t>::max() - 100); }, {"allocate"}));
}

TEST(Hardening, NegativeAndHugeStridesAreRejected) {
  KVCacheManager<> m(small_config());
  StepDriver<KVCacheManager<>> driver(m, kvcache::testing::test_seed());
  const SeqId a = m.create_sequence();
  ASSERT_TRUE(driver.step({a}, {10}));
  ASSERT_EQ(m.try_reserve(a, 2), ReserveStatus::kOk);
  AppendBatch batch = m.prepare_append(std::vector<SeqId>{a}, std::vector<std::int32_t>{2});
  const Snapshot before = Snapshot::of(m, {a});
  alignas(16) static std::byte rows[8192] = {};
  for (std::int64_t stride :
       {std::int64_t{-128}, std::int64_t{-8}, std::int64_t{8}, std::int64_t{1} << 50}) {
    TensorView k = TensorView::packed(rows + 4096, DType::kF16, 2, 2, 64);
    k.token_stride = stride;
    EXPECT_TRUE(throws_with<InvalidArgument>([&] { m.append(0, batch, k, k); },
                                             {"append", "strides", std::to_string(stride)}))
        << stride;
    TensorView h = TensorView::packed(rows + 4096, DType::kF16, 2, 2, 64);
    h.head_stride = stride;
    EXPECT_TRUE(throws_with<InvalidArgument>([&] { m.append(0, batch, h, h); }, {"strides"}));
  }
  EXPECT_TRUE(before == Snapshot::of(m, {a}));
  driver.append_layers(batch);
  m.commit(batch);
  EXPECT_TRUE(driver.reads_back(a, 0));
}

TEST(Hardening, PaddingIsBoundedAndNamed) {
  KVCacheManager<> m(small_config());
  const SeqId a = m.create_sequence();
  ASSERT_EQ(m.try_reserve(a, 3), ReserveStatus::kOk);
  AppendBatch batch = m.prepare_append(std::vector<SeqId>{a}, std::vector<std::int32_t>{3});
  // At most max_batch_tokens (256 here): a step never takes more, padded or not.
  for (std::int64_t pad :
       {kMax64, std::int64_t{1} << 40, std::int64_t{257}, std::int64_t{2}, std::int64_t{-1}}) {
    EXPECT_TRUE(throws_with<InvalidArgument>(
        [&] { (void)export_vllm(m, batch, pad); },
        {"pad_tokens_to " + std::to_string(pad), "max_batch_tokens 256"}));
  }
  EXPECT_EQ(export_vllm(m, batch, 8).slot_mapping.size(), 8u);
  EXPECT_EQ(export_vllm(m, batch, 256).slot_mapping.size(), 256u);
}

TEST(Hardening, PromptIdsSurviveABatchWhereOthersPassIds) {
  Sharing m(small_config());
  StepDriver<Sharing> driver(m, kvcache::testing::test_seed());
  const std::vector<std::int32_t> prompt = ids(100, 32);
  const SeqId waiting = m.create_sequence(prompt);  // nothing cached yet
  const SeqId other = m.create_sequence();
  ASSERT_EQ(m.try_reserve(other, 3), ReserveStatus::kOk);
  // `waiting` is listed with no new tokens; `other` passes its ids.
  AppendBatch batch = m.prepare_append(std::vector<SeqId>{waiting, other},
                                       std::vector<std::int32_t>{0, 3}, ids(7, 3));
  driver.append_layers(batch);
  m.commit(batch);
  EXPECT_EQ(m.sequence(waiting).known_tokens, 32);
  // It appends its prompt later without ids: the known ones key its blocks.
  ASSERT_TRUE(driver.step({waiting}, {32}));
  m.release(waiting);
  const SeqId again = m.create_sequence(prompt);
  EXPECT_EQ(m.sequence(again).num_tokens, 32);  // both blocks found cached
  m.check_invariants();
}

TEST(Hardening, CommitNeedsEveryLayerAppended) {
  using Manager = KVCacheManager<>;
  Manager m(small_config(3));
  StepDriver<Manager> driver(m, kvcache::testing::test_seed());
  const SeqId a = m.create_sequence();
  ASSERT_TRUE(driver.step({a}, {5}));
  ASSERT_EQ(m.try_reserve(a, 2), ReserveStatus::kOk);
  AppendBatch batch = m.prepare_append(std::vector<SeqId>{a}, std::vector<std::int32_t>{2});
  const Snapshot before = Snapshot::of(m, {a});
  EXPECT_TRUE(throws_with<ReservationError>([&] { m.commit(batch); },
                                            {"commit", "0 of the batch's 3 layers", "0, 1, 2"}));
  alignas(16) static std::byte rows[2 * 256] = {};
  const TensorView t = TensorView::packed(rows, DType::kF16, 2, 2, 64);
  m.append(0, batch, t, t);
  m.append(2, batch, t, t);
  m.append(2, batch, t, t);  // twice is still one layer
  EXPECT_TRUE(throws_with<ReservationError>([&] { m.commit(batch); },
                                            {"2 of the batch's 3", "missing: 1"}));
  EXPECT_TRUE(before == Snapshot::of(m, {a}));
  m.append(1, batch, t, t);
  m.commit(batch);
  EXPECT_EQ(m.sequence(a).num_tokens, 7);
  // A batch without tokens writes nothing: it commits as is.
  m.commit(m.prepare_append(std::vector<SeqId>{a}, std::vector<std::int32_t>{0}));
  // A bookkeeping-only cache has no rows to write.
  KVCacheManager<CachePolicy<>, MetadataBackend> metadata(small_config(3));
  const SeqId b = metadata.create_sequence();
  ASSERT_EQ(metadata.try_reserve(b, 4), ReserveStatus::kOk);
  metadata.commit(metadata.prepare_append(std::vector<SeqId>{b}, std::vector<std::int32_t>{4}));
  EXPECT_EQ(metadata.sequence(b).num_tokens, 4);
}

TEST(Hardening, ConfigurationErrorsNameTheFieldSet) {
  auto make = [](auto edit) {
    return [edit] {
      CacheConfig c = small_config();
      edit(c);
      KVCacheManager<> m(c);
    };
  };
  EXPECT_TRUE(throws_with<InvalidArgument>(make([](CacheConfig& c) {
                                             c.num_blocks = 0;
                                             c.budget_bytes = kMax64;
                                           }),
                                           {"budget_bytes 9223372036854775807"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(make([](CacheConfig& c) {
                                             c.max_batch_sequences =
                                                 std::numeric_limits<std::int32_t>::max();
                                           }),
                                           {"max_batch_sequences 2147483647"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(
      make([](CacheConfig& c) { c.max_batch_tokens = std::numeric_limits<std::int32_t>::max(); }),
      {"max_batch_tokens 2147483647"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(make([](CacheConfig& c) {
                                             c.num_blocks = 0;
                                             c.budget_bytes = -5;
                                           }),
                                           {"budget_bytes -5"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(
      make([](CacheConfig& c) { c.num_blocks = std::int64_t{1} << 40; }),
      {"num_blocks 1099511627776"}));
}

}  // namespace
}  // namespace kvcache
