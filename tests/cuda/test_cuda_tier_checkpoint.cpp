// The host tier and checkpoints on the CUDA backend: blocks offloaded to
// pinned memory on the transfer stream come back byte for byte; a cache
// saved from the GPU restores on the GPU and on the CPU (and a CPU one on
// the GPU) with every sequence as it was. Each test skips, saying why,
// without a device.
#include <gtest/gtest.h>

#include <unistd.h>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint_support.hpp"
#include "kv_test_support.hpp"
#include "kvcache/kernels/cuda.hpp"
#include "kvcache/kvcache.hpp"
#include "kvcache/tier/host_tier.hpp"
#include "require_gpu.hpp"

namespace kvcache::testing {
namespace {

namespace fs = std::filesystem;

CacheConfig config(std::int64_t blocks) {
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 2, 32, DType::kF16);
  c.block_size = 8;
  c.num_blocks = blocks;
  c.max_batch_tokens = 512;
  c.max_batch_sequences = 8;
  c.max_sequences = 16;
  return c;
}

template <class Codec>
class CudaTierCheckpoint : public ::testing::Test {};
using Codecs = ::testing::Types<PlainCodec, Int8Codec<32>, Fp8Codec<Fp8Scale::kPerHead>>;
TYPED_TEST_SUITE(CudaTierCheckpoint, Codecs);

// Sequence by sequence, the rows of `b` equal those of `a` (ids mapped).
template <class A, class B>
void expect_same(A& a, const std::vector<SeqId>& ids_a, B& b, const RestoreReport& report) {
  for (SeqId s : ids_a)
    EXPECT_EQ(held(b, report.ids.at(s)), held(a, s)) << "sequence " << s;
}

TYPED_TEST(CudaTierCheckpoint, ACheckpointRestoresOnEitherBackend) {
  KVCACHE_REQUIRE_GPU();
  using Policy = CachePolicy<PagedAllocation, LruEviction, PrefixSharing, TypeParam>;
  using Gpu = KVCacheManager<Policy, CudaBackend>;
  using Cpu = KVCacheManager<Policy, HostBackend>;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const fs::path dir =
      fs::temp_directory_path() / ("kvcache-cuda-ckpt-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  Gpu gpu(config(64));
  StepDriver<Gpu> driver(gpu, seed);
  const std::vector<SeqId> seqs = fill(gpu, driver);
  save_checkpoint(gpu, dir / "gpu.kvc");
  Gpu gpu_again(config(64));
  expect_same(gpu, seqs, gpu_again, restore_checkpoint(gpu_again, dir / "gpu.kvc"));
  Cpu cpu(config(64));
  const RestoreReport on_cpu = restore_checkpoint(cpu, dir / "gpu.kvc");
  expect_same(gpu, seqs, cpu, on_cpu);
  ASSERT_NO_THROW(cpu.check_invariants());
  // And back: the CPU cache saved, restored on the GPU.
  save_checkpoint(cpu, dir / "cpu.kvc");
  Gpu from_cpu(config(64));
  const RestoreReport back = restore_checkpoint(from_cpu, dir / "cpu.kvc");
  for (SeqId s : seqs) {
    EXPECT_EQ(held(from_cpu, back.ids.at(on_cpu.ids.at(s))), held(gpu, s)) << "sequence " << s;
  }
  ASSERT_NO_THROW(from_cpu.check_invariants());
  fs::remove_all(dir);
}

TYPED_TEST(CudaTierCheckpoint, EvictedBlocksComeBackFromPinnedMemory) {
  KVCACHE_REQUIRE_GPU();
  using Policy = CachePolicy<PagedAllocation, LruEviction, PrefixSharing, TypeParam>;
  using Gpu = KVCacheManager<Policy, CudaBackend>;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Gpu m(config(12));
  HostTier<> tier(m.bytes_per_block(), 64,
                  m.backend().allocate_host(static_cast<std::size_t>(m.bytes_per_block() * 64)));
  m.attach_tier(tier);
  StepDriver<Gpu> driver(m, seed);
  std::vector<std::int32_t> prompt;
  for (std::int32_t i = 0; i < 10 * 8; ++i)
    prompt.push_back(1000 + i);
  const SeqId a = m.create_sequence(prompt);
  ASSERT_TRUE(driver.step({a}, {static_cast<std::int32_t>(prompt.size())}));
  const HeldSequence before = held(m, a);
  const std::int64_t paged = m.sequence(a).quantized_tokens;
  m.release(a);
  // Fresh prompts until the pool has turned over: A's blocks go to the tier.
  for (std::int32_t round = 0; round < 3; ++round) {
    std::vector<std::int32_t> other;
    for (std::int64_t i = 0; i < 11 * 8; ++i)
      other.push_back(50000 + round * 1000 + static_cast<std::int32_t>(i));
    const SeqId s = m.create_sequence(other);
    ASSERT_TRUE(driver.step({s}, {static_cast<std::int32_t>(other.size())}));
    m.release(s);
  }
  ASSERT_GE(m.stats().tier_offloads, paged / 8);
  const SeqId again = m.create_sequence(prompt);
  const std::int64_t back = m.sequence(again).num_tokens;
  EXPECT_EQ(back, paged / 8 * 8);
  // The onboard is complete before the gather reads it (same stream order).
  HeldSequence want = before;
  want.tokens = back;
  const auto row = static_cast<std::size_t>(m.shape().kv_width() * 2);
  for (auto& r : want.rows)
    r.resize(static_cast<std::size_t>(back) * row);
  EXPECT_EQ(held(m, again), want);
  ASSERT_NO_THROW(m.check_invariants());
  tier.check_invariants();
  m.detach_tier();
}

}  // namespace
}  // namespace kvcache::testing
