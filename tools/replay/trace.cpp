#include "trace.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string_view>

namespace kvcache::replay {

std::string bounded(std::string_view text, std::size_t limit) {
  if (text.size() <= limit) return std::string(text);
  return fmt::format("{}... ({} bytes)", text.substr(0, limit), text.size());
}

namespace {

using nlohmann::json;

// How deep a line's arrays and objects may nest (a request needs 2): deeper
// lines are refused before the JSON parser (or a message) recurses into them.
constexpr int kMaxDepth = 8;

int nesting_depth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > kMaxDepth) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

std::int64_t integer_field(const json& object, const char* name, std::int64_t line,
                           std::int64_t max) {
  auto it = object.find(name);
  if (it == object.end()) detail::raise<TraceError>("line {}: missing field \"{}\"", line, name);
  std::int64_t value = 0;
  if (it->is_number_unsigned()) {
    const auto unsigned_value = it->get<std::uint64_t>();
    if (unsigned_value > static_cast<std::uint64_t>(max)) {
      detail::raise<TraceError>("line {}: field \"{}\" is {}, above {}", line, name, unsigned_value,
                                max);
    }
    value = static_cast<std::int64_t>(unsigned_value);
  } else if (it->is_number_integer()) {
    value = it->get<std::int64_t>();
  } else if (it->is_number_float()) {
    // 12.0 is fine, 12.5 is not; the range check comes before any conversion.
    const double number = it->get<double>();
    if (!(number >= 0.0 && number <= static_cast<double>(max)) || number != std::floor(number)) {
      detail::raise<TraceError>("line {}: field \"{}\" is {}, not an integer in [0, {}]", line,
                                name, number, max);
    }
    value = static_cast<std::int64_t>(number);
  } else {
    detail::raise<TraceError>("line {}: field \"{}\" is {}, not an integer", line, name,
                              it->type_name());
  }
  if (value < 0) {
    detail::raise<TraceError>("line {}: field \"{}\" is {}, must not be negative", line, name,
                              value);
  }
  if (value > max) {
    detail::raise<TraceError>("line {}: field \"{}\" is {}, above {}", line, name, value, max);
  }
  return value;
}

TraceRequest parse_line(const std::string& text, std::int64_t line) {
  if (nesting_depth(text) > kMaxDepth) {
    detail::raise<TraceError>("line {}: arrays or objects nested more than {} deep", line,
                              kMaxDepth);
  }
  json object;
  try {
    object = json::parse(text);
  } catch (const json::exception& error) {
    detail::raise<TraceError>("line {}: not valid JSON ({})", line, bounded(error.what()));
  }
  if (!object.is_object())
    detail::raise<TraceError>("line {}: expected a JSON object, got {}", line, object.type_name());
  TraceRequest request;
  request.line = line;
  request.timestamp_ms = integer_field(object, "timestamp", line, kMaxTimestampMs);
  request.input_length = integer_field(object, "input_length", line, kMaxRequestTokens);
  request.output_length = integer_field(object, "output_length", line, kMaxRequestTokens);
  auto ids = object.find("hash_ids");
  if (ids == object.end()) detail::raise<TraceError>("line {}: missing field \"hash_ids\"", line);
  if (!ids->is_array()) {
    detail::raise<TraceError>("line {}: field \"hash_ids\" is {}, not an array", line,
                              ids->type_name());
  }
  if (ids->size() > static_cast<std::size_t>(kMaxHashIds)) {
    detail::raise<TraceError>("line {}: hash_ids holds {} blocks, more than {}", line, ids->size(),
                              kMaxHashIds);
  }
  request.hash_ids.reserve(ids->size());
  for (const json& id : *ids) {
    if (id.is_number_unsigned() && id.get<std::uint64_t>() <= kMaxHashId) {
      request.hash_ids.push_back(static_cast<std::int64_t>(id.get<std::uint64_t>()));
    } else if (id.is_number_integer() && !id.is_number_unsigned() && id.get<std::int64_t>() >= 0) {
      request.hash_ids.push_back(id.get<std::int64_t>());
    } else {
      detail::raise<TraceError>(
          "line {}: hash_ids holds {}, not an integer in [0, {}]", line,
          id.is_structured() ? std::string(id.type_name()) : bounded(id.dump(), 40), kMaxHashId);
    }
  }
  return request;
}

// Portable pseudo-random numbers (the same on every standard library).
struct SplitMix {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  std::int64_t range(std::int64_t low, std::int64_t high) {  // [low, high]
    return low + static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(high - low + 1));
  }
};

}  // namespace

Trace parse_trace(std::istream& input, const std::string& source, bool skip_bad) {
  Trace trace;
  trace.source = source;
  std::string text;
  std::int64_t line = 0;
  while (std::getline(input, text)) {
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      trace.requests.push_back(parse_line(text, line));
    } catch (const TraceError&) {
      if (!skip_bad) throw;
      ++trace.bad_lines;
    }
  }
  if (input.bad()) detail::raise<TraceError>("{}: read error after line {}", bounded(source), line);
  if (trace.requests.empty()) {
    detail::raise<TraceError>("{}: no requests in {} lines{}", bounded(source), line,
                              trace.bad_lines > 0
                                  ? fmt::format(" ({} bad lines skipped)", trace.bad_lines)
                                  : std::string());
  }
  return trace;
}

Trace load_trace(const std::string& path, bool skip_bad) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    detail::raise<TraceError>("\"{}\" is a directory, not a trace file", bounded(path));
  }
  std::ifstream input(path);
  if (!input) detail::raise<TraceError>("cannot open trace file \"{}\"", bounded(path));
  return parse_trace(input, path, skip_bad);
}

Trace synthetic_trace(std::int32_t conversations, std::uint64_t seed) {
  SplitMix rng{seed};
  Trace trace;
  trace.source = "synthetic";
  std::int64_t next_id = 0;
  // A few shared system prompts of 2 to 6 blocks.
  std::vector<std::vector<std::int64_t>> systems(8);
  for (auto& system : systems) {
    const std::int64_t blocks = rng.range(2, 6);
    for (std::int64_t i = 0; i < blocks; ++i)
      system.push_back(next_id++);
  }
  for (std::int32_t c = 0; c < conversations; ++c) {
    // Popular system prompts are used more: pick the smaller of two draws.
    const auto s = static_cast<std::size_t>(std::min(rng.range(0, 7), rng.range(0, 7)));
    std::vector<std::int64_t> prompt = systems[s];
    std::int64_t time = rng.range(0, 1800000);
    const std::int64_t turns = rng.range(1, 8);
    for (std::int64_t t = 0; t < turns; ++t) {
      const std::int64_t added = rng.range(1, 6);  // the last answer and the new question
      for (std::int64_t i = 0; i < added; ++i)
        prompt.push_back(next_id++);
      TraceRequest request;
      request.timestamp_ms = time;
      request.hash_ids = prompt;
      request.input_length = static_cast<std::int64_t>(prompt.size()) * 512 - rng.range(0, 511);
      request.output_length = rng.range(20, 800);
      trace.requests.push_back(request);
      time += rng.range(10000, 90000);
    }
  }
  std::stable_sort(
      trace.requests.begin(), trace.requests.end(),
      [](const TraceRequest& a, const TraceRequest& b) { return a.timestamp_ms < b.timestamp_ms; });
  return trace;
}

}  // namespace kvcache::replay
