// The trace reader and the replay: bad lines named by number, the hit
// semantics checked against an independent simulation, determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <list>
#include <random>
#include <set>
#include <sstream>
#include <unordered_map>

#include "kv_test_support.hpp"
#include "registry.hpp"
#include "replay.hpp"

namespace kvcache::replay {
namespace {

using kvcache::testing::throws_with;

Trace parse(const std::string& text, bool skip_bad = false) {
  std::istringstream input(text);
  return parse_trace(input, "test", skip_bad);
}

TEST(Trace, ParsesMooncakeLines) {
  const Trace trace = parse(
      "{\"timestamp\": 0, \"input_length\": 700, \"output_length\": 5, \"hash_ids\": [0, 1]}\n"
      "\n"
      "{\"timestamp\": 12.0, \"input_length\": 10, \"output_length\": 0, \"hash_ids\": [7]}\n");
  ASSERT_EQ(trace.requests.size(), 2u);
  EXPECT_EQ(trace.requests[0].hash_ids, (std::vector<std::int64_t>{0, 1}));
  EXPECT_EQ(trace.requests[0].input_length, 700);
  EXPECT_EQ(trace.requests[1].timestamp_ms, 12);
  EXPECT_EQ(trace.bad_lines, 0);
}

TEST(Trace, BadLinesNameTheirNumberAndStopTheRead) {
  const std::string good =
      "{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [1]}\n";
  EXPECT_TRUE(throws_with<TraceError>([&] { parse(good + "{\"timestamp\": 1,\n"); },
                                      {"line 2", "not valid JSON"}));
  EXPECT_TRUE(throws_with<TraceError>(
      [&] { parse(good + good + "{\"timestamp\": 1, \"input_length\": 3, \"hash_ids\": []}\n"); },
      {"line 3", "missing field \"output_length\""}));
  EXPECT_TRUE(throws_with<TraceError>(
      [&] {
        parse("{\"timestamp\": 1, \"input_length\": -3, \"output_length\": 1, \"hash_ids\": []}\n");
      },
      {"line 1", "\"input_length\" is -3", "negative"}));
  EXPECT_TRUE(throws_with<TraceError>(
      [&] {
        parse(
            "{\"timestamp\": 1, \"input_length\": 3, \"output_length\": 1, \"hash_ids\": [1, "
            "\"x\"]}\n");
      },
      {"line 1", "hash_ids holds \"x\""}));
  EXPECT_TRUE(
      throws_with<TraceError>([&] { parse("[1, 2]\n"); }, {"line 1", "expected a JSON object"}));
  EXPECT_TRUE(throws_with<TraceError>([&] { (void)load_trace("/nonexistent/trace.jsonl", false); },
                                      {"cannot open", "/nonexistent/trace.jsonl"}));
}

TEST(Trace, SkipBadCountsAndKeepsTheRest) {
  const std::string good =
      "{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [1]}\n";
  const Trace trace = parse(good + "nonsense\n" + good + "{\"timestamp\": -1}\n", true);
  EXPECT_EQ(trace.requests.size(), 2u);
  EXPECT_EQ(trace.bad_lines, 2);
}

// The replay's hit semantics with LRU, simulated independently: a request hits
// its leading cached blocks, then all its blocks are cached (its last block
// the least recent of them, as the manager hands blocks back tail first).
struct LruModel {
  std::int64_t capacity;
  std::list<std::int64_t> order;  // least recent first
  std::unordered_map<std::int64_t, std::list<std::int64_t>::iterator> where;
  std::int64_t hits = 0, requested = 0, evictions = 0;

  void remove(std::int64_t id) {
    order.erase(where.at(id));
    where.erase(id);
  }
  void run(const std::vector<std::int64_t>& ids) {
    requested += static_cast<std::int64_t>(ids.size());
    std::size_t hit = 0;
    while (hit < ids.size() && where.count(ids[hit]) != 0)
      ++hit;
    hits += static_cast<std::int64_t>(hit);
    for (std::size_t i = 0; i < hit; ++i)
      remove(ids[i]);  // in use now
    // The misses take fresh blocks, evicting the least recent cached ones.
    const auto pinned = static_cast<std::int64_t>(ids.size());
    while (static_cast<std::int64_t>(order.size()) + pinned > capacity) {
      where.erase(order.front());
      order.pop_front();
      ++evictions;
    }
    for (std::size_t i = hit; i < ids.size(); ++i) {
      if (where.count(ids[i]) != 0) remove(ids[i]);  // an older copy is replaced
    }
    for (std::size_t i = ids.size(); i-- > 0;) {
      order.push_back(ids[i]);
      where[ids[i]] = std::prev(order.end());
    }
  }
};

Trace random_trace(std::uint64_t seed, int requests) {
  std::mt19937_64 rng(seed);
  Trace trace;
  std::vector<std::vector<std::int64_t>> conversations(12);
  std::int64_t next = 0;
  for (int r = 0; r < requests; ++r) {
    auto& prompt = conversations[rng() % conversations.size()];
    if (prompt.empty() || rng() % 5 == 0)
      prompt = {static_cast<std::int64_t>(rng() % 3)};  // 3 shared roots
    const int added = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < added; ++i)
      prompt.push_back(1000 + next++);
    TraceRequest request;
    request.timestamp_ms = r;
    request.hash_ids = prompt;
    request.input_length = static_cast<std::int64_t>(prompt.size()) * 16;
    request.output_length = 0;
    trace.requests.push_back(request);
    if (prompt.size() > 12) prompt.clear();
  }
  return trace;
}

TEST(Replay, LruHitsAndEvictionsMatchAnIndependentSimulation) {
  const std::uint64_t seed = kvcache::testing::test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const Trace trace = random_trace(seed, 400);
  for (std::int64_t capacity : {16, 24, 40, 80}) {
    ReplayOptions options;
    options.policy = "lru";
    options.block_size = 16;
    options.trace_block_tokens = 16;
    options.capacity_blocks = capacity;
    options.decode_ms_per_token = 0;
    const ReplayResult result = run_replay(trace, options);
    LruModel model{capacity, {}, {}, 0, 0, 0};
    for (const auto& request : trace.requests)
      model.run(request.hash_ids);
    EXPECT_EQ(result.blocks_requested, model.requested);
    EXPECT_EQ(result.blocks_hit, model.hits) << "capacity " << capacity;
    EXPECT_EQ(result.evicted_blocks, model.evictions) << "capacity " << capacity;
    EXPECT_EQ(result.rejected, 0);
  }
}

TEST(Replay, UnlimitedCapacityHitsEveryBlockSeenBefore) {
  const Trace trace = synthetic_trace(200);
  std::set<std::int64_t> seen;
  std::int64_t hits = 0, requested = 0;
  for (const auto& request : trace.requests) {
    requested += static_cast<std::int64_t>(request.hash_ids.size());
    std::size_t i = 0;
    while (i < request.hash_ids.size() && seen.count(request.hash_ids[i]) != 0)
      ++i;
    hits += static_cast<std::int64_t>(i);
    seen.insert(request.hash_ids.begin(), request.hash_ids.end());
  }
  for (const PolicyInfo& info : policies()) {
    const std::string policy(info.name);
    ReplayOptions options;
    options.policy = policy;
    options.capacity_blocks = 0;
    options.decode_ms_per_token = 0;
    const ReplayResult result = run_replay(trace, options);
    if (policy == "none") {
      EXPECT_LT(result.blocks_hit, hits);  // nothing is kept once a request ends
    } else {
      EXPECT_EQ(result.blocks_hit, hits) << policy;
      EXPECT_EQ(result.evicted_blocks, 0) << policy;
    }
    EXPECT_EQ(result.blocks_requested, requested);
  }
}

TEST(Replay, IsDeterministicAndMovingBytesChangesNoFigure) {
  const Trace trace = synthetic_trace(120);
  ReplayOptions options;
  options.policy = "s3-fifo";
  options.capacity_blocks = 200;
  const ReplayResult first = run_replay(trace, options);
  const ReplayResult second = run_replay(trace, options);
  EXPECT_EQ(first.blocks_hit, second.blocks_hit);
  EXPECT_EQ(first.evicted_blocks, second.evicted_blocks);
  EXPECT_EQ(first.peak_occupied_blocks, second.peak_occupied_blocks);
  EXPECT_GT(first.blocks_hit, 0);
  EXPECT_GT(first.evicted_blocks, 0);
  options.model = parse_model("2:1:8");
  options.block_size = 512;
  const ReplayResult with_bytes = run_replay(trace, options);
  EXPECT_EQ(with_bytes.blocks_hit, first.blocks_hit);
  EXPECT_EQ(with_bytes.evicted_blocks, first.evicted_blocks);
  EXPECT_GT(with_bytes.bytes_appended, 0);
}

TEST(Replay, RejectsBadOptions) {
  const Trace trace = synthetic_trace(10);
  ReplayOptions options;
  options.policy = "mru";
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { (void)run_replay(trace, options); },
                                           {"policy \"mru\"", "lru"}));
  options.policy = "lru";
  options.block_size = 24;
  EXPECT_TRUE(
      throws_with<InvalidArgument>([&] { (void)run_replay(trace, options); }, {"block size 24"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([] { (void)parse_model("32:8"); }, {"model \"32:8\""}));
  EXPECT_TRUE(
      throws_with<InvalidArgument>([] { (void)parse_model("32:8:128:fp64"); }, {"dtype \"fp64\""}));
  EXPECT_EQ(parse_model("llama3-8b").bytes_per_token(), 131072);
}

}  // namespace
}  // namespace kvcache::replay

namespace kvcache::replay {
namespace {

TEST(Replay, CompressedCachesHoldMoreBlocksAndHitMoreAtTheSameBytes) {
  const ModelShape shape = parse_model("llama3-8b");
  auto bytes = [&](const char* codec) { return find_codec(codec).block_bytes(shape, 512); };
  EXPECT_EQ(bytes("plain"), 512 * 131072);
  EXPECT_EQ(bytes("int8"), 512 * (65536 + 65536 / 32 * 2));  // codes + fp16 scales
  EXPECT_EQ(bytes("fp8"), 512 * 65536);
  EXPECT_LT(bytes("int4"), bytes("fp8"));
  EXPECT_EQ(find_codec("int4").fixed_bytes(shape, 2), 2 * 160 * 131072);
  EXPECT_EQ(find_codec("int8").fixed_bytes(shape, 2), 0);
  // Errors list the names, generated from the registry.
  EXPECT_TRUE(kvcache::testing::throws_with<InvalidArgument>(
      [&] { (void)find_codec("int3"); },
      {"codec \"int3\"", "plain, int8, fp8, int4, int2, low-rank-32"}));
  // Same bytes: more blocks, and on a prefix-sharing workload more hits.
  const Trace trace = synthetic_trace(300);
  const std::int64_t budget = 200 * bytes("plain");
  double previous = -1;
  for (const std::string codec : {"plain", "int8", "int4"}) {
    ReplayOptions options;
    options.capacity_blocks = (budget - find_codec(codec).fixed_bytes(shape, 64)) /
                              find_codec(codec).block_bytes(shape, 512);
    const double hit = run_replay(trace, options).hit_rate();
    EXPECT_GT(hit, previous) << codec;
    previous = hit;
  }
}

}  // namespace
}  // namespace kvcache::replay
