#include "cli.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "registry.hpp"
#include "trace.hpp"

namespace kvcache::replay {
namespace {

std::int64_t integer(const std::string& flag, const std::string& text, std::int64_t low,
                     std::int64_t high) {
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < low || value > high) {
    throw UsageError(fmt::format("{} takes an integer in [{}, {}], not \"{}\"", flag, low, high,
                                 bounded(text, 40)));
  }
  return value;
}

double number(const std::string& flag, const std::string& text, double low, double high,
              bool low_open) {
  double value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  const bool in_range =
      std::isfinite(value) && (low_open ? value > low : value >= low) && value <= high;
  if (error != std::errc() || end != text.data() + text.size() || !in_range) {
    throw UsageError(fmt::format("{} takes a number in {}{}, {}], not \"{}\"", flag,
                                 low_open ? "(" : "[", low, high, bounded(text, 40)));
  }
  return value;
}

template <class Info>
std::string one_of(const std::string& flag, const std::string& text, std::span<const Info> table) {
  for (const Info& entry : table) {
    if (entry.name == text) return text;
  }
  throw UsageError(
      fmt::format("{} \"{}\" is not one of {}", flag, bounded(text, 40), names(table, ", ")));
}

// "from:limit,from:limit": shares of the requests and of the capacity.
std::vector<std::pair<double, double>> parse_schedule(const std::string& text) {
  std::vector<std::pair<double, double>> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    const std::string entry = text.substr(start, end - start);
    const std::size_t colon = entry.find(':');
    if (colon == std::string::npos) {
      throw UsageError(fmt::format(
          "--limit-schedule \"{}\": each entry is from:limit (shares in [0, 1] and (0, 1])",
          bounded(text, 60)));
    }
    const double from = number("--limit-schedule (from)", entry.substr(0, colon), 0.0, 1.0, false);
    const double limit =
        number("--limit-schedule (limit)", entry.substr(colon + 1), 0.0, 1.0, true);
    if (!out.empty() && from <= out.back().first) {
      throw UsageError(fmt::format("--limit-schedule \"{}\": the shares of the requests must rise",
                                   bounded(text, 60)));
    }
    out.emplace_back(from, limit);
    if (out.size() > 1000) throw UsageError("--limit-schedule: more than 1000 entries");
    start = end + 1;
  }
  return out;
}

}  // namespace

std::string usage() {
  std::string policies_help, codecs_help;
  for (const PolicyInfo& policy : policies())
    policies_help += fmt::format("                         {:<12} {}\n", policy.name, policy.help);
  for (const CodecInfo& codec : codecs())
    codecs_help += fmt::format("                         {:<12} {}\n", codec.name, codec.help);
  return R"(usage: kvcache-replay [TRACE.jsonl] [options]

Replays a Mooncake-format trace (one JSON request a line) through the KV-cache
manager; without TRACE it replays a built-in synthetic chat workload.

  --policy P           eviction policy (default lru):
)" + policies_help +
         R"(  --capacity N         pool size in blocks (default: 1/8 of the trace's distinct prompt blocks)
  --capacity-tokens N  pool size in tokens
  --block-size N       tokens per block: a power of two in [1, 1024] (default 512, the trace's)
  --decode-ms X        decode time per output token, ms (default 20; 0: one request at a time)
  --model SHAPE        also move real K/V of this shape: tiny, llama3-8b, llama2-7b,
                       qwen2-7b, or layers:kv_heads:head_dim[:fp16|bf16|fp32]
  --backend B          cpu | cuda, where the K/V live with --model (default cpu)
  --sweep              hit rate against capacity for every policy, and unlimited
  --budget-gib G       pool size as bytes of K/V cache (needs --model; 1 GiB = 2^30)
  --codec-table        hit rate of every codec at the same --budget-gib (LRU and LFU-aging)
  --host-tier-blocks N a host tier of N blocks (LRU) under the pool: evicted blocks go
                       there and come back on a prefix hit
  --tier-table         hit rate with host tiers of 0, 2, 4 and 8 times the pool (default
                       pool: 1/32 of the distinct blocks), beside the pool's offline optimum
  --engines N          N engines (1 to 64), each with its own pool of --capacity blocks
                       (and host tier), sharing one tier that each publishes its blocks to
  --route R            rr (round robin, the default) | prefix (a hash of the first block)
  --shared-tier-blocks N  the shared tier: an in-process one of N blocks (LRU)
  --redis URL          the shared tier: a Redis server, redis://[user:pass@]host:port/db
                       (metadata values; with --model the blocks' bytes)
  --engines-table      hit rate of 1, 2 and 4 engines alone and sharing a tier, beside one
                       engine with all their pools and the same tier (default pool: 1/32 of
                       the distinct blocks; default shared tier: 8 pools)
  --skip-bad           skip (and count) malformed lines instead of stopping
  --tune               the tuner against a static cache under a memory limit that changes
                       (--limit-schedule), both printed
  --limit-schedule S   from:limit,... : from a share of the requests on, the limit is a share
                       of --capacity (default 0:1,0.3:0.5,0.6:1)
  --tune-every N       requests between the tuner's decisions (default 100)
  --metrics-every N    a metrics snapshot every N requests, recommendations from the last
                       --metrics-window W snapshots (defaults 100 and 16; N = 0: none)
  --metrics-port P     serve /metrics (Prometheus) and /metrics.json on 127.0.0.1:P while
                       the run goes (0: any free port, printed on stderr)
  --metrics-linger S   keep serving the final figures S seconds after the run
  --codec C            size the pool for a compressed cache (with --budget-gib):
)" + codecs_help;
}

Arguments parse_arguments(std::span<const std::string> words) {
  Arguments args;
  for (std::size_t i = 0; i < words.size(); ++i) {
    const std::string& flag = words[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= words.size())
        throw UsageError(fmt::format("{} needs a value", bounded(flag, 40)));
      return words[++i];
    };
    if (flag == "--help" || flag == "-h") {
      args.help = true;
    } else if (flag == "--policy") {
      args.options.policy = one_of(flag, value(), policies());
    } else if (flag == "--capacity") {
      args.options.capacity_blocks = integer(flag, value(), 1, (std::int64_t{1} << 31) - 1);
    } else if (flag == "--capacity-tokens") {
      args.capacity_tokens = integer(flag, value(), 1, std::int64_t{1} << 40);
    } else if (flag == "--block-size") {
      const std::int64_t size = integer(flag, value(), 1, 1024);
      if ((size & (size - 1)) != 0)
        throw UsageError(fmt::format("--block-size {} is not a power of two in [1, 1024]", size));
      args.options.block_size = static_cast<std::int32_t>(size);
    } else if (flag == "--decode-ms") {
      args.options.decode_ms_per_token = number(flag, value(), 0.0, 1e6, false);
    } else if (flag == "--model") {
      const std::string& text = value();
      try {
        args.options.model = parse_model(text);
      } catch (const Error& error) {
        throw UsageError(fmt::format("--model: {}", error.what()));
      }
    } else if (flag == "--backend") {
      args.options.backend = value();
      if (args.options.backend != "cpu" && args.options.backend != "cuda") {
        throw UsageError(
            fmt::format("--backend \"{}\" is not cpu or cuda", bounded(args.options.backend, 40)));
      }
    } else if (flag == "--sweep") {
      args.sweep = true;
    } else if (flag == "--budget-gib") {
      args.budget_gib = number(flag, value(), 0.0, 1e6, true);
    } else if (flag == "--codec") {
      args.codec = one_of(flag, value(), codecs());
    } else if (flag == "--codec-table") {
      args.codec_table = true;
    } else if (flag == "--host-tier-blocks") {
      args.options.host_tier_blocks = integer(flag, value(), 0, std::int64_t{1} << 31);
    } else if (flag == "--tier-table") {
      args.tier_table = true;
    } else if (flag == "--engines") {
      args.options.engines = static_cast<std::int32_t>(integer(flag, value(), 1, 64));
    } else if (flag == "--route") {
      const std::string& route = value();
      if (route != "rr" && route != "prefix")
        throw UsageError(fmt::format("--route \"{}\" is not rr or prefix", bounded(route, 40)));
      args.options.route_by_prefix = route == "prefix";
    } else if (flag == "--shared-tier-blocks") {
      args.options.shared_tier_blocks = integer(flag, value(), 1, std::int64_t{1} << 31);
    } else if (flag == "--redis") {
      args.redis_url = value();
      if (args.redis_url.rfind("redis://", 0) != 0) {
        throw UsageError(
            fmt::format("--redis \"{}\" is not a redis:// URL", bounded(args.redis_url, 60)));
      }
    } else if (flag == "--engines-table") {
      args.engines_table = true;
    } else if (flag == "--metrics-every") {
      args.metrics_every = integer(flag, value(), 0, std::int64_t{1} << 40);
    } else if (flag == "--metrics-window") {
      args.metrics_window = static_cast<std::int32_t>(integer(flag, value(), 2, 65536));
    } else if (flag == "--metrics-port") {
      args.metrics_port = static_cast<int>(integer(flag, value(), 0, 65535));
    } else if (flag == "--metrics-linger") {
      args.metrics_linger = number(flag, value(), 0.0, 86400.0, false);
    } else if (flag == "--tune") {
      args.tune = true;
    } else if (flag == "--limit-schedule") {
      args.options.limit_schedule = parse_schedule(value());
    } else if (flag == "--tune-every") {
      args.options.tune_every = integer(flag, value(), 1, std::int64_t{1} << 40);
    } else if (flag == "--skip-bad") {
      args.skip_bad = true;
    } else if (!flag.empty() && flag[0] == '-') {
      throw UsageError(fmt::format("unknown option {}", bounded(flag, 40)));
    } else if (args.trace_path.empty()) {
      if (flag.empty()) throw UsageError("the trace path is empty");
      args.trace_path = flag;
    } else {
      throw UsageError(fmt::format("more than one trace given (\"{}\", \"{}\")",
                                   bounded(args.trace_path, 40), bounded(flag, 40)));
    }
  }
  if ((args.budget_gib > 0 || args.codec_table || args.codec != "plain") && !args.options.model) {
    throw UsageError("--budget-gib, --codec and --codec-table need --model (the bytes per token)");
  }
  if (args.tier_table && (args.sweep || args.codec_table || args.options.host_tier_blocks > 0)) {
    throw UsageError(
        "--tier-table runs its own tiers: not with --sweep, --codec-table or "
        "--host-tier-blocks");
  }
  if (!args.redis_url.empty() && args.options.shared_tier_blocks > 0) {
    throw UsageError("--redis and --shared-tier-blocks both name the shared tier: give one");
  }
  if (args.engines_table &&
      (args.sweep || args.codec_table || args.tier_table || args.options.engines > 1)) {
    throw UsageError(
        "--engines-table runs its own engines: not with --sweep, --codec-table, --tier-table or "
        "--engines");
  }
  if (args.options.engines > 1 && (args.sweep || args.codec_table || args.tier_table)) {
    throw UsageError(
        "--engines replays one configuration: not with --sweep, --codec-table or "
        "--tier-table");
  }
  if (args.codec_table && args.budget_gib <= 0)
    throw UsageError("--codec-table needs --budget-gib");
  if (args.codec != "plain" && args.budget_gib <= 0) throw UsageError("--codec needs --budget-gib");
  if (args.tune && (args.sweep || args.codec_table || args.tier_table || args.engines_table ||
                    args.options.engines > 1 || !args.redis_url.empty())) {
    throw UsageError(
        "--tune replays one engine, tuned and static: not with --sweep, --codec-table, "
        "--tier-table, --engines-table, --engines or --redis");
  }
  if (!args.options.limit_schedule.empty() && !args.tune)
    throw UsageError("--limit-schedule needs --tune");
  if (args.tune && args.options.limit_schedule.empty())
    args.options.limit_schedule = {{0.0, 1.0}, {0.3, 0.5}, {0.6, 1.0}};
  if ((args.metrics_port >= 0 || args.metrics_linger > 0) &&
      (args.sweep || args.codec_table || args.tier_table || args.engines_table)) {
    throw UsageError(
        "--metrics-port and --metrics-linger serve one run: not with --sweep, --codec-table, "
        "--tier-table or --engines-table");
  }
  if (args.metrics_linger > 0 && args.metrics_port < 0)
    throw UsageError("--metrics-linger needs --metrics-port");
  if (args.metrics_port >= 0 && args.metrics_every == 0)
    throw UsageError("--metrics-port needs snapshots: --metrics-every must not be 0");
  if (args.options.backend == "cuda" && !args.options.model) {
    throw UsageError("--backend cuda needs --model (a metadata replay moves no bytes)");
  }
  return args;
}

}  // namespace kvcache::replay
