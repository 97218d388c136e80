// The eviction policy chosen by measurement. No fixed policy wins
// everywhere: on a conversation trace reuse-weighted LRU leads at every
// capacity, while on a workload whose working set nearly fits, recency alone
// is right and the reuse bonus costs hits. AdaptiveEviction runs
// ReuseLruEviction live and tunes how much one earlier use is worth (its
// bonus weight: 0 is LRU, 1 reuse-lru, more favours what came back more),
// choosing the weight that its shadow caches say would have hit most.
//
// Shadows (policy/reuse_lru_shadows.hpp): one metadata-only replica per
// candidate weight, fed the same prompt lookups as the cache (the ledger
// hands every lookup's whole chain of keys to on_lookup), on a hashed sample
// of the keys (policy/shadow_cache.hpp's ShadowSampling) sized to about
// kShadowBlocks blocks a replica. The replicas share one key index and what
// reuse-lru knows of a key (its use count and last release, the same in all
// of them), so a sampled key costs one probe and one queue move, plus a few
// compares a replica. They follow the live cache where their own sample would mislead
// them: they hold the sampled share of what the cache can keep (its entries
// evictable when it evicts: blocks in use by running requests take room the
// replicas do not model otherwise), and use its measured reuse interval, in
// their clock. Every window (twice a replica's capacity in sampled blocks
// asked for) each replica's hits are added to its score, halved first; the
// live weight moves to the best candidate only when its lead over the current
// weight's replica is both kMargin of that score and above the counts' noise
// (one standard deviation): no flapping between near-equal weights. A switch
// keeps every cached entry and what the live policy knows of it: only the
// choice of the next victims changes.
//
// Memory: the live policy's, plus the shadows' slots: about (candidates +
// 8) x kShadowBlocks keys (those resident in some replica, and the ghosts of
// 8 evictions a block whose use counts are remembered), at most 112 bytes
// each with their index: under 2 MB, bounded by the candidates' count, not by the
// cache's size.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "kvcache/policy/concepts.hpp"
#include "kvcache/policy/reuse_lru.hpp"
#include "kvcache/policy/reuse_lru_shadows.hpp"
#include "kvcache/policy/shadow_cache.hpp"

namespace kvcache {

class AdaptiveEviction {
 public:
  static constexpr std::string_view kName = "adaptive";
  static constexpr bool kRetains = true;
  static constexpr std::array<double, 5> kWeights{0.0, 0.5, 1.0, 2.0, 4.0};
  static constexpr std::size_t kStart = 2;  // reuse-lru's weight, 1
  static constexpr std::int64_t kShadowBlocks = 1024;
  static constexpr double kMargin = 0.02;  // a relative lead needed to switch ...
  static constexpr double kNoise = 1.0;    // ... and this many standard deviations

  explicit AdaptiveEviction(std::int64_t capacity_blocks)
      : live_(capacity_blocks),
        sampling_(ShadowSampling::for_capacity(capacity_blocks, kShadowBlocks)),
        window_blocks_(std::max<std::int64_t>(1024, 2 * sampling_.scaled(capacity_blocks))),
        full_capacity_(sampling_.scaled(capacity_blocks)),
        shadows_(kWeights, full_capacity_) {
    live_.set_bonus_weight(kWeights[kStart]);
  }

  // ---- EvictionPolicy: the live cache's entries ----------------------------
  void on_access(EvictionKey key) { live_.on_access(key); }
  void insert(EvictionKey key) { live_.insert(key); }
  void erase(EvictionKey key) { live_.erase(key); }
  void forget(EvictionKey key) { live_.forget(key); }
  std::optional<EvictionKey> pop_victim() {
    // What the cache can keep is its blocks less those in use: the entries
    // evictable when it has to evict (a running mean).
    const auto evictable = static_cast<double>(live_.size());
    kept_ = kept_ < 0 ? evictable : kept_ + (evictable - kept_) / 256.0;
    return live_.pop_victim();
  }
  std::int64_t size() const { return live_.size(); }

  // ---- what the shadows are fed: every prompt lookup's chain of keys -------
  void on_lookup(std::span<const EvictionKey> chain) {
    sampling_.filter(chain, sampled_);
    if (sampled_.empty()) return;
    // The replicas follow the live cache's measured rhythm (their own sample
    // is too thin to learn it), in their clock: released entries, of which
    // they see the sampled share.
    const auto interval = std::max<std::int64_t>(
        1, std::llround(sampling_.rate() * static_cast<double>(live_.interval())));
    // And they hold what it can keep: its blocks less those in use.
    const std::int64_t capacity =
        kept_ < 0 ? full_capacity_ : sampling_.scaled(static_cast<std::int64_t>(kept_));
    if (shadows_.interval() != interval) shadows_.set_interval(interval);
    shadows_.set_capacity(capacity);
    shadows_.lookup(sampled_);
    window_requested_ += static_cast<std::int64_t>(sampled_.size());
    if (window_requested_ >= window_blocks_) decide();
  }

  // The live weight and its index in kWeights.
  double weight() const { return kWeights[current_]; }
  std::size_t current() const { return current_; }
  std::int64_t switches() const { return switches_; }
  std::int64_t decisions() const { return decisions_; }
  // Decayed hits of each candidate's shadow (their ratio is what decides).
  const std::array<double, kWeights.size()>& scores() const { return scores_; }
  const ReuseLruShadows& shadows() const { return shadows_; }
  const ShadowSampling& sampling() const { return sampling_; }
  const ReuseLruEviction& live() const { return live_; }

 private:
  void decide() {
    std::size_t best = current_;
    for (std::size_t i = 0; i < kWeights.size(); ++i) {
      const std::int64_t hits = shadows_.hits(i);
      scores_[i] = 0.5 * scores_[i] + static_cast<double>(hits - window_start_hits_[i]);
      window_start_hits_[i] = hits;
    }
    for (std::size_t i = 0; i < kWeights.size(); ++i)
      if (scores_[i] > scores_[best]) best = i;
    ++decisions_;
    window_requested_ = 0;
    // A lead worth a switch: kMargin of the current score, and beyond the
    // counts' own noise (hits are counts: about the square root of their sum).
    const double lead = scores_[best] - scores_[current_];
    if (best != current_ && lead > kMargin * scores_[current_] &&
        lead > kNoise * std::sqrt(scores_[best] + scores_[current_])) {
      current_ = best;
      live_.set_bonus_weight(kWeights[best]);
      ++switches_;
    }
  }

  ReuseLruEviction live_;
  ShadowSampling sampling_;
  std::int64_t window_blocks_;
  std::int64_t full_capacity_;  // a replica's blocks before the cache first evicts
  double kept_ = -1;            // the mean evictable entries at an eviction (-1: none yet)
  ReuseLruShadows shadows_;     // one replica per candidate weight
  std::vector<EvictionKey> sampled_;
  std::array<double, kWeights.size()> scores_{};
  std::array<std::int64_t, kWeights.size()> window_start_hits_{};
  std::int64_t window_requested_ = 0;
  std::size_t current_ = kStart;
  std::int64_t switches_ = 0;
  std::int64_t decisions_ = 0;
};

static_assert(EvictionPolicy<AdaptiveEviction>);

}  // namespace kvcache
