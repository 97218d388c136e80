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

// The releases of one class: the reuse times (in requests) of those used
// again, and for the others the requests left in the trace after them (the
// most they can hold a slot for).
struct ClassEvents {
  std::vector<std::int64_t> gaps;
  std::vector<std::int64_t> horizons;
};

// True when segment a buys more hits per slot than b (exact: no rounding).
bool steeper(const Segment& a, const Segment& b) {
  return static_cast<Wide>(a.hits) * b.slots > static_cast<Wide>(b.hits) * a.slots;
}

// The upper concave hull of the TTL rules of one class, as segments from
// (0 slots, 0 hits). The rule "keep for L", L the k-th smallest reuse time,
// hits k releases; each release holds its slot for the least of L, its reuse
// time and what is left of the trace. Hits change only at reuse times, so
// those are the only points.
void add_hull(ClassEvents& events, std::vector<Segment>& segments) {
  auto& gaps = events.gaps;
  auto& horizons = events.horizons;
  std::sort(gaps.begin(), gaps.end());
  std::sort(horizons.begin(), horizons.end());
  std::vector<Segment> hull = {{0, 0}};  // points (slots, hits)
  std::int64_t reused_sum = 0;           // the first i + 1 reuse times
  std::int64_t ended_sum = 0;            // the horizons below L
  std::size_t ended = 0;                 // how many horizons are below L
  for (std::size_t i = 0; i < gaps.size(); ++i) {
    reused_sum += gaps[i];
    if (i + 1 < gaps.size() && gaps[i + 1] == gaps[i]) continue;  // same L: take the last
    const std::int64_t keep = gaps[i];
    while (ended < horizons.size() && horizons[ended] < keep)
      ended_sum += horizons[ended++];
    const auto hits = static_cast<std::int64_t>(i + 1);
    const auto waiting = static_cast<std::int64_t>(gaps.size() - (i + 1) + horizons.size() - ended);
    const Segment point = {reused_sum + ended_sum + waiting * keep, hits};
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
  const auto requests = static_cast<std::int64_t>(trace.requests.size());
  for (const auto& [key, state] : keys)
    by_class[class_of(state.uses)].horizons.push_back(requests - state.released);

  std::vector<Segment> segments;
  for (auto& [cls, events] : by_class)
    add_hull(events, segments);
  std::stable_sort(segments.begin(), segments.end(), steeper);

  std::vector<double> rates;
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
