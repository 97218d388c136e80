#include "replay.hpp"

#include "kvcache/plan/planner.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <queue>
#include <random>
#include <set>
#include <unordered_set>

#include "engine.hpp"
#include "kvcache/kvcache.hpp"
#include "registry.hpp"

namespace kvcache::replay {

std::int64_t unlimited_capacity(const Trace& trace, const ReplayOptions& options) {
  std::int64_t blocks = 1;
  for (const auto& request : trace.requests) {
    blocks +=
        (engine::prompt_tokens(request, options) + request.output_length + options.block_size - 1) /
        options.block_size;
  }
  return blocks;
}

std::int64_t unique_blocks(const Trace& trace) {
  std::unordered_set<std::int64_t> ids;
  for (const auto& request : trace.requests)
    ids.insert(request.hash_ids.begin(), request.hash_ids.end());
  return static_cast<std::int64_t>(ids.size());
}

void check_options(const Trace& trace, const ReplayOptions& options) {
  if (options.block_size < 1 || options.block_size > 1024 ||
      (options.block_size & (options.block_size - 1)) != 0) {
    detail::raise<InvalidArgument>("replay: block size {} is not a power of two in [1, 1024]",
                                   options.block_size);
  }
  if (options.trace_block_tokens < 1 || options.trace_block_tokens > (1 << 20) ||
      (options.trace_block_tokens % options.block_size != 0 &&
       options.block_size % options.trace_block_tokens != 0)) {
    detail::raise<InvalidArgument>(
        "replay: block size {} and the trace's {}-token blocks must divide one another",
        options.block_size, options.trace_block_tokens);
  }
  if (options.capacity_blocks < 0 || options.capacity_blocks > (std::int64_t{1} << 31) - 1) {
    detail::raise<InvalidArgument>("replay: capacity {} blocks is outside [0, 2^31 - 1]",
                                   options.capacity_blocks);
  }
  if (options.host_tier_blocks < 0 || options.host_tier_blocks > (std::int64_t{1} << 31)) {
    detail::raise<InvalidArgument>("replay: a host tier of {} blocks is outside [0, 2^31]",
                                   options.host_tier_blocks);
  }
  if (options.engines < 1 || options.engines > 64) {
    detail::raise<InvalidArgument>("replay: {} engines (allowed: 1 to 64)", options.engines);
  }
  if (options.shared_tier_blocks < 0 || options.shared_tier_blocks > (std::int64_t{1} << 31)) {
    detail::raise<InvalidArgument>("replay: a shared tier of {} blocks (allowed: 0 to 2^31)",
                                   options.shared_tier_blocks);
  }
  if (options.shared_tier_blocks > 0 && options.shared_store != nullptr) {
    detail::raise<InvalidArgument>(
        "replay: an in-process shared tier of {} blocks and a shared store ({}): one or the other",
        options.shared_tier_blocks, options.shared_store->name());
  }
  if (options.engines > 1 && options.policy == "belady") {
    detail::raise<InvalidArgument>(
        "replay: the offline optimum (belady) replays one engine; {} engines asked",
        options.engines);
  }
  if (!std::isfinite(options.decode_ms_per_token) || options.decode_ms_per_token < 0) {
    detail::raise<InvalidArgument>("replay: decode time {} ms is not a non-negative number",
                                   options.decode_ms_per_token);
  }
  if (options.tune) {
    if (options.engines != 1)
      detail::raise<InvalidArgument>("replay: the tuner tunes one engine; {} asked",
                                     options.engines);
    if (options.tune_every < 1)
      detail::raise<InvalidArgument>(
          "replay: the tuner decides every {} requests (allowed: 1 or more)", options.tune_every);
    for (const auto& [from, limit] : options.limit_schedule) {
      if (!(from >= 0 && from <= 1) || !(limit > 0 && limit <= 1)) {
        detail::raise<InvalidArgument>(
            "replay: a limit schedule entry {}:{} (allowed: a share of the requests in [0, 1], "
            "a share of the capacity in (0, 1])",
            from, limit);
      }
    }
  }
  (void)find_policy(options.policy);
  for (const TraceRequest& request : trace.requests) {
    const std::int64_t prompt = engine::prompt_tokens(request, options);
    if (prompt > kMaxRequestTokens || request.output_length > kMaxRequestTokens) {
      detail::raise<TraceError>(
          "line {}: a prompt of {} tokens and an output of {} is more than the {} tokens a "
          "request may append at once",
          request.line, prompt, request.output_length, kMaxRequestTokens);
    }
  }
  if (unlimited_capacity(trace, options) > (std::int64_t{1} << 31) - 1 &&
      options.capacity_blocks == 0) {
    detail::raise<InvalidArgument>(
        "replay: holding the whole trace takes more than 2^31 - 1 blocks; give --capacity");
  }
}

ReplayResult run_replay(const Trace& trace, const ReplayOptions& options) {
  check_options(trace, options);
  return find_policy(options.policy).run(trace, options);
}

ModelShape parse_model(const std::string& name) {
  if (name == "tiny") return ModelShape::gqa(2, 2, 64, DType::kF16);
  if (name == "llama3-8b") return ModelShape::gqa(32, 8, 128, DType::kF16);
  if (name == "llama2-7b") return ModelShape::gqa(32, 32, 128, DType::kF16);
  if (name == "qwen2-7b") return ModelShape::gqa(28, 4, 128, DType::kBF16);
  return plan::parse_shape(name, "tiny, llama3-8b, llama2-7b, qwen2-7b");
}

}  // namespace kvcache::replay
