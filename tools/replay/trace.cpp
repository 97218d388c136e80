#include "trace.hpp"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

namespace kvcache::replay {
namespace {

using nlohmann::json;

std::int64_t integer_field(const json& object, const char* name, std::int64_t line) {
  auto it = object.find(name);
  if (it == object.end()) detail::raise<TraceError>("line {}: missing field \"{}\"", line, name);
  std::int64_t value = 0;
  if (it->is_number_integer()) {
    value = it->get<std::int64_t>();
  } else if (it->is_number_float() &&
             it->get<double>() ==
                 static_cast<double>(static_cast<std::int64_t>(it->get<double>()))) {
    value = static_cast<std::int64_t>(it->get<double>());  // 12.0 is fine, 12.5 is not
  } else {
    detail::raise<TraceError>("line {}: field \"{}\" is {}, not an integer", line, name,
                              it->dump());
  }
  if (value < 0) {
    detail::raise<TraceError>("line {}: field \"{}\" is {}, must not be negative", line, name,
                              value);
  }
  return value;
}

TraceRequest parse_line(const std::string& text, std::int64_t line) {
  json object;
  try {
    object = json::parse(text);
  } catch (const json::parse_error& error) {
    detail::raise<TraceError>("line {}: not valid JSON ({})", line, error.what());
  }
  if (!object.is_object())
    detail::raise<TraceError>("line {}: expected a JSON object, got {}", line, object.type_name());
  TraceRequest request;
  request.timestamp_ms = integer_field(object, "timestamp", line);
  request.input_length = integer_field(object, "input_length", line);
  request.output_length = integer_field(object, "output_length", line);
  auto ids = object.find("hash_ids");
  if (ids == object.end()) detail::raise<TraceError>("line {}: missing field \"hash_ids\"", line);
  if (!ids->is_array())
    detail::raise<TraceError>("line {}: field \"hash_ids\" is not an array", line);
  request.hash_ids.reserve(ids->size());
  for (const json& id : *ids) {
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0) {
      detail::raise<TraceError>("line {}: hash_ids holds {}, not a non-negative integer", line,
                                id.dump());
    }
    request.hash_ids.push_back(id.get<std::int64_t>());
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
  return trace;
}

Trace load_trace(const std::string& path, bool skip_bad) {
  std::ifstream input(path);
  if (!input) detail::raise<TraceError>("cannot open trace file \"{}\"", path);
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
