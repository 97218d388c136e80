// What the tuner (tuner/tuner.hpp) did, counted: decision points, budget
// changes by kind, and sequences moved into and out of a compressed pool.
// Exposed as Prometheus counters by metrics/exposition.hpp.
#pragma once

#include <cstdint>

namespace kvcache {

struct TunerStats {
  std::int64_t decisions = 0;  // decision points reached
  std::int64_t grows = 0, shrinks = 0, limit_shrinks = 0, refused = 0;
  std::int64_t compressed = 0, decompressed = 0;  // sequences moved
};

}  // namespace kvcache
