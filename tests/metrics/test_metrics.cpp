// The metrics snapshot, the monitor's window, the per-call meter, KV events
// and clear_prefix_cache, on fresh random workloads.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <numeric>
#include <random>
#include <set>
#include <thread>
#include <unordered_set>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"
#include "kvcache/metrics/monitor.hpp"
#include "kvcache/metrics/snapshot.hpp"

// Counts the heap allocations of this thread while `g_counting` is set: the
// snapshot's promise of none is checked, not assumed.
namespace {
thread_local bool g_counting = false;
thread_local std::int64_t g_allocations = 0;
}  // namespace

// GCC cannot see that this operator new and delete are a pair (malloc, free).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t size) {
  if (g_counting) ++g_allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

namespace kvcache {
namespace {

using testing::test_seed;
using Shared = CachePolicy<PagedAllocation, LruEviction, PrefixSharing>;
using Meta = KVCacheManager<Shared, MetadataBackend>;
using Host = KVCacheManager<Shared, HostBackend>;

CacheConfig small_config(std::int64_t blocks, std::int32_t block_size = 4) {
  CacheConfig config;
  config.shape = ModelShape::gqa(2, 2, 8, DType::kF16);
  config.block_size = block_size;
  config.num_blocks = blocks;
  return config;
}

// A random engine over a metadata cache: prompts drawn from a few shared
// prefixes, decode steps, parks, unparks and releases. Counts every call.
struct Workload {
  explicit Workload(Meta& m, std::uint64_t seed) : cache(m), rng(seed) {
    for (int p = 0; p < 6; ++p) {
      std::vector<std::int32_t> prefix(static_cast<std::size_t>(4 * (1 + rng() % 8)));
      for (auto& t : prefix)
        t = static_cast<std::int32_t>(rng() % 1000);
      prefixes.push_back(prefix);
    }
  }

  void step() {
    const auto r = rng() % 10;
    if (r < 3 || live.empty()) {
      std::vector<std::int32_t> prompt = prefixes[rng() % prefixes.size()];
      for (auto n = rng() % 9; n > 0; --n)
        prompt.push_back(static_cast<std::int32_t>(rng() % 1000));
      const SeqId id = cache.create_sequence(prompt);
      ++calls[Op::kCreateSequence];
      hit_tokens += cache.sequence(id).num_tokens;
      requested_tokens += static_cast<std::int64_t>(prompt.size());
      const auto rest = static_cast<std::int32_t>(prompt.size()) -
                        static_cast<std::int32_t>(cache.sequence(id).num_tokens);
      ++calls[Op::kTryReserve];
      if (cache.try_reserve(id, rest) != ReserveStatus::kOk) {
        cache.release(id);
        ++calls[Op::kRelease];
        return;
      }
      append(id, rest);
      live.push_back(id);
    } else if (r < 7) {
      const SeqId id = live[rng() % live.size()];
      ++calls[Op::kTryReserve];
      if (cache.try_reserve(id, 1) == ReserveStatus::kOk) append(id, 1);
    } else if (r < 8) {
      const std::size_t i = rng() % live.size();
      cache.park(live[i]);
      ++calls[Op::kPark];
      parked.push_back(live[i]);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
    } else if (r < 9 && !parked.empty()) {
      const SeqId id = parked.back();
      parked.pop_back();
      ++calls[Op::kUnpark];
      if (cache.unpark(id)) live.push_back(id);
    } else {
      const std::size_t i = rng() % live.size();
      cache.release(live[i]);
      ++calls[Op::kRelease];
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }

  void append(SeqId id, std::int32_t count) {
    const SeqId seqs[] = {id};
    const std::int32_t counts[] = {count};
    std::vector<std::int32_t> ids(static_cast<std::size_t>(count));
    const std::int64_t known = cache.sequence(id).known_tokens;
    const std::int64_t have = cache.sequence(id).num_tokens;
    // Prompt tokens are known already; a decode token gets a fresh id.
    const bool decode = known <= have;
    for (auto& t : ids)
      t = static_cast<std::int32_t>(rng() % 1000);
    AppendBatch batch =
        decode ? cache.prepare_append(seqs, counts, ids) : cache.prepare_append(seqs, counts);
    cache.commit(batch);
    calls[Op::kPrepareAppend] += 1;
    calls[Op::kCommit] += 1;
  }

  Meta& cache;
  std::mt19937_64 rng;
  std::vector<std::vector<std::int32_t>> prefixes;
  std::vector<SeqId> live, parked;
  std::map<Op, std::int64_t> calls;
  std::int64_t hit_tokens = 0, requested_tokens = 0;
};

void expect_same_counters(const CacheStats& a, const CacheStats& b) {
  EXPECT_EQ(a.prefix_lookups, b.prefix_lookups);
  EXPECT_EQ(a.prefix_blocks_requested, b.prefix_blocks_requested);
  EXPECT_EQ(a.prefix_blocks_hit, b.prefix_blocks_hit);
  EXPECT_EQ(a.prefix_tokens_requested, b.prefix_tokens_requested);
  EXPECT_EQ(a.prefix_tokens_hit, b.prefix_tokens_hit);
  EXPECT_EQ(a.prefix_blocks_refetched, b.prefix_blocks_refetched);
  EXPECT_EQ(a.reserve_failures, b.reserve_failures);
  EXPECT_EQ(a.evicted_blocks, b.evicted_blocks);
  EXPECT_EQ(a.evicted_sequences, b.evicted_sequences);
  EXPECT_EQ(a.unpark_hits, b.unpark_hits);
  EXPECT_EQ(a.unpark_misses, b.unpark_misses);
  EXPECT_EQ(a.copy_on_write, b.copy_on_write);
  EXPECT_EQ(a.allocation.blocks_allocated, b.allocation.blocks_allocated);
}

TEST(MetricsSnapshot, EqualsTheManagersOwnFiguresAndCountsEveryCall) {
  const auto seed = test_seed();
  SCOPED_TRACE(seed);
  Meta cache(small_config(48));
  Workload work(cache, seed);
  metrics::MetricsSnapshot snap;
  for (int i = 0; i < 600; ++i) {
    work.step();
    if (i % 50 != 49) continue;
    metrics::take_snapshot(cache, snap);
    expect_same_counters(snap.counters, cache.stats());
    const MemoryStats memory = cache.memory();
    EXPECT_EQ(snap.memory.used_blocks, memory.used_blocks);
    EXPECT_EQ(snap.memory.cached_blocks, memory.cached_blocks);
    EXPECT_EQ(snap.memory.free_blocks, memory.free_blocks);
    EXPECT_EQ(snap.memory.stored_tokens, memory.stored_tokens);
    EXPECT_EQ(snap.memory.reserved_tokens, memory.reserved_tokens);
    EXPECT_EQ(snap.fragmented_slots(), memory.reserved_tokens - memory.stored_tokens);
    for (std::size_t op = 0; op < kNumOps; ++op) {
      const auto it = work.calls.find(static_cast<Op>(op));
      EXPECT_EQ(snap.ops[op].count, it == work.calls.end() ? 0 : it->second)
          << op_name(static_cast<Op>(op));
      std::int64_t in_buckets = 0;
      for (auto b : snap.ops[op].buckets)
        in_buckets += b;
      EXPECT_EQ(in_buckets, snap.ops[op].count) << "timing is on by default";
    }
  }
  // Tokens found cached are what create_sequence reported, prompt by prompt.
  EXPECT_EQ(snap.counters.prefix_tokens_hit, work.hit_tokens);
  EXPECT_EQ(snap.counters.prefix_tokens_requested, work.requested_tokens);
  EXPECT_GT(snap.counters.prefix_blocks_hit, 0);
  EXPECT_GT(snap.counters.evicted_blocks, 0) << "the pool is small enough to evict";
  EXPECT_NEAR(snap.hit_rate_blocks(),
              static_cast<double>(snap.counters.prefix_blocks_hit) /
                  static_cast<double>(snap.counters.prefix_blocks_requested),
              1e-12);
}

TEST(MetricsSnapshot, TakesNoHeapAllocation) {
  const auto seed = test_seed();
  SCOPED_TRACE(seed);
  Meta cache(small_config(64));
  Workload work(cache, seed);
  for (int i = 0; i < 300; ++i)
    work.step();
  metrics::Monitor<Meta> monitor(cache, 8);
  for (int i = 0; i < 3; ++i)
    monitor.sample();  // the window's ring is allocated at construction
  g_counting = true;
  g_allocations = 0;
  for (int i = 0; i < 20; ++i) {
    work.step();
    const std::int64_t before = g_allocations;
    monitor.sample();
    metrics::MetricsSnapshot alone;
    metrics::take_snapshot(cache, alone);
    EXPECT_EQ(g_allocations, before) << "sample() or take_snapshot() allocated";
  }
  g_counting = false;
}

TEST(MetricsSnapshot, TimingOffKeepsCountsAndEmptiesTheHistogram) {
  Meta cache(small_config(16));
  metrics::set_op_timing(cache, false);
  const SeqId a = cache.create_sequence();
  ASSERT_EQ(cache.try_reserve(a, 5), ReserveStatus::kOk);
  EXPECT_THROW((void)cache.try_reserve(a, -1), InvalidArgument);
  metrics::MetricsSnapshot snap;
  metrics::take_snapshot(cache, snap);
  const auto& reserve = snap.ops[static_cast<std::size_t>(Op::kTryReserve)];
  EXPECT_EQ(reserve.count, 2);
  EXPECT_EQ(reserve.errors, 1);
  EXPECT_EQ(reserve.total_ns, 0);
  for (auto b : reserve.buckets)
    EXPECT_EQ(b, 0);
  EXPECT_FALSE(snap.op_timing);
}

TEST(MetricsSnapshot, CompressionRatioIsTheCodecsSavingOnHeldBlocks) {
  // head_dim 8: a plain fp16 row is 16 bytes, an int8 row 8 codes and one
  // fp16 scale (10 bytes): 1.6 times less.
  KVCacheManager<CachePolicy<PagedAllocation, NoEviction, NoPrefixSharing, Int8Codec<8>>,
                 HostBackend>
      int8(small_config(16));
  Meta plain(small_config(16));
  metrics::MetricsSnapshot snap;
  metrics::take_snapshot(int8, snap);
  EXPECT_TRUE(std::isnan(snap.compression_ratio())) << "nothing held yet";
  std::mt19937_64 rng(test_seed());
  const auto tokens = static_cast<std::int64_t>(1 + rng() % 40);
  const SeqId a = int8.create_sequence();
  ASSERT_EQ(int8.try_reserve(a, tokens), ReserveStatus::kOk);
  metrics::take_snapshot(int8, snap);
  EXPECT_DOUBLE_EQ(snap.compression_ratio(), 1.6);
  EXPECT_EQ(snap.memory.used_blocks, (tokens + 3) / 4);
  const SeqId b = plain.create_sequence();
  ASSERT_EQ(plain.try_reserve(b, tokens), ReserveStatus::kOk);
  metrics::take_snapshot(plain, snap);
  EXPECT_DOUBLE_EQ(snap.compression_ratio(), 1.0);
}

TEST(MetricsSnapshot, LatencyBucketsMatchTheirBounds) {
  std::mt19937_64 rng(test_seed());
  for (int i = 0; i < 100000; ++i) {
    const auto ns = static_cast<std::int64_t>(rng() % (std::int64_t{1} << (rng() % 40)));
    const std::size_t b = latency_bucket(ns);
    std::size_t expected = kLatencyBuckets - 1;
    for (std::size_t k = 0; k + 1 < kLatencyBuckets; ++k) {
      if (ns <= latency_bucket_bound_ns(k)) {
        expected = k;
        break;
      }
    }
    ASSERT_EQ(b, expected) << ns;
  }
}

TEST(MetricsSnapshot, CountsEvictedBlocksAskedForAgain) {
  // A pool of 8 blocks of 4 tokens: prompt A (4 blocks) is cached, then
  // pushed out by B and C; asking for A again refetches its 4 blocks.
  Meta cache(small_config(8));
  auto prompt = [](std::int32_t base) {
    std::vector<std::int32_t> p(16);
    for (std::size_t i = 0; i < p.size(); ++i)
      p[i] = base + static_cast<std::int32_t>(i);
    return p;
  };
  auto run = [&](std::int32_t base) {
    const auto p = prompt(base);
    const SeqId s = cache.create_sequence(p);
    const auto rest = static_cast<std::int32_t>(16 - cache.sequence(s).num_tokens);
    ASSERT_EQ(cache.try_reserve(s, rest), ReserveStatus::kOk);
    const SeqId seqs[] = {s};
    const std::int32_t counts[] = {rest};
    cache.commit(cache.prepare_append(seqs, counts));
    cache.release(s);
  };
  run(100);
  run(200);
  EXPECT_EQ(cache.stats().prefix_blocks_refetched, 0);
  run(300);  // evicts A's blocks
  EXPECT_EQ(cache.stats().evicted_blocks, 4);
  run(100);
  EXPECT_EQ(cache.stats().prefix_blocks_refetched, 4);
  // A's blocks were the 1st to 4th of the 4 evictions: asked for again 4, 3,
  // 2 and 1 evictions after they went (buckets (0, 1], (1, 2], (2, 4]).
  const auto& d = cache.stats().refetch_distance;
  EXPECT_EQ(d[0], 1);
  EXPECT_EQ(d[1], 1);
  EXPECT_EQ(d[2], 2);
  EXPECT_EQ(std::accumulate(d.begin(), d.end(), std::int64_t{0}), 4);
  run(100);  // a hit now: nothing refetched
  EXPECT_EQ(cache.stats().prefix_blocks_refetched, 4);
  EXPECT_EQ(cache.stats().prefix_blocks_hit, 4);
}

TEST(Monitor, WindowFiguresAreTheDifferenceToTheOldestSnapshotInIt) {
  const auto seed = test_seed();
  SCOPED_TRACE(seed);
  Meta cache(small_config(40));
  Workload work(cache, seed);
  metrics::Monitor<Meta> monitor(cache, 4);
  std::vector<CacheStats> history;
  for (int i = 0; i < 30; ++i) {
    for (int k = 0; k < 20; ++k)
      work.step();
    const auto& snap = monitor.sample();
    history.push_back(cache.stats());
    const std::size_t oldest = history.size() >= 4 ? history.size() - 4 : 0;
    const CacheStats& then = history[oldest];
    const CacheStats& now = history.back();
    EXPECT_EQ(snap.window.snapshots, static_cast<std::int32_t>(history.size() - oldest));
    EXPECT_EQ(snap.window.blocks_requested,
              now.prefix_blocks_requested - then.prefix_blocks_requested);
    EXPECT_EQ(snap.window.blocks_hit, now.prefix_blocks_hit - then.prefix_blocks_hit);
    EXPECT_EQ(snap.window.evicted_blocks, now.evicted_blocks - then.evicted_blocks);
    EXPECT_EQ(snap.window.lookups, now.prefix_lookups - then.prefix_lookups);
    ASSERT_EQ(monitor.size(), history.size() - oldest);
    EXPECT_EQ(monitor.at(0).counters.prefix_lookups, then.prefix_lookups);
    EXPECT_EQ(monitor.latest().counters.prefix_lookups, now.prefix_lookups);
  }
  EXPECT_TRUE(testing::throws_with<InvalidArgument>([&] { metrics::Monitor<Meta> bad(cache, 1); },
                                                    {"window of 1 snapshots", "2 to 65536"}));
}

// ---- KV events ----------------------------------------------------------------

// The keys the events say are cached, kept as a mirror of the prefix index.
struct Mirror {
  std::unordered_set<EvictionKey> keys;
  std::uint64_t next_number = 0;
  std::uint64_t gaps = 0;
  void apply(const KvEvent& e) {
    gaps += e.sequence_number - next_number;
    next_number = e.sequence_number + 1;
    switch (e.kind) {
      case KvEventKind::kStored:
        ASSERT_TRUE(keys.insert(e.key).second) << "stored twice: " << e.key;
        ASSERT_GT(e.num_tokens, 0);
        ASSERT_GE(e.block, 0);
        break;
      case KvEventKind::kRemoved:
        ASSERT_EQ(keys.erase(e.key), 1u) << "removed but not stored: " << e.key;
        break;
      case KvEventKind::kAllCleared:
        keys.clear();
        break;
    }
  }
};

TEST(KvEvents, MirrorThePrefixIndexExactly) {
  const auto seed = test_seed();
  SCOPED_TRACE(seed);
  Meta cache(small_config(40));
  KvEventRing ring(1 << 16);
  metrics::attach_kv_events(cache, &ring);
  Workload work(cache, seed);
  Mirror mirror;
  for (int i = 0; i < 2000; ++i) {
    work.step();
    if (i % 7 == 0) ring.drain([&](const KvEvent& e) { mirror.apply(e); });
    if (i == 1000) clear_prefix_cache(cache);
  }
  ring.drain([&](const KvEvent& e) { mirror.apply(e); });
  EXPECT_EQ(ring.dropped(), 0u);
  EXPECT_EQ(mirror.gaps, 0u);
  const auto& index = detail::ManagerAccess::ledger(cache).index();
  EXPECT_EQ(static_cast<std::int64_t>(mirror.keys.size()), index.size());
  for (EvictionKey key : mirror.keys)
    EXPECT_TRUE(index.find(key).has_value()) << key;
  cache.check_invariants();
}

TEST(KvEvents, AFullRingDropsAndCountsWithoutBlocking) {
  const auto seed = test_seed();
  SCOPED_TRACE(seed);
  Meta cache(small_config(40));
  KvEventRing ring(8);
  metrics::attach_kv_events(cache, &ring);
  Workload work(cache, seed);
  std::vector<KvEvent> got;
  for (int i = 0; i < 500; ++i)
    work.step();
  KvEvent out[8];
  const std::size_t n = ring.drain(std::span<KvEvent>(out));
  ASSERT_EQ(n, 8u);
  for (std::size_t i = 0; i < n; ++i)
    EXPECT_EQ(out[i].sequence_number, i) << "the first eight were kept, in order";
  EXPECT_GT(ring.dropped(), 0u);
  work.step();
  work.step();
  std::uint64_t last = 7;
  ring.drain([&](const KvEvent& e) {
    EXPECT_GT(e.sequence_number, last);
    last = e.sequence_number;
  });
  EXPECT_EQ(ring.size(), 0u);
  EXPECT_TRUE(testing::throws_with<InvalidArgument>([] { KvEventRing bad(12); },
                                                    {"capacity 12", "power of two"}));
}

TEST(KvEvents, OneProducerOneConsumerThreadLoseNothingButTheCountedDrops) {
  KvEventRing ring(256);
  constexpr std::uint64_t kEvents = 200000;
  std::atomic<bool> done{false};
  std::uint64_t received = 0, expected_next = 0, gaps = 0;
  std::thread consumer([&] {
    while (true) {
      const bool finished = done.load(std::memory_order_acquire);
      ring.drain([&](const KvEvent& e) {
        gaps += e.sequence_number - expected_next;
        expected_next = e.sequence_number + 1;
        EXPECT_EQ(e.key, e.sequence_number * 3 + 1) << "an event's fields arrive with it";
        ++received;
      });
      if (finished) break;
    }
  });
  for (std::uint64_t i = 0; i < kEvents; ++i)
    ring.on_event(KvEvent{KvEventKind::kStored, 4, 0, i * 3 + 1, 0, 0});
  done.store(true, std::memory_order_release);
  consumer.join();
  EXPECT_EQ(received + ring.dropped(), kEvents);
  // Drops show as gaps in the numbers, or after the last event received.
  EXPECT_EQ(gaps + (kEvents - expected_next), ring.dropped());
}

TEST(ClearPrefixCache, DropsEveryKeyKeepsTheData) {
  const auto seed = test_seed();
  SCOPED_TRACE(seed);
  Host cache(small_config(64));
  testing::StepDriver<Host> driver(cache, seed);
  KvEventRing ring(1024);
  metrics::attach_kv_events(cache, &ring);
  std::vector<std::int32_t> prompt(24);
  for (auto& t : prompt)
    t = static_cast<std::int32_t>(driver.rng()() % 5000);
  const SeqId held = cache.create_sequence(prompt);
  ASSERT_TRUE(driver.step({held}, {24}));
  const SeqId gone = cache.create_sequence(prompt);
  EXPECT_EQ(cache.sequence(gone).num_tokens, 24) << "shared before the clear";
  cache.release(gone);
  std::vector<std::int32_t> other(prompt.begin(), prompt.begin() + 8);
  other.resize(16, 7);
  const SeqId released = cache.create_sequence(other);
  ASSERT_TRUE(driver.step({released},
                          {static_cast<std::int32_t>(16 - cache.sequence(released).num_tokens)}));
  cache.release(released);
  EXPECT_GT(cache.num_cached_blocks(), 0);
  ring.drain([](const KvEvent&) {});

  const std::int64_t freed = clear_prefix_cache(cache);
  EXPECT_GT(freed, 0);
  EXPECT_EQ(cache.num_cached_blocks(), 0);
  KvEvent e[4];
  ASSERT_EQ(ring.drain(std::span<KvEvent>(e)), 1u);
  EXPECT_EQ(e[0].kind, KvEventKind::kAllCleared);
  cache.check_invariants();
  for (std::int32_t layer = 0; layer < 2; ++layer)
    EXPECT_TRUE(driver.reads_back(held, layer));
  const SeqId again = cache.create_sequence(prompt);
  EXPECT_EQ(cache.sequence(again).num_tokens, 0) << "no key survives the clear";
  cache.release(again);
  ASSERT_TRUE(driver.step({held}, {9}));  // the held sequence goes on writing
  cache.release(held);
  cache.check_invariants();
  EXPECT_EQ(cache.num_free_blocks(), cache.num_blocks() - cache.num_cached_blocks());
}

}  // namespace
}  // namespace kvcache
