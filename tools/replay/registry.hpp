// The replay's policies and codecs, one table each: the command line's help,
// its error messages and the sweeps are generated from these tables, so a
// new policy or codec is one row.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "kvcache/model_shape.hpp"
#include "kvcache/plan/codec_costs.hpp"
#include "replay.hpp"

namespace kvcache::replay {

struct PolicyInfo {
  std::string_view name;
  std::string_view help;
  ReplayResult (*run)(const Trace& trace, const ReplayOptions& options);
  bool offline = false;  // reads the trace's future: a ceiling, not a cache
};

// The codecs' sizes (plan/codec_costs.hpp: one table for the planner and the
// replay).
using CodecInfo = plan::CodecCost;

std::span<const PolicyInfo> policies();
std::span<const CodecInfo> codecs();

// The entry named `name`; InvalidArgument listing the names otherwise.
const PolicyInfo& find_policy(std::string_view name);
const CodecInfo& find_codec(std::string_view name);

// "a | b | c" (help text) or "a, b, c" (errors).
template <class Info>
std::string names(std::span<const Info> table, std::string_view separator) {
  std::string out;
  for (const Info& entry : table) {
    if (!out.empty()) out += separator;
    out += entry.name;
  }
  return out;
}

}  // namespace kvcache::replay
