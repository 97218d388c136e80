#include "report.hpp"

#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace kvcache::demo {

namespace {

const ArticleClaim kClaims[] = {
    {"Dynamic allocation", "dynamic", 20, 40, "slight"},
    {"LRU eviction", "paged+lru", 30, 50, "medium"},
    {"SVD compression", "low-rank", 50, 70, "clear"},
    {"Quantization", "int8", 40, 60, "slight"},
    {"Quantization", "fp8", 40, 60, "slight"},
    {"Quantization", "int4-kivi", 40, 60, "slight"},
    {"Chunked management", "paged", 10, 20, "almost none"},
};

double mib(std::int64_t bytes) {
  return static_cast<double>(bytes) / 1048576.0;
}

}  // namespace

std::span<const ArticleClaim> article_claims() {
  return kClaims;
}

double memory_saved(const DemoResult& demo, const RunResult& run) {
  const RunResult* base = demo.find("baseline");
  if (base == nullptr || base->peak_live_bytes == 0) return 0;
  return 1.0 -
         static_cast<double>(run.peak_live_bytes) / static_cast<double>(base->peak_live_bytes);
}

double speed_change(const DemoResult& demo, const RunResult& run) {
  const RunResult* base = demo.find("baseline");
  if (base == nullptr || base->tokens_per_second() == 0) return 0;
  return run.tokens_per_second() / base->tokens_per_second() - 1.0;
}

std::string format_runs(const DemoResult& demo) {
  std::string out = fmt::format(
      "{:<14} {:>5} {:>8} {:>8} {:>7} {:>8} {:>7} {:>7} {:>6} {:>6} {:>6} {:>7} {:>7} {:>6} "
      "{:>7} {:>9}\n",
      "config", "block", "pool", "peak", "scratch", "B/token", "saved", "tok/s", "time", "cache",
      "hit", "evicted", "recomp", "preempt", "agree", "logit err");
  out += fmt::format(
      "{:<14} {:>5} {:>8} {:>8} {:>7} {:>8} {:>7} {:>7} {:>6} {:>6} {:>6} {:>7} {:>7} {:>6} "
      "{:>7} {:>9}\n",
      "", "", "MiB", "MiB", "MiB", "", "", "", "s", "s", "%", "blk+seq", "tokens", "", "%", "mean");
  for (const RunResult& r : demo.runs) {
    out += fmt::format(
        "{:<14} {:>5} {:>8.2f} {:>8.2f} {:>7.2f} {:>8.1f} {:>6.1f}% {:>7.1f} {:>6.2f} {:>6.2f} "
        "{:>6} {:>7} {:>7} {:>6} {:>6.1f}% {:>9.2e}\n",
        r.name, r.block_size, mib(r.pool_bytes), mib(r.peak_live_bytes), mib(r.peak_scratch_bytes),
        r.bytes_per_token, 100.0 * memory_saved(demo, r), r.tokens_per_second(), r.seconds,
        r.cache_seconds,
        r.sharing ? fmt::format("{:.1f}", 100.0 * r.prefix_hit_rate) : std::string("-"),
        fmt::format("{}+{}", r.evicted_blocks, r.evicted_sequences), r.recomputed_tokens,
        r.preemptions, 100.0 * r.agreement, r.logit_error);
  }
  return out;
}

std::string format_article(const DemoResult& demo) {
  std::string out =
      fmt::format("{:<20} {:<10} {:>14} {:>10} {:>12} {:>14} {:>8}\n", "strategy", "run",
                  "claimed saved", "measured", "claimed cost", "speed change", "agree");
  for (const ArticleClaim& c : kClaims) {
    const RunResult* r = demo.find(c.config);
    if (r == nullptr) continue;
    out += fmt::format("{:<20} {:<10} {:>13} {:>9.1f}% {:>12} {:>13.1f}% {:>7.1f}%\n", c.strategy,
                       c.config, fmt::format("{}-{}%", c.saved_low, c.saved_high),
                       100.0 * memory_saved(demo, *r), c.impact, 100.0 * speed_change(demo, *r),
                       100.0 * r->agreement);
  }
  return out;
}

nlohmann::json to_json(const DemoResult& demo, const Workload& workload, const Model& model,
                       const ServeOptions& options) {
  const ModelConfig& mc = model.config();
  nlohmann::json j;
  j["model"] = {
      {"weights", model.weights().source}, {"dim", mc.dim},         {"hidden_dim", mc.hidden_dim},
      {"layers", mc.num_layers},           {"heads", mc.num_heads}, {"kv_heads", mc.num_kv_heads},
      {"head_dim", mc.head_dim()},         {"vocab", mc.vocab_size}};
  j["workload"] = {{"source", workload.source},
                   {"requests", workload.requests.size()},
                   {"prompt_scale", workload.options.prompt_scale},
                   {"output_scale", workload.options.output_scale},
                   {"prompt_tokens", workload.prompt_tokens()},
                   {"output_tokens", workload.output_tokens()},
                   {"longest_request", workload.max_tokens()},
                   {"concurrency", options.concurrency},
                   {"lru_fraction", options.lru_fraction}};
  j["budget_bytes"] = demo.budget_bytes;
  nlohmann::json runs = nlohmann::json::array();
  for (const RunResult& r : demo.runs) {
    runs.push_back({{"config", r.name},
                    {"strategy", r.strategy},
                    {"block_size", r.block_size},
                    {"pool_bytes", r.pool_bytes},
                    {"peak_live_bytes", r.peak_live_bytes},
                    {"peak_held_bytes", r.peak_held_bytes},
                    {"tokens_at_peak", r.tokens_at_peak},
                    {"peak_scratch_bytes", r.peak_scratch_bytes},
                    {"bytes_per_token", r.bytes_per_token},
                    {"memory_saved", memory_saved(demo, r)},
                    {"seconds", r.seconds},
                    {"cache_seconds", r.cache_seconds},
                    {"tokens_per_second", r.tokens_per_second()},
                    {"speed_change", speed_change(demo, r)},
                    {"steps", r.steps},
                    {"computed_tokens", r.computed_tokens},
                    {"generated_tokens", r.generated_tokens},
                    {"recomputed_tokens", r.recomputed_tokens},
                    {"preemptions", r.preemptions},
                    {"evicted_blocks", r.evicted_blocks},
                    {"evicted_sequences", r.evicted_sequences},
                    {"prefix_sharing", r.sharing},
                    {"prefix_hit_rate", r.prefix_hit_rate},
                    {"agreement", r.agreement},
                    {"logit_error_mean", r.logit_error},
                    {"logit_error_max", r.max_logit_error}});
  }
  j["runs"] = runs;
  nlohmann::json article = nlohmann::json::array();
  for (const ArticleClaim& c : kClaims) {
    const RunResult* r = demo.find(c.config);
    if (r == nullptr) continue;
    article.push_back({{"strategy", c.strategy},
                       {"config", c.config},
                       {"claimed_saved_low", c.saved_low / 100.0},
                       {"claimed_saved_high", c.saved_high / 100.0},
                       {"claimed_impact", c.impact},
                       {"measured_saved", memory_saved(demo, *r)},
                       {"measured_speed_change", speed_change(demo, *r)},
                       {"agreement", r->agreement}});
  }
  j["article"] = article;
  return j;
}

}  // namespace kvcache::demo
