// Traces small enough to work out by hand, for the replay's tests.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "replay.hpp"
#include "trace.hpp"

namespace kvcache::replay::testing {

// One request a line, no output tokens, 512-token blocks: a request needs
// exactly its uncached prompt blocks.
inline Trace trace_of(const std::vector<std::vector<int>>& prompts) {
  std::string text;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    std::string ids;
    for (int id : prompts[i])
      ids += (ids.empty() ? "" : ", ") + std::to_string(id);
    text += "{\"timestamp\": " + std::to_string(i) +
            ", \"input_length\": " + std::to_string(512 * prompts[i].size()) +
            ", \"output_length\": 0, \"hash_ids\": [" + ids + "]}\n";
  }
  std::istringstream input(text);
  return parse_trace(input, "hand-made", false);
}

// Options for one request at a time at `capacity` blocks under `policy`.
inline ReplayOptions one_at_a_time(const std::string& policy, std::int64_t capacity) {
  ReplayOptions options;
  options.policy = policy;
  options.capacity_blocks = capacity;
  options.decode_ms_per_token = 0;
  return options;
}

}  // namespace kvcache::replay::testing
