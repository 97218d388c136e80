// kvcache-demo's output: the measured table, the article's table beside our
// figures, and every figure as JSON.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

#include "serve.hpp"

namespace kvcache::demo {

// One row of the article's closing table: its claim, and which of our runs
// measures it.
struct ArticleClaim {
  const char* strategy;
  const char* config;
  int saved_low;  // percent
  int saved_high;
  const char* impact;
};
std::span<const ArticleClaim> article_claims();

// Memory saved (1 - peak / baseline peak) and throughput change (tokens/s
// over the baseline's, minus 1) of a run.
double memory_saved(const DemoResult& demo, const RunResult& run);
double speed_change(const DemoResult& demo, const RunResult& run);

std::string format_runs(const DemoResult& demo);
std::string format_article(const DemoResult& demo);
nlohmann::json to_json(const DemoResult& demo, const Workload& workload, const Model& model,
                       const ServeOptions& options);

}  // namespace kvcache::demo
