// kvcache-replay: replays a request trace through the real manager and
// prints the prefix hit rate, evictions and peak blocks; --sweep prints hit
// rate against capacity for every eviction policy.
#include <fmt/format.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kvcache/kvcache.hpp"
#include "registry.hpp"
#include "replay.hpp"

namespace {

using namespace kvcache::replay;

// The help text; the policy and codec lists come from the registry.
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
  --block-size N       tokens per block (default 512, the trace's block)
  --decode-ms X        decode time per output token, ms (default 20; 0: one request at a time)
  --model SHAPE        also move real K/V of this shape: tiny, llama3-8b, llama2-7b,
                       qwen2-7b, or layers:kv_heads:head_dim[:fp16|bf16|fp32]
  --backend B          cpu | cuda, where the K/V live with --model (default cpu)
  --sweep              hit rate against capacity for every policy, and unlimited
  --budget-gib G       pool size as bytes of K/V cache (needs --model; 1 GiB = 2^30)
  --codec-table        hit rate of every codec at the same --budget-gib (LRU and LFU-aging)
  --skip-bad           skip (and count) malformed lines instead of stopping
  --codec C            size the pool for a compressed cache (with --budget-gib):
)" + codecs_help;
}

struct Arguments {
  std::string trace_path;
  ReplayOptions options;
  std::int64_t capacity_tokens = 0;
  double budget_gib = 0;
  std::string codec = "plain";
  bool codec_table = false;
  bool sweep = false;
  bool skip_bad = false;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "kvcache-replay: %s\n\n%s", message.c_str(), usage().c_str());
  std::exit(2);
}

std::int64_t parse_count(const std::string& flag, const char* text) {
  char* end = nullptr;
  const long long value = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || value < 0)
    usage_error(flag + " needs a non-negative integer, got \"" + text + "\"");
  return value;
}

Arguments parse(int argc, char** argv) {
  Arguments args;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage_error(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--help" || flag == "-h") {
      std::printf("%s", usage().c_str());
      std::exit(0);
    } else if (flag == "--policy") {
      args.options.policy = value();
    } else if (flag == "--capacity") {
      args.options.capacity_blocks = parse_count(flag, value());
    } else if (flag == "--capacity-tokens") {
      args.capacity_tokens = parse_count(flag, value());
    } else if (flag == "--block-size") {
      args.options.block_size = static_cast<std::int32_t>(parse_count(flag, value()));
    } else if (flag == "--decode-ms") {
      const char* text = value();
      char* end = nullptr;
      args.options.decode_ms_per_token = std::strtod(text, &end);
      if (end == text || *end != '\0' || args.options.decode_ms_per_token < 0) {
        usage_error("--decode-ms needs a non-negative number");
      }
    } else if (flag == "--model") {
      args.options.model = parse_model(value());
    } else if (flag == "--backend") {
      args.options.backend = value();
    } else if (flag == "--sweep") {
      args.sweep = true;
    } else if (flag == "--budget-gib") {
      const char* text = value();
      char* end = nullptr;
      args.budget_gib = std::strtod(text, &end);
      if (end == text || *end != '\0' || args.budget_gib <= 0)
        usage_error("--budget-gib needs a positive number");
    } else if (flag == "--codec") {
      args.codec = value();
    } else if (flag == "--codec-table") {
      args.codec_table = true;
    } else if (flag == "--skip-bad") {
      args.skip_bad = true;
    } else if (!flag.empty() && flag[0] == '-') {
      usage_error("unknown option " + flag);
    } else if (args.trace_path.empty()) {
      args.trace_path = flag;
    } else {
      usage_error("more than one trace given");
    }
  }
  return args;
}

std::string percent(double value) {
  return fmt::format("{:.2f}%", 100.0 * value);
}

void print_single(const Trace& trace, const ReplayResult& r) {
  fmt::print("policy {}, capacity {} blocks\n", r.policy, r.capacity_blocks);
  fmt::print("  requests          {} ({} rejected for lack of room)\n", r.requests, r.rejected);
  fmt::print("  prefix hit rate   {} ({} of {} prompt blocks)\n", percent(r.hit_rate()),
             r.blocks_hit, r.blocks_requested);
  fmt::print("  evictions         {} blocks\n", r.evicted_blocks);
  fmt::print("  peak blocks       {} held by running requests, {} held or cached\n",
             r.peak_used_blocks, r.peak_occupied_blocks);
  if (r.bytes_appended > 0) {
    fmt::print("  K/V appended      {:.2f} GiB ({:.2f} GB/s)\n",
               static_cast<double>(r.bytes_appended) / (1 << 30),
               static_cast<double>(r.bytes_appended) / r.seconds / 1e9);
  }
  fmt::print("  replay time       {:.3f} s ({:.0f} requests/s){}\n", r.seconds,
             static_cast<double>(r.requests) / r.seconds,
             trace.bad_lines > 0 ? fmt::format(", {} bad lines skipped", trace.bad_lines) : "");
}

void print_sweep(const Trace& trace, const ReplayOptions& base) {
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
  fmt::print(
      "\nPrefix hit rate (prompt blocks hit before each request's first miss / blocks "
      "requested)\n\n");
  const std::string header = names(policies(), " | ");
  fmt::print("| capacity (blocks) | {} | best |\n", header);
  std::string rule = "|---|";
  for (std::size_t i = 0; i < policies().size(); ++i)
    rule += "---|";
  fmt::print("{}---|\n", rule);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const auto& row = rows[r];
    double top = 0;
    std::vector<std::string> cells;
    for (const auto& x : row) {
      top = std::max(top, x.hit_rate());
      cells.push_back(percent(x.hit_rate()));
    }
    std::vector<std::string> best;
    for (std::size_t p = 0; p < row.size(); ++p) {
      if (row[p].hit_rate() == top) best.emplace_back(policies()[p].name);
    }
    const std::string label = capacities[r] == 0
                                  ? fmt::format("unlimited ({})", row[0].capacity_blocks)
                                  : fmt::format("{} (1/{})", capacities[r], divisors[r]);
    fmt::print("| {} | {} | {} |\n", label, fmt::join(cells, " | "), fmt::join(best, ", "));
  }
  fmt::print("\nEvicted blocks / peak blocks held or cached / rejected requests\n\n");
  fmt::print("| capacity (blocks) | {} |\n", header);
  fmt::print("{}\n", rule);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    std::vector<std::string> cells;
    for (const auto& x : rows[r])
      cells.push_back(
          fmt::format("{} / {} / {}", x.evicted_blocks, x.peak_occupied_blocks, x.rejected));
    fmt::print("| {} | {} |\n",
               capacities[r] == 0 ? std::string("unlimited") : std::to_string(capacities[r]),
               fmt::join(cells, " | "));
  }
  double seconds = 0;
  for (const auto& row : rows) {
    for (const auto& x : row)
      seconds += x.seconds;
  }
  fmt::print("\n{} replays in {:.2f} s\n", rows.size() * policies().size(), seconds);
}

// Blocks a byte budget buys under a codec (KIVI's windows for 64 live
// sequences come off the budget first).
std::int64_t blocks_for_budget(const Arguments& args, const std::string& name,
                               const ReplayOptions& options) {
  const CodecInfo& codec = find_codec(name);
  const auto budget = static_cast<std::int64_t>(args.budget_gib * 1073741824.0);
  const std::int64_t fixed = codec.fixed_bytes(*options.model, 64);
  const std::int64_t blocks =
      (budget - fixed) / codec.block_bytes(*options.model, options.block_size);
  if (blocks < 1)
    usage_error(
        fmt::format("--budget-gib {} holds no block under codec {}", args.budget_gib, name));
  return blocks;
}

void print_codec_table(const Trace& trace, const Arguments& args, ReplayOptions options) {
  fmt::print(
      "\nPrefix hit rate at {} GiB of K/V cache ({} layers x {} KV heads x {}, {}), by codec\n\n",
      args.budget_gib, options.model->num_layers, options.model->num_kv_heads,
      options.model->head_dim, kvcache::dtype_name(options.model->dtype));
  fmt::print(
      "| codec | bytes per {}-token block | blocks | lru | lfu-aging |\n|---|---|---|---|---|\n",
      options.block_size);
  const std::optional<kvcache::ModelShape> model = options.model;
  for (const CodecInfo& codec : codecs()) {
    options.model = model;
    options.capacity_blocks = blocks_for_budget(args, std::string(codec.name), options);
    options.model.reset();  // metadata only: the codec decides the capacity, not the hit logic
    std::vector<std::string> cells;
    for (const std::string policy : {"lru", "lfu-aging"}) {
      options.policy = policy;
      cells.push_back(percent(run_replay(trace, options).hit_rate()));
    }
    fmt::print("| {} | {} | {} | {} |\n", codec.name, codec.block_bytes(*model, options.block_size),
               options.capacity_blocks, fmt::join(cells, " | "));
  }
  fmt::print(
      "\nint4 / int2 also keep 128 + 32 recent tokens per live sequence in fp16 (charged for 64 "
      "sequences).\n");
}

}  // namespace

int main(int argc, char** argv) {
  const Arguments args = parse(argc, argv);
  try {
    const Trace trace =
        args.trace_path.empty() ? synthetic_trace() : load_trace(args.trace_path, args.skip_bad);
    std::int64_t prompt_blocks = 0;
    for (const auto& request : trace.requests)
      prompt_blocks += static_cast<std::int64_t>(request.hash_ids.size());
    ReplayOptions options = args.options;
    if ((args.budget_gib > 0 || args.codec_table || args.codec != "plain") && !options.model) {
      usage_error("--budget-gib, --codec and --codec-table need --model (the bytes per token)");
    }
    if (args.codec_table) {
      if (args.budget_gib <= 0) usage_error("--codec-table needs --budget-gib");
      fmt::print("trace {}: {} requests, {} prompt blocks ({} distinct); block {} tokens\n",
                 trace.source, trace.requests.size(), prompt_blocks, unique_blocks(trace),
                 options.block_size);
      print_codec_table(trace, args, options);
      return 0;
    }
    if (args.budget_gib > 0) {
      options.capacity_blocks = blocks_for_budget(args, args.codec, options);
      if (args.codec != "plain") options.model.reset();  // the data path of a codec is not replayed
    } else if (args.capacity_tokens > 0) {
      options.capacity_blocks =
          (args.capacity_tokens + options.block_size - 1) / options.block_size;
    } else if (options.capacity_blocks == 0 && !args.sweep) {
      options.capacity_blocks = std::max<std::int64_t>(1, unique_blocks(trace) / 8);
    }
    fmt::print(
        "trace {}: {} requests, {} prompt blocks ({} distinct){}; block {} tokens; decode {} "
        "ms/token{}\n",
        trace.source, trace.requests.size(), prompt_blocks, unique_blocks(trace),
        trace.bad_lines > 0 ? fmt::format(", {} bad lines skipped", trace.bad_lines) : "",
        options.block_size, options.decode_ms_per_token,
        options.model ? fmt::format("; K/V of {} layers x {} heads x {} moved on {}",
                                    options.model->num_layers, options.model->num_kv_heads,
                                    options.model->head_dim, options.backend)
                      : "; metadata only");
    if (args.sweep) {
      print_sweep(trace, options);
    } else {
      print_single(trace, run_replay(trace, options));
    }
  } catch (const kvcache::Error& error) {
    std::fprintf(stderr, "kvcache-replay: %s\n", error.what());
    return 1;
  }
  return 0;
}
