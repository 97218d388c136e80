// kvcache-demo: a small transformer served from KVCacheManager under every
// cache configuration, with the article's strategy table measured.
//
//   kvcache-demo [--trace FILE] [--weights FILE] [--json FILE] ... (--help)
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "report.hpp"

#ifdef KVCACHE_DEMO_HTTP
#include <chrono>
#include <exception>
#include <memory>
#include <thread>

#include "kvcache/metrics/http_server.hpp"
#endif

int main(int argc, char** argv) {
  using namespace kvcache::demo;
  const std::vector<std::string> words(argv + 1, argv + argc);
  Arguments args;
  try {
    args = parse_arguments(words);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "kvcache-demo: %s\n(kvcache-demo --help lists the options)\n", e.what());
    return 2;
  }
  if (args.help) {
    std::fputs(usage().c_str(), stdout);
    return 0;
  }
  try {
#ifdef KVCACHE_DEMO_HTTP
    std::unique_ptr<kvcache::metrics::MetricsServer> server;
    if (args.metrics_port >= 0) {
      server = std::make_unique<kvcache::metrics::MetricsServer>(args.metrics_port);
      std::fprintf(stderr, "kvcache-demo: serving /metrics on http://127.0.0.1:%d\n",
                   server->port());
      args.serve.on_metrics = [&server](std::string_view,
                                        const kvcache::metrics::MetricsSnapshot& snap,
                                        std::span<const kvcache::metrics::Recommendation> recs) {
        server->publish(snap, recs);
      };
    }
    // The last figures stay up a while after the run (a scraper's last look).
    struct Linger {
      const std::unique_ptr<kvcache::metrics::MetricsServer>& server;
      double seconds;
      ~Linger() {
        if (!server || seconds <= 0 || std::uncaught_exceptions() > 0) return;
        std::fprintf(stderr, "kvcache-demo: the run is over; serving its figures %.1f s more\n",
                     seconds);
        std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
      }
    } linger{server, args.metrics_linger};
#else
    if (args.metrics_port >= 0) {
      std::fprintf(stderr, "kvcache-demo: --metrics-port: built without cpp-httplib\n");
      return 2;
    }
#endif
    Weights weights = args.weights_path.empty() ? random_weights(ModelConfig{}, args.seed)
                                                : load_llama2c(args.weights_path);
    const Model model(std::move(weights));
    const kvcache::replay::Trace trace = args.trace_path.empty()
                                             ? kvcache::replay::synthetic_trace()
                                             : kvcache::replay::load_trace(args.trace_path, false);
    const Workload workload = make_workload(trace, args.workload, model.config());
    const bool terminal = isatty(fileno(stdout)) != 0;
    if (terminal) {
      args.serve.progress = [](std::string_view config, std::int64_t done, std::int64_t total) {
        std::printf("\r  %-14.*s %lld/%lld requests ", static_cast<int>(config.size()),
                    config.data(), static_cast<long long>(done), static_cast<long long>(total));
        std::fflush(stdout);
      };
    }
    std::ofstream json;
    if (!args.json_path.empty()) {
      json.open(args.json_path);
      if (!json) {
        std::fprintf(stderr, "kvcache-demo: --json %s: cannot write the file\n",
                     args.json_path.c_str());
        return 2;
      }
    }
    const ModelConfig& c = model.config();
    fmt::print(
        "model: {} layers, {} query heads, {} KV heads of {}, dim {}, vocab {}; weights {}\n",
        c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim(), c.dim, c.vocab_size,
        model.weights().source);
    fmt::print(
        "workload: {} requests from {} (prompts / {}, outputs / {}): {} prompt and {} output "
        "tokens, longest {}; {} decoding together\n",
        workload.requests.size(), workload.source, workload.options.prompt_scale,
        workload.options.output_scale, workload.prompt_tokens(), workload.output_tokens(),
        workload.max_tokens(), args.serve.concurrency);
    std::fflush(stdout);
    if (!args.serve.checkpoint_dir.empty()) {
      // One configuration, greedy, checkpointed (and resumed when the
      // directory holds a checkpoint).
      const std::string name = args.configs.empty() ? "paged" : args.configs.front();
      args.serve.checkpoint_log = [](std::string_view event) {
        fmt::print("{}\n", event);
        std::fflush(stdout);
      };
      const RunResult run = run_config(name, model, workload, args.serve, 0, nullptr);
      std::uint64_t digest = 1469598103934665603ull;
      std::int64_t count = 0;
      for (const auto& tokens : run.outputs.tokens) {
        for (std::int32_t t : tokens) {
          digest = (digest ^ static_cast<std::uint32_t>(t)) * 1099511628211ull;
          ++count;
        }
      }
      fmt::print("{}: {} greedy tokens, digest {:016x}, {} steps\n", name, count, digest,
                 run.steps);
      if (json.is_open()) {
        nlohmann::json out;
        out["config"] = name;
        out["tokens"] = run.outputs.tokens;
        out["digest"] = fmt::format("{:016x}", digest);
        json << out.dump(2) << "\n";
      }
      return 0;
    }
    const DemoResult demo = run_all(model, workload, args.serve, args.configs);
    if (terminal) std::printf("\r%60s\r", "");
    fmt::print(
        "\nbudget: {:.2f} MiB (the baseline's pool); paged+lru gets {:.0f}% of paged's peak\n\n",
        static_cast<double>(demo.budget_bytes) / 1048576.0, 100.0 * args.serve.lru_fraction);
    fmt::print("{}\n", format_runs(demo));
    fmt::print(
        "the article's table, measured (saved: 1 - peak / baseline peak; speed: tokens/s "
        "against the baseline's):\n{}",
        format_article(demo));
    if (json.is_open()) json << to_json(demo, workload, model, args.serve).dump(2) << "\n";
    return 0;
  } catch (const kvcache::Error& e) {
    std::fprintf(stderr, "kvcache-demo: %s\n", e.what());
    return 1;
  }
}
