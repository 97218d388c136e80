#include "cli.hpp"

#include <charconv>
#include <cmath>

#include <fmt/format.h>

namespace kvcache::demo {

namespace {

std::int64_t integer(const std::string& option, const std::string& text, std::int64_t low,
                     std::int64_t high) {
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < low || value > high)
    throw UsageError(fmt::format("{} '{}': expected an integer from {} to {}", option,
                                 text.substr(0, 40), low, high));
  return value;
}

double real(const std::string& option, const std::string& text, double low, double high) {
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value) ||
      !(value > low && value <= high))
    throw UsageError(fmt::format("{} '{}': expected a number in ({}, {}]", option,
                                 text.substr(0, 40), low, high));
  return value;
}

}  // namespace

std::string usage() {
  std::string names;
  for (const ConfigInfo& c : configs())
    names += fmt::format("    {:<14} {}\n", c.name, c.strategy);
  return fmt::format(
      "kvcache-demo [options]\n"
      "Serves a small transformer from the cache under every configuration below and prints\n"
      "what each one costs and saves against a contiguous fp16 cache at the longest length.\n\n"
      "  --trace FILE         Mooncake-format requests (default: the built-in synthetic chat)\n"
      "  --weights FILE       llama2.c checkpoint (default: seeded random weights)\n"
      "  --seed N             seed of the random weights (default 2026)\n"
      "  --requests N         requests served, from the start of the trace (1-100000, default 40)\n"
      "  --prompt-scale N     a 512-token hash block becomes 512/N tokens (divides 512, default "
      "32)\n"
      "  --output-scale N     output lengths divided by N (default 16)\n"
      "  --max-output N       outputs clamped to N tokens (1-4096, default 48)\n"
      "  --concurrency N      requests decoding together (1-1024, default 8)\n"
      "  --lru-fraction F     paged+lru's pool as a share of paged's peak (0.05-1, default 0.6)\n"
      "  --configs A,B,...    only these (the reference and the baseline always run)\n"
      "  --json FILE          every figure as JSON\n"
      "  --checkpoint-dir DIR serve one configuration (the first of --configs, default paged)\n"
      "                       greedily, checkpointing the cache and the run into DIR; started\n"
      "                       again on the same DIR (after a crash, say) it resumes\n"
      "  --checkpoint-every N committed tokens between checkpoints (default 100)\n"
      "  --metrics-port P     serve the running configuration's /metrics (Prometheus) and\n"
      "                       /metrics.json on 127.0.0.1:P (0: any free port, on stderr)\n"
      "  --metrics-linger S   keep serving the last figures S seconds after the run\n"
      "  --fp32-cache         keep the uncompressed caches in fp32 (then a prompt read from the\n"
      "                       cache gives exactly the logits of one recomputed)\n"
      "  --gather-attention   the compressed configurations decode each sequence's cache with\n"
      "                       gather() into a scratch buffer before attending (for comparison;\n"
      "                       by default they attend through PagedAttention, reading the\n"
      "                       compressed pages where they lie)\n"
      "  --help\n\n"
      "configurations:\n{}",
      names);
}

Arguments parse_arguments(std::span<const std::string> words) {
  Arguments a;
  for (std::size_t i = 0; i < words.size(); ++i) {
    const std::string& option = words[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= words.size()) throw UsageError(fmt::format("{} needs a value", option));
      return words[++i];
    };
    if (option == "--help" || option == "-h") {
      a.help = true;
    } else if (option == "--trace") {
      a.trace_path = value();
    } else if (option == "--weights") {
      a.weights_path = value();
    } else if (option == "--json") {
      a.json_path = value();
    } else if (option == "--seed") {
      a.seed = static_cast<std::uint64_t>(integer(option, value(), 0, INT64_MAX));
    } else if (option == "--requests") {
      a.workload.requests = static_cast<std::int32_t>(integer(option, value(), 1, 100000));
    } else if (option == "--prompt-scale") {
      a.workload.prompt_scale = static_cast<std::int32_t>(integer(option, value(), 1, 512));
      if (512 % a.workload.prompt_scale != 0)
        throw UsageError(fmt::format("--prompt-scale {}: must divide 512 (1, 2, 4, ..., 512)",
                                     a.workload.prompt_scale));
    } else if (option == "--output-scale") {
      a.workload.output_scale = static_cast<std::int32_t>(integer(option, value(), 1, 1 << 20));
    } else if (option == "--max-output") {
      a.workload.max_output = static_cast<std::int32_t>(integer(option, value(), 1, 4096));
    } else if (option == "--concurrency") {
      a.serve.concurrency = static_cast<std::int32_t>(integer(option, value(), 1, 1024));
    } else if (option == "--lru-fraction") {
      a.serve.lru_fraction = real(option, value(), 0.05, 1.0);
    } else if (option == "--checkpoint-dir") {
      a.serve.checkpoint_dir = value();
      if (a.serve.checkpoint_dir.empty()) throw UsageError("--checkpoint-dir needs a path");
    } else if (option == "--fp32-cache") {
      a.serve.fp32_cache = true;
    } else if (option == "--gather-attention") {
      a.serve.gather_attention = true;
    } else if (option == "--metrics-port") {
      a.metrics_port = static_cast<int>(integer(option, value(), 0, 65535));
    } else if (option == "--metrics-linger") {
      a.metrics_linger = real(option, value(), 0.0, 86400.0);
    } else if (option == "--checkpoint-every") {
      a.serve.checkpoint_every = integer(option, value(), 1, std::int64_t{1} << 40);
    } else if (option == "--configs") {
      const std::string& list = value();
      std::size_t start = 0;
      while (start <= list.size()) {
        const std::size_t comma = std::min(list.find(',', start), list.size());
        const std::string name = list.substr(start, comma - start);
        bool known = false;
        for (const ConfigInfo& c : configs())
          known = known || name == c.name;
        if (!known) {
          std::string names;
          for (const ConfigInfo& c : configs())
            names += fmt::format("{}{}", names.empty() ? "" : ", ", c.name);
          throw UsageError(fmt::format("--configs: unknown configuration '{}': allowed {}",
                                       name.substr(0, 40), names));
        }
        a.configs.push_back(name);
        start = comma + 1;
      }
    } else {
      throw UsageError(fmt::format("unknown option '{}'", option.substr(0, 40)));
    }
  }
  if (!a.serve.checkpoint_dir.empty() && !a.configs.empty() && a.configs.front() == "paged-gpu")
    throw UsageError("--checkpoint-dir serves a CPU configuration, not paged-gpu");
  if (a.metrics_linger > 0 && a.metrics_port < 0)
    throw UsageError("--metrics-linger needs --metrics-port");
  return a;
}

}  // namespace kvcache::demo
