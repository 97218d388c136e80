// Serving the demo model from a KVCacheManager: requests from a trace,
// continuous batching with preemption, one run per cache configuration, and
// the figures of each run measured against a reference run.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvcache/metrics/recommend.hpp"
#include "model.hpp"
#include "trace.hpp"

namespace kvcache::demo {

struct Request {
  std::int64_t line = 0;  // in the trace (0: synthetic)
  std::vector<std::int32_t> prompt;
  std::int32_t output_tokens = 1;
};

// How trace requests become demo requests. A Mooncake hash id stands for a
// block of 512 prompt tokens; the demo scales lengths down by prompt_scale
// (so a hash id becomes 512 / prompt_scale tokens, derived from the id: equal
// ids give equal token runs and shared prefixes stay shared) and output
// lengths by output_scale, clamped to [1, max_output].
struct WorkloadOptions {
  std::int32_t requests = 40;
  std::int32_t prompt_scale = 32;
  std::int32_t output_scale = 16;
  std::int32_t max_output = 48;
};

struct Workload {
  std::string source;
  WorkloadOptions options;
  std::vector<Request> requests;
  std::int64_t max_tokens() const;  // longest prompt + output
  std::int64_t prompt_tokens() const;
  std::int64_t output_tokens() const;
};

// Throws InvalidArgument naming the option when it is out of range.
Workload make_workload(const replay::Trace& trace, const WorkloadOptions& options,
                       const ModelConfig& model);

struct ServeOptions {
  std::int32_t concurrency = 8;  // requests decoding together
  // paged+lru: its pool is this share of the paged run's peak.
  double lru_fraction = 0.6;
  // The uncompressed configurations keep fp32 instead of fp16 (the tests: the
  // cache must then give exactly the logits of a recompute).
  bool fp32_cache = false;
  // The plain configurations attend through the library's PagedAttention on
  // the CPU backend instead of the model's own loop (paged-gpu always does,
  // on the GPU).
  bool kernel_attention = false;
  // The compressed configurations decode each sequence's cache with gather()
  // into a scratch buffer and attend over it, instead of attending through
  // PagedAttention over the compressed pages (the default).
  bool gather_attention = false;
  std::function<void(std::string_view config, std::int64_t done, std::int64_t total)> progress;
  // Periodic checkpoints of the cache and of the run's own state into this
  // directory (every `checkpoint_every` committed tokens); a run started on
  // a directory that holds one resumes from it.
  std::string checkpoint_dir;
  std::int64_t checkpoint_every = 100;
  // Told of each checkpoint written (steps so far) and of a resume.
  std::function<void(std::string_view event)> checkpoint_log;
  // When set: after every step, a metrics snapshot of the configuration's
  // cache (a window of 16) and the recommendations of that window.
  std::function<void(std::string_view config, const metrics::MetricsSnapshot&,
                     std::span<const metrics::Recommendation>)>
      on_metrics;
};

// The greedy tokens and logits of every request's outputs.
struct Outputs {
  std::vector<std::vector<std::int32_t>> tokens;  // [request][output]
  std::vector<std::vector<float>> logits;         // [request][output x vocab]
};

struct RunResult {
  std::string name;
  std::string strategy;
  std::int32_t block_size = 0;
  std::int64_t pool_bytes = 0;          // the arena (and KIVI's rings)
  std::int64_t peak_live_bytes = 0;     // blocks held by sequences (and KIVI's rings), at the peak
  std::int64_t peak_held_bytes = 0;     // ... plus cached blocks kept for prefix reuse
  std::int64_t tokens_at_peak = 0;      // tokens stored when the live bytes peaked
  std::int64_t peak_scratch_bytes = 0;  // decoded copies of the cache held to attend (gather path)
  double bytes_per_token = 0;           // peak_live_bytes / tokens_at_peak
  double seconds = 0;                   // the whole run
  double cache_seconds = 0;             // inside the manager and reading the cache back
  std::int64_t steps = 0;
  std::int64_t computed_tokens = 0;    // positions run through the model
  std::int64_t generated_tokens = 0;   // outputs
  std::int64_t recomputed_tokens = 0;  // positions computed earlier in the run, again
  std::int64_t preemptions = 0;        // requests parked for room
  std::int64_t evicted_blocks = 0;
  std::int64_t evicted_sequences = 0;
  bool sharing = false;
  double prefix_hit_rate = 0;  // prefix blocks found cached (runs with sharing)
  double agreement = 1;        // outputs whose greedy token equals the reference's
  double logit_error = 0;      // mean ||logits - reference|| / ||reference||
  double max_logit_error = 0;
  Outputs outputs;

  double tokens_per_second() const {
    return seconds > 0 ? static_cast<double>(generated_tokens) / seconds : 0;
  }
};

struct ConfigInfo {
  const char* name;
  const char* strategy;
};

// The configurations, in the order they run (the reference first).
// paged-gpu runs by default only when a CUDA device is present.
std::span<const ConfigInfo> configs();

// One configuration over the workload. The pool is `pool_bytes` (0: sized for
// the workload at the configuration's own block size). With `reference`
// null the run is greedy (the reference run); otherwise every input token is
// the reference's (teacher forcing) and the run is scored against it.
RunResult run_config(std::string_view name, const Model& model, const Workload& workload,
                     const ServeOptions& options, std::int64_t pool_bytes,
                     const Outputs* reference);

// The whole table: reference, then every configuration under one budget (the
// baseline's bytes), paged+lru under lru_fraction of the paged peak.
struct DemoResult {
  std::int64_t budget_bytes = 0;
  std::vector<RunResult> runs;  // runs[0]: the reference
  const RunResult* find(std::string_view name) const;
};
DemoResult run_all(const Model& model, const Workload& workload, const ServeOptions& options,
                   std::span<const std::string> only = {});

}  // namespace kvcache::demo
