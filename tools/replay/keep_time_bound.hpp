// Ceilings for families of online policies, next to Belady's MIN (which knows
// each block's future and bounds everything).
//
// An eviction policy that sees only what the manager tells it (keys, the
// requests that reach them, the order of releases) cannot tell two released
// blocks of the same class apart, so, whatever it does, the hits it can
// expect are bounded by the best rule of the form "keep a released block of
// class c for L_c requests, then drop it": a block whose next use comes
// g requests after its release hits when g <= L_c and occupies a slot for
// min(g, L_c) requests, and at one request at a time no more than
// capacity x requests slot-requests are available in all. That bound is a
// linear programme with a closed solution. For each class, the TTL rules
// give points (slots used, hits) whose upper concave hull is what mixtures of
// TTLs reach; the hull segments of every class, taken in order of hits per
// slot until the budget is spent (the last one in part), are the optimum.
//
// Both relaxations favour the policies: the slots are counted on average
// over the run instead of at every request, and a block counts as a hit
// even when a block before it in the prompt was dropped (the manager counts
// hits only up to a request's first miss); the rule is also told each
// class's distribution of reuse times, which an online policy has to learn.
// A policy of the family varies the keep time within a class only for
// reasons outside the block (the other blocks' traffic, the cache's state),
// so it can beat the figure on a trace only where those reasons happen to
// line up with which blocks come back.
//
// Classes: kRecency puts every block in one class (a policy blind to the
// block: LRU, FIFO, any fixed keep time); kUseCount puts a block in the
// class of the number of requests that reached it so far (what LFU,
// LFU-aging, S3-FIFO's counters and reuse-lru see; counts are not capped).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "replay.hpp"

namespace kvcache::replay {

enum class BoundClasses { kRecency, kUseCount };

// For each capacity in blocks (0: unlimited), the highest prefix hit rate a
// keep-time rule on `classes` reaches on `trace` with one request at a time.
// InvalidArgument when options.decode_ms_per_token is not 0 (with requests
// running concurrently a block is also kept while it is in use, which the
// bound does not model), when a capacity is negative, or when check_options
// refuses the options.
std::vector<double> keep_time_bound(const Trace& trace, const ReplayOptions& options,
                                    BoundClasses classes, std::span<const std::int64_t> capacities);

}  // namespace kvcache::replay
