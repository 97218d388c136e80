// The adaptive tuner: every N requests (or when asked) it reads the cache's
// metrics and changes its live configuration through the public calls, within
// limits it never crosses and with hysteresis so that it does not oscillate.
//
//   kvcache::Tuner tuner(cache, {.every = 1000});
//   tuner.set_memory_limit(blocks);          // when the engine's memory changes
//   per request: tuner.observe();            // decides every `every` requests
//   tuner.log()                              // each decision, its reason and figures
//
// The rules, in order (the first that applies decides):
//   limit      the budget is above the memory limit: shrink to it (evicting
//              cached blocks first). When running sequences alone hold more,
//              it shrinks as far as they allow, re-encodes cold ones into the
//              compressed pool (if any) until they fit, and counts a refusal;
//              tried again at every decision
//   compress   sequences hold more than `compress_above` of the budget and a
//              compressed pool is attached: re-encode the coldest sequences
//              the engine names into it (reencode_sequence) until the
//              pressure is under `relieved`
//   grow       the hit rate over the window is under `grow_below_hit_rate`,
//              some misses were blocks evicted lately (more memory would have
//              hit them), the pressure is under `grow_below_pressure`, and
//              the limit allows: grow by `grow_step`
//   decompress the pressure is under `decompress_below` and sequences sit in
//              the compressed pool: move them back, oldest first, while the
//              pressure stays under `relieved`
//   shrink     the window evicted nothing, the cache has stopped filling
//              (no more blocks used or cached than at the last decision), and
//              used plus cached blocks fill less than
//              `shrink_below_occupancy` of the budget: shrink to
//              what they fill over `shrink_to_occupancy` (memory back to the
//              engine; never under `min_budget`)
// Grow and shrink thresholds are apart (a budget grown for misses is not
// shrunk until it has stopped evicting and is half empty), and compression
// turns on above 0.9 and off below 0.7: the hysteresis.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kvcache/budget.hpp"
#include "kvcache/error.hpp"
#include "kvcache/metrics/monitor.hpp"
#include "kvcache/reencode.hpp"
#include "kvcache/tuner/stats.hpp"

namespace kvcache {

struct TunerOptions {
  std::int64_t every = 1000;  // observe() calls between decisions
  double grow_below_hit_rate = 0.7;
  double grow_below_pressure = 0.8;
  double grow_step = 0.10;
  double compress_above = 0.9;
  double decompress_below = 0.7;
  double relieved = 0.8;
  double shrink_below_occupancy = 0.5;
  double shrink_to_occupancy = 0.75;
  std::int64_t min_budget = 1;  // blocks
};

struct TunerDecision {
  std::int64_t request = 0;  // observe() calls before it
  std::string action;        // limit, compress, grow, decompress, shrink, refused
  std::string reason;        // the figures that made it
  std::int64_t budget_before = 0, budget_after = 0;
  std::int64_t sequences_moved = 0;
};

// Plain cache only (no compressed pool).
struct NoCompressedPool {};

template <class Manager, class Compressed = NoCompressedPool>
class Tuner {
  static constexpr bool kCompression = !std::is_same_v<Compressed, NoCompressedPool>;

 public:
  Tuner(Manager& cache, TunerOptions options = {})
      : cache_(&cache), options_(options), monitor_(cache, 2), limit_(cache.num_blocks()) {
    check_options();
    monitor_.sample();
  }

  // A compressed pool for cold sequences: `cold` lists the cache's
  // sequences the engine allows to move, coldest first; `moved` tells the
  // engine a sequence's new id (old id, new id, true when it went into the
  // compressed pool).
  void attach_compressed_pool(Compressed& pool, std::function<std::vector<SeqId>()> cold,
                              std::function<void(SeqId, SeqId, bool)> moved) requires kCompression {
    pool_ = &pool;
    cold_ = std::move(cold);
    moved_ = std::move(moved);
  }

  // The most blocks the cache may use from now on (the engine's memory for
  // it); enforced at the next decision, or now with decide().
  void set_memory_limit(std::int64_t blocks) {
    if (blocks < 1 || blocks > cache_->num_blocks()) {
      detail::raise<InvalidArgument>(
          "Tuner: a memory limit of {} blocks (allowed: 1 to {}, the pool's size)", blocks,
          cache_->num_blocks());
    }
    limit_ = blocks;
  }
  std::int64_t memory_limit() const { return limit_; }

  // One request served; decides every `every` calls. Returns the decision
  // taken, if any (valid until the next decision).
  const TunerDecision* observe() {
    ++requests_;
    return requests_ % options_.every == 0 ? decide() : nullptr;
  }

  // Decides now (nullptr: nothing to change).
  const TunerDecision* decide() {
    ++stats_.decisions;
    const metrics::MetricsSnapshot& snap = monitor_.sample();
    const metrics::WindowFigures& w = snap.window;
    const std::int64_t budget = snap.budget_blocks();
    const double pressure = snap.memory_pressure();
    const double hit_rate = w.hit_rate_blocks();
    const double occupancy =
        static_cast<double>(snap.memory.used_blocks + snap.memory.cached_blocks) /
        static_cast<double>(budget);
    const std::string figures = fmt::format(
        "hit rate {:.3f} over {} blocks, {} refetched, {} evicted; pressure {:.3f}, occupancy "
        "{:.3f}, budget {}, limit {}",
        std::isnan(hit_rate) ? 0.0 : hit_rate, w.blocks_requested, w.refetched_blocks,
        w.evicted_blocks, pressure, occupancy, budget, limit_);

    std::string refusal;  // set when the limit could not be reached
    if (budget > limit_) {
      if (set_budget_blocks(*cache_, limit_)) {
        ++stats_.limit_shrinks;
        return record("limit", "the budget is above the memory limit; " + figures, budget, 0);
      }
      // As far as running sequences allow; compressing them is what can go on.
      const std::int64_t pinned = pinned_blocks(*cache_);
      if (pinned < budget) set_budget_blocks(*cache_, pinned);
      ++stats_.refused;
      refusal = fmt::format(
          "the budget is above the memory limit, but running sequences hold {} blocks; ", pinned);
      if constexpr (!kCompression) return record("refused", refusal + figures, budget, 0);
    }
    if constexpr (kCompression) {
      if (pool_ != nullptr && (pressure > options_.compress_above || !refusal.empty())) {
        const std::int64_t moved = compress(!refusal.empty());
        if (moved > 0) {
          stats_.compressed += moved;
          return record("compress",
                        fmt::format("{}pressure {:.3f} (compress above {}); {} cold sequences "
                                    "re-encoded; {}",
                                    refusal, pressure, options_.compress_above, moved, figures),
                        budget, moved);
        }
      }
      if (!refusal.empty()) return record("refused", refusal + figures, budget, 0);
    }
    const bool misses_from_capacity = w.refetched_blocks > 0;
    if (!std::isnan(hit_rate) && hit_rate < options_.grow_below_hit_rate && misses_from_capacity &&
        pressure < options_.grow_below_pressure && budget < limit_) {
      const std::int64_t grown = std::min<std::int64_t>(
          limit_, budget + std::max<std::int64_t>(
                               1, static_cast<std::int64_t>(std::ceil(
                                      options_.grow_step * static_cast<double>(budget)))));
      set_budget_blocks(*cache_, grown);
      ++stats_.grows;
      return record("grow",
                    fmt::format("hit rate under {} with capacity misses; {}",
                                options_.grow_below_hit_rate, figures),
                    budget, 0);
    }
    if constexpr (kCompression) {
      if (pool_ != nullptr && pressure < options_.decompress_below && !in_pool_.empty()) {
        const std::int64_t moved = decompress();
        if (moved > 0) {
          stats_.decompressed += moved;
          return record("decompress",
                        fmt::format("pressure {:.3f} < {}; {} sequences moved back; {}", pressure,
                                    options_.decompress_below, moved, figures),
                        budget, moved);
        }
      }
    }
    const std::int64_t occupied = snap.memory.used_blocks + snap.memory.cached_blocks;
    const bool settled = occupied <= last_occupied_;  // not still filling (warming up)
    last_occupied_ = occupied;
    if (w.evicted_blocks == 0 && w.evicted_sequences == 0 && settled &&
        occupancy < options_.shrink_below_occupancy && budget > options_.min_budget) {
      const auto target = std::max<std::int64_t>(
          options_.min_budget,
          static_cast<std::int64_t>(
              std::ceil(static_cast<double>(snap.memory.used_blocks + snap.memory.cached_blocks) /
                        options_.shrink_to_occupancy)));
      if (target < budget && set_budget_blocks(*cache_, target)) {
        ++stats_.shrinks;
        return record("shrink",
                      fmt::format("nothing evicted and under {} of the budget in use; {}",
                                  options_.shrink_below_occupancy, figures),
                      budget, 0);
      }
    }
    return nullptr;
  }

  // The last kLogCapacity decisions, oldest first.
  static constexpr std::size_t kLogCapacity = 4096;
  const std::deque<TunerDecision>& log() const { return log_; }
  const TunerStats& stats() const { return stats_; }
  std::int64_t requests() const { return requests_; }

 private:
  void check_options() const {
    const TunerOptions& o = options_;
    auto share = [](double x) { return std::isfinite(x) && x > 0 && x <= 1; };
    if (o.every < 1)
      detail::raise<InvalidArgument>("Tuner: every {} requests (allowed: 1 or more)", o.every);
    if (!share(o.grow_below_hit_rate) || !share(o.grow_below_pressure) ||
        !share(o.compress_above) || !share(o.decompress_below) || !share(o.relieved) ||
        !share(o.shrink_below_occupancy) || !share(o.shrink_to_occupancy) ||
        !std::isfinite(o.grow_step) || o.grow_step <= 0 || o.grow_step > 10) {
      detail::raise<InvalidArgument>(
          "Tuner: thresholds must be shares in (0, 1] and grow_step in (0, 10] (grow below hit "
          "rate {}, pressure {}, compress above {}, decompress below {}, relieved {}, shrink below "
          "{}, to {}, step {})",
          o.grow_below_hit_rate, o.grow_below_pressure, o.compress_above, o.decompress_below,
          o.relieved, o.shrink_below_occupancy, o.shrink_to_occupancy, o.grow_step);
    }
    if (!(o.decompress_below < o.relieved && o.relieved < o.compress_above)) {
      detail::raise<InvalidArgument>(
          "Tuner: decompress below {} < relieved {} < compress above {} is needed (hysteresis)",
          o.decompress_below, o.relieved, o.compress_above);
    }
    if (!(o.shrink_below_occupancy < o.shrink_to_occupancy)) {
      detail::raise<InvalidArgument>("Tuner: shrink below {} must be under shrink to {}",
                                     o.shrink_below_occupancy, o.shrink_to_occupancy);
    }
    if (o.min_budget < 1 || o.min_budget > cache_->num_blocks()) {
      detail::raise<InvalidArgument>("Tuner: min_budget {} blocks (allowed: 1 to {})", o.min_budget,
                                     cache_->num_blocks());
    }
  }

  double pressure_now() const {
    const MemoryStats m = cache_->memory();
    return static_cast<double>(m.used_blocks) / static_cast<double>(m.budget_blocks);
  }

  // Until the pressure is relieved, or (`to_limit`) the running sequences
  // fit under the memory limit.
  std::int64_t compress(bool to_limit) {
    std::int64_t moved = 0;
    for (SeqId seq : cold_()) {
      if (to_limit ? pinned_blocks(*cache_) <= limit_ : pressure_now() <= options_.relieved) break;
      if (!cache_->contains(seq) || cache_->sequence(seq).parked) continue;
      const std::optional<SeqId> now = reencode_sequence(*cache_, seq, *pool_);
      if (!now) break;  // the pool is full
      in_pool_.push_back(*now);
      ++moved;
      if (moved_) moved_(seq, *now, true);
    }
    return moved;
  }

  std::int64_t decompress() {
    std::int64_t moved = 0;
    while (!in_pool_.empty()) {
      const SeqId seq = in_pool_.front();
      if (!pool_->contains(seq) || pool_->sequence(seq).parked) {
        in_pool_.erase(in_pool_.begin());  // released (or parked) by the engine meanwhile
        continue;
      }
      const std::int64_t blocks =
          (pool_->sequence(seq).num_tokens + cache_->block_size() - 1) / cache_->block_size();
      const MemoryStats m = cache_->memory();
      if (static_cast<double>(m.used_blocks + blocks) / static_cast<double>(m.budget_blocks) >
          options_.relieved)
        break;
      const std::optional<SeqId> now = reencode_sequence(*pool_, seq, *cache_);
      if (!now) break;
      in_pool_.erase(in_pool_.begin());
      ++moved;
      if (moved_) moved_(seq, *now, false);
    }
    return moved;
  }

  const TunerDecision* record(std::string action, std::string reason, std::int64_t before,
                              std::int64_t moved) {
    if (log_.size() == kLogCapacity) log_.pop_front();
    log_.push_back(TunerDecision{requests_, std::move(action), std::move(reason), before,
                                 budget_blocks(*cache_), moved});
    return &log_.back();
  }

  Manager* cache_;
  TunerOptions options_;
  metrics::Monitor<Manager> monitor_;
  std::int64_t limit_;
  std::int64_t requests_ = 0;
  std::int64_t last_occupied_ = 0;  // used + cached blocks at the last decision
  TunerStats stats_;
  std::deque<TunerDecision> log_;
  Compressed* pool_ = nullptr;
  std::function<std::vector<SeqId>()> cold_;
  std::function<void(SeqId, SeqId, bool)> moved_;
  std::vector<SeqId> in_pool_;  // sequences the tuner moved, oldest first (their ids there)
};

}  // namespace kvcache
