// A manager with a host tier, on the CPU backend and on a backend whose tier
// copies are deferred (as on a GPU, where they run on a stream of their own):
// blocks the pool evicts go to the tier and come back on a prefix hit with
// exactly the bytes that were appended (fresh random rows, every codec); an
// evicted parked sequence comes back whole; a tier too small, or an entry
// evicted between the lookup and the read, is a miss and never wrong data;
// another cache format never reads the blocks; bad attachments are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"
#include "kvcache/tier/host_tier.hpp"
#include "kvcache/tier/publish.hpp"
#include "kvcache/tier/shared_host_tier.hpp"

namespace kvcache::testing {

// The CPU backend, except that tier copies (offload, onboard) are queued and
// run only when the "stream" reaches them: before the next kernel launch or
// copy on the backend, or at wait_transfers(). A manager that read a slot or
// a page on the host before its copy ran would read stale bytes here.
class DeferredCopyBackend {
 public:
  static constexpr bool kDeviceMemory = false;
  static constexpr bool kHoldsData = true;
  using Staging = HostBackend::Staging;

  std::string_view name() const { return "cpu-deferred-copies"; }
  Buffer allocate(std::size_t bytes) { return host_.allocate(bytes); }
  Staging make_staging(std::size_t bytes) { return host_.make_staging(bytes); }
  void* staging_host(Staging& s) { return host_.staging_host(s); }
  const void* upload(Staging& s, std::size_t bytes) { return host_.upload(s, bytes); }
  void copy_to_backend(void* d, const void* s, std::size_t n) {
    flush(), host_.copy_to_backend(d, s, n);
  }
  void copy_to_host(void* d, const void* s, std::size_t n) { flush(), host_.copy_to_host(d, s, n); }
  void copy_within(void* d, const void* s, std::size_t n) { flush(), host_.copy_within(d, s, n); }
  void fill_zero(void* d, std::size_t n) { flush(), host_.fill_zero(d, n); }
  void synchronize() { flush(); }
  Buffer allocate_host(std::size_t bytes) { return host_.allocate_host(bytes); }
  void offload(void* d, const void* s, std::size_t n) { defer(d, s, n); }
  void onboard(void* d, const void* s, std::size_t n) { defer(d, s, n); }
  void wait_transfers() { flush(); }

  void flush() {
    while (!pending_->empty()) {
      const Copy c = pending_->front();
      pending_->pop_front();
      std::memcpy(c.dst, c.src, c.bytes);
      ++*ran_;
    }
  }
  HostBackend& host() { return host_; }
  std::int64_t deferred_copies_run() const { return *ran_; }

 private:
  struct Copy {
    void* dst;
    const void* src;
    std::size_t bytes;
  };
  // The copy reads its source when it runs, not now.
  void defer(void* d, const void* s, std::size_t n) { pending_->push_back({d, s, n}); }

  HostBackend host_;
  std::shared_ptr<std::deque<Copy>> pending_ = std::make_shared<std::deque<Copy>>();
  std::shared_ptr<std::int64_t> ran_ = std::make_shared<std::int64_t>(0);
};
static_assert(MemoryBackend<DeferredCopyBackend>);

// Every kernel runs after the copies queued before it.
template <class Params>
void launch(DeferredCopyBackend& backend, const Params& params) {
  backend.flush();
  launch(backend.host(), params);
}

namespace {

template <class CodecT, class BackendT>
struct TierCase {
  using Codec = CodecT;
  using Backend = BackendT;
};

template <class Case>
class TierManager : public ::testing::Test {
 protected:
  using Codec = typename Case::Codec;
  using Backend = typename Case::Backend;
  using Policy = CachePolicy<PagedAllocation, LruEviction, PrefixSharing, Codec>;
  using Manager = KVCacheManager<Policy, Backend>;
  static constexpr std::int32_t kBlock = 4;  // KIVI's group
  static constexpr bool kTails = Codec::kResidualTokens == 0;

  static CacheConfig config(std::int64_t blocks, DType dtype = DType::kF16) {
    CacheConfig c;
    c.shape = ModelShape::gqa(2, 2, 16, dtype);
    c.block_size = kBlock;
    c.num_blocks = blocks;
    c.max_batch_tokens = 256;
    c.max_batch_sequences = 8;
    c.max_sequences = 16;
    return c;
  }

  std::unique_ptr<HostTier<>> make_tier(Manager& m, std::int64_t capacity) {
    return std::make_unique<HostTier<>>(
        m.bytes_per_block(), capacity,
        m.backend().allocate_host(static_cast<std::size_t>(m.bytes_per_block() * capacity)));
  }

  // A sequence for `prompt`: whatever the cache and tier hold of it, then
  // its remaining tokens appended as fresh random rows (recorded).
  SeqId prefill(Manager& m, StepDriver<Manager>& driver, const std::vector<std::int32_t>& prompt) {
    const SeqId seq = m.create_sequence(prompt);
    const std::int64_t cached = m.sequence(seq).num_tokens;
    EXPECT_EQ(cached, 0) << "a fresh prompt found something cached";
    const auto rest = static_cast<std::int32_t>(prompt.size()) - static_cast<std::int32_t>(cached);
    EXPECT_TRUE(driver.step({seq}, {rest}));
    return seq;
  }

  // K and V of every layer of `seq`, gathered.
  std::vector<std::vector<std::byte>> read(Manager& m, SeqId seq) {
    const ModelShape& shape = m.shape();
    const std::int64_t tokens = m.sequence(seq).num_tokens;
    const auto bytes =
        static_cast<std::size_t>(tokens * shape.kv_width() * dtype_size(shape.dtype));
    std::vector<std::vector<std::byte>> out;
    Buffer k = m.backend().allocate(std::max<std::size_t>(bytes, 16));
    Buffer v = m.backend().allocate(std::max<std::size_t>(bytes, 16));
    for (std::int32_t layer = 0; layer < shape.num_layers; ++layer) {
      m.gather(
          seq, layer,
          TensorView::packed(k.data(), shape.dtype, tokens, shape.num_kv_heads, shape.head_dim),
          TensorView::packed(v.data(), shape.dtype, tokens, shape.num_kv_heads, shape.head_dim));
      out.push_back(to_host(m.backend(), k, bytes));
      out.push_back(to_host(m.backend(), v, bytes));
    }
    return out;
  }

  // The first `tokens` rows of each of `all`'s buffers.
  static std::vector<std::vector<std::byte>> prefix(const std::vector<std::vector<std::byte>>& all,
                                                    std::int64_t tokens, const ModelShape& shape) {
    const auto bytes =
        static_cast<std::size_t>(tokens * shape.kv_width() * dtype_size(shape.dtype));
    std::vector<std::vector<std::byte>> out;
    for (const auto& b : all)
      out.emplace_back(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(bytes));
    return out;
  }

  // Sequences of fresh prompts appended and released until every block of
  // the pool has been taken by them: whatever was cached before is evicted.
  void churn(Manager& m, StepDriver<Manager>& driver, std::int32_t base) {
    for (std::int32_t round = 0; round < 3; ++round) {
      std::vector<std::int32_t> prompt;
      for (std::int64_t i = 0; i < (m.num_blocks() - 1) * kBlock; ++i)
        prompt.push_back(base + round * 100000 + static_cast<std::int32_t>(i));
      const SeqId seq = m.create_sequence(prompt);
      EXPECT_TRUE(driver.step({seq}, {static_cast<std::int32_t>(prompt.size())}));
      m.release(seq);
    }
  }

  std::unique_ptr<Manager> make(std::int64_t blocks, DType dtype = DType::kF16) {
    return std::make_unique<Manager>(config(blocks, dtype));
  }

  static std::vector<std::int32_t> prompt(std::int32_t first, std::int32_t count) {
    std::vector<std::int32_t> ids(static_cast<std::size_t>(count));
    for (std::int32_t i = 0; i < count; ++i)
      ids[static_cast<std::size_t>(i)] = first + i;
    return ids;
  }
};

TYPED_TEST_SUITE_P(TierManager);

// A's blocks leave the pool for the tier, and come back, byte for byte.
TYPED_TEST_P(TierManager, EvictedBlocksComeBackFromTheTier) {
  using T = TestFixture;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  auto m = this->make(12);
  auto tier = this->make_tier(*m, 64);
  m->attach_tier(*tier);
  StepDriver<typename T::Manager> driver(*m, seed);
  const auto a_prompt = T::prompt(1000, 10 * T::kBlock);
  const SeqId a = this->prefill(*m, driver, a_prompt);
  const auto before = this->read(*m, a);
  const std::int64_t paged = m->sequence(a).quantized_tokens;  // KIVI: only whole groups are paged
  m->release(a);
  this->churn(*m, driver, 50000);
  const CacheStats evicted = m->stats();
  ASSERT_GE(evicted.tier_offloads, paged / T::kBlock) << "A's pages went to the tier";
  const SeqId again = m->create_sequence(a_prompt);
  const std::int64_t back = m->sequence(again).num_tokens;
  EXPECT_EQ(back, paged / T::kBlock * T::kBlock) << "every paged block came back";
  const CacheStats s = m->stats();
  EXPECT_EQ(s.tier_onboards - evicted.tier_onboards, back / T::kBlock);
  EXPECT_EQ(s.tier_bytes_onboarded - evicted.tier_bytes_onboarded,
            back / T::kBlock * m->bytes_per_block());
  EXPECT_EQ(this->read(*m, again), T::prefix(before, back, m->shape()));
  ASSERT_NO_THROW(m->check_invariants());
  tier->check_invariants();
  // The blocks that came back are shareable at once.
  const SeqId third = m->create_sequence(a_prompt);
  EXPECT_EQ(m->sequence(third).num_tokens, back);
  EXPECT_EQ(m->stats().tier_onboards, s.tier_onboards) << "found in the pool this time";
  m->detach_tier();
}

// A parked sequence evicted whole leaves its partial last block in the tier
// too: resuming it with its tokens brings back every token.
TYPED_TEST_P(TierManager, AnEvictedParkedSequenceResumesWhole) {
  using T = TestFixture;
  if constexpr (!T::kTails) {
    GTEST_SKIP() << "KIVI keeps a sequence's last tokens in its ring, outside the pages";
  } else {
    const std::uint64_t seed = test_seed();
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    auto m = this->make(10);
    auto tier = this->make_tier(*m, 64);
    m->attach_tier(*tier);
    StepDriver<typename T::Manager> driver(*m, seed);
    const auto a_prompt = T::prompt(2000, 5 * T::kBlock + 2);  // 5 full blocks and 2 tokens
    const SeqId a = this->prefill(*m, driver, a_prompt);
    const auto before = this->read(*m, a);
    m->park(a);
    this->churn(*m, driver, 70000);
    ASSERT_FALSE(m->unpark(a)) << "the churn evicted it";
    EXPECT_EQ(m->stats().tier_tails_offloaded, 1);
    const SeqId resumed = m->create_sequence(a_prompt);
    EXPECT_EQ(m->sequence(resumed).num_tokens, static_cast<std::int64_t>(a_prompt.size()));
    EXPECT_EQ(m->stats().tier_tails_onboarded, 1);
    EXPECT_EQ(this->read(*m, resumed), before);
    // It continues: the tail block is its own to append into.
    ASSERT_TRUE(driver.step({resumed}, {3}));
    EXPECT_EQ(m->sequence(resumed).num_tokens, static_cast<std::int64_t>(a_prompt.size()) + 3);
    ASSERT_NO_THROW(m->check_invariants());
  }
}

// A tier of 2 blocks keeps the last two A's eviction put there (its first
// two: the deepest blocks leave first): a prompt gets those back and
// recomputes the rest, never reading anything wrong.
TYPED_TEST_P(TierManager, ATierTooSmallGivesBackWhatItKept) {
  using T = TestFixture;
  const std::uint64_t seed = test_seed();
  auto m = this->make(12);
  auto tier = this->make_tier(*m, 2);
  m->attach_tier(*tier);
  StepDriver<typename T::Manager> driver(*m, seed);
  const auto a_prompt = T::prompt(3000, 8 * T::kBlock);
  const SeqId a = this->prefill(*m, driver, a_prompt);
  const auto before = this->read(*m, a);
  const std::int64_t paged = m->sequence(a).quantized_tokens;
  m->release(a);
  // Only A's blocks are evicted: one new sequence takes the whole pool.
  std::vector<std::int32_t> other;
  for (std::int64_t i = 0; i < m->num_blocks() * T::kBlock + T::Codec::kResidualTokens; ++i)
    other.push_back(90000 + static_cast<std::int32_t>(i));
  const SeqId b = m->create_sequence(other);
  ASSERT_EQ(m->try_reserve(b, static_cast<std::int64_t>(other.size())), ReserveStatus::kOk);
  m->release(b);  // its blocks were never written: nothing of B is cached
  const CacheStats s0 = m->stats();
  const SeqId again = m->create_sequence(a_prompt);
  const std::int64_t back = m->sequence(again).num_tokens;
  EXPECT_EQ(back, std::min<std::int64_t>(2, paged / T::kBlock) * T::kBlock);
  EXPECT_EQ(this->read(*m, again), T::prefix(before, back, m->shape()));
  EXPECT_EQ(m->stats().tier_misses() - s0.tier_misses(),
            static_cast<std::int64_t>(a_prompt.size()) / T::kBlock - back / T::kBlock);
  ASSERT_NO_THROW(m->check_invariants());
}

// The tier holds A's first two blocks; the pool is full of cached blocks.
// Bringing A's first block back takes a page, which evicts a cached block
// into the full tier, which evicts A's second block: that read misses, and
// the sequence holds the one block it got, with the right bytes.
TYPED_TEST_P(TierManager, AnEntryEvictedBetweenLookupAndReadIsAMiss) {
  using T = TestFixture;
  if constexpr (T::Codec::kKind == CodecKind::kKivi) {
    GTEST_SKIP() << "KIVI's ring holds the window this scenario's block counts assume";
  } else {
    const std::uint64_t seed = test_seed();
    auto m = this->make(6);
    auto tier = this->make_tier(*m, 2);
    m->attach_tier(*tier);
    StepDriver<typename T::Manager> driver(*m, seed);
    const auto a_prompt = T::prompt(4000, 2 * T::kBlock);
    const SeqId a = this->prefill(*m, driver, a_prompt);
    const auto before = this->read(*m, a);
    m->release(a);  // A's 2 blocks cached
    // C fills the other 4 blocks and is released: the pool is all cached.
    const auto c_prompt = T::prompt(5000, 4 * T::kBlock);
    const SeqId c = this->prefill(*m, driver, c_prompt);
    m->release(c);
    // D takes 2 fresh blocks: A's two (least recent) leave for the tier.
    const auto d_prompt = T::prompt(6000, 2 * T::kBlock);
    const SeqId d = this->prefill(*m, driver, d_prompt);
    m->release(d);
    ASSERT_EQ(tier->size_blocks(), 2);
    const CacheStats s0 = m->stats();
    const SeqId again = m->create_sequence(a_prompt);
    const CacheStats s1 = m->stats();
    EXPECT_EQ(s1.tier_lookup_blocks - s0.tier_lookup_blocks, 2);
    const std::int64_t back = m->sequence(again).num_tokens;
    EXPECT_LT(back, 2 * T::kBlock) << "the second block was evicted from the tier before its read";
    EXPECT_EQ(this->read(*m, again), T::prefix(before, back, m->shape()));
    ASSERT_NO_THROW(m->check_invariants());
    tier->check_invariants();
  }
}

// Two caches of the same block size but another dtype share a tier: neither
// reads the other's blocks; a cache of another block size cannot attach.
TYPED_TEST_P(TierManager, AnotherCacheFormatNeverReadsTheBlocks) {
  using T = TestFixture;
  const std::uint64_t seed = test_seed();
  auto fp16 = this->make(8, DType::kF16);
  auto bf16 = this->make(8, DType::kBF16);
  ASSERT_EQ(fp16->bytes_per_block(), bf16->bytes_per_block());
  ASSERT_NE(fp16->fingerprint(), bf16->fingerprint());
  auto tier = this->make_tier(*fp16, 32);
  fp16->attach_tier(*tier);
  bf16->attach_tier(*tier);
  StepDriver<typename T::Manager> driver(*fp16, seed);
  const auto a_prompt = T::prompt(7000, 6 * T::kBlock);
  const SeqId a = this->prefill(*fp16, driver, a_prompt);
  fp16->release(a);
  this->churn(*fp16, driver, 80000);
  ASSERT_GT(tier->size_blocks(), 0);
  const SeqId other = bf16->create_sequence(a_prompt);
  EXPECT_EQ(bf16->sequence(other).num_tokens, 0);
  EXPECT_EQ(bf16->stats().tier_onboards, 0);
  fp16->detach_tier();
  bf16->detach_tier();
  CacheConfig wider = T::config(8);
  wider.shape = ModelShape::gqa(2, 4, 16, DType::kF16);
  typename T::Manager four_heads(wider);
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { four_heads.attach_tier(*tier); },
                                           {"attach_tier", "blocks of"}));
}

REGISTER_TYPED_TEST_SUITE_P(TierManager, EvictedBlocksComeBackFromTheTier,
                            AnEvictedParkedSequenceResumesWhole, ATierTooSmallGivesBackWhatItKept,
                            AnEntryEvictedBetweenLookupAndReadIsAMiss,
                            AnotherCacheFormatNeverReadsTheBlocks);

using TierCases = ::testing::Types<
    TierCase<PlainCodec, HostBackend>, TierCase<Int8Codec<8, 2>, HostBackend>,
    TierCase<KiviCodec<4, 4, 8>, HostBackend>, TierCase<LowRankCodec<4, 2>, HostBackend>,
    TierCase<PlainCodec, DeferredCopyBackend>, TierCase<Int8Codec<8, 2>, DeferredCopyBackend>>;

struct TierCaseNames {
  template <class C>
  static std::string GetName(int) {
    std::string name = C::Codec::name() + "_" + std::string(typename C::Backend().name());
    for (char& c : name) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    }
    return name;
  }
};
INSTANTIATE_TYPED_TEST_SUITE_P(Cpu, TierManager, TierCases, TierCaseNames);

// ---- attachment and the metadata backend ------------------------------------------

TEST(TierAttach, CachesWithoutPrefixKeysAreRefused) {
  CacheConfig c;
  c.shape = ModelShape::gqa(1, 1, 8, DType::kF16);
  c.block_size = 4;
  c.num_blocks = 8;
  KVCacheManager<CachePolicy<PagedAllocation, LruEviction, NoPrefixSharing>> unshared(c);
  KVCacheManager<CachePolicy<DynamicAllocation, LruEviction, NoPrefixSharing>> dynamic(c);
  HostTier<> tier(unshared.bytes_per_block(), 4,
                  HostBackend().allocate(static_cast<std::size_t>(unshared.bytes_per_block() * 4)));
  EXPECT_TRUE(throws_with<Unsupported>([&] { unshared.attach_tier(tier); },
                                       {"PrefixSharing", "prefix sharing off"}));
  EXPECT_TRUE(throws_with<Unsupported>([&] { dynamic.attach_tier(tier); }, {"dynamic"}));
}

// Metadata only: the tier holds keys; hits and counts are those of a cache
// that moves bytes.
TEST(TierAttach, AMetadataCacheTiersKeysOnly) {
  CacheConfig c;
  c.shape = ModelShape::gqa(1, 1, 8, DType::kF16);
  c.block_size = 4;
  c.num_blocks = 4;
  using Policy = CachePolicy<PagedAllocation, LruEviction, PrefixSharing>;
  KVCacheManager<Policy, MetadataBackend> m(c);
  HostTier<> wrong(m.bytes_per_block(), 4, HostBackend().allocate(4096));
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { m.attach_tier(wrong); }, {"keys only"}));
  HostTier<> tier(0, 16, Buffer());
  m.attach_tier(tier);
  auto prompt = [](std::int32_t first) {
    std::vector<std::int32_t> ids(16);
    for (std::int32_t i = 0; i < 16; ++i)
      ids[static_cast<std::size_t>(i)] = first + i;
    return ids;
  };
  auto run = [&](std::int32_t first) {
    const SeqId s = m.create_sequence(prompt(first));
    const std::int64_t cached = m.sequence(s).num_tokens;
    EXPECT_EQ(m.try_reserve(s, 16 - cached), ReserveStatus::kOk);
    AppendBatch batch = m.prepare_append(
        std::vector<SeqId>{s}, std::vector<std::int32_t>{static_cast<std::int32_t>(16 - cached)});
    m.commit(batch);
    m.release(s);
    return cached;
  };
  EXPECT_EQ(run(0), 0);
  EXPECT_EQ(run(100), 0);  // evicts the first prompt's blocks into the tier
  EXPECT_EQ(run(0), 16);   // all four back from the tier
  EXPECT_EQ(m.stats().tier_onboards, 4);
  EXPECT_EQ(m.stats().tier_bytes_onboarded, 0);
  m.detach_tier();
}

// ---- a shared tier -----------------------------------------------------------------

// A shared tier keeps what engines bring back (not exclusive) and takes
// what they publish; a prompt whose first blocks are in the pool and the
// rest in the shared tier comes back whole and byte for byte.
TEST(SharedTier, PublishedBlocksStayAndThePoolIsAskedFirst) {
  using Cache = KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>>;
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 2, 16, DType::kF16);
  c.block_size = 4;
  c.num_blocks = 4;
  c.max_batch_tokens = 64;
  c.max_batch_sequences = 2;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Cache a(c), b(c);
  SharedHostTier<> shared(
      a.bytes_per_block(), 16,
      HostBackend().allocate(static_cast<std::size_t>(a.bytes_per_block() * 16)));
  a.attach_tier(shared);
  b.attach_tier(shared);
  StepDriver<Cache> driver_a(a, seed), driver_b(b, seed + 1);
  std::vector<std::int32_t> prompt(12);
  for (std::int32_t i = 0; i < 12; ++i)
    prompt[static_cast<std::size_t>(i)] = 40 + i;
  const SeqId first = a.create_sequence(prompt);
  ASSERT_TRUE(driver_a.step({first}, {12}));
  EXPECT_EQ(publish_prefix(a, first), 3);
  EXPECT_EQ(shared.size_blocks(), 3);
  auto rows = [&](Cache& m, SeqId s) {
    std::vector<std::vector<std::byte>> out;
    const auto bytes = static_cast<std::size_t>(12 * c.shape.kv_width() * 2);
    Buffer k = m.backend().allocate(bytes), v = m.backend().allocate(bytes);
    for (std::int32_t layer = 0; layer < 2; ++layer) {
      m.gather(s, layer, TensorView::packed(k.data(), DType::kF16, 12, 2, 16),
               TensorView::packed(v.data(), DType::kF16, 12, 2, 16));
      out.push_back(to_host(m.backend(), k, bytes));
      out.push_back(to_host(m.backend(), v, bytes));
    }
    return out;
  };
  const auto want = rows(a, first);
  // Engine B finds all three blocks in the shared tier; they stay there.
  const SeqId other = b.create_sequence(prompt);
  ASSERT_EQ(b.sequence(other).num_tokens, 12);
  EXPECT_EQ(rows(b, other), want);
  EXPECT_EQ(shared.size_blocks(), 3) << "a shared tier is not exclusive";
  b.release(other);
  // In A's pool of four, two blocks for another sequence evict the least
  // recent of the prompt's three cached blocks (its last: released first).
  a.release(first);
  const SeqId filler = a.create_sequence();
  ASSERT_TRUE(driver_a.step({filler}, {8}));
  a.release(filler);
  const std::int64_t hits_before = a.stats().prefix_blocks_hit;
  const SeqId again = a.create_sequence(prompt);
  ASSERT_EQ(a.sequence(again).num_tokens, 12);
  ASSERT_NO_THROW(a.check_invariants());
  EXPECT_EQ(a.stats().tier_hit_blocks, 1) << "one block from the tier";
  EXPECT_EQ(a.stats().prefix_blocks_hit - hits_before, 2) << "the other two from the pool";
  EXPECT_EQ(rows(a, again), want);
  shared.check_invariants();
  a.detach_tier();
  b.detach_tier();
}

}  // namespace
}  // namespace kvcache::testing
