// The conformance suite: every policy combination that makes sense (paged or
// dynamic allocation x no eviction, LRU, LFU-aging or S3-FIFO x prefix
// sharing on or off), for fp16, bf16 and fp32, passes the same cases:
// round trips, fork with divergent writes, pool-full behaviour, park /
// unpark under eviction, prefix reuse, misuse, and a randomized model-based
// test of thousands of operations checked against a deliberately simple
// reference after every step. Instantiated for the CPU backend and, in the
// CUDA test binary, for the CUDA backend (skipped without a device).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "conformance_support.hpp"
#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"
#include "kvcache/tier/host_tier.hpp"

namespace kvcache::testing {

template <class PolicyT, class BackendT, bool kTierT = false>
struct Combo {
  using Policy = PolicyT;
  using Backend = BackendT;
  static constexpr bool kTier = kTierT;
};

// A manager with a small host tier attached (evicted prefix blocks go there
// and come back): the suite's expectations hold as they are, with more
// prompt tokens found cached.
template <class Manager>
struct Tiered : Manager {
  static constexpr std::int64_t kTierBlocks = 12;
  Tiered(const CacheConfig& config, typename Manager::backend_type backend)
      : Manager(config, std::move(backend)),
        tier(this->bytes_per_block(), kTierBlocks,
             this->backend().allocate_host(
                 static_cast<std::size_t>(this->bytes_per_block() * kTierBlocks))) {
    this->attach_tier(tier);
  }
  HostTier<> tier;
};

// What the engine believes about one sequence.
struct ModelSequence {
  TokenHistory history;               // committed tokens
  std::vector<std::int32_t> pending;  // prompt tokens not yet appended
  bool parked = false;
};

template <class ComboT>
class Conformance : public ::testing::Test {
 protected:
  using Policy = typename ComboT::Policy;
  using Backend = typename ComboT::Backend;
  using Manager = KVCacheManager<Policy, Backend>;
  static constexpr bool kTier = ComboT::kTier;
  using Subject = std::conditional_t<kTier, Tiered<Manager>, Manager>;
  static constexpr bool kContiguous = Policy::allocation::kContiguous;
  static constexpr bool kRetains = Policy::eviction::kRetains;
  static constexpr bool kSharing = Policy::sharing::kEnabled;
  static constexpr std::int32_t kBlock = 4;
  static constexpr bool kKiviCodec = Policy::codec::kKind == CodecKind::kKivi;
  static constexpr std::int64_t kResidual = Policy::codec::kResidualTokens;
  // Tokens whose pages fill `pages` blocks (KIVI keeps kResidual more in its ring).
  static constexpr std::int64_t tokens_for_pages(std::int64_t pages) {
    return pages * kBlock + kResidual;
  }

  void SetUp() override {
    if constexpr (Backend::kDeviceMemory) {
      if (cuda_device_count() == 0)
        GTEST_SKIP() << "no CUDA device: the CUDA conformance run needs one";
    }
  }

  static CacheConfig config(DType dtype, std::int64_t blocks) {
    CacheConfig c;
    c.shape = ModelShape::gqa(2, 2, dtype == DType::kF32 ? 4 : 8, dtype);
    c.block_size = kBlock;
    c.num_blocks = blocks;
    c.max_batch_tokens = 256;
    c.max_batch_sequences = 16;
    c.initial_tokens = 2 * kBlock;
    c.max_sequences = 48;  // KIVI rings: few enough that the random test runs out
    return c;
  }

  static std::unique_ptr<Subject> make(DType dtype, std::int64_t blocks) {
    if constexpr (Backend::kDeviceMemory) {
      return std::make_unique<Subject>(config(dtype, blocks), Backend(0));
    } else {
      return std::make_unique<Subject>(config(dtype, blocks), Backend());
    }
  }

  // Appends `ids` to each listed sequence in one batch (every layer), after
  // reserving; returns false, appending nothing, when a reserve says full.
  static bool append(Manager& m, std::map<SeqId, ModelSequence>& model,
                     const std::vector<SeqId>& seqs,
                     const std::vector<std::vector<std::int32_t>>& ids) {
    std::vector<std::int32_t> counts, flat;
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      if (m.try_reserve(seqs[i], static_cast<std::int64_t>(ids[i].size())) != ReserveStatus::kOk)
        return false;
      counts.push_back(static_cast<std::int32_t>(ids[i].size()));
      flat.insert(flat.end(), ids[i].begin(), ids[i].end());
    }
    AppendBatch batch = m.prepare_append(seqs, counts, flat);
    std::vector<TokenHistory> extended;
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      extended.push_back(model.at(seqs[i]).history);
      for (std::int32_t id : ids[i])
        extended.back().push(id);
    }
    const ModelShape& shape = m.shape();
    for (std::int32_t layer = 0; layer < shape.num_layers; ++layer) {
      std::vector<std::byte> k, v;
      for (std::size_t i = 0; i < seqs.size(); ++i) {
        const std::int64_t first = model.at(seqs[i]).history.size();
        auto rk = history_rows(shape, extended[i], first, counts[i], layer, 0);
        auto rv = history_rows(shape, extended[i], first, counts[i], layer, 1);
        k.insert(k.end(), rk.begin(), rk.end());
        v.insert(v.end(), rv.begin(), rv.end());
      }
      Buffer dk = to_backend(m.backend(), k), dv = to_backend(m.backend(), v);
      m.append(layer, batch,
               TensorView::packed(dk.data(), shape.dtype, batch.num_tokens(), shape.num_kv_heads,
                                  shape.head_dim),
               TensorView::packed(dv.data(), shape.dtype, batch.num_tokens(), shape.num_kv_heads,
                                  shape.head_dim));
      m.backend().synchronize();
    }
    m.commit(batch);
    for (std::size_t i = 0; i < seqs.size(); ++i)
      model.at(seqs[i]).history = extended[i];
    return true;
  }

  // Every layer of `seq` reads back its own history's rows.
  static ::testing::AssertionResult reads_back(Manager& m, SeqId seq,
                                               const ModelSequence& expected) {
    const ModelShape& shape = m.shape();
    const std::int64_t tokens = expected.history.size();
    if (m.sequence(seq).num_tokens != tokens) {
      return ::testing::AssertionFailure()
             << "sequence " << seq << " holds " << m.sequence(seq).num_tokens
             << " tokens, the model " << tokens;
    }
    const auto bytes =
        static_cast<std::size_t>(tokens * shape.kv_width() * dtype_size(shape.dtype));
    Buffer k = m.backend().allocate(std::max<std::size_t>(bytes, 16));
    Buffer v = m.backend().allocate(std::max<std::size_t>(bytes, 16));
    for (std::int32_t layer = 0; layer < shape.num_layers; ++layer) {
      m.gather(
          seq, layer,
          TensorView::packed(k.data(), shape.dtype, tokens, shape.num_kv_heads, shape.head_dim),
          TensorView::packed(v.data(), shape.dtype, tokens, shape.num_kv_heads, shape.head_dim));
      const auto hk = to_host(m.backend(), k, bytes), hv = to_host(m.backend(), v, bytes);
      const std::vector<float> state = codec_state(m);
      // KIVI: what the rule says, or more when the sequence began with a
      // prefix hit (its matched pages hold whole quantized groups).
      const std::int64_t quantized = m.sequence(seq).quantized_tokens;
      if (kKiviCodec &&
          (quantized % kBlock != 0 || quantized > tokens || quantized < quantized_tokens(tokens))) {
        return ::testing::AssertionFailure() << "sequence " << seq << " has " << quantized << " of "
                                             << tokens << " tokens quantized";
      }
      auto want = [&](int kv) {
        return codec_expected<typename Policy::codec>(
            m.codec().view(), state, shape,
            history_rows(shape, expected.history, 0, tokens, layer, kv), tokens, quantized, layer,
            kv);
      };
      if (hk != want(0) || hv != want(1)) {
        return ::testing::AssertionFailure()
               << "sequence " << seq << " layer " << layer << " reads back wrong data";
      }
    }
    return ::testing::AssertionSuccess();
  }

  static std::vector<float> codec_state(Manager& m) {
    if constexpr (requires { m.codec().state(); }) {
      return m.codec().state();
    } else {
      return {};
    }
  }
  // KIVI: tokens held in pages (the rest are in the full-precision ring).
  static std::int64_t quantized_tokens(std::int64_t tokens) {
    using Codec = typename Policy::codec;
    if constexpr (Codec::kKind == CodecKind::kKivi) {
      const std::int64_t r = Codec::kResidualTokens, g = Codec::kGroup;
      return tokens < r + g ? 0 : (tokens - r) / g * g;
    } else {
      return tokens;
    }
  }

  static std::vector<std::int32_t> tokens(std::initializer_list<std::int32_t> ids) { return ids; }
  static std::vector<std::int32_t> range(std::int32_t first, std::int32_t count) {
    std::vector<std::int32_t> ids(static_cast<std::size_t>(count));
    for (std::int32_t i = 0; i < count; ++i)
      ids[static_cast<std::size_t>(i)] = first + i;
    return ids;
  }

  // Creates a sequence for `prompt` in the model and the manager.
  static SeqId create(Manager& m, std::map<SeqId, ModelSequence>& model,
                      const std::vector<std::int32_t>& prompt) {
    const SeqId id = m.create_sequence(prompt);
    ModelSequence s;
    const std::int64_t cached = m.sequence(id).num_tokens;
    for (std::int64_t i = 0; i < cached; ++i)
      s.history.push(prompt[static_cast<std::size_t>(i)]);
    s.pending.assign(prompt.begin() + cached, prompt.end());
    model[id] = s;
    return id;
  }
};

TYPED_TEST_SUITE_P(Conformance);

TYPED_TEST_P(Conformance, AppendThenGatherRoundTrips) {
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(dtype_name(dtype));
    auto m = this->make(dtype, 64);
    std::map<SeqId, ModelSequence> model;
    const SeqId a = this->create(*m, model, {});
    const SeqId b = this->create(*m, model, {});
    ASSERT_TRUE(this->append(*m, model, {a, b}, {this->range(0, 9), this->range(100, 3)}));
    for (int step = 0; step < 6; ++step) {
      ASSERT_TRUE(this->append(*m, model, {a, b}, {{step}, {step + 50}}));
    }
    EXPECT_TRUE(this->reads_back(*m, a, model[a]));
    EXPECT_TRUE(this->reads_back(*m, b, model[b]));
    m->check_invariants();
    m->release(a);
    m->release(b);
    m->check_invariants();
    EXPECT_EQ(m->memory().used_blocks, 0);
  }
}

TYPED_TEST_P(Conformance, ForkThenDivergentWritesStaySeparate) {
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(dtype_name(dtype));
    auto m = this->make(dtype, 64);
    std::map<SeqId, ModelSequence> model;
    const SeqId parent = this->create(*m, model, {});
    ASSERT_TRUE(this->append(*m, model, {parent}, {this->range(0, 10)}));  // ends inside a block
    const auto child = m->fork(parent);
    ASSERT_TRUE(child.has_value());
    model[*child] = model[parent];
    EXPECT_EQ(m->sequence(*child).num_tokens, 10);
    // Both write the next position of the shared partial block.
    ASSERT_TRUE(this->append(*m, model, {parent, *child}, {{7, 8}, {9, 9, 9}}));
    EXPECT_TRUE(this->reads_back(*m, parent, model[parent]));
    EXPECT_TRUE(this->reads_back(*m, *child, model[*child]));
    const CacheStats stats = m->stats();
    if constexpr (TestFixture::kKiviCodec) {
      EXPECT_EQ(stats.copy_on_write, 0);  // KIVI writes whole fresh pages only; the ring was copied
      EXPECT_GE(stats.blocks_copied, 1);
    } else if constexpr (TestFixture::kContiguous) {
      EXPECT_GE(stats.blocks_copied, 3);  // the child's own copy of 3 blocks
    } else {
      // The first writer copies the shared partial block; the second then owns
      // the original alone and writes in place.
      EXPECT_EQ(stats.copy_on_write, 1);
      EXPECT_EQ(m->sequence(parent).blocks[0],
                m->sequence(*child).blocks[0]);  // full blocks still shared
    }
    m->check_invariants();
    m->release(parent);
    EXPECT_TRUE(this->reads_back(*m, *child, model[*child]));
    m->check_invariants();
  }
}

TYPED_TEST_P(Conformance, FullPoolIsAValueAndReleaseMakesRoom) {
  auto m = this->make(DType::kF16, 8);
  std::map<SeqId, ModelSequence> model;
  const SeqId a = this->create(*m, model, {});
  const SeqId b = this->create(*m, model, {});
  ASSERT_TRUE(
      this->append(*m, model, {a},
                   {this->range(0, static_cast<std::int32_t>(TestFixture::tokens_for_pages(5)))}));
  const auto before = Snapshot::of(*m, {a, b});
  EXPECT_EQ(m->try_reserve(b, TestFixture::tokens_for_pages(m->num_free_blocks() + 1)),
            ReserveStatus::kPoolFull);
  EXPECT_TRUE(before == Snapshot::of(*m, {a, b}));
  m->release(a);
  EXPECT_EQ(m->try_reserve(b, TestFixture::tokens_for_pages(4)), ReserveStatus::kOk);
  m->check_invariants();
}

TYPED_TEST_P(Conformance, ParkedSequencesAreEvictedOnlyUnderAnEvictingPolicy) {
  auto m = this->make(DType::kF16, 8);
  std::map<SeqId, ModelSequence> model;
  std::vector<EvictionEvent> events;
  m->set_eviction_listener([&](const EvictionEvent& e) { events.push_back(e); });
  const SeqId a = this->create(*m, model, {});
  ASSERT_TRUE(this->append(*m, model, {a}, {this->range(0, 3 * TestFixture::kBlock)}));
  m->park(a);
  m->check_invariants();
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { (void)m->try_reserve(a, 1); }, {"parked"}));
  const SeqId b = this->create(*m, model, {});
  const ReserveStatus status = m->try_reserve(b, TestFixture::tokens_for_pages(8));
  if constexpr (TestFixture::kRetains) {
    ASSERT_EQ(status, ReserveStatus::kOk);  // a was evicted to make room
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events[0].kind, EvictionKind::kSequence);  // then, with sharing, its cached blocks
    EXPECT_EQ(events[0].sequence, a);
    EXPECT_EQ(
        std::count_if(events.begin(), events.end(),
                      [](const EvictionEvent& e) { return e.kind == EvictionKind::kSequence; }),
        1);
    EXPECT_FALSE(m->contains(a));
    EXPECT_FALSE(m->unpark(a));  // a miss
    EXPECT_EQ(m->stats().unpark_misses, 1);
    EXPECT_EQ(m->stats().evicted_sequences, 1);
    EXPECT_TRUE(throws_with<UnknownSequence>([&] { (void)m->unpark(a); }, {"unknown"}));
  } else {
    EXPECT_EQ(status, ReserveStatus::kPoolFull);
    EXPECT_TRUE(events.empty());
    EXPECT_TRUE(m->unpark(a));  // never evicted
    EXPECT_TRUE(this->reads_back(*m, a, model[a]));
  }
  m->check_invariants();
}

TYPED_TEST_P(Conformance, SharedPromptPrefixesReuseCachedBlocks) {
  auto m = this->make(DType::kBF16, 64);
  std::map<SeqId, ModelSequence> model;
  const auto prompt = this->range(1000, 3 * TestFixture::kBlock + 2);  // 3 full blocks and 2 tokens
  const SeqId a = this->create(*m, model, prompt);
  EXPECT_EQ(m->sequence(a).num_tokens, 0);  // nothing cached yet
  ASSERT_TRUE(this->append(*m, model, {a}, {model[a].pending}));
  model[a].pending.clear();
  // While a lives, a second request with the same prompt shares its full blocks.
  const SeqId b = this->create(*m, model, prompt);
  // Full blocks are shared once written: all 3 for a plain or per-token
  // codec; for KIVI only those already flushed out of the ring.
  const std::int64_t shared =
      TestFixture::quantized_tokens(static_cast<std::int64_t>(prompt.size())) / TestFixture::kBlock;
  if constexpr (TestFixture::kSharing) {
    EXPECT_EQ(m->sequence(b).num_tokens, std::min<std::int64_t>(3, shared) * TestFixture::kBlock);
    const SequenceInfo first = m->sequence(a);
    const auto n = static_cast<std::ptrdiff_t>(std::min<std::int64_t>(3, shared));
    EXPECT_EQ(m->sequence(b).blocks,
              std::vector<BlockId>(first.blocks.begin(), first.blocks.begin() + n));
    EXPECT_EQ(m->stats().prefix_blocks_hit, n);
    EXPECT_EQ(m->stats().prefix_blocks_requested, 6);
  } else {
    EXPECT_EQ(m->sequence(b).num_tokens, 0);
  }
  ASSERT_TRUE(this->append(*m, model, {b}, {model[b].pending}));
  EXPECT_TRUE(this->reads_back(*m, b, model[b]));
  m->release(a);
  m->release(b);
  m->check_invariants();
  // After both are gone, the blocks stay cached only when the policy keeps entries.
  const SeqId c = this->create(*m, model, prompt);
  const std::int64_t expected = TestFixture::kSharing && TestFixture::kRetains
                                    ? std::min<std::int64_t>(3, shared) * TestFixture::kBlock
                                    : 0;
  EXPECT_EQ(m->sequence(c).num_tokens, expected);
  ASSERT_TRUE(this->append(*m, model, {c}, {model[c].pending}));
  EXPECT_TRUE(this->reads_back(*m, c, model[c]));
  m->check_invariants();
}

TYPED_TEST_P(Conformance, MisuseIsRejectedAndChangesNothing) {
  auto m = this->make(DType::kF16, 16);
  std::map<SeqId, ModelSequence> model;
  const SeqId a = this->create(*m, model, {});
  ASSERT_TRUE(this->append(*m, model, {a}, {this->range(0, 6)}));
  const auto before = Snapshot::of(*m, {a});
  EXPECT_TRUE(throws_with<UnknownSequence>([&] { (void)m->fork(999); }, {"fork", "sequence 999"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { (void)m->unpark(a); }, {"not parked"}));
  EXPECT_TRUE(throws_with<UnknownSequence>([&] { (void)m->unpark(12345); }, {"sequence 12345"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [&] {
        (void)m->prepare_append(std::vector<SeqId>{a}, std::vector<std::int32_t>{1},
                                std::vector<std::int32_t>{1, 2});
      },
      {"2 token ids for 1 new tokens"}));
  EXPECT_TRUE(before == Snapshot::of(*m, {a}));
  EXPECT_TRUE(this->reads_back(*m, a, model[a]));
  m->park(a);
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { m->park(a); }, {"already parked"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { (void)m->fork(a); }, {"parked"}));
  // A budget under one block, and block sizes the allocation cannot take.
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [&] {
        CacheConfig c = TestFixture::config(DType::kF16, 0);
        c.budget_bytes = 10;
        typename TestFixture::Manager bad(c);
      },
      {"budget_bytes 10", "below one block"}));
  for (std::int32_t size : {0, 2048}) {
    EXPECT_TRUE(throws_with<InvalidArgument>(
        [&] {
          CacheConfig c = TestFixture::config(DType::kF16, 8);
          c.block_size = size;
          typename TestFixture::Manager bad(c);
        },
        {"block_size " + std::to_string(size)}));
  }
  m->check_invariants();
}

// Thousands of random operations against the reference model; after every
// step the invariants hold, every sequence has the model's length, and
// sampled sequences read back exactly their own tokens' rows. A long run by
// hand: KVCACHE_MODEL_OPS=1000000 (operations per dtype) and
// KVCACHE_TEST_SEED=N (to replay one).
TYPED_TEST_P(Conformance, RandomOperationsMatchTheReferenceModel) {
  const std::uint64_t seed = test_seed();
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(::testing::Message()
                 << dtype_name(dtype) << ", seed " << seed << " (KVCACHE_TEST_SEED to replay)");
    std::mt19937_64 rng(seed + static_cast<std::uint64_t>(dtype));
    auto m = this->make(dtype, 40);
    std::map<SeqId, ModelSequence> model;
    std::set<SeqId> evicted;
    m->set_eviction_listener([&](const EvictionEvent& e) {
      if (e.kind == EvictionKind::kSequence) evicted.insert(e.sequence);
    });
    // Prompts start with one of three "system prompts", then diverge.
    const std::vector<std::vector<std::int32_t>> systems = {
        this->range(500, 9), this->range(600, 12), this->range(700, 5)};
    auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
    auto active = [&] {
      std::vector<SeqId> ids;
      for (auto& [id, s] : model) {
        if (!s.parked) ids.push_back(id);
      }
      return ids;
    };
    const std::int64_t steps = model_operations(3000);
    for (std::int64_t step = 0; step < steps; ++step) {
      // Creates and forks outnumber releases: past 48 sequences, release one.
      const int op = model.size() > 48 ? 70 : static_cast<int>(rng() % 100);
      const auto live = active();
      if (op < 12 || model.empty()) {  // create, with a prompt
        std::vector<std::int32_t> prompt = systems[pick(systems.size())];
        const std::size_t extra = pick(8);
        for (std::size_t i = 0; i < extra; ++i)
          prompt.push_back(static_cast<std::int32_t>(rng() % 7));
        if constexpr (TestFixture::kKiviCodec) {
          // Every ring taken by a live sequence (none parked to evict): a
          // clear error, and nothing changed.
          const std::int64_t before = m->num_sequences();
          if (before == TestFixture::config(dtype, 40).max_sequences) {
            try {
              this->create(*m, model, prompt);
            } catch (const OutOfMemory&) {
              ASSERT_EQ(m->num_sequences(), before);
              continue;
            }
            ASSERT_TRUE(TestFixture::kRetains) << "a ring was found with nothing evictable";
            continue;
          }
        }
        const SeqId id = this->create(*m, model, prompt);
        const std::int64_t cached = m->sequence(id).num_tokens;
        // A tier may also give back a partial last block (a parked sequence's).
        ASSERT_TRUE(cached % TestFixture::kBlock == 0 ||
                    (TestFixture::kTier && cached == static_cast<std::int64_t>(prompt.size())));
        ASSERT_LE(cached, static_cast<std::int64_t>(prompt.size()));
        if (!TestFixture::kSharing) {
          ASSERT_EQ(cached, 0);
        }
      } else if (op < 55 && !live.empty()) {  // append a batch
        std::vector<SeqId> batch;
        std::vector<std::vector<std::int32_t>> ids;
        const std::size_t want = 1 + pick(3);
        for (std::size_t i = 0; i < want && i < live.size(); ++i) {
          const SeqId id = live[pick(live.size())];
          if (std::find(batch.begin(), batch.end(), id) != batch.end()) continue;
          ModelSequence& s = model[id];
          std::vector<std::int32_t> next;
          const std::size_t count = 1 + pick(6);
          while (next.size() < count && !s.pending.empty()) {
            next.push_back(s.pending.front());
            s.pending.erase(s.pending.begin());
          }
          while (next.size() < count)
            next.push_back(static_cast<std::int32_t>(rng() % 7));
          batch.push_back(id);
          ids.push_back(next);
        }
        if (!this->append(*m, model, batch, ids)) {
          // Full: the model keeps its tokens (put the prompt tokens back).
          for (std::size_t i = 0; i < batch.size(); ++i) {
            ModelSequence& s = model[batch[i]];
            std::vector<std::int32_t> restore;
            for (std::int32_t id : ids[i])
              restore.push_back(id);
            s.pending.insert(s.pending.begin(), restore.begin(), restore.end());
          }
        }
      } else if (op < 65 && !live.empty()) {  // fork
        const SeqId parent = live[pick(live.size())];
        const auto child = m->fork(parent);
        if (child) {
          model[*child] = model[parent];
        } else {
          ASSERT_TRUE(TestFixture::kContiguous || TestFixture::kKiviCodec)
              << "paged fork needs no room (KIVI needs a free ring)";
        }
      } else if (op < 77 && !model.empty()) {  // release, active or parked
        std::vector<SeqId> held;
        for (auto& [id, s] : model) {
          if (evicted.count(id) == 0) held.push_back(id);
        }
        if (held.empty()) continue;
        const SeqId id = held[pick(held.size())];
        m->release(id);
        model.erase(id);
      } else if (op < 85 && !live.empty()) {  // park
        const SeqId id = live[pick(live.size())];
        m->park(id);
        model[id].parked = true;
      } else if (op < 92) {  // unpark
        std::vector<SeqId> parked;
        for (auto& [id, s] : model) {
          if (s.parked) parked.push_back(id);
        }
        if (!parked.empty()) {
          const SeqId id = parked[pick(parked.size())];
          const bool hit = m->unpark(id);
          ASSERT_EQ(hit, evicted.count(id) == 0) << "unpark of " << id;
          if (hit) {
            model[id].parked = false;
          } else {
            ASSERT_TRUE(TestFixture::kRetains);
            if constexpr (TestFixture::kTier && !TestFixture::kKiviCodec) {
              // Resumed from its tokens: what went to the tier comes back.
              const ModelSequence gone = model[id];
              model.erase(id);
              std::vector<std::int32_t> tokens = gone.history.ids;
              tokens.insert(tokens.end(), gone.pending.begin(), gone.pending.end());
              this->create(*m, model, tokens);
            } else {
              model.erase(id);
            }
          }
        }
      } else if (!model.empty()) {  // gather one
        auto it = model.begin();
        std::advance(it, static_cast<std::ptrdiff_t>(pick(model.size())));
        if (evicted.count(it->first) == 0) {
          ASSERT_TRUE(this->reads_back(*m, it->first, it->second));
        }
      }
      // Parked sequences the policy evicted are gone from the manager too
      // (the ones the model let go of need no more checks).
      for (auto it = evicted.begin(); it != evicted.end();) {
        if (model.count(*it) == 0) {
          it = evicted.erase(it);
          continue;
        }
        ASSERT_TRUE(model[*it].parked) << "an active sequence was evicted";
        ASSERT_FALSE(m->contains(*it));
        ++it;
      }
      ASSERT_NO_THROW(m->check_invariants()) << "step " << step;
      std::int64_t live_in_model = 0;
      for (auto& [id, s] : model) {
        if (evicted.count(id) != 0) continue;
        ++live_in_model;
        ASSERT_EQ(m->sequence(id).num_tokens, s.history.size())
            << "sequence " << id << " at step " << step;
      }
      ASSERT_EQ(m->num_sequences(), live_in_model);
    }
    for (auto& [id, s] : model) {
      if (evicted.count(id) == 0) {
        ASSERT_TRUE(this->reads_back(*m, id, s));
      }
    }
    if constexpr (TestFixture::kTier) {
      // The run went through the tier both ways (KIVI's short prompts rarely
      // reach a page: their last 8 tokens stay in the ring).
      const CacheStats stats = m->stats();
      if (!TestFixture::kKiviCodec) {
        EXPECT_GT(stats.tier_offloads, 0);
        EXPECT_GT(stats.tier_onboards, 0);
      }
      ASSERT_NO_THROW(m->tier.check_invariants());
    }
  }
}

REGISTER_TYPED_TEST_SUITE_P(Conformance, AppendThenGatherRoundTrips,
                            ForkThenDivergentWritesStaySeparate,
                            FullPoolIsAValueAndReleaseMakesRoom,
                            ParkedSequencesAreEvictedOnlyUnderAnEvictingPolicy,
                            SharedPromptPrefixesReuseCachedBlocks,
                            MisuseIsRejectedAndChangesNothing,
                            RandomOperationsMatchTheReferenceModel);

template <class Backend>
using ConformanceCombos = ::testing::Types<
    Combo<CachePolicy<PagedAllocation, NoEviction, NoPrefixSharing>, Backend>,
    Combo<CachePolicy<PagedAllocation, NoEviction, PrefixSharing>, Backend>,
    Combo<CachePolicy<PagedAllocation, LruEviction, NoPrefixSharing>, Backend>,
    Combo<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>, Backend>,
    Combo<CachePolicy<PagedAllocation, LfuAgingEviction, PrefixSharing>, Backend>,
    Combo<CachePolicy<PagedAllocation, S3FifoEviction, PrefixSharing>, Backend>,
    Combo<CachePolicy<PagedAllocation, ReuseLruEviction, PrefixSharing>, Backend>,
    Combo<CachePolicy<PagedAllocation, AdaptiveEviction, PrefixSharing>, Backend>,
    Combo<CachePolicy<DynamicAllocation, NoEviction, NoPrefixSharing>, Backend>,
    Combo<CachePolicy<DynamicAllocation, LruEviction, NoPrefixSharing>, Backend>,
    Combo<CachePolicy<DynamicAllocation, LfuAgingEviction, NoPrefixSharing>, Backend>,
    Combo<CachePolicy<DynamicAllocation, S3FifoEviction, NoPrefixSharing>, Backend>,
    Combo<CachePolicy<DynamicAllocation, ReuseLruEviction, NoPrefixSharing>, Backend>,
    Combo<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>, Backend, true>,
    Combo<CachePolicy<PagedAllocation, S3FifoEviction, PrefixSharing>, Backend, true>>;

// Compressed caches across the allocation, eviction and sharing axes (tiny
// shapes: head_dim 8, or 4 for fp32; block 4).
template <class Backend>
using CodecCombos = ::testing::Types<
    Combo<CachePolicy<PagedAllocation, LruEviction, PrefixSharing, Int8Codec<4>>, Backend>,
    Combo<CachePolicy<DynamicAllocation, NoEviction, NoPrefixSharing, Int8Codec<4, 4>>, Backend>,
    Combo<CachePolicy<PagedAllocation, S3FifoEviction, PrefixSharing, Fp8Codec<Fp8Scale::kPerHead>>,
          Backend>,
    Combo<CachePolicy<DynamicAllocation, LruEviction, NoPrefixSharing,
                      Fp8Codec<Fp8Scale::kPerTensor>>,
          Backend>,
    Combo<CachePolicy<PagedAllocation, LruEviction, PrefixSharing, KiviCodec<4, 4, 8>>, Backend>,
    Combo<CachePolicy<PagedAllocation, NoEviction, NoPrefixSharing, KiviCodec<2, 4, 4>>, Backend>,
    Combo<CachePolicy<DynamicAllocation, LfuAgingEviction, NoPrefixSharing, KiviCodec<4, 4, 0>>,
          Backend>,
    Combo<CachePolicy<PagedAllocation, LfuAgingEviction, PrefixSharing, LowRankCodec<2>>, Backend>,
    Combo<CachePolicy<DynamicAllocation, NoEviction, NoPrefixSharing, LowRankCodec<3, 4>>, Backend>,
    Combo<CachePolicy<PagedAllocation, LruEviction, PrefixSharing, Int8Codec<4>>, Backend, true>,
    Combo<CachePolicy<PagedAllocation, LruEviction, PrefixSharing, KiviCodec<4, 4, 8>>, Backend,
          true>,
    Combo<CachePolicy<PagedAllocation, LfuAgingEviction, PrefixSharing, LowRankCodec<2>>, Backend,
          true>>;

struct ComboNames {
  template <class C>
  static std::string GetName(int) {
    using P = typename C::Policy;
    std::string name =
        std::string(P::allocation::kName) + "_" + std::string(P::eviction::kName) +
        (P::sharing::kEnabled ? "_prefix" : "") +
        (P::codec::kKind == CodecKind::kPlain ? std::string() : "_" + P::codec::name()) +
        (C::kTier ? "_host_tier" : "");
    for (char& c : name) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    }
    return name;
  }
};

}  // namespace kvcache::testing
