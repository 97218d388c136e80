// Compressed caches on the CUDA backend against the CPU backend, on fresh
// random data: integer codes bit for bit, scales exactly (the same math in
// the same order), gathers equal; low-rank (dot products in another order)
// within a tolerance. Each test skips, saying why, without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "attention_support.hpp"
#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"
#include "require_gpu.hpp"

namespace kvcache::testing {
namespace {

template <class Codec>
class CudaCodecMatchesCpu : public ::testing::Test {
 protected:
  using Policy = CachePolicy<PagedAllocation, NoEviction, NoPrefixSharing, Codec>;
  using HostManager = KVCacheManager<Policy, HostBackend>;
  using DeviceManager = KVCacheManager<Policy, CudaBackend>;

  static CacheConfig config(DType dtype) {
    CacheConfig c;
    c.shape = ModelShape::gqa(2, 4, 128, dtype);
    c.block_size = 32;
    c.num_blocks = 64;
    c.max_batch_tokens = 2048;
    c.max_batch_sequences = 8;
    c.max_sequences = 8;
    return c;
  }
};

using Codecs = ::testing::Types<Int8Codec<32>, Int8Codec<128, 4>, Fp8Codec<Fp8Scale::kPerHead>,
                                Fp8Codec<Fp8Scale::kPerTensor>, KiviCodec<4, 32, 64>,
                                KiviCodec<2, 32, 32>, LowRankCodec<32>>;
TYPED_TEST_SUITE(CudaCodecMatchesCpu, Codecs);

// The CPU gather against the GPU's: the same bytes, or for low-rank (its
// dot products summed in another order) within 1 % relative error.
void expect_same(const std::vector<std::byte>& cpu, const std::vector<std::byte>& gpu, DType dtype,
                 bool exact, const char* what, std::size_t sequence) {
  ASSERT_EQ(cpu.size(), gpu.size());
  if (exact) {
    EXPECT_EQ(std::memcmp(cpu.data(), gpu.data(), cpu.size()), 0)
        << what << ", sequence " << sequence;
    return;
  }
  double difference = 0, norm = 0;
  const auto elements =
      static_cast<std::int64_t>(cpu.size() / static_cast<std::size_t>(dtype_size(dtype)));
  for (std::int64_t e = 0; e < elements; ++e) {
    const double a = load_as_float(cpu.data(), dtype, e), b = load_as_float(gpu.data(), dtype, e);
    difference += (a - b) * (a - b);
    norm += a * a;
  }
  EXPECT_LT(std::sqrt(difference / norm), 1e-2) << what << ", sequence " << sequence;
}

TYPED_TEST(CudaCodecMatchesCpu, PagesAndGathersMatch) {
  KVCACHE_REQUIRE_GPU();
  const std::uint64_t seed = test_seed();
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << ", seed " << seed);
    typename TestFixture::HostManager host(TestFixture::config(dtype));
    typename TestFixture::DeviceManager device(TestFixture::config(dtype), CudaBackend(0));
    StepDriver host_driver(host, seed), device_driver(device, seed);
    std::vector<SeqId> hs, ds;
    for (int i = 0; i < 3; ++i) {
      hs.push_back(host.create_sequence());
      ds.push_back(device.create_sequence());
    }
    ASSERT_TRUE(host_driver.step(hs, {300, 33, 128}));
    ASSERT_TRUE(device_driver.step(ds, {300, 33, 128}));
    for (int i = 0; i < 40; ++i) {
      ASSERT_TRUE(host_driver.step(hs, {1, 1, 1}));
      ASSERT_TRUE(device_driver.step(ds, {1, 1, 1}));
    }
    const auto bytes = static_cast<std::size_t>(host.memory().arena_bytes);
    std::vector<std::byte> arena(bytes);
    device.backend().copy_to_host(arena.data(), device.codec().view().data, bytes);
    constexpr bool kExact = TypeParam::kKind != CodecKind::kLowRank;
    for (std::size_t i = 0; i < hs.size(); ++i) {
      const SequenceInfo info = host.sequence(hs[i]);
      ASSERT_EQ(info.blocks, device.sequence(ds[i]).blocks);
      if constexpr (kExact) {
        // Every page the sequence has written holds the same codes and scales.
        const std::int64_t written = info.quantized_tokens / host.block_size();
        for (std::int64_t p = 0; p < written; ++p) {
          const auto offset = static_cast<std::size_t>(info.blocks[static_cast<std::size_t>(p)] *
                                                       host.bytes_per_block());
          ASSERT_EQ(std::memcmp(arena.data() + offset, host.codec().view().data + offset,
                                static_cast<std::size_t>(host.bytes_per_block())),
                    0)
              << "sequence " << i << " page " << p;
        }
      }
      // One sequence, layer 1: K and V read back.
      const std::int64_t tokens = info.num_tokens;
      const auto out =
          static_cast<std::size_t>(tokens * host.shape().kv_width() * dtype_size(dtype));
      std::vector<std::byte> hk(out), hv(out);
      host.gather(hs[i], 1, host_driver.tensor(Buffer(hk.data(), out, nullptr), tokens),
                  host_driver.tensor(Buffer(hv.data(), out, nullptr), tokens));
      Buffer dk = device.backend().allocate(out), dv = device.backend().allocate(out);
      device.gather(ds[i], 1, device_driver.tensor(dk, tokens), device_driver.tensor(dv, tokens));
      expect_same(hk, to_host(device.backend(), dk, out), dtype, kExact, "K", i);
      expect_same(hv, to_host(device.backend(), dv, out), dtype, kExact, "V", i);
    }
    // All three sequences in one gather (several sequences, pages and KIVI
    // windows in one launch), layer 0.
    std::int64_t total = 0;
    for (SeqId seq : hs)
      total += host.sequence(seq).num_tokens;
    const auto out = static_cast<std::size_t>(total * host.shape().kv_width() * dtype_size(dtype));
    std::vector<std::byte> hk(out), hv(out);
    host.gather(hs, 0, host_driver.tensor(Buffer(hk.data(), out, nullptr), total),
                host_driver.tensor(Buffer(hv.data(), out, nullptr), total));
    Buffer dk = device.backend().allocate(out), dv = device.backend().allocate(out);
    device.gather(ds, 0, device_driver.tensor(dk, total), device_driver.tensor(dv, total));
    expect_same(hk, to_host(device.backend(), dk, out), dtype, kExact, "K, 3 sequences", 0);
    expect_same(hv, to_host(device.backend(), dv, out), dtype, kExact, "V, 3 sequences", 0);
    EXPECT_EQ(host.stats().nonfinite_values, device.stats().nonfinite_values);
  }
}

// PagedAttention over the compressed pages (kernels/codec_attention.hpp)
// gives the CPU backend's bits on the device: decode, a whole prefill and a
// chunk, pages and KIVI windows. Low-rank's bases are fitted by another
// solver on each backend, so the host cache is first given the device's
// pages and bases: the same bytes in, the same bits out.
TYPED_TEST(CudaCodecMatchesCpu, PagedAttentionIsIdentical) {
  KVCACHE_REQUIRE_GPU();
  const std::uint64_t seed = test_seed();
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << ", seed " << seed);
    typename TestFixture::HostManager host(TestFixture::config(dtype));
    typename TestFixture::DeviceManager device(TestFixture::config(dtype), CudaBackend(0));
    StepDriver host_driver(host, seed), device_driver(device, seed);
    std::vector<SeqId> hs, ds;
    for (int i = 0; i < 3; ++i) {
      hs.push_back(host.create_sequence());
      ds.push_back(device.create_sequence());
    }
    for (const std::vector<std::int32_t>& counts :
         {std::vector<std::int32_t>{300, 33, 128}, {1, 17, 5}}) {
      ASSERT_TRUE(host_driver.step(hs, counts));
      ASSERT_TRUE(device_driver.step(ds, counts));
    }
    if constexpr (TypeParam::kKind == CodecKind::kLowRank) {
      const auto bytes = static_cast<std::size_t>(host.memory().arena_bytes);
      device.backend().copy_to_host(host.codec().view().data, device.codec().view().data, bytes);
      host.codec().load_calibration(device.codec().calibrated_layers(), device.codec().state());
    }
    const std::vector<std::int32_t> rows = {1, 17, 5};
    std::mt19937_64 rng(seed);
    const auto q = random_queries(23, 8, host.shape().head_dim, rng);
    for (std::int32_t layer = 0; layer < 2; ++layer) {
      const auto want = run_attention(host, hs, rows, 8, layer, q);
      const auto got = run_attention(device, ds, rows, 8, layer, q);
      ASSERT_EQ(want.size(), got.size());
      EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0)
          << "layer " << layer;
    }
  }
}

}  // namespace
}  // namespace kvcache::testing
