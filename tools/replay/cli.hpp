// The kvcache-replay command line: parsed and checked whole before anything
// runs, so a bad option exits with a message naming it (and what it takes)
// and nothing on stdout. Kept apart from main() so the tests and the fuzzer
// drive it directly.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "kvcache/error.hpp"
#include "replay.hpp"

namespace kvcache::replay {

// A bad option or combination: exit code 2, the message and a pointer to --help.
class UsageError : public Error {
 public:
  using Error::Error;
};

struct Arguments {
  std::string trace_path;  // empty: the built-in synthetic workload
  ReplayOptions options;
  std::int64_t capacity_tokens = 0;
  double budget_gib = 0;
  std::string codec = "plain";
  bool codec_table = false;
  bool tier_table = false;
  bool engines_table = false;
  std::string redis_url;  // --redis: the shared tier is this Redis (kvcache::redis builds)
  bool sweep = false;
  bool skip_bad = false;
  bool tune = false;  // --tune: tuned against static under options.limit_schedule
  // A single run's metrics: a snapshot every N requests (0: none), the window
  // its recommendations read, and /metrics on 127.0.0.1:port (-1: no server;
  // 0: any free port) kept up `metrics_linger` seconds after the run.
  std::int64_t metrics_every = 100;
  std::int32_t metrics_window = 16;
  int metrics_port = -1;
  double metrics_linger = 0;
  bool help = false;
};

// The options after argv[0]; UsageError names the option and what it takes.
Arguments parse_arguments(std::span<const std::string> words);

// The help text (the policy and codec lists come from the registry).
std::string usage();

}  // namespace kvcache::replay
