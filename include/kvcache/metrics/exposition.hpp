// A metrics snapshot as the Prometheus text format (version 0.0.4) and as
// JSON. Not part of the core headers (kvcache.hpp does not include it): an
// engine that never exports metrics does not compile it.
//
// Prometheus names: the kvcache_ prefix, base units (bytes, seconds),
// counters ending in _total, a HELP and a TYPE line per family; per-call
// latencies are one histogram family labelled by op, with cumulative
// _bucket{le=...}, _sum and _count. Ratios (hit rate, fragmentation,
// compression) are gauges; the window's hit rate carries window="recent".
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "kvcache/metrics/recommend.hpp"
#include "kvcache/metrics/snapshot.hpp"
#include "kvcache/tuner/stats.hpp"

namespace kvcache::metrics {

namespace detail_exposition {

// A number as Prometheus writes it (NaN, +Inf; integers without a point).
inline std::string prom_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

class PromWriter {
 public:
  explicit PromWriter(std::string& out) : out_(out) {}
  void family(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out_), "# HELP kvcache_{} {}\n# TYPE kvcache_{} {}\n", name,
                   help, name, type);
  }
  void sample(std::string_view name, std::string_view labels, double value) {
    if (labels.empty()) {
      fmt::format_to(std::back_inserter(out_), "kvcache_{} {}\n", name, prom_number(value));
    } else {
      fmt::format_to(std::back_inserter(out_), "kvcache_{}{{{}}} {}\n", name, labels,
                     prom_number(value));
    }
  }
  void sample(std::string_view name, std::string_view labels, std::int64_t value) {
    if (labels.empty()) {
      fmt::format_to(std::back_inserter(out_), "kvcache_{} {}\n", name, value);
    } else {
      fmt::format_to(std::back_inserter(out_), "kvcache_{}{{{}}} {}\n", name, labels, value);
    }
  }
  // One family with one unlabelled sample.
  template <class T>
  void single(std::string_view name, std::string_view type, std::string_view help, T value) {
    family(name, type, help);
    sample(name, "", value);
  }

 private:
  std::string& out_;
};

inline std::string json_number(double v) {
  return std::isfinite(v) ? fmt::format("{}", v) : std::string("null");
}

inline void json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      fmt::format_to(std::back_inserter(out), "\\u{:04x}", static_cast<unsigned>(c));
    } else {
      out += c;
    }
  }
  out += '"';
}

}  // namespace detail_exposition

// Appends the snapshot in the Prometheus text format to `out`.
inline void append_prometheus(std::string& out, const MetricsSnapshot& s) {
  detail_exposition::PromWriter w(out);
  const CacheStats& c = s.counters;
  const MemoryStats& m = s.memory;

  w.single("prefix_lookups_total", "counter", "Prompts looked up in the prefix cache.",
           c.prefix_lookups);
  w.single("prefix_requested_blocks_total", "counter", "Full prompt blocks looked up.",
           c.prefix_blocks_requested);
  w.single("prefix_hit_blocks_total", "counter",
           "Prompt blocks found cached, in the pool or a tier.", s.blocks_hit());
  w.single("prefix_requested_tokens_total", "counter", "Prompt tokens looked up.",
           c.prefix_tokens_requested);
  w.single("prefix_hit_tokens_total", "counter", "Prompt tokens found cached.",
           c.prefix_tokens_hit);
  w.single("prefix_refetched_blocks_total", "counter",
           "Missed prompt blocks that had been evicted lately (eviction churn).",
           c.prefix_blocks_refetched);
  w.family("prefix_hit_ratio", "gauge",
           "Prefix hit rate by unit, over the cache's life and over the monitor's window.");
  w.sample("prefix_hit_ratio", "unit=\"blocks\",window=\"cumulative\"", s.hit_rate_blocks());
  w.sample("prefix_hit_ratio", "unit=\"tokens\",window=\"cumulative\"", s.hit_rate_tokens());
  w.sample("prefix_hit_ratio", "unit=\"blocks\",window=\"recent\"", s.window.hit_rate_blocks());
  w.sample("prefix_hit_ratio", "unit=\"tokens\",window=\"recent\"", s.window.hit_rate_tokens());
  w.single("window_snapshots", "gauge", "Snapshots in the monitor's window.",
           std::int64_t{s.window.snapshots});

  w.family("memory_bytes", "gauge", "Pool memory by state: used by sequences, cached, free.");
  w.sample("memory_bytes", "state=\"used\"", m.used_bytes());
  w.sample("memory_bytes", "state=\"cached\"", s.cached_bytes());
  w.sample("memory_bytes", "state=\"free\"", s.free_bytes());
  w.family("memory_blocks", "gauge", "Pool blocks by state: used by sequences, cached, free.");
  w.sample("memory_blocks", "state=\"used\"", m.used_blocks);
  w.sample("memory_blocks", "state=\"cached\"", m.cached_blocks);
  w.sample("memory_blocks", "state=\"free\"", m.free_blocks);
  w.single("arena_bytes", "gauge", "Bytes of the preallocated block pool.", m.arena_bytes);
  w.single("budget_blocks", "gauge", "Blocks of the pool that may hold data (the live budget).",
           s.budget_blocks());
  w.single("block_bytes", "gauge", "Bytes of one block under the codec.", m.bytes_per_block);
  w.single("block_size_tokens", "gauge", "Tokens per block.", std::int64_t{s.block_size});
  w.single("side_bytes", "gauge", "Bytes a codec keeps beside the pool (KIVI's rings).",
           m.residual_bytes);
  w.single("memory_pressure_ratio", "gauge", "Blocks held by sequences, of the pool.",
           s.memory_pressure());
  w.family("sequences", "gauge", "Live sequences by state.");
  w.sample("sequences", "state=\"active\"", m.num_sequences - m.parked_sequences);
  w.sample("sequences", "state=\"parked\"", m.parked_sequences);
  w.single("stored_tokens", "gauge", "Committed tokens over all sequences.", m.stored_tokens);
  w.single("reserved_tokens", "gauge", "Token slots of the blocks sequences hold.",
           m.reserved_tokens);
  w.single("fragmented_slots", "gauge",
           "Unwritten token slots in blocks sequences hold (internal fragmentation).",
           s.fragmented_slots());
  w.single("fragmentation_ratio", "gauge", "Unwritten slots of the slots sequences hold.",
           s.fragmentation());
  w.single("stored_bytes_per_token", "gauge",
           "Bytes the stored tokens take (their blocks and side storage) per token.",
           s.bytes_per_token());
  w.single("compression_ratio", "gauge",
           "Bytes of the blocks sequences hold in the model dtype, over what they take.",
           s.compression_ratio());

  w.family("evictions_total", "counter",
           "Evictions by kind: cached prefix blocks, parked sequences.");
  w.sample("evictions_total", "kind=\"block\"", c.evicted_blocks);
  w.sample("evictions_total", "kind=\"sequence\"", c.evicted_sequences);
  w.single("evicted_bytes_total", "counter", "Bytes of the prefix blocks evicted.",
           c.evicted_blocks * m.bytes_per_block);
  w.single("reserve_failures_total", "counter", "Reservations no eviction could make room for.",
           c.reserve_failures);
  w.single("copy_on_write_total", "counter", "Shared blocks copied before a write.",
           c.copy_on_write);
  w.single("copied_blocks_total", "counter", "Blocks moved by the copy kernel.", c.blocks_copied);
  w.family("unpark_total", "counter", "Unparks by result.");
  w.sample("unpark_total", "result=\"hit\"", c.unpark_hits);
  w.sample("unpark_total", "result=\"miss\"", c.unpark_misses);

  w.family("tier_blocks_total", "counter", "Blocks moved to or from a tier, by direction.");
  w.sample("tier_blocks_total", "direction=\"offload\"", c.tier_offloads);
  w.sample("tier_blocks_total", "direction=\"onboard\"", c.tier_onboards);
  w.family("tier_bytes_total", "counter", "Bytes moved to or from a tier, by direction.");
  w.sample("tier_bytes_total", "direction=\"offload\"", c.tier_bytes_offloaded);
  w.sample("tier_bytes_total", "direction=\"onboard\"", c.tier_bytes_onboarded);
  w.single("tier_lookup_blocks_total", "counter", "Blocks asked of a tier after the pool's miss.",
           c.tier_lookup_blocks);
  w.single("tier_hit_blocks_total", "counter", "Blocks a tier had.", c.tier_hit_blocks);
  w.single("tier_evictions_total", "counter", "Blocks a tier evicted.", c.tier_evictions);
  w.single("tier_published_blocks_total", "counter", "Blocks put into a shared store.",
           c.tier_published);

  w.family("operations_total", "counter", "Calls of the manager's operations.");
  for (std::size_t i = 0; i < kNumOps; ++i) {
    w.sample("operations_total", fmt::format("op=\"{}\"", op_name(static_cast<Op>(i))),
             s.ops[i].count);
  }
  w.family("operation_errors_total", "counter", "Calls that threw.");
  for (std::size_t i = 0; i < kNumOps; ++i) {
    w.sample("operation_errors_total", fmt::format("op=\"{}\"", op_name(static_cast<Op>(i))),
             s.ops[i].errors);
  }
  w.family("operation_duration_seconds", "histogram", "Time spent in the manager's operations.");
  for (std::size_t i = 0; i < kNumOps; ++i) {
    const OpStats& op = s.ops[i];
    const std::string_view name = op_name(static_cast<Op>(i));
    std::int64_t cumulative = 0;
    for (std::size_t b = 0; b < kLatencyBuckets; ++b) {
      cumulative += op.buckets[b];
      const std::string le =
          b + 1 < kLatencyBuckets
              ? fmt::format("{}", static_cast<double>(latency_bucket_bound_ns(b)) * 1e-9)
              : std::string("+Inf");
      w.sample("operation_duration_seconds_bucket", fmt::format("op=\"{}\",le=\"{}\"", name, le),
               cumulative);
    }
    w.sample("operation_duration_seconds_sum", fmt::format("op=\"{}\"", name),
             static_cast<double>(op.total_ns) * 1e-9);
    w.sample("operation_duration_seconds_count", fmt::format("op=\"{}\"", name), cumulative);
  }
}

// Appends the tuner's counters (kvcache_tuner_*) to `out`.
inline void append_prometheus(std::string& out, const TunerStats& t) {
  detail_exposition::PromWriter w(out);
  w.single("tuner_decision_points_total", "counter", "Times the tuner looked at the metrics.",
           t.decisions);
  w.family("tuner_decisions_total", "counter",
           "Changes the tuner made (or was refused), by action.");
  w.sample("tuner_decisions_total", "action=\"grow\"", t.grows);
  w.sample("tuner_decisions_total", "action=\"shrink\"", t.shrinks);
  w.sample("tuner_decisions_total", "action=\"limit\"", t.limit_shrinks);
  w.sample("tuner_decisions_total", "action=\"refused\"", t.refused);
  w.family("tuner_moved_sequences_total", "counter",
           "Sequences re-encoded into or out of the compressed pool.");
  w.sample("tuner_moved_sequences_total", "direction=\"compress\"", t.compressed);
  w.sample("tuner_moved_sequences_total", "direction=\"decompress\"", t.decompressed);
}

inline std::string to_prometheus(const MetricsSnapshot& s) {
  std::string out;
  out.reserve(16384);
  append_prometheus(out, s);
  return out;
}

// The snapshot as one JSON object (NaN figures are null); with
// recommendations when given.
inline std::string to_json(const MetricsSnapshot& s, std::span<const Recommendation> recs = {}) {
  using detail_exposition::json_number;
  const CacheStats& c = s.counters;
  const MemoryStats& m = s.memory;
  std::string out;
  out.reserve(8192);
  auto it = std::back_inserter(out);
  fmt::format_to(it,
                 "{{\"time_ns\":{},\"block_size\":{},\"bytes_per_block\":{},"
                 "\"plain_bytes_per_block\":{},",
                 s.time_ns, s.block_size, s.bytes_per_block, s.plain_bytes_per_block);
  fmt::format_to(it,
                 "\"prefix\":{{\"lookups\":{},\"requested_blocks\":{},\"hit_blocks\":{},"
                 "\"requested_tokens\":{},\"hit_tokens\":{},\"refetched_blocks\":{},"
                 "\"hit_rate_blocks\":{},\"hit_rate_tokens\":{}}},",
                 c.prefix_lookups, c.prefix_blocks_requested, s.blocks_hit(),
                 c.prefix_tokens_requested, c.prefix_tokens_hit, c.prefix_blocks_refetched,
                 json_number(s.hit_rate_blocks()), json_number(s.hit_rate_tokens()));
  const WindowFigures& w = s.window;
  fmt::format_to(it,
                 "\"window\":{{\"snapshots\":{},\"seconds\":{},\"lookups\":{},"
                 "\"requested_blocks\":{},\"hit_blocks\":{},\"requested_tokens\":{},"
                 "\"hit_tokens\":{},\"evicted_blocks\":{},\"evicted_sequences\":{},"
                 "\"refetched_blocks\":{},\"reserve_failures\":{},\"hit_rate_blocks\":{},"
                 "\"hit_rate_tokens\":{}}},",
                 w.snapshots, json_number(w.seconds), w.lookups, w.blocks_requested, w.blocks_hit,
                 w.tokens_requested, w.tokens_hit, w.evicted_blocks, w.evicted_sequences,
                 w.refetched_blocks, w.reserve_failures, json_number(w.hit_rate_blocks()),
                 json_number(w.hit_rate_tokens()));
  fmt::format_to(it,
                 "\"memory\":{{\"arena_bytes\":{},\"budget_blocks\":{},\"used_blocks\":{},\"cached_"
                 "blocks\":{},"
                 "\"free_blocks\":{},\"used_bytes\":{},\"cached_bytes\":{},\"free_bytes\":{},"
                 "\"side_bytes\":{},\"active_sequences\":{},\"parked_sequences\":{},"
                 "\"stored_tokens\":{},\"reserved_tokens\":{},\"fragmented_slots\":{},"
                 "\"fragmentation\":{},\"pressure\":{},\"bytes_per_token\":{},"
                 "\"compression_ratio\":{}}},",
                 m.arena_bytes, s.budget_blocks(), m.used_blocks, m.cached_blocks, m.free_blocks,
                 m.used_bytes(), s.cached_bytes(), s.free_bytes(), m.residual_bytes,
                 m.num_sequences - m.parked_sequences, m.parked_sequences, m.stored_tokens,
                 m.reserved_tokens, s.fragmented_slots(), json_number(s.fragmentation()),
                 json_number(s.memory_pressure()), json_number(s.bytes_per_token()),
                 json_number(s.compression_ratio()));
  fmt::format_to(it,
                 "\"evictions\":{{\"blocks\":{},\"sequences\":{},\"bytes\":{},"
                 "\"reserve_failures\":{},\"copy_on_write\":{},\"copied_blocks\":{},"
                 "\"unpark_hits\":{},\"unpark_misses\":{}}},",
                 c.evicted_blocks, c.evicted_sequences, c.evicted_blocks * m.bytes_per_block,
                 c.reserve_failures, c.copy_on_write, c.blocks_copied, c.unpark_hits,
                 c.unpark_misses);
  fmt::format_to(it,
                 "\"tier\":{{\"offloaded_blocks\":{},\"onboarded_blocks\":{},"
                 "\"offloaded_bytes\":{},\"onboarded_bytes\":{},\"lookup_blocks\":{},"
                 "\"hit_blocks\":{},\"evictions\":{},\"published_blocks\":{}}},",
                 c.tier_offloads, c.tier_onboards, c.tier_bytes_offloaded, c.tier_bytes_onboarded,
                 c.tier_lookup_blocks, c.tier_hit_blocks, c.tier_evictions, c.tier_published);
  out += "\"operations\":{";
  for (std::size_t i = 0; i < kNumOps; ++i) {
    const OpStats& op = s.ops[i];
    fmt::format_to(it, "{}\"{}\":{{\"count\":{},\"errors\":{},\"total_seconds\":{},\"buckets\":[",
                   i == 0 ? "" : ",", op_name(static_cast<Op>(i)), op.count, op.errors,
                   static_cast<double>(op.total_ns) * 1e-9);
    for (std::size_t b = 0; b < kLatencyBuckets; ++b)
      fmt::format_to(it, "{}{}", b == 0 ? "" : ",", op.buckets[b]);
    out += "]}";
  }
  out += "},\"recommendations\":[";
  for (std::size_t i = 0; i < recs.size(); ++i) {
    out += i == 0 ? "{\"rule\":" : ",{\"rule\":";
    detail_exposition::json_string(out, recs[i].rule);
    out += ",\"finding\":";
    detail_exposition::json_string(out, recs[i].finding);
    out += ",\"action\":";
    detail_exposition::json_string(out, recs[i].action);
    fmt::format_to(it, ",\"value\":{},\"threshold\":{},\"suggested\":{}}}",
                   json_number(recs[i].value), json_number(recs[i].threshold), recs[i].suggested);
  }
  out += "]}";
  return out;
}

}  // namespace kvcache::metrics
