// The CUDA backend against the CPU backend: the same operations on the same
// fresh random data must leave byte-identical arenas and gathers. Every test
// that needs a device skips, saying why, when there is none.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "attention_support.hpp"
#include "kv_test_support.hpp"
#include "kvcache/kernels/cuda.hpp"
#include "kvcache/kvcache.hpp"
#include "require_gpu.hpp"

namespace kvcache {
namespace {

using HostManager = KVCacheManager<CachePolicy<PagedAllocation>, HostBackend>;
using CudaManager = KVCacheManager<CachePolicy<PagedAllocation>, CudaBackend>;
using kvcache::testing::StepDriver;

using Params = kvcache::testing::DTypeDimLayout;

class CudaMatchesCpu : public ::testing::TestWithParam<Params> {
 protected:
  CacheConfig config() const {
    CacheConfig c;
    c.shape = ModelShape::gqa(3, 4, std::get<1>(GetParam()), std::get<0>(GetParam()));
    c.layout = std::get<2>(GetParam());
    c.block_size = 16;
    c.num_blocks = 48;
    c.max_batch_tokens = 1024;
    c.max_batch_sequences = 8;
    return c;
  }
  std::uint64_t seed_ = kvcache::testing::test_seed();
};

TEST_P(CudaMatchesCpu, AppendGatherAndArenaAreIdentical) {
  KVCACHE_REQUIRE_GPU();
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  HostManager host(config());
  CudaManager device(config(), CudaBackend(0));
  StepDriver host_driver(host, seed_);
  StepDriver device_driver(device, seed_);  // same seed: the same random K/V
  std::vector<SeqId> hs, ds;
  for (int i = 0; i < 5; ++i) {
    hs.push_back(host.create_sequence());
    ds.push_back(device.create_sequence());
  }
  const std::vector<std::int32_t> prefill = {37, 1, 16, 130, 0};
  ASSERT_TRUE(host_driver.step(hs, prefill));
  ASSERT_TRUE(device_driver.step(ds, prefill));
  for (int i = 0; i < 12; ++i) {
    ASSERT_TRUE(host_driver.step(hs, {1, 1, 1, 1, 1}));
    ASSERT_TRUE(device_driver.step(ds, {1, 1, 1, 1, 1}));
  }
  for (std::size_t i = 0; i < hs.size(); ++i) {
    ASSERT_EQ(host.sequence(hs[i]).blocks, device.sequence(ds[i]).blocks);
    for (std::int32_t layer = 0; layer < 3; ++layer)
      EXPECT_TRUE(device_driver.reads_back(ds[i], layer));
  }
  const auto bytes = static_cast<std::size_t>(host.memory().arena_bytes);
  std::vector<std::byte> device_arena(bytes);
  device.backend().copy_to_host(device_arena.data(), device.codec().view().data, bytes);
  // Blocks never written hold whatever cudaMalloc gave: compare the rows of
  // every committed token.
  for (SeqId seq : hs) {
    const SequenceInfo info = host.sequence(seq);
    for (std::int64_t t = 0; t < info.num_tokens; ++t) {
      const std::int64_t slot =
          std::int64_t{info.blocks[static_cast<std::size_t>(t / 16)]} * 16 + t % 16;
      for (std::int32_t layer = 0; layer < 3; ++layer) {
        for (int kv = 0; kv < 2; ++kv) {
          for (std::int32_t h = 0; h < 4; ++h) {
            const auto offset =
                static_cast<std::size_t>(host.codec().view().slot_offset(slot, layer, kv, h));
            ASSERT_EQ(std::memcmp(device_arena.data() + offset, host.codec().view().data + offset,
                                  static_cast<std::size_t>(host.codec().view().row_bytes())),
                      0)
                << "token " << t << " layer " << layer << " kv " << kv << " head " << h;
          }
        }
      }
    }
  }
}

TEST_P(CudaMatchesCpu, CopyBlocksMatches) {
  KVCACHE_REQUIRE_GPU();
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  HostManager host(config());
  CudaManager device(config(), CudaBackend(0));
  std::mt19937_64 rng(seed_);
  const auto bytes = static_cast<std::size_t>(host.memory().arena_bytes);
  auto image =
      kvcache::testing::random_rows(DType::kF32, static_cast<std::int64_t>(bytes / 4), rng);
  std::memcpy(host.codec().view().data, image.data(), bytes);
  device.backend().copy_to_backend(device.codec().view().data, image.data(), bytes);
  const std::vector<std::int32_t> pairs = {3, 40, 47, 0, 5, 6};
  launch(host.backend(),
         kernels::CopyBlocksParams{host.codec().view().data, host.codec().view().page_bytes,
                                   host.codec().view().num_pages, pairs.data(), 3});
  Buffer device_pairs = device.backend().allocate(pairs.size() * sizeof(std::int32_t));
  device.backend().copy_to_backend(device_pairs.data(), pairs.data(),
                                   pairs.size() * sizeof(std::int32_t));
  launch(device.backend(),
         kernels::CopyBlocksParams{device.codec().view().data, device.codec().view().page_bytes,
                                   device.codec().view().num_pages, device_pairs.as<std::int32_t>(),
                                   3});
  std::vector<std::byte> back(bytes);
  device.backend().copy_to_host(back.data(), device.codec().view().data, bytes);
  EXPECT_EQ(std::memcmp(back.data(), host.codec().view().data, bytes), 0);
}

TEST_P(CudaMatchesCpu, PaddingSlotsAreSkipped) {
  KVCACHE_REQUIRE_GPU();
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  HostManager host(config());
  CudaManager device(config(), CudaBackend(0));
  std::mt19937_64 rng(seed_);
  const ModelShape& shape = host.shape();
  const auto bytes = static_cast<std::size_t>(host.memory().arena_bytes);
  auto image =
      kvcache::testing::random_rows(DType::kF32, static_cast<std::int64_t>(bytes / 4), rng);
  std::memcpy(host.codec().view().data, image.data(), bytes);
  device.backend().copy_to_backend(device.codec().view().data, image.data(), bytes);
  const std::int32_t tokens = 300;
  auto k = kvcache::testing::random_rows(shape.dtype, tokens * shape.kv_width(), rng);
  auto v = kvcache::testing::random_rows(shape.dtype, tokens * shape.kv_width(), rng);
  std::vector<std::int64_t> slots(tokens);
  std::vector<std::int64_t> all(48 * 16);
  for (std::size_t i = 0; i < all.size(); ++i)
    all[i] = static_cast<std::int64_t>(i);
  std::shuffle(all.begin(), all.end(), rng);
  for (std::int32_t t = 0; t < tokens; ++t)
    slots[t] = (t % 7 == 3) ? -1 : all[static_cast<std::size_t>(t)];
  kernels::AppendParams params;
  params.layer = 2;
  params.source.head_bytes = shape.head_dim * dtype_size(shape.dtype);
  params.source.token_bytes = params.source.head_bytes * shape.num_kv_heads;
  params.cache = host.codec().view();
  params.source.k = k.data();
  params.source.v = v.data();
  params.slots = kernels::SlotMapping{slots.data(), tokens};
  launch(host.backend(), params);
  Buffer dk = kvcache::testing::to_backend(device.backend(), k);
  Buffer dv = kvcache::testing::to_backend(device.backend(), v);
  Buffer ds = device.backend().allocate(slots.size() * 8);
  device.backend().copy_to_backend(ds.data(), slots.data(), slots.size() * 8);
  params.cache = device.codec().view();
  params.source.k = dk.data();
  params.source.v = dv.data();
  params.slots.slots = ds.as<std::int64_t>();
  launch(device.backend(), params);
  std::vector<std::byte> back(bytes);
  device.backend().copy_to_host(back.data(), device.codec().view().data, bytes);
  EXPECT_EQ(std::memcmp(back.data(), host.codec().view().data, bytes), 0);
}

// The device's attention gives the CPU backend's bits (the same lane math,
// unfused, the same exponential): decode, a whole prefill and a chunk.
TEST_P(CudaMatchesCpu, PagedAttentionIsIdentical) {
  KVCACHE_REQUIRE_GPU();
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  HostManager host(config());
  CudaManager device(config(), CudaBackend(0));
  StepDriver host_driver(host, seed_);
  StepDriver device_driver(device, seed_);
  std::vector<SeqId> hs, ds;
  for (int i = 0; i < 3; ++i) {
    hs.push_back(host.create_sequence());
    ds.push_back(device.create_sequence());
  }
  for (const std::vector<std::int32_t>& counts :
       {std::vector<std::int32_t>{70, 1, 33}, {1, 16, 1}, {1, 1, 1}}) {
    ASSERT_TRUE(host_driver.step(hs, counts));
    ASSERT_TRUE(device_driver.step(ds, counts));
  }
  const std::vector<std::int32_t> rows = {1, 17, 5};
  std::mt19937_64 rng(seed_);
  const auto q = kvcache::testing::random_queries(23, 8, host.shape().head_dim, rng);
  for (std::int32_t layer = 0; layer < 3; ++layer) {
    const auto want = kvcache::testing::run_attention(host, hs, rows, 8, layer, q);
    const auto got = kvcache::testing::run_attention(device, ds, rows, 8, layer, q);
    ASSERT_EQ(want.size(), got.size());
    EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0)
        << "layer " << layer;
  }
}

INSTANTIATE_TEST_SUITE_P(DTypesHeadDimsLayouts, CudaMatchesCpu,
                         kvcache::testing::every_dtype_dim_layout(),
                         kvcache::testing::dtype_dim_layout_name);

// The launchers validate before touching the device, so these run anywhere.
TEST(CudaLaunchers, RejectBadParametersWithAStatus) {
  kernels::AppendParams append;
  append.cache = make_plain_view(nullptr, 4, 16, 2, 2, 64, DType::kF16, KVLayout::kNHD);
  append.layer = 5;
  append.slots.num_tokens = 1;
  EXPECT_EQ(kernels::cuda::launch(append, nullptr), cudaErrorInvalidValue);
  append.layer = 0;
  EXPECT_EQ(kernels::cuda::launch(append, nullptr), cudaErrorInvalidValue);  // null pointers
  alignas(16) static std::byte storage[64];
  static const std::int64_t slot = 0;
  append.cache.data = storage;
  append.source.k = storage + 4;
  append.source.v = storage;
  append.slots.slots = &slot;
  append.source.head_bytes = 128;
  append.source.token_bytes = 256;
  EXPECT_EQ(kernels::cuda::launch(append, nullptr), cudaErrorMisalignedAddress);
  append.slots.num_tokens = 0;
  EXPECT_EQ(kernels::cuda::launch(append, nullptr), cudaSuccess);  // nothing to do

  kernels::GatherParams gather;
  gather.cache = append.cache;
  gather.table.total_pages = -1;
  EXPECT_EQ(kernels::cuda::launch(gather, nullptr), cudaErrorInvalidValue);
  kernels::CopyBlocksParams copy;
  copy.page_bytes = append.cache.page_bytes;
  copy.num_pairs = 1;
  EXPECT_EQ(kernels::cuda::launch(copy, nullptr), cudaErrorInvalidValue);
}

TEST(CudaBackend, NamesTheBadDevice) {
  const int count = cuda_device_count();
  EXPECT_TRUE(kvcache::testing::throws_with<CudaError>([&] { CudaBackend backend(count + 3); },
                                                       {"device " + std::to_string(count + 3)}));
}

}  // namespace
}  // namespace kvcache
