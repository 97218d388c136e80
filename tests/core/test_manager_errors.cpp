// Bad input: every misuse throws an error naming the bad value and what was
// allowed, and the manager's bookkeeping and cached data stay as they were.
#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache {
namespace {

using Manager = KVCacheManager<CachePolicy<PagedAllocation>, HostBackend>;
using kvcache::testing::Snapshot;
using kvcache::testing::StepDriver;
using kvcache::testing::throws_with;

CacheConfig good_config() {
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 2, 64, DType::kF16);
  c.block_size = 16;
  c.num_blocks = 16;
  c.max_batch_tokens = 256;
  c.max_batch_sequences = 4;
  return c;
}

class ManagerErrors : public ::testing::Test {
 protected:
  ManagerErrors() : manager_(good_config()), driver_(manager_, seed_) {
    a_ = manager_.create_sequence();
    b_ = manager_.create_sequence();
    EXPECT_TRUE(driver_.step({a_, b_}, {20, 7}));
    released_ = manager_.create_sequence();
    manager_.release(released_);
    ids_ = {a_, b_, released_};
  }

  // `call` must throw E mentioning the fragments and change nothing.
  template <class E>
  void expect_rejected(const std::function<void()>& call,
                       const std::vector<std::string>& fragments) {
    const Snapshot before = Snapshot::of(manager_, ids_);
    EXPECT_TRUE(throws_with<E>(call, fragments));
    EXPECT_TRUE(before == Snapshot::of(manager_, ids_)) << "state changed";
    for (SeqId seq : {a_, b_}) {
      for (std::int32_t layer = 0; layer < 2; ++layer)
        EXPECT_TRUE(driver_.reads_back(seq, layer));
    }
    manager_.check_invariants();
  }

  TensorView tensor(void* data, std::int64_t tokens) {
    return TensorView::packed(data, DType::kF16, tokens, 2, 64);
  }

  std::uint64_t seed_ = kvcache::testing::test_seed();
  Manager manager_;
  StepDriver<Manager> driver_;
  SeqId a_ = 0, b_ = 0, released_ = 0;
  std::vector<SeqId> ids_;
};

TEST_F(ManagerErrors, UnknownOrReleasedSequences) {
  const std::string id = std::to_string(released_);
  expect_rejected<UnknownSequence>([&] { manager_.release(released_); },
                                   {"release", "sequence " + id});
  expect_rejected<UnknownSequence>([&] { (void)manager_.try_reserve(released_, 1); },
                                   {"sequence " + id});
  expect_rejected<UnknownSequence>([&] { (void)manager_.try_reserve(999, 1); }, {"sequence 999"});
  expect_rejected<UnknownSequence>([&] { (void)manager_.sequence(released_); }, {"sequence " + id});
  expect_rejected<UnknownSequence>(
      [&] {
        (void)manager_.prepare_append(std::vector<SeqId>{a_, released_},
                                      std::vector<std::int32_t>{0, 0});
      },
      {"sequence " + id});
  std::vector<std::byte> out(1 << 16);
  expect_rejected<UnknownSequence>(
      [&] { manager_.gather(released_, 0, tensor(out.data(), 0), tensor(out.data(), 0)); },
      {"gather", "sequence " + id});
  expect_rejected<UnknownSequence>(
      [&] {
        (void)export_flashinfer(manager_, std::vector<SeqId>{a_, 4242});
      },
      {"sequence 4242"});
}

TEST_F(ManagerErrors, LayerOutOfRange) {
  ASSERT_EQ(manager_.try_reserve(a_, 1), ReserveStatus::kOk);
  AppendBatch batch = manager_.prepare_append(std::vector<SeqId>{a_}, std::vector<std::int32_t>{1});
  alignas(16) std::byte k[256], v[256];
  expect_rejected<OutOfRange>([&] { manager_.append(2, batch, tensor(k, 1), tensor(v, 1)); },
                              {"layer 2", "[0, 2)"});
  expect_rejected<OutOfRange>([&] { manager_.append(-1, batch, tensor(k, 1), tensor(v, 1)); },
                              {"layer -1"});
  std::vector<std::byte> out(20 * 256);
  expect_rejected<OutOfRange>(
      [&] { manager_.gather(a_, 7, tensor(out.data(), 20), tensor(out.data(), 20)); },
      {"layer 7", "[0, 2)"});
}

TEST_F(ManagerErrors, WrongTensorShapesAndBuffers) {
  ASSERT_EQ(manager_.try_reserve(a_, 2), ReserveStatus::kOk);
  AppendBatch batch = manager_.prepare_append(std::vector<SeqId>{a_}, std::vector<std::int32_t>{2});
  alignas(16) std::byte k[1024], v[1024];
  auto wrong_heads = TensorView::packed(k, DType::kF16, 2, 4, 64);
  expect_rejected<InvalidArgument>([&] { manager_.append(0, batch, wrong_heads, tensor(v, 2)); },
                                   {"4 heads", "2 KV heads"});
  auto wrong_dim = TensorView::packed(k, DType::kF16, 2, 2, 128);
  expect_rejected<InvalidArgument>([&] { manager_.append(0, batch, wrong_dim, tensor(v, 2)); },
                                   {"head_dim 128", "has 64"});
  auto wrong_dtype = TensorView::packed(k, DType::kF32, 2, 2, 64);
  expect_rejected<InvalidArgument>([&] { manager_.append(0, batch, wrong_dtype, tensor(v, 2)); },
                                   {"dtype fp32", "holds fp16"});
  expect_rejected<InvalidArgument>([&] { manager_.append(0, batch, tensor(k, 3), tensor(v, 3)); },
                                   {"3 tokens", "expected 2"});
  expect_rejected<InvalidArgument>(
      [&] { manager_.append(0, batch, tensor(nullptr, 2), tensor(v, 2)); },
      {"k is a null pointer"});
  expect_rejected<InvalidArgument>(
      [&] { manager_.append(0, batch, tensor(k, 2), tensor(v + 2, 2)); },
      {"v at", "not 16-byte aligned"});
  auto odd_stride = tensor(k, 2);
  odd_stride.token_stride = 129;
  expect_rejected<InvalidArgument>([&] { manager_.append(0, batch, odd_stride, odd_stride); },
                                   {"token 129", "multiples of 16 bytes"});
  std::vector<std::byte> out(64 * 256);
  auto strided_out = tensor(out.data(), 20);
  strided_out.token_stride = 256;
  expect_rejected<InvalidArgument>([&] { manager_.gather(a_, 0, strided_out, strided_out); },
                                   {"packed"});
}

TEST_F(ManagerErrors, AppendingPastTheReservedRoom) {
  // a_ holds 20 tokens in 2 blocks: room for 12 more without reserving.
  expect_rejected<ReservationError>(
      [&] { (void)manager_.prepare_append(std::vector<SeqId>{a_}, std::vector<std::int32_t>{13}); },
      {"sequence " + std::to_string(a_), "appends 13", "room for 12"});
  expect_rejected<InvalidArgument>(
      [&] {
        (void)manager_.prepare_append(std::vector<SeqId>{a_, a_}, std::vector<std::int32_t>{1, 1});
      },
      {"appears twice"});
  expect_rejected<InvalidArgument>(
      [&] { (void)manager_.prepare_append(std::vector<SeqId>{a_}, std::vector<std::int32_t>{-3}); },
      {"token count -3"});
  expect_rejected<InvalidArgument>(
      [&] {
        (void)manager_.prepare_append(std::vector<SeqId>{a_, b_}, std::vector<std::int32_t>{1});
      },
      {"2 sequence ids but 1 token counts"});
  expect_rejected<InvalidArgument>([&] { (void)manager_.try_reserve(a_, -1); }, {"token count -1"});
}

TEST_F(ManagerErrors, StaleBatches) {
  ASSERT_EQ(manager_.try_reserve(a_, 2), ReserveStatus::kOk);
  AppendBatch batch = manager_.prepare_append(std::vector<SeqId>{a_}, std::vector<std::int32_t>{1});
  driver_.append_layers(batch);
  manager_.commit(batch);
  alignas(16) std::byte k[256], v[256];
  expect_rejected<ReservationError>([&] { manager_.append(0, batch, tensor(k, 1), tensor(v, 1)); },
                                    {"stale"});
  expect_rejected<ReservationError>([&] { manager_.commit(batch); }, {"commit", "stale"});
  // A reserve between prepare and append invalidates the batch too.
  AppendBatch second =
      manager_.prepare_append(std::vector<SeqId>{a_}, std::vector<std::int32_t>{1});
  ASSERT_EQ(manager_.try_reserve(b_, 40), ReserveStatus::kOk);
  expect_rejected<ReservationError>([&] { manager_.append(0, second, tensor(k, 1), tensor(v, 1)); },
                                    {"stale"});
  // A failed prepare keeps the open batch usable.
  AppendBatch third = manager_.prepare_append(std::vector<SeqId>{a_}, std::vector<std::int32_t>{1});
  EXPECT_THROW(
      (void)manager_.prepare_append(std::vector<SeqId>{a_}, std::vector<std::int32_t>{500}),
      ReservationError);
  driver_.append_layers(third);
  manager_.commit(third);
  EXPECT_TRUE(driver_.reads_back(a_, 1));
}

TEST(ManagerConfigErrors, RejectsBadConfigurations) {
  auto make = [](auto edit) {
    return [edit] {
      CacheConfig c = good_config();
      edit(c);
      Manager manager(c);
    };
  };
  EXPECT_TRUE(throws_with<InvalidArgument>(make([](CacheConfig& c) { c.block_size = 0; }),
                                           {"block_size 0", "power of two"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(make([](CacheConfig& c) { c.block_size = 24; }),
                                           {"block_size 24", "[1, 1024]"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(make([](CacheConfig& c) { c.block_size = 2048; }),
                                           {"block_size 2048"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(make([](CacheConfig& c) {
                                             c.num_blocks = 0;
                                             c.budget_bytes = 1000;
                                           }),
                                           {"budget_bytes 1000", "one block of 16384 bytes"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(make([](CacheConfig& c) { c.budget_bytes = 1 << 20; }),
                                           {"exactly one of num_blocks"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(make([](CacheConfig& c) { c.num_blocks = -4; }),
                                           {"num_blocks -4"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(make([](CacheConfig& c) { c.shape.head_dim = 20; }),
                                           {"head_dim 20", "multiple of 8"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(make([](CacheConfig& c) { c.shape.num_layers = 0; }),
                                           {"num_layers 0"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(make([](CacheConfig& c) { c.max_batch_tokens = 0; }),
                                           {"max_batch_tokens 0"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(
      make([](CacheConfig& c) { c.layout = static_cast<KVLayout>(7); }), {"layout 7"}));
}

// Every call an engine makes on a codec manager over the CUDA backend, for
// one codec: instantiated (so this test program must link against every
// launch and backend member it needs, in a build without CUDA too), called
// only where a device exists.
template <class Codec>
void engine_calls(const CacheConfig& config, std::vector<std::uint16_t>& host) {
  using CodecManager =
      KVCacheManager<CachePolicy<PagedAllocation, LruEviction, NoPrefixSharing, Codec>,
                     CudaBackend>;
  CodecManager m(config, CudaBackend(0));
  const ModelShape& shape = m.shape();
  Buffer k = m.backend().allocate(host.size() * 2), v = m.backend().allocate(host.size() * 2);
  const auto tokens = static_cast<std::int64_t>(host.size()) / shape.kv_width();
  auto view = [&](Buffer& b) {
    return TensorView::packed(b.data(), DType::kF16, tokens, shape.num_kv_heads, shape.head_dim);
  };
  if constexpr (CodecManager::Storage::kCalibrated) m.calibrate(0, view(k), view(v));
  const SeqId seq = m.create_sequence();
  (void)m.try_reserve(seq, tokens);
  const std::vector<SeqId> seqs = {seq};
  const std::vector<std::int32_t> counts = {static_cast<std::int32_t>(tokens)};
  const AppendBatch batch = m.prepare_append(seqs, counts);
  for (std::int32_t layer = 0; layer < shape.num_layers; ++layer)
    m.append(layer, batch, view(k), view(v));
  m.commit(batch);
  m.gather(seq, 0, view(k), view(v));
  m.backend().copy_to_host(host.data(), k.data(), host.size() * 2);
  m.release(seq);
}

TEST(ManagerConfigErrors, CudaBackendWithoutCudaSaysSo) {
  CacheConfig config;
  config.shape = ModelShape::gqa(2, 2, 64, DType::kF16);
  config.block_size = 32;
  config.num_blocks = 16;
  std::vector<std::uint16_t> host(static_cast<std::size_t>(32 * config.shape.kv_width()));
  using Calls = void (*)(const CacheConfig&, std::vector<std::uint16_t>&);
  const Calls every_codec[] = {engine_calls<PlainCodec>, engine_calls<Int8Codec<32>>,
                               engine_calls<Fp8Codec<>>, engine_calls<KiviCodec<4, 32, 32>>,
                               engine_calls<LowRankCodec<32>>};
  if (built_with_cuda()) GTEST_SKIP() << "this build has the CUDA backend (it linked, too)";
  EXPECT_TRUE(throws_with<Unsupported>([] { CudaBackend backend(0); }, {"KVCACHE_CUDA"}));
  for (Calls calls : every_codec)
    EXPECT_TRUE(throws_with<Unsupported>([&] { calls(config, host); }, {"KVCACHE_CUDA"}));
}

}  // namespace
}  // namespace kvcache
