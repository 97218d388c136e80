#include "keep_time_bound.hpp"

#include <algorithm>
#include <map>
#include <unordered_map>

#include "belady.hpp"
#include "kvcache/error.hpp"

namespace kvcache::replay {
namespace {

// Products of hits and slots, exact whatever the trace's length.
__extension__ typedef __int128 Wide;

// One piece of a class's hull: `slots` more slot-requests buy `hits` more hits.
struct Segment {
  std::int64_t slots;
  std::int64_t hits;
};

// Reuse times of the releases of one class (in requests) and the releases
// never used again.
struct ClassEvents {
  std::vector<std::int64_t> gaps;
  std::int64_t never = 0;
};

// True when segment a buys more hits per slot than b (exact: no rounding).
bool steeper(const Segment& a, const Segment& b) {
  return static_cast<Wide>(a.hits) * b.slots > static_cast<Wide>(b.hits) * a.slots;
}

// The upper concave hull of the TTL rules of one class, as segments from
// (0 slots, 0 hits). The rule "keep for L" with L the k-th smallest reuse
// time hits k releases and uses the first k times plus L for each other one.
void add_hull(ClassEvents& events, std::vector<Segment>& segments) {
  auto& gaps = events.gaps;
  std::sort(gaps.begin(), gaps.end());
  const auto releases = static_cast<std::int64_t>(gaps.size()) + events.never;
  std::vector<Segment> hull = {{0, 0}};  // points (slots, hits)
  std::int64_t sum = 0;
  for (std::size_t i = 0; i < gaps.size(); ++i) {
    sum += gaps[i];
    if (i + 1 < gaps.size() && gaps[i + 1] == gaps[i]) continue;  // same L: take the last
    const auto hits = static_cast<std::int64_t>(i + 1);
    const Segment point = {sum + (releases - hits) * gaps[i], hits};
    while (hull.size() >= 2) {
      const Segment& a = hull[hull.size() - 2];
      const Segment& b = hull.back();
      // Keep b only if a -> b is steeper than a -> point (b above that line).
      if (steeper({b.slots - a.slots, b.hits - a.hits},
                  {point.slots - a.slots, point.hits - a.hits}))
        break;
      hull.pop_back();
    }
    hull.push_back(point);
  }
  for (std::size_t i = 1; i < hull.size(); ++i)
    segments.push_back({hull[i].slots - hull[i - 1].slots, hull[i].hits - hull[i - 1].hits});
}

}  // namespace

std::vector<double> keep_time_bound(const Trace& trace, const ReplayOptions& options,
                                    BoundClasses classes,
                                    std::span<const std::int64_t> capacities) {
  check_options(trace, options);
  if (options.decode_ms_per_token != 0) {
    detail::raise<InvalidArgument>(
        "keep_time_bound: decode_ms_per_token is {}; the bound models one request at a time (0)",
        options.decode_ms_per_token);
  }
  for (std::int64_t capacity : capacities) {
    if (capacity < 0) {
      detail::raise<InvalidArgument>(
          "keep_time_bound: capacity {} blocks is negative (0 means unlimited)", capacity);
    }
  }

  // One pass: each use of a key ends the key's previous release (a reuse
  // after `gap` requests) and starts a new one in the class of its count.
  struct KeyState {
    std::int64_t uses = 0;
    std::int64_t released = 0;
  };
  std::unordered_map<EvictionKey, KeyState> keys;
  std::map<std::int64_t, ClassEvents> by_class;
  std::vector<std::int32_t> tokens;
  std::vector<EvictionKey> prompt;
  std::int64_t requested = 0;
  const auto class_of = [&](std::int64_t uses) {
    return classes == BoundClasses::kUseCount ? uses : 0;
  };
  for (std::size_t r = 0; r < trace.requests.size(); ++r) {
    prompt_keys(trace.requests[r], options, tokens, prompt);
    requested += static_cast<std::int64_t>(prompt.size());
    for (EvictionKey key : prompt) {
      KeyState& state = keys[key];
      if (state.uses > 0)
        by_class[class_of(state.uses)].gaps.push_back(static_cast<std::int64_t>(r) -
                                                      state.released);
      ++state.uses;
      state.released = static_cast<std::int64_t>(r);
    }
  }
  for (const auto& [key, state] : keys)
    ++by_class[class_of(state.uses)].never;

  std::vector<Segment> segments;
  for (auto& [cls, events] : by_class)
    add_hull(events, segments);
  std::stable_sort(segments.begin(), segments.end(), steeper);

  std::vector<double> rates;
  const auto requests = static_cast<std::int64_t>(trace.requests.size());
  for (std::int64_t capacity : capacities) {
    double hits = 0;
    double budget = capacity == 0 ? -1.0 : static_cast<double>(capacity) * requests;
    for (const Segment& segment : segments) {
      if (budget < 0 || static_cast<double>(segment.slots) <= budget) {
        hits += static_cast<double>(segment.hits);
        if (budget >= 0) budget -= static_cast<double>(segment.slots);
      } else {
        hits += static_cast<double>(segment.hits) * budget / static_cast<double>(segment.slots);
        break;
      }
    }
    rates.push_back(requested == 0 ? 0.0 : hits / static_cast<double>(requested));
  }
  return rates;
}

}  // namespace kvcache::replay
