// The kvcache-demo command line, parsed and checked whole before anything
// runs: a bad option exits 2 with a message naming it and what it takes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kvcache/error.hpp"
#include "serve.hpp"

namespace kvcache::demo {

class UsageError : public Error {
 public:
  using Error::Error;
};

struct Arguments {
  std::string trace_path;    // empty: the built-in synthetic workload
  std::string weights_path;  // empty: seeded random weights
  std::string json_path;
  std::uint64_t seed = 2026;
  WorkloadOptions workload;
  ServeOptions serve;
  std::vector<std::string> configs;  // empty: all
  int metrics_port = -1;             // /metrics on 127.0.0.1:port while it runs (0: any free port)
  double metrics_linger = 0;         // seconds to keep serving after the run
  bool help = false;
};

Arguments parse_arguments(std::span<const std::string> words);
std::string usage();

}  // namespace kvcache::demo
