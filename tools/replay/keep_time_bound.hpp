// Ceilings for families of online policies, next to Belady's MIN (which knows
// each block's future and bounds everything): the most prefix hits the best
// rule "keep a released block of class c for L_c requests, then drop it"
// reaches, for a class of what a policy can see about a block.
//
// A block whose next use comes g requests after its release hits when
// g <= L_c and holds a slot for min(g, L_c) requests (never past the trace's
// end), and at one request at a time no more than capacity x requests
// slot-requests are available in all. That is a linear programme with a
// closed solution: for each class, the keep-time rules give points (slots,
// hits) whose upper concave hull is what mixtures of keep times reach; the
// hull segments of every class, taken in order of hits per slot until the
// budget is spent (the last one in part), are the optimum.
//
// It is an estimate in the policies' favour, not a theorem about them. In
// their favour: the slots are counted on average over the run instead of at
// every request, a block counts as a hit even when a block before it in the
// prompt was dropped (the manager counts hits only up to a request's first
// miss), and the rule is told each class's distribution of reuse times,
// which an online policy has to learn. Not covered: a real policy keeps
// blocks of one class for different times, for reasons that are sometimes
// the block's own (LFU-aging counts only uses while cached, S3-FIFO's ghost
// queue and reuse-lru's ghost ring remember a block only for a while); where
// those reasons line up with which blocks come back, or by the luck of one
// trace's order of events, a policy can beat the figure.
//
// Classes: kRecency puts every block in one class (a policy blind to the
// block: LRU, FIFO, any fixed keep time); kUseCount puts a block in the
// class of the number of requests that reached it so far (counts are not
// capped).
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
