// Request traces for the replay: the Mooncake format (FAST'25; one JSON
// object a line: timestamp in ms, input_length, output_length, hash_ids of
// the prompt's 512-token blocks, same id = same content and prefix) and a
// built-in synthetic workload with shared prefixes for machines without a
// trace file.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include "kvcache/error.hpp"

namespace kvcache::replay {

struct TraceRequest {
  std::int64_t timestamp_ms = 0;
  std::int64_t input_length = 0;
  std::int64_t output_length = 0;
  std::vector<std::int64_t> hash_ids;
};

struct Trace {
  std::string source;  // the path, or "synthetic"
  std::vector<TraceRequest> requests;
  std::int64_t bad_lines = 0;  // skipped with skip_bad
};

// A line that is not a valid request: the message names the line number
// and what is wrong with it.
class TraceError : public Error {
 public:
  using Error::Error;
};

// Parses a Mooncake-format trace. Blank lines are ignored. A bad line throws
// TraceError (and nothing is returned), or with `skip_bad` is counted and
// skipped.
Trace parse_trace(std::istream& input, const std::string& source, bool skip_bad);
Trace load_trace(const std::string& path, bool skip_bad);

// A deterministic multi-turn chat workload: conversations that share one of
// a few system prompts, each turn extending the previous one's prompt.
Trace synthetic_trace(std::int32_t conversations = 600, std::uint64_t seed = 2026);

}  // namespace kvcache::replay
