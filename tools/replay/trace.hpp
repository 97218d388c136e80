// Request traces for the replay: the Mooncake format (FAST'25; one JSON
// object a line: timestamp in ms, input_length, output_length, hash_ids of
// the prompt's 512-token blocks, same id = same content and prefix) and a
// built-in synthetic workload with shared prefixes for machines without a
// trace file.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <string_view>
#include <vector>

#include "kvcache/error.hpp"

namespace kvcache::replay {

// What a request line may hold: lengths of one request the replay can append
// in one batch, timestamps exact in a double, ids that fit 63 bits.
inline constexpr std::int64_t kMaxRequestTokens = std::int64_t{1} << 24;
inline constexpr std::int64_t kMaxTimestampMs = std::int64_t{1} << 53;
inline constexpr std::int64_t kMaxHashIds = std::int64_t{1} << 20;
inline constexpr std::uint64_t kMaxHashId = (std::uint64_t{1} << 63) - 1;

struct TraceRequest {
  std::int64_t line = 0;  // in the trace file (0: synthetic)
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
// skipped; a trace without a request is a TraceError too. Messages are
// bounded: a line's content is never echoed whole.
Trace parse_trace(std::istream& input, const std::string& source, bool skip_bad);
Trace load_trace(const std::string& path, bool skip_bad);

// `text`, cut to `limit` bytes (and its length said) for a message.
std::string bounded(std::string_view text, std::size_t limit = 120);

// A deterministic multi-turn chat workload: conversations that share one of
// a few system prompts, each turn extending the previous one's prompt.
Trace synthetic_trace(std::int32_t conversations = 600, std::uint64_t seed = 2026);

}  // namespace kvcache::replay
