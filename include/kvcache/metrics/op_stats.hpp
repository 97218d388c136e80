// Per-operation counters and latency histograms of a manager: how often each
// public call ran and how long it took, in fixed buckets (no allocation, one
// clock read at each end of a call). The manager records into an OpMeter;
// a metrics snapshot copies its OpStats.
#pragma once

#include <array>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kvcache {

enum class Op : std::uint8_t {
  kCreateSequence,
  kFork,
  kRelease,
  kPark,
  kUnpark,
  kTryReserve,
  kPrepareAppend,
  kAppend,
  kCommit,
  kGather,
};
inline constexpr std::size_t kNumOps = 10;

constexpr std::string_view op_name(Op op) {
  constexpr std::array<std::string_view, kNumOps> names{
      "create_sequence", "fork",           "release", "park",   "unpark",
      "try_reserve",     "prepare_append", "append",  "commit", "gather"};
  return names[static_cast<std::size_t>(op)];
}

// Latency buckets: upper bounds 256 ns * 2^i for i in [0, 20) (256 ns to
// about 134 ms), then one for everything slower.
inline constexpr std::size_t kLatencyBuckets = 21;
inline constexpr std::int64_t kFirstBucketNs = 256;
constexpr std::int64_t latency_bucket_bound_ns(std::size_t i) {
  return kFirstBucketNs << i;
}
constexpr std::size_t latency_bucket(std::int64_t ns) {
  if (ns <= kFirstBucketNs) return 0;
  const auto above = static_cast<std::uint64_t>((ns - 1) / kFirstBucketNs);  // >= 1
  const std::size_t i = static_cast<std::size_t>(std::bit_width(above));
  return i < kLatencyBuckets - 1 ? i : kLatencyBuckets - 1;
}

struct OpStats {
  std::int64_t count = 0;
  std::int64_t errors = 0;  // calls that threw
  std::int64_t total_ns = 0;
  std::array<std::int64_t, kLatencyBuckets> buckets{};  // calls per bucket (not cumulative)
};

// What a manager records. Timing is on by default and can be turned off
// (counting stays on).
class OpMeter {
 public:
  class Scope {
   public:
    Scope(OpMeter& meter, Op op) : meter_(meter), op_(op), exceptions_(std::uncaught_exceptions()) {
      if (meter_.timing_) start_ = std::chrono::steady_clock::now();
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    ~Scope() {
      OpStats& s = meter_.ops_[static_cast<std::size_t>(op_)];
      ++s.count;
      if (std::uncaught_exceptions() > exceptions_) ++s.errors;
      if (!meter_.timing_) return;
      const std::int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                  std::chrono::steady_clock::now() - start_)
                                  .count();
      s.total_ns += ns;
      ++s.buckets[latency_bucket(ns)];
    }

   private:
    OpMeter& meter_;
    Op op_;
    int exceptions_;
    std::chrono::steady_clock::time_point start_{};
  };

  Scope time(Op op) { return Scope(*this, op); }
  void set_timing(bool on) { timing_ = on; }
  bool timing() const { return timing_; }
  const std::array<OpStats, kNumOps>& ops() const { return ops_; }

 private:
  std::array<OpStats, kNumOps> ops_{};
  bool timing_ = true;
};

}  // namespace kvcache
