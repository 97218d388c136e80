// The trace replay: drives a real KVCacheManager (paged, prefix sharing, the
// chosen eviction policy) through a request trace and measures the prefix
// hit rate, evictions and peak block use.
//
// Model of the serving loop. Requests arrive at their timestamps; a request
// looks up its prompt (the hash_ids blocks, each `trace_block_tokens` tokens
// whose ids derive from the hash id, so equal ids mean equal blocks), reserves
// room for the uncached part of the prompt and its output, appends them, and
// holds its blocks while it decodes (output_length x decode_ms_per_token
// milliseconds), then releases them: its full prompt blocks stay cached until
// evicted. A request that finds no room even after eviction is rejected and
// counted. Hits count up to a request's first miss. With a model
// shape the replay moves real K/V bytes of that shape on the chosen backend;
// without one it is metadata only. The same trace and options give the same
// figures.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kvcache/metrics/recommend.hpp"
#include "kvcache/model_shape.hpp"
#include "kvcache/tier/block_store.hpp"
#include "trace.hpp"

namespace kvcache::replay {

struct ReplayOptions {
  std::string policy = "lru";  // a name of registry.hpp's policies()
  std::int32_t block_size = 512;
  std::int64_t capacity_blocks = 0;  // 0: unlimited (never evicts)
  std::int32_t trace_block_tokens = 512;
  double decode_ms_per_token = 20.0;  // 0: one request at a time
  std::optional<ModelShape> model;    // move real K/V bytes of this shape
  std::string backend = "cpu";        // cpu | cuda (with a model)
  // Blocks of a host tier (LRU) under the pool: evicted blocks go there and
  // come back on a prefix hit (0: none).
  std::int64_t host_tier_blocks = 0;
  // Engines, each with its own device pool of capacity_blocks (and host tier),
  // sharing one tier: a request goes to engine (its index % engines), or with
  // route_by_prefix to a hash of its first prompt block; each engine publishes
  // the blocks it computes to the shared tier.
  std::int32_t engines = 1;
  bool route_by_prefix = false;
  std::int64_t shared_tier_blocks = 0;  // an in-process shared tier (LRU) of this many blocks
  BlockStore* shared_store = nullptr;   // or the caller's (a RedisTier); not owned
  // Metrics: every `metrics_every` requests each engine's monitor takes a
  // snapshot (a window of `metrics_window`), recommendations are computed
  // from the window, and on_snapshot (when set) sees both. 0: no metrics.
  std::int64_t metrics_every = 0;
  std::int32_t metrics_window = 16;
  std::function<void(std::size_t engine, const metrics::MetricsSnapshot&,
                     std::span<const metrics::Recommendation>)>
      on_snapshot;
  // The tuner (one engine): the memory limit follows `limit_schedule`
  // (pairs of a share of the trace's requests, from which on, and a share of
  // capacity_blocks, the limit), enforced when it changes; the tuner decides
  // every `tune_every` requests.
  bool tune = false;
  std::vector<std::pair<double, double>> limit_schedule;
  std::int64_t tune_every = 100;
};

// What the tuner did in a replay.
struct TuneResult {
  std::int64_t decisions = 0, grows = 0, shrinks = 0, limit_shrinks = 0, refused = 0;
  std::int64_t requests_over_limit = 0;  // requests served with the budget above the limit
  std::int64_t peak_over_limit = 0;      // blocks, at most
  std::int64_t min_budget = 0, max_budget = 0, final_budget = 0;
  std::vector<std::string> log;  // the decisions, as lines
};

// A rule that fired during a replay: in how many windows, from which
// request on, and what it said the last time.
struct FiredRule {
  std::size_t engine = 0;
  std::int64_t windows = 0;
  std::int64_t first_request = 0;
  metrics::Recommendation last;
};

struct ReplayResult {
  std::string policy;
  std::int64_t capacity_blocks = 0;
  std::int64_t requests = 0;
  std::int64_t rejected = 0;  // no room even after evicting everything evictable
  std::int64_t blocks_requested = 0;
  std::int64_t blocks_hit = 0;       // found in the pool, or brought back from the tier
  std::int64_t blocks_hit_tier = 0;  // ... of which from the tier
  std::int64_t tier_offloads = 0;    // blocks copied out to the tier
  std::int64_t tier_bytes_offloaded = 0;
  std::int64_t tier_bytes_onboarded = 0;
  std::int64_t tier_evictions = 0;  // blocks the tier dropped
  std::int64_t published = 0;       // blocks the engines put into the shared tier
  std::int64_t evicted_blocks = 0;
  std::int64_t peak_used_blocks = 0;       // held by running requests
  std::int64_t peak_occupied_blocks = 0;   // held or cached
  std::int64_t bytes_appended = 0;         // with a model
  std::int64_t snapshots = 0;              // metrics snapshots taken (all engines)
  std::vector<FiredRule> recommendations;  // in the order they first fired
  std::optional<TuneResult> tuned;         // with options.tune
  double seconds = 0;
  double hit_rate() const {
    return blocks_requested == 0
               ? 0.0
               : static_cast<double>(blocks_hit) / static_cast<double>(blocks_requested);
  }
  double pool_hit_rate() const {  // found in the pool alone
    return blocks_requested == 0 ? 0.0
                                 : static_cast<double>(blocks_hit - blocks_hit_tier) /
                                       static_cast<double>(blocks_requested);
  }
};

// Blocks that hold the whole trace without eviction (the "unlimited" size).
std::int64_t unlimited_capacity(const Trace& trace, const ReplayOptions& options);

// Distinct prompt blocks in the trace.
std::int64_t unique_blocks(const Trace& trace);

// Throws InvalidArgument (or TraceError naming a line) when `options` cannot
// replay `trace`: block sizes, capacity, decode time, policy, request sizes.
void check_options(const Trace& trace, const ReplayOptions& options);

// check_options, then the replay.
ReplayResult run_replay(const Trace& trace, const ReplayOptions& options);

// Parses a model name: tiny, llama3-8b, llama2-7b, qwen2-7b, or
// layers:kv_heads:head_dim[:fp16|bf16|fp32].
ModelShape parse_model(const std::string& name);

}  // namespace kvcache::replay
