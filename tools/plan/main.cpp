// kvcache-plan: how much K/V cache a device holds for a model, by codec, and
// the device profile the library would start from.
//
//   kvcache-plan --model llama-3-8b --memory 24GiB [--weights-gib W] [--context 8192]
//                [--block-size N] [--json]
//
// Without --memory: the memory of CUDA device 0, or this machine's host
// memory. A bad option, model name or size exits 2 with a message naming it
// (and the valid choices), and prints nothing on stdout.
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "kvcache/backend/cuda.hpp"
#include "kvcache/plan/planner.hpp"

namespace {

using namespace kvcache;

struct Usage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr const char* kHelp = R"(usage: kvcache-plan --model NAME [options]

  --model NAME       a preset (llama-2-7b, llama-2-13b, llama-3-8b, llama-3-70b, mistral-7b,
                     qwen2.5-7b, qwen2.5-72b) or layers:kv_heads:head_dim[:fp16|bf16|fp32]
  --memory SIZE      device memory: 24GiB, 80GB, 16384MiB (default: CUDA device 0, else
                     this machine's memory)
  --weights-gib W    the weights' size in GiB (default: parameters x dtype size)
  --context N        tokens per sequence (default 8192)
  --block-size N     tokens per block (default: the profile's)
  --json             the plan as JSON
)";

double number(const std::string& flag, const std::string& text) {
  double v = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (error != std::errc{} || end != text.data() + text.size() || !std::isfinite(v) || v < 0)
    throw Usage(fmt::format("{} takes a non-negative number, not '{}'", flag, text));
  return v;
}

std::int64_t memory_size(const std::string& text) {
  std::size_t digits = 0;
  while (digits < text.size() &&
         ((text[digits] >= '0' && text[digits] <= '9') || text[digits] == '.'))
    ++digits;
  const std::string unit = text.substr(digits);
  static const std::pair<const char*, double> kUnits[] = {
      {"GiB", 1073741824.0}, {"GB", 1e9},      {"G", 1073741824.0},      {"MiB", 1048576.0},
      {"MB", 1e6},           {"M", 1048576.0}, {"TiB", 1099511627776.0}, {"TB", 1e12}};
  for (const auto& [name, scale] : kUnits) {
    if (unit == name && digits > 0) {
      return static_cast<std::int64_t>(number("--memory", text.substr(0, digits)) * scale);
    }
  }
  throw Usage(fmt::format(
      "--memory '{}' is not a size (a number and one of GiB, GB, MiB, MB, TiB, TB, G, M)", text));
}

std::int64_t detected_memory(std::string& source) {
  if (const std::int64_t device = cuda_device_memory(0); device > 0) {
    source = "CUDA device 0";
    return device;
  }
  source = "host memory";
  return static_cast<std::int64_t>(::sysconf(_SC_PHYS_PAGES)) *
         static_cast<std::int64_t>(::sysconf(_SC_PAGESIZE));
}

int run(const std::vector<std::string>& args) {
  std::optional<std::string> model_name;
  plan::PlanInput in;
  std::string memory_source = "given";
  bool json = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& flag = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw Usage(fmt::format("{} needs a value", flag));
      return args[++i];
    };
    if (flag == "--help" || flag == "-h") {
      std::fputs(kHelp, stdout);
      return 0;
    } else if (flag == "--model") {
      model_name = value();
    } else if (flag == "--memory") {
      in.memory_bytes = memory_size(value());
    } else if (flag == "--weights-gib") {
      in.weights_gib = number(flag, value());
    } else if (flag == "--context") {
      in.context = static_cast<std::int64_t>(number(flag, value()));
    } else if (flag == "--block-size") {
      in.block_size = static_cast<std::int32_t>(number(flag, value()));
    } else if (flag == "--json") {
      json = true;
    } else {
      throw Usage(fmt::format("unknown option '{}'", flag.substr(0, 40)));
    }
  }
  if (!model_name) throw Usage("--model is required");
  try {
    in.model = plan::find_model(*model_name);
  } catch (const InvalidArgument& error) {
    throw Usage(error.what());
  }
  if (in.memory_bytes == 0) in.memory_bytes = detected_memory(memory_source);
  plan::Plan p;
  try {
    p = plan::make_plan(in);
  } catch (const InvalidArgument& error) {
    throw Usage(error.what());
  }
  const ModelShape& shape = in.model.shape;
  const double gib = static_cast<double>(plan::kGiB);
  if (json) {
    nlohmann::json out;
    out["model"] = {{"name", std::string(in.model.name)},
                    {"layers", shape.num_layers},
                    {"kv_heads", shape.num_kv_heads},
                    {"head_dim", shape.head_dim},
                    {"dtype", std::string(dtype_name(shape.dtype))}};
    out["memory_bytes"] = in.memory_bytes;
    out["memory_source"] = memory_source;
    out["weights_bytes"] = p.weights_bytes;
    out["cache_bytes"] = p.cache_bytes;
    out["context"] = in.context;
    out["block_size"] = p.block_size;
    out["profile"] = {
        {"memory_gib", p.profile->memory_gib},    {"block_size", p.profile->block_size},
        {"cache_share", p.profile->cache_share},  {"max_batch", p.profile->max_batch},
        {"codec", std::string(p.profile->codec)}, {"why", std::string(p.profile->why)}};
    for (const plan::PlanRow& r : p.rows) {
      out["codecs"].push_back({{"codec", std::string(r.codec)},
                               {"bytes_per_token", r.bytes_per_token},
                               {"block_bytes", r.block_bytes},
                               {"blocks", r.blocks},
                               {"tokens", r.tokens},
                               {"sequences", r.sequences}});
    }
    out["notes"] = p.notes;
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::string text = fmt::format(
      "model {}: {} layers x {} KV heads x {}, {}\n"
      "memory {:.1f} GiB ({}), weights {:.1f} GiB, cache {:.1f} GiB ({:.0f}% of what the weights "
      "leave)\n"
      "profile {} GiB: block {}, max batch {}, codec {}\n  {}\n\n"
      "| codec | bytes per token | tokens that fit | sequences of {} tokens |\n|---|---|---|---|\n",
      in.model.name, shape.num_layers, shape.num_kv_heads, shape.head_dim, dtype_name(shape.dtype),
      static_cast<double>(in.memory_bytes) / gib, memory_source,
      static_cast<double>(p.weights_bytes) / gib, static_cast<double>(p.cache_bytes) / gib,
      100 * p.profile->cache_share, p.profile->memory_gib, p.block_size, p.profile->max_batch,
      p.profile->codec, p.profile->why, in.context);
  for (const plan::PlanRow& r : p.rows)
    text += fmt::format("| {} | {:.0f} | {} | {} |\n", r.codec, r.bytes_per_token, r.tokens,
                        r.sequences);
  for (const std::string& note : p.notes)
    text += "\n" + note + "\n";
  std::fputs(text.c_str(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const Usage& error) {
    std::fprintf(stderr, "kvcache-plan: %s\n(kvcache-plan --help lists the options)\n",
                 error.what());
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "kvcache-plan: %s\n", error.what());
    return 1;
  }
}
