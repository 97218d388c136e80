// kvcache-replay: replays a request trace through the real manager and
// prints the prefix hit rate, evictions and peak blocks; --sweep prints hit
// rate against capacity for every eviction policy.
//
// Everything is checked and computed before anything is printed: a bad
// option exits 2, a bad trace line or a failed run exits 1, each with one
// bounded message on stderr and nothing on stdout.
#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#ifdef KVCACHE_REPLAY_REDIS
#include "kvcache/tier/redis_tier.hpp"
#endif
#ifdef KVCACHE_REPLAY_HTTP
#include "kvcache/metrics/http_server.hpp"
#endif

#include <thread>

#include "cli.hpp"
#include "keep_time_bound.hpp"
#include "kvcache/kvcache.hpp"
#include "registry.hpp"
#include "replay.hpp"
#include "trace.hpp"

namespace {

using namespace kvcache::replay;

std::string percent(double value) {
  return fmt::format("{:.2f}%", 100.0 * value);
}

std::string trace_line(const Trace& trace, const ReplayOptions& options) {
  std::int64_t prompt_blocks = 0;
  for (const auto& request : trace.requests)
    prompt_blocks += static_cast<std::int64_t>(request.hash_ids.size());
  return fmt::format(
      "trace {}: {} requests, {} prompt blocks ({} distinct){}; block {} tokens; decode {} "
      "ms/token{}\n",
      trace.source, trace.requests.size(), prompt_blocks, unique_blocks(trace),
      trace.bad_lines > 0 ? fmt::format(", {} bad lines skipped", trace.bad_lines) : "",
      options.block_size, options.decode_ms_per_token,
      options.model
          ? fmt::format("; K/V of {} layers x {} heads x {} moved on {}", options.model->num_layers,
                        options.model->num_kv_heads, options.model->head_dim, options.backend)
          : "; metadata only");
}

std::string single_report(const Trace& trace, const ReplayResult& r, std::int64_t metrics_every = 0,
                          std::int32_t metrics_window = 0) {
  std::string out = fmt::format("policy {}, capacity {} blocks\n", r.policy, r.capacity_blocks);
  out += fmt::format("  requests          {} ({} rejected for lack of room)\n", r.requests,
                     r.rejected);
  out += fmt::format("  prefix hit rate   {} ({} of {} prompt blocks)\n", percent(r.hit_rate()),
                     r.blocks_hit, r.blocks_requested);
  if (r.tier_offloads > 0 || r.blocks_hit_tier > 0) {
    out += fmt::format("  from the pool     {} ({} blocks); from the tiers {} ({} blocks)\n",
                       percent(r.pool_hit_rate()), r.blocks_hit - r.blocks_hit_tier,
                       percent(r.hit_rate() - r.pool_hit_rate()), r.blocks_hit_tier);
    out += fmt::format("  tiers             {} blocks offloaded, {} onboarded, {} evicted{}\n",
                       r.tier_offloads, r.blocks_hit_tier, r.tier_evictions,
                       r.tier_bytes_offloaded > 0
                           ? fmt::format(" ({:.2f} GiB out, {:.2f} GiB in)",
                                         static_cast<double>(r.tier_bytes_offloaded) / (1 << 30),
                                         static_cast<double>(r.tier_bytes_onboarded) / (1 << 30))
                           : std::string());
  }
  if (r.published > 0) {
    out += fmt::format("  shared tier       {} blocks published by the engines\n", r.published);
  }
  out += fmt::format("  evictions         {} blocks\n", r.evicted_blocks);
  out += fmt::format("  peak blocks       {} held by running requests, {} held or cached\n",
                     r.peak_used_blocks, r.peak_occupied_blocks);
  if (r.bytes_appended > 0) {
    out += fmt::format("  K/V appended      {:.2f} GiB ({:.2f} GB/s)\n",
                       static_cast<double>(r.bytes_appended) / (1 << 30),
                       static_cast<double>(r.bytes_appended) / r.seconds / 1e9);
  }
  if (r.snapshots > 0) {
    out += fmt::format(
        "  recommendations   {} (from windows of {} snapshots, one every {} requests)\n",
        r.recommendations.empty() ? std::string("none fired")
                                  : fmt::format("{} rules fired", r.recommendations.size()),
        metrics_window, metrics_every);
    for (const FiredRule& f : r.recommendations) {
      out += fmt::format(
          "    {}{} fired in {} of {} windows, first after {} requests\n", f.last.rule,
          r.recommendations.size() > 1 && f.engine > 0 ? fmt::format(" (engine {})", f.engine)
                                                       : std::string(),
          f.windows, r.snapshots, f.first_request);
      out += fmt::format("      last: {}\n      action: {}\n", f.last.finding, f.last.action);
    }
  }
  out += fmt::format(
      "  replay time       {:.3f} s ({:.0f} requests/s){}\n", r.seconds,
      static_cast<double>(r.requests) / r.seconds,
      trace.bad_lines > 0 ? fmt::format(", {} bad lines skipped", trace.bad_lines) : "");
  return out;
}

// --tune: the tuner following a memory limit that changes against a static
// cache sized for the limit's lowest point (the largest that never exceeds it).
std::string tune_report(const Trace& trace, const ReplayOptions& options) {
  ReplayOptions tuned = options;
  tuned.tune = true;
  ReplayOptions fixed = options;
  fixed.tune = false;
  double lowest = 1.0;
  for (const auto& [from, limit] : options.limit_schedule)
    lowest = std::min(lowest, limit);
  fixed.capacity_blocks = std::max<std::int64_t>(
      1, static_cast<std::int64_t>(lowest * static_cast<double>(options.capacity_blocks)));
  const ReplayResult s = run_replay(trace, fixed);
  const ReplayResult t = run_replay(trace, tuned);
  const TuneResult& r = *t.tuned;
  std::string schedule;
  for (const auto& [from, limit] : options.limit_schedule)
    schedule += fmt::format("{}{:.0f}% of the requests on: {:.0f}%", schedule.empty() ? "" : ", ",
                            100 * from, 100 * limit);
  std::string out = fmt::format(
      "policy {}, pool {} blocks; memory limit (of the pool): {}; the tuner decides every {} "
      "requests\n\n",
      options.policy, options.capacity_blocks, schedule, options.tune_every);
  out +=
      "| cache | blocks it may use | prefix hit rate | evictions | failed allocations | requests "
      "over the limit | decisions |\n";
  out += "|---|---|---|---|---|---|---|\n";
  out += fmt::format("| static | {} (the limit's lowest) | {} | {} | {} | 0 | - |\n",
                     fixed.capacity_blocks, percent(s.hit_rate()), s.evicted_blocks, s.rejected);
  out += fmt::format(
      "| tuned | {} to {} (at the end {}) | {} | {} | {} | {} (at most {} blocks over) | {}: {} "
      "grow, {} shrink, {} to the limit, {} refused |\n",
      r.min_budget, r.max_budget, r.final_budget, percent(t.hit_rate()), t.evicted_blocks,
      t.rejected, r.requests_over_limit, std::max<std::int64_t>(0, r.peak_over_limit), r.log.size(),
      r.grows, r.shrinks, r.limit_shrinks, r.refused);
  out += "\nthe tuner's decisions:\n";
  const std::size_t shown = std::min<std::size_t>(r.log.size(), 24);
  for (std::size_t i = 0; i < shown; ++i)
    out += "  " + r.log[i] + "\n";
  if (r.log.size() > shown) out += fmt::format("  ... and {} more\n", r.log.size() - shown);
  return out;
}

// The online policies with the highest hit rate in a sweep row (ties all),
// as indices into policies().
std::vector<std::size_t> best_online(const std::vector<ReplayResult>& row) {
  double top = 0;
  for (std::size_t p = 0; p < row.size(); ++p) {
    if (!policies()[p].offline) top = std::max(top, row[p].hit_rate());
  }
  std::vector<std::size_t> best;
  for (std::size_t p = 0; p < row.size(); ++p) {
    if (!policies()[p].offline && row[p].hit_rate() == top) best.push_back(p);
  }
  return best;
}

// Each online policy's hit rate over LRU's, and the share of the gap
// between LRU and the offline optimum it closes.
std::string gap_report(const std::vector<std::int64_t>& capacities,
                       const std::vector<std::int64_t>& divisors,
                       const std::vector<std::vector<ReplayResult>>& rows) {
  const auto table = policies();
  std::size_t lru = table.size(), optimum = table.size();
  for (std::size_t p = 0; p < table.size(); ++p) {
    if (table[p].name == "lru") lru = p;
    if (table[p].offline) optimum = p;
  }
  if (lru == table.size() || optimum == table.size()) return {};
  std::vector<std::string_view> shown;
  for (std::size_t p = 0; p < table.size(); ++p) {
    if (!table[p].offline && p != lru && table[p].name != "none") shown.push_back(table[p].name);
  }
  std::string out = fmt::format(
      "\nAgainst LRU: hit rate over LRU's, and the share of the LRU-to-{} gap closed\n\n"
      "| capacity (blocks) | {} |\n|---|",
      table[optimum].name, fmt::join(shown, " | "));
  for (std::size_t i = 0; i < shown.size(); ++i)
    out += "---|";
  out += "\n";
  for (std::size_t r = 0; r < rows.size(); ++r) {
    if (capacities[r] == 0) continue;  // unlimited: nothing is evicted, no gap
    const double base = rows[r][lru].hit_rate();
    const double gap = rows[r][optimum].hit_rate() - base;
    std::vector<std::string> cells;
    for (std::size_t p = 0; p < table.size(); ++p) {
      if (table[p].offline || p == lru || table[p].name == "none") continue;
      const double hit = rows[r][p].hit_rate();
      cells.push_back(fmt::format(
          "{:+.1f}% / {}", base > 0 ? 100.0 * (hit / base - 1.0) : 0.0,
          gap > 1e-12 ? fmt::format("{:.0f}%", 100.0 * (hit - base) / gap) : std::string("-")));
    }
    out += fmt::format("| {} (1/{}) | {} |\n", capacities[r], divisors[r], fmt::join(cells, " | "));
  }
  return out;
}

// LRU and the best online policy against the keep-time ceilings of the
// policies blind to the block and of those that count its requests, and MIN.
std::string ceiling_report(const Trace& trace, const ReplayOptions& base,
                           const std::vector<std::int64_t>& capacities,
                           const std::vector<std::int64_t>& divisors,
                           const std::vector<std::vector<ReplayResult>>& rows) {
  const auto recency = keep_time_bound(trace, base, BoundClasses::kRecency, capacities);
  const auto counts = keep_time_bound(trace, base, BoundClasses::kUseCount, capacities);
  const auto table = policies();
  std::string out =
      "\nCeilings: the best rule \"keep a released block of class c for L_c requests\" (slots "
      "counted on average, hits past a miss allowed), for one class (policies blind to the "
      "block) and for classes by use count (policies that count requests)\n\n"
      "| capacity (blocks) | lru | recency bound | best online | use-count bound | share of the "
      "LRU-to-bound gap closed | belady |\n|---|---|---|---|---|---|---|\n";
  for (std::size_t r = 0; r < rows.size(); ++r) {
    if (capacities[r] == 0) continue;
    double lru = 0, optimum = 0;
    for (std::size_t p = 0; p < table.size(); ++p) {
      if (table[p].name == "lru") lru = rows[r][p].hit_rate();
      if (table[p].offline) optimum = rows[r][p].hit_rate();
    }
    const std::size_t best = best_online(rows[r]).front();
    const double online = rows[r][best].hit_rate();
    const double gap = counts[r] - lru;
    out += fmt::format(
        "| {} (1/{}) | {} | {} | {} ({}) | {} | {} | {} |\n", capacities[r], divisors[r],
        percent(lru), percent(recency[r]), percent(online), table[best].name, percent(counts[r]),
        gap > 1e-12 ? fmt::format("{:.0f}%", 100.0 * (online - lru) / gap) : std::string("-"),
        percent(optimum));
  }
  return out;
}

std::string sweep_report(const Trace& trace, const ReplayOptions& base) {
  const std::int64_t distinct = unique_blocks(trace);
  const std::vector<std::int64_t> divisors = {128, 64, 32, 16, 8, 4, 2, 0};  // 0: unlimited
  std::vector<std::int64_t> capacities;
  for (std::int64_t divisor : divisors) {
    capacities.push_back(divisor == 0 ? 0 : std::max<std::int64_t>(1, distinct / divisor));
  }
  std::vector<std::vector<ReplayResult>> rows;
  for (std::int64_t capacity : capacities) {
    std::vector<ReplayResult> row;
    for (const PolicyInfo& policy : policies()) {
      ReplayOptions options = base;
      options.policy = policy.name;
      options.capacity_blocks = capacity;
      row.push_back(run_replay(trace, options));
    }
    rows.push_back(row);
  }
  std::string out =
      "\nPrefix hit rate (prompt blocks hit before each request's first miss / blocks "
      "requested)\n\n";
  const std::string header = names(policies(), " | ");
  out += fmt::format("| capacity (blocks) | {} | best online |\n", header);
  std::string rule = "|---|";
  for (std::size_t i = 0; i < policies().size(); ++i)
    rule += "---|";
  out += fmt::format("{}---|\n", rule);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const auto& row = rows[r];
    std::vector<std::string> cells;
    for (const auto& x : row)
      cells.push_back(percent(x.hit_rate()));
    std::vector<std::string_view> best;
    for (std::size_t p : best_online(row))
      best.push_back(policies()[p].name);
    const std::string label = capacities[r] == 0
                                  ? fmt::format("unlimited ({})", row[0].capacity_blocks)
                                  : fmt::format("{} (1/{})", capacities[r], divisors[r]);
    out += fmt::format("| {} | {} | {} |\n", label, fmt::join(cells, " | "), fmt::join(best, ", "));
  }
  out += gap_report(capacities, divisors, rows);
  if (base.decode_ms_per_token == 0) out += ceiling_report(trace, base, capacities, divisors, rows);
  out += "\nEvicted blocks / peak blocks held or cached / rejected requests\n\n";
  out += fmt::format("| capacity (blocks) | {} |\n{}\n", header, rule);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    std::vector<std::string> cells;
    for (const auto& x : rows[r])
      cells.push_back(
          fmt::format("{} / {} / {}", x.evicted_blocks, x.peak_occupied_blocks, x.rejected));
    out +=
        fmt::format("| {} | {} |\n",
                    capacities[r] == 0 ? std::string("unlimited") : std::to_string(capacities[r]),
                    fmt::join(cells, " | "));
  }
  double seconds = 0;
  for (const auto& row : rows) {
    for (const auto& x : row)
      seconds += x.seconds;
  }
  out += fmt::format("\n{} replays in {:.2f} s\n", rows.size() * policies().size(), seconds);
  return out;
}

// Blocks a byte budget buys under a codec (KIVI's windows for 64 live
// sequences come off the budget first).
std::int64_t blocks_for_budget(const Arguments& args, const CodecInfo& codec,
                               const ReplayOptions& options) {
  const auto budget = static_cast<std::int64_t>(args.budget_gib * 1073741824.0);
  const std::int64_t fixed = codec.fixed_bytes(*options.model, 64);
  const std::int64_t blocks =
      (budget - fixed) / codec.block_bytes(*options.model, options.block_size);
  if (blocks < 1) {
    throw UsageError(
        fmt::format("--budget-gib {} holds no block under codec {}", args.budget_gib, codec.name));
  }
  return std::min<std::int64_t>(blocks, (std::int64_t{1} << 31) - 1);
}

std::string codec_report(const Trace& trace, const Arguments& args, ReplayOptions options) {
  std::string out = fmt::format(
      "\nPrefix hit rate at {} GiB of K/V cache ({} layers x {} KV heads x {}, {}), by codec\n\n",
      args.budget_gib, options.model->num_layers, options.model->num_kv_heads,
      options.model->head_dim, kvcache::dtype_name(options.model->dtype));
  out += fmt::format(
      "| codec | bytes per {}-token block | blocks | lru | lfu-aging |\n|---|---|---|---|---|\n",
      options.block_size);
  const std::optional<kvcache::ModelShape> model = options.model;
  for (const CodecInfo& codec : codecs()) {
    options.model = model;
    options.capacity_blocks = blocks_for_budget(args, codec, options);
    options.model.reset();  // metadata only: the codec decides the capacity, not the hit logic
    std::vector<std::string> cells;
    for (const std::string policy : {"lru", "lfu-aging"}) {
      options.policy = policy;
      cells.push_back(percent(run_replay(trace, options).hit_rate()));
    }
    out += fmt::format("| {} | {} | {} | {} |\n", codec.name,
                       codec.block_bytes(*model, options.block_size), options.capacity_blocks,
                       fmt::join(cells, " | "));
  }
  out +=
      "\nint4 / int2 also keep 128 + 32 recent tokens per live sequence in fp16 (charged for 64 "
      "sequences).\n";
  return out;
}

// The pool with host tiers of 0, 2, 4 and 8 times its size under it, beside
// the pool's offline optimum (no tier) and one pool as large as pool and
// tier together.
std::string tier_report(const Trace& trace, ReplayOptions options) {
  const std::int64_t pool = options.capacity_blocks;
  std::string out = fmt::format(
      "\nPrefix hit rate with a host tier (LRU) under a pool of {} blocks ({})\n\n"
      "| host tier (blocks) | hit rate | from the pool | from the tier | blocks offloaded | "
      "blocks onboarded | tier evictions | one pool of pool + tier blocks ({}) |\n"
      "|---|---|---|---|---|---|---|---|\n",
      pool, options.policy, options.policy);
  for (const std::int64_t times : {0, 2, 4, 8}) {
    options.host_tier_blocks = times * pool;
    options.capacity_blocks = pool;
    const ReplayResult r = run_replay(trace, options);
    ReplayOptions single = options;
    single.host_tier_blocks = 0;
    single.capacity_blocks =
        std::min<std::int64_t>(pool * (1 + times), (std::int64_t{1} << 31) - 1);
    const ReplayResult one = run_replay(trace, single);
    out +=
        fmt::format("| {} ({}x) | {} | {} | {} | {} | {} | {} | {} |\n", options.host_tier_blocks,
                    times, percent(r.hit_rate()), percent(r.pool_hit_rate()),
                    percent(r.hit_rate() - r.pool_hit_rate()), r.tier_offloads, r.blocks_hit_tier,
                    r.tier_evictions, percent(one.hit_rate()));
  }
  options.host_tier_blocks = 0;
  options.capacity_blocks = pool;
  for (const PolicyInfo& policy : policies()) {
    if (!policy.offline) continue;
    options.policy = policy.name;
    out += fmt::format("\nThe pool's offline optimum ({}, no tier): {}\n", policy.name,
                       percent(run_replay(trace, options).hit_rate()));
  }
  return out;
}

// Runs what the arguments ask for and returns the whole report.
// The shared tier --redis names, under a key prefix of its own (a run never
// reads another run's blocks); null without --redis.
std::unique_ptr<kvcache::BlockStore> redis_store(const Arguments& args,
                                                 const ReplayOptions& options, int run) {
  if (args.redis_url.empty()) return nullptr;
#ifdef KVCACHE_REPLAY_REDIS
  kvcache::RedisTierOptions redis;
  redis.url = args.redis_url;
  redis.key_prefix = fmt::format("kvcache-replay-{}-{}", ::getpid(), run);
  const std::int64_t bytes =
      options.model ? kvcache::PlainCodec::block_bytes(*options.model, options.block_size) : 0;
  return std::make_unique<kvcache::RedisTier>(bytes, redis);
#else
  (void)options;
  (void)run;
  throw UsageError("--redis: this kvcache-replay was built without the Redis tier (hiredis)");
#endif
}

// Waits for a Redis tier's queued writes (a no-op for other stores).
void settle(kvcache::BlockStore* store) {
#ifdef KVCACHE_REPLAY_REDIS
  if (auto* redis = dynamic_cast<kvcache::RedisTier*>(store))
    (void)redis->flush(std::chrono::seconds(30));
#else
  (void)store;
#endif
}

// 1, 2 and 4 engines, each with a pool of options.capacity_blocks: alone,
// sharing one tier, and one engine with all their pools and the same tier.
std::string engines_report(const Trace& trace, const Arguments& args, ReplayOptions options) {
  const std::int64_t pool = options.capacity_blocks;
  const std::int64_t shared_blocks =
      options.shared_tier_blocks > 0 ? options.shared_tier_blocks : 8 * pool;
  std::string out = fmt::format(
      "\nPrefix hit rate of engines with pools of {} blocks each ({}, {} routing), alone and "
      "sharing a tier ({}), beside one engine with all their pools and the same tier\n\n"
      "| engines | alone | sharing the tier | from the shared tier | blocks published | one "
      "engine, "
      "pools together, same tier | sharing / one engine |\n|---|---|---|---|---|---|---|\n",
      pool, options.policy, options.route_by_prefix ? "prefix" : "round-robin",
      args.redis_url.empty() ? fmt::format("in-process, {} blocks", shared_blocks)
                             : std::string("Redis"));
  int run = 0;
  auto with_shared = [&](ReplayOptions o) {
    const auto store = redis_store(args, o, run++);
    if (store) {
      o.shared_store = store.get();
      o.shared_tier_blocks = 0;
    } else {
      o.shared_tier_blocks = shared_blocks;
    }
    const ReplayResult r = run_replay(trace, o);
    settle(store.get());
    return r;
  };
  for (const std::int32_t engines : {1, 2, 4}) {
    ReplayOptions alone = options;
    alone.engines = engines;
    alone.shared_tier_blocks = 0;
    alone.shared_store = nullptr;
    const ReplayResult a = run_replay(trace, alone);
    const ReplayResult shared = with_shared(alone);
    ReplayOptions one = alone;
    one.engines = 1;
    one.capacity_blocks = std::min<std::int64_t>(pool * engines, (std::int64_t{1} << 31) - 1);
    const ReplayResult together = with_shared(one);
    out +=
        fmt::format("| {} | {} | {} | {} | {} | {} | {:.3f} |\n", engines, percent(a.hit_rate()),
                    percent(shared.hit_rate()), percent(shared.hit_rate() - shared.pool_hit_rate()),
                    shared.published, percent(together.hit_rate()),
                    together.hit_rate() > 0 ? shared.hit_rate() / together.hit_rate() : 0.0);
  }
  return out;
}

std::string report(const Arguments& args) {
  const Trace trace =
      args.trace_path.empty() ? synthetic_trace() : load_trace(args.trace_path, args.skip_bad);
  ReplayOptions options = args.options;
  check_options(trace, options);
  if (args.codec_table) {
    return trace_line(trace, options) + codec_report(trace, args, options);
  }
  if (args.budget_gib > 0) {
    options.capacity_blocks = blocks_for_budget(args, find_codec(args.codec), options);
    if (args.codec != "plain") options.model.reset();  // the data path of a codec is not replayed
  } else if (args.capacity_tokens > 0) {
    options.capacity_blocks =
        std::min<std::int64_t>((args.capacity_tokens + options.block_size - 1) / options.block_size,
                               (std::int64_t{1} << 31) - 1);
  } else if (options.capacity_blocks == 0 && !args.sweep) {
    options.capacity_blocks = std::max<std::int64_t>(1, unique_blocks(trace) / 8);
  }
  if (args.sweep) return trace_line(trace, options) + sweep_report(trace, options);
  if (args.engines_table) {
    if (args.options.capacity_blocks == 0 && args.capacity_tokens == 0 && args.budget_gib <= 0)
      options.capacity_blocks = std::max<std::int64_t>(1, unique_blocks(trace) / 32);
    return trace_line(trace, options) + engines_report(trace, args, options);
  }
  if (args.tune) return trace_line(trace, options) + tune_report(trace, options);
  const auto shared = redis_store(args, options, 0);
  if (shared) options.shared_store = shared.get();
  if (args.tier_table) {
    if (args.options.capacity_blocks == 0 && args.capacity_tokens == 0 && args.budget_gib <= 0)
      options.capacity_blocks = std::max<std::int64_t>(1, unique_blocks(trace) / 32);
    return trace_line(trace, options) + tier_report(trace, options);
  }
  options.metrics_every = args.metrics_every;
  options.metrics_window = args.metrics_window;
#ifdef KVCACHE_REPLAY_HTTP
  std::unique_ptr<kvcache::metrics::MetricsServer> server;
  if (args.metrics_port >= 0) {
    server = std::make_unique<kvcache::metrics::MetricsServer>(args.metrics_port);
    std::fprintf(stderr, "kvcache-replay: serving /metrics on http://127.0.0.1:%d\n",
                 server->port());
    options.on_snapshot = [&](std::size_t engine, const kvcache::metrics::MetricsSnapshot& snap,
                              std::span<const kvcache::metrics::Recommendation> recs) {
      if (engine == 0) server->publish(snap, recs);
    };
  }
#else
  if (args.metrics_port >= 0)
    throw UsageError("--metrics-port: this kvcache-replay was built without cpp-httplib");
#endif
  const ReplayResult result = run_replay(trace, options);
  settle(shared.get());
#ifdef KVCACHE_REPLAY_HTTP
  if (server && args.metrics_linger > 0) {
    std::fprintf(stderr, "kvcache-replay: the run is over; serving its figures %.1f s more\n",
                 args.metrics_linger);
    std::this_thread::sleep_for(std::chrono::duration<double>(args.metrics_linger));
  }
#endif
  std::string out = trace_line(trace, options) +
                    single_report(trace, result, options.metrics_every, options.metrics_window);
#ifdef KVCACHE_REPLAY_REDIS
  if (auto* redis = dynamic_cast<kvcache::RedisTier*>(shared.get())) {
    const kvcache::RedisTierStats r = redis->redis_stats();
    out += fmt::format(
        "  redis             {}: {} lookups, {} blocks fetched, {} written, {} deduplicated, "
        "{} dropped (queue full), {} errors\n",
        redis->endpoint().describe(), r.lookups, r.fetched, r.written, r.deduplicated,
        r.dropped_queue_full, r.errors);
  }
#endif
  if (options.decode_ms_per_token == 0) {
    const std::vector<std::int64_t> capacity = {options.capacity_blocks};
    out += fmt::format(
        "  ceilings          {} blind to the block, {} counting its requests (the best keep "
        "time per class)\n",
        percent(keep_time_bound(trace, options, BoundClasses::kRecency, capacity)[0]),
        percent(keep_time_bound(trace, options, BoundClasses::kUseCount, capacity)[0]));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> words(argv + 1, argv + argc);
    const Arguments args = parse_arguments(words);
    if (args.help) {
      std::fputs(usage().c_str(), stdout);
      return 0;
    }
    const std::string out = report(args);
    std::fputs(out.c_str(), stdout);
  } catch (const UsageError& error) {
    std::fprintf(stderr, "kvcache-replay: %s\n(kvcache-replay --help lists the options)\n",
                 error.what());
    return 2;
  } catch (const kvcache::Error& error) {
    std::fprintf(stderr, "kvcache-replay: %s\n", error.what());
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "kvcache-replay: %s\n", bounded(error.what()).c_str());
    return 1;
  }
  return 0;
}
