// Which eviction policy would have hit most, for an engine that keeps a
// fixed policy and prefers to decide itself: shadow caches (metadata-only
// replicas on a hashed sample of the keys, policy/shadow_cache.hpp) of LRU,
// LFU-aging, S3-FIFO and reuse-lru, fed every prompt lookup of the cache.
//
//   kvcache::metrics::PolicyAdvisor advisor(cache);
//   kvcache::metrics::attach_lookup_observer(cache, &advisor);
//   ... if (auto r = advisor.recommendation()) log(r->action);
//   // "switch to s3-fifo: it would have hit 12.3% more over the last window"
//
// A window closes every `window_blocks` sampled blocks asked for; the
// recommendation reads the last closed one and fires when another policy's
// shadow hit more than `min_gain` (relative) above the cache's own policy's.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "kvcache/detail/manager_access.hpp"
#include "kvcache/error.hpp"
#include "kvcache/metrics/recommend.hpp"
#include "kvcache/policy/lfu_aging.hpp"
#include "kvcache/policy/lru.hpp"
#include "kvcache/policy/reuse_lru.hpp"
#include "kvcache/policy/s3fifo.hpp"
#include "kvcache/policy/shadow_cache.hpp"

namespace kvcache::metrics {

class PolicyAdvisor final : public LookupObserver {
 public:
  static constexpr std::array<std::string_view, 4> kCandidates{"lru", "lfu-aging", "s3-fifo",
                                                               "reuse-lru"};

  // A cache of `capacity_blocks` running `current` (one of kCandidates).
  PolicyAdvisor(std::int64_t capacity_blocks, std::string_view current,
                std::int64_t shadow_blocks = 512, double min_gain = 0.02)
      : sampling_(ShadowSampling::for_capacity(capacity_blocks, shadow_blocks)),
        window_blocks_(std::max<std::int64_t>(1024, 2 * sampling_.scaled(capacity_blocks))),
        min_gain_(min_gain) {
    current_ = kCandidates.size();
    for (std::size_t i = 0; i < kCandidates.size(); ++i)
      if (kCandidates[i] == current) current_ = i;
    if (current_ == kCandidates.size()) {
      detail::raise<InvalidArgument>(
          "PolicyAdvisor: the cache's policy \"{}\" is not one it can compare (allowed: lru, "
          "lfu-aging, s3-fifo, reuse-lru)",
          current);
    }
    const std::int64_t blocks = sampling_.scaled(capacity_blocks);
    shadows_.push_back(std::make_unique<Shadow<LruEviction>>(blocks));
    shadows_.push_back(std::make_unique<Shadow<LfuAgingEviction>>(blocks));
    shadows_.push_back(std::make_unique<Shadow<S3FifoEviction>>(blocks));
    shadows_.push_back(std::make_unique<Shadow<ReuseLruEviction>>(blocks));
  }
  // For `m`, whose eviction policy names itself.
  template <class Manager>
  explicit PolicyAdvisor(const Manager& m, std::int64_t shadow_blocks = 512, double min_gain = 0.02)
      : PolicyAdvisor(m.num_blocks(), Manager::Eviction::kName, shadow_blocks, min_gain) {}

  void on_lookup(std::span<const EvictionKey> chain) override {
    sampling_.filter(chain, sampled_);
    if (sampled_.empty()) return;
    for (auto& shadow : shadows_)
      shadow->lookup(sampled_);
    requested_ += static_cast<std::int64_t>(sampled_.size());
    if (requested_ - window_start_ >= window_blocks_) {
      for (std::size_t i = 0; i < shadows_.size(); ++i) {
        last_hits_[i] = shadows_[i]->hits() - start_hits_[i];
        start_hits_[i] = shadows_[i]->hits();
      }
      last_requested_ = requested_ - window_start_;
      window_start_ = requested_;
      ++windows_;
    }
  }

  // Each candidate's hit rate over the last closed window (NaN before one).
  double window_hit_rate(std::size_t candidate) const {
    return WindowFigures::ratio(last_hits_[candidate], last_requested_);
  }
  std::int64_t windows() const { return windows_; }
  std::size_t current() const { return current_; }
  const ShadowSampling& sampling() const { return sampling_; }

  std::optional<Recommendation> recommendation() const {
    if (windows_ == 0) return std::nullopt;
    std::size_t best = current_;
    for (std::size_t i = 0; i < kCandidates.size(); ++i)
      if (last_hits_[i] > last_hits_[best]) best = i;
    const double gain =
        last_hits_[current_] == 0
            ? (last_hits_[best] > 0 ? 1.0 : 0.0)
            : static_cast<double>(last_hits_[best]) / static_cast<double>(last_hits_[current_]) -
                  1.0;
    if (best == current_ || gain <= min_gain_) return std::nullopt;
    std::string figures;
    for (std::size_t i = 0; i < kCandidates.size(); ++i) {
      figures += fmt::format("{}{} {:.2f}%", i == 0 ? "" : ", ", kCandidates[i],
                             100.0 * window_hit_rate(i));
    }
    return Recommendation{
        "eviction-policy",
        fmt::format("over the last window ({} sampled prompt blocks, {:.4f} of the keys), shadow "
                    "caches of this one's size hit: {}; this cache runs {}",
                    last_requested_, sampling_.rate(), figures, kCandidates[current_]),
        fmt::format("switch to {}: it would have hit {:.1f}% more over the last window",
                    kCandidates[best], 100.0 * gain),
        1.0 + gain,
        1.0 + min_gain_,
        static_cast<std::int64_t>(best)};
  }

 private:
  struct ShadowBase {
    virtual ~ShadowBase() = default;
    virtual void lookup(std::span<const EvictionKey> keys) = 0;
    virtual std::int64_t hits() const = 0;
  };
  template <class Policy>
  struct Shadow final : ShadowBase {
    explicit Shadow(std::int64_t blocks) : cache(blocks) {}
    void lookup(std::span<const EvictionKey> keys) override { cache.lookup(keys); }
    std::int64_t hits() const override { return cache.hits(); }
    ShadowCache<Policy> cache;
  };

  ShadowSampling sampling_;
  std::int64_t window_blocks_;
  double min_gain_;
  std::size_t current_ = 0;
  std::vector<std::unique_ptr<ShadowBase>> shadows_;
  std::vector<EvictionKey> sampled_;
  std::int64_t requested_ = 0, window_start_ = 0, last_requested_ = 0, windows_ = 0;
  std::array<std::int64_t, kCandidates.size()> start_hits_{}, last_hits_{};
};

// Every prompt lookup of `m` goes to `observer` (nullptr: none); it must
// outlive the attachment.
template <class Manager>
void attach_lookup_observer(Manager& m, LookupObserver* observer) {
  detail::ManagerAccess::ledger(m).set_lookup_observer(observer);
}

}  // namespace kvcache::metrics
