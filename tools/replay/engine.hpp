// The replay engine: a real KVCacheManager of policy `Policy` driven through a
// trace (see replay.hpp for the serving model). A template, instantiated once
// per policy by the registry (registry.cpp).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <queue>
#include <random>
#include <span>
#include <vector>

#include "kvcache/kvcache.hpp"
#include "kvcache/metrics/monitor.hpp"
#include "kvcache/metrics/policy_advisor.hpp"
#include "kvcache/metrics/recommend.hpp"
#include "kvcache/tier/host_tier.hpp"
#include "kvcache/tier/publish.hpp"
#include "kvcache/tier/shared_host_tier.hpp"
#include "kvcache/tuner/tuner.hpp"
#include "replay.hpp"

namespace kvcache::replay::engine {

// Tokens of a request's prompt (hash ids are bounded by the parser, block
// tokens by check_options: the product fits).
inline std::int64_t prompt_tokens(const TraceRequest& request, const ReplayOptions& options) {
  return static_cast<std::int64_t>(request.hash_ids.size()) * options.trace_block_tokens;
}

// Token ids of a request's prompt: block j holds tokens derived from its
// hash id, so equal hash ids give equal blocks.
inline void fill_tokens(const TraceRequest& request, std::int32_t block_tokens,
                        std::vector<std::int32_t>& tokens) {
  tokens.resize(request.hash_ids.size() * static_cast<std::size_t>(block_tokens));
  std::size_t next = 0;
  for (std::int64_t id : request.hash_ids) {
    const std::uint64_t base =
        static_cast<std::uint64_t>(id) * static_cast<std::uint64_t>(block_tokens);
    for (std::int32_t i = 0; i < block_tokens; ++i) {
      tokens[next++] =
          static_cast<std::int32_t>((base + static_cast<std::uint64_t>(i)) & 0x7fffffffu);
    }
  }
}

struct Running {
  double finish_ms;
  std::int64_t order;
  SeqId seq;
  bool operator>(const Running& other) const {
    return finish_ms != other.finish_ms ? finish_ms > other.finish_ms : order > other.order;
  }
};

template <class Manager>
void append_chunk(Manager& manager, SeqId seq, std::int64_t count,
                  std::span<const std::int32_t> ids, const Buffer& k, const Buffer& v,
                  std::int64_t& bytes) {
  if (count == 0) return;
  const std::vector<SeqId> seqs = {seq};
  const std::vector<std::int32_t> counts = {static_cast<std::int32_t>(count)};
  AppendBatch batch = manager.prepare_append(seqs, counts, ids);
  if (k) {
    const ModelShape& shape = manager.shape();
    for (std::int32_t layer = 0; layer < shape.num_layers; ++layer) {
      manager.append(
          layer, batch,
          TensorView::packed(k.data(), shape.dtype, count, shape.num_kv_heads, shape.head_dim),
          TensorView::packed(v.data(), shape.dtype, count, shape.num_kv_heads, shape.head_dim));
    }
    bytes += count * shape.bytes_per_token();
  }
  manager.commit(batch);
}

// Each engine's monitor, and the rules that fired from its windows.
template <class Manager>
class MetricsRun {
 public:
  static constexpr bool kAdvised = [] {
    for (std::string_view name : metrics::PolicyAdvisor::kCandidates)
      if (name == Manager::Eviction::kName) return Manager::Sharing::kEnabled;
    return false;
  }();

  MetricsRun(const ReplayOptions& options, std::vector<std::unique_ptr<Manager>>& managers)
      : options_(options), managers_(managers) {
    if (options.metrics_every <= 0) return;
    for (auto& m : managers) {
      monitors_.push_back(std::make_unique<metrics::Monitor<Manager>>(
          *m, static_cast<std::size_t>(options.metrics_window)));
      // A fixed policy the advisor can compare: shadows of the others.
      if constexpr (kAdvised) {
        advisors_.push_back(std::make_unique<metrics::PolicyAdvisor>(*m));
        metrics::attach_lookup_observer(*m, advisors_.back().get());
      }
    }
  }
  ~MetricsRun() {
    for (std::size_t e = 0; e < advisors_.size(); ++e)
      metrics::attach_lookup_observer(*managers_[e], nullptr);
  }

  // Before the request of trace index `index` (`index` requests were
  // served): a snapshot every metrics_every requests, and one at the end.
  void before_request(std::size_t index, ReplayResult& result, bool last = false) {
    const auto served = static_cast<std::int64_t>(index);
    if (monitors_.empty() || served == 0 || served == sampled_at_ ||
        (!last && served % options_.metrics_every != 0))
      return;
    sampled_at_ = served;
    for (std::size_t e = 0; e < monitors_.size(); ++e) {
      const metrics::MetricsSnapshot& snap = monitors_[e]->sample();
      ++result.snapshots;
      std::vector<metrics::Recommendation> recs = metrics::recommend(*monitors_[e]);
      if (e < advisors_.size()) {
        if (auto advice = advisors_[e]->recommendation()) recs.push_back(std::move(*advice));
      }
      for (const auto& r : recs) {
        auto it = std::find_if(
            result.recommendations.begin(), result.recommendations.end(),
            [&](const FiredRule& f) { return f.engine == e && f.last.rule == r.rule; });
        if (it == result.recommendations.end()) {
          result.recommendations.push_back(FiredRule{e, 0, served, r});
          it = result.recommendations.end() - 1;
        }
        ++it->windows;
        it->last = r;
      }
      if (options_.on_snapshot) options_.on_snapshot(e, snap, recs);
    }
  }

 private:
  const ReplayOptions& options_;
  std::vector<std::unique_ptr<Manager>>& managers_;
  std::vector<std::unique_ptr<metrics::Monitor<Manager>>> monitors_;
  std::vector<std::unique_ptr<metrics::PolicyAdvisor>> advisors_;
  std::int64_t sampled_at_ = 0;
};

// The limit a schedule sets at request `index` of `total` (a share of `capacity`).
inline std::int64_t scheduled_limit(const std::vector<std::pair<double, double>>& schedule,
                                    std::size_t index, std::size_t total, std::int64_t capacity) {
  double share = 1.0;
  for (const auto& [from, limit] : schedule)
    if (static_cast<double>(index) >= from * static_cast<double>(total)) share = limit;
  return std::clamp<std::int64_t>(
      static_cast<std::int64_t>(std::floor(share * static_cast<double>(capacity))), 1, capacity);
}

// Called with each request's index in the trace before it is replayed (the
// offline optimum follows the trace with it).
using RequestHook = std::function<void(std::int64_t)>;

// Which engine serves a request.
inline std::size_t route(const TraceRequest& request, std::size_t index,
                         const ReplayOptions& options) {
  const auto engines = static_cast<std::size_t>(std::max(1, options.engines));
  if (!options.route_by_prefix || request.hash_ids.empty()) return index % engines;
  const std::uint64_t first = static_cast<std::uint64_t>(request.hash_ids.front());
  return static_cast<std::size_t>((first * 0x9e3779b97f4a7c15ULL) >> 32) % engines;
}

template <class Policy, class MakeBackend>
ReplayResult run_with(const Trace& trace, const ReplayOptions& options, MakeBackend make_backend,
                      const RequestHook& on_request = {}) {
  using Backend = decltype(make_backend());
  CacheConfig config;
  config.shape = options.model.value_or(ModelShape::gqa(1, 1, 8, DType::kF16));
  config.block_size = options.block_size;
  config.num_blocks =
      options.capacity_blocks > 0 ? options.capacity_blocks : unlimited_capacity(trace, options);
  std::int64_t widest = 1;
  for (const auto& request : trace.requests) {
    widest = std::max({widest, prompt_tokens(request, options), request.output_length});
  }
  config.max_batch_tokens = static_cast<std::int32_t>(widest);
  config.max_batch_sequences = 1;
  using Manager = KVCacheManager<Policy, Backend>;
  const auto engines = static_cast<std::size_t>(std::max(1, options.engines));
  // The tiers first: they outlive the managers that offload into them.
  const std::int64_t tier_block_bytes =
      Backend::kHoldsData ? Policy::codec::block_bytes(config.shape, config.block_size) : 0;
  std::unique_ptr<SharedHostTier<>> own_shared;
  BlockStore* shared = options.shared_store;
  if (shared == nullptr && options.shared_tier_blocks > 0) {
    own_shared = std::make_unique<SharedHostTier<>>(
        tier_block_bytes, options.shared_tier_blocks,
        make_backend().allocate_host(
            static_cast<std::size_t>(tier_block_bytes * options.shared_tier_blocks)));
    shared = own_shared.get();
  }
  if (shared != nullptr && shared->block_bytes() != tier_block_bytes) {
    detail::raise<InvalidArgument>(
        "replay: the shared tier holds blocks of {} bytes; this replay's are {} bytes",
        shared->block_bytes(), tier_block_bytes);
  }
  std::vector<std::unique_ptr<HostTier<>>> tiers(engines);
  std::vector<std::unique_ptr<Manager>> managers;
  for (std::size_t e = 0; e < engines; ++e) {
    Backend backend = make_backend();
    if (options.host_tier_blocks > 0) {
      tiers[e] = std::make_unique<HostTier<>>(tier_block_bytes, options.host_tier_blocks,
                                              backend.allocate_host(static_cast<std::size_t>(
                                                  tier_block_bytes * options.host_tier_blocks)));
      if (shared != nullptr) tiers[e]->set_lower(shared);
    }
    managers.push_back(std::make_unique<Manager>(config, std::move(backend)));
    if (tiers[e]) {
      managers[e]->attach_tier(*tiers[e]);
    } else if (shared != nullptr) {
      managers[e]->attach_tier(*shared);
    }
  }

  // With a model: one buffer of random K and V rows per engine, appended for
  // every chunk.
  std::vector<Buffer> ks(engines), vs(engines);
  if (options.model) {
    const auto bytes =
        static_cast<std::size_t>(widest * config.shape.kv_width() * dtype_size(config.shape.dtype));
    std::vector<std::byte> host(bytes);
    std::mt19937_64 rng(7);
    for (std::size_t i = 0; i + 8 <= bytes; i += 8) {
      const std::uint64_t bits =
          rng() & 0x3bff3bff3bff3bffULL;  // finite fp16 / bf16 / fp32 bit patterns
      std::memcpy(host.data() + i, &bits, 8);
    }
    for (std::size_t e = 0; e < engines; ++e) {
      ks[e] = managers[e]->backend().allocate(bytes);
      vs[e] = managers[e]->backend().allocate(bytes);
      managers[e]->backend().copy_to_backend(ks[e].data(), host.data(), bytes);
      managers[e]->backend().copy_to_backend(vs[e].data(), host.data(), bytes);
    }
  }

  ReplayResult result;
  result.policy = options.policy;
  result.capacity_blocks = config.num_blocks;
  MetricsRun<Manager> metrics_run(options, managers);
  std::optional<Tuner<Manager>> tuner;
  TuneResult tuned;
  if (options.tune) {
    if constexpr (Manager::Allocation::kContiguous) {
      detail::raise<InvalidArgument>("replay: --tune needs paged allocation");
    } else {
      tuner.emplace(*managers[0], TunerOptions{.every = options.tune_every});
      tuned.min_budget = tuned.max_budget = config.num_blocks;
    }
  }
  const auto start = std::chrono::steady_clock::now();
  using Queue = std::priority_queue<Running, std::vector<Running>, std::greater<>>;
  std::vector<Queue> running(engines);
  std::vector<std::int32_t> tokens;
  std::int64_t order = 0;
  for (std::size_t index = 0; index < trace.requests.size(); ++index) {
    const TraceRequest& request = trace.requests[index];
    if (on_request) on_request(static_cast<std::int64_t>(index));
    metrics_run.before_request(index, result);
    if (tuner) {
      const std::int64_t limit =
          scheduled_limit(options.limit_schedule, index, trace.requests.size(), config.num_blocks);
      if (limit != tuner->memory_limit()) {
        tuner->set_memory_limit(limit);
        tuner->decide();  // memory taken back: at once
      }
    }
    const auto now = static_cast<double>(request.timestamp_ms);
    for (std::size_t e = 0; e < engines; ++e) {
      while (!running[e].empty() && running[e].top().finish_ms <= now) {
        managers[e]->release(running[e].top().seq);
        running[e].pop();
      }
    }
    const std::size_t e = route(request, index, options);
    Manager& manager = *managers[e];
    ++result.requests;
    fill_tokens(request, options.trace_block_tokens, tokens);
    const SeqId seq = manager.create_sequence(tokens);
    const std::int64_t cached = manager.sequence(seq).num_tokens;
    const std::int64_t uncached = static_cast<std::int64_t>(tokens.size()) - cached;
    if (manager.try_reserve(seq, uncached + request.output_length) != ReserveStatus::kOk) {
      ++result.rejected;
      manager.release(seq);
      continue;
    }
    // The prompt's ids are known since create_sequence: no need to pass them again.
    append_chunk(manager, seq, uncached, {}, ks[e], vs[e], result.bytes_appended);
    if (shared != nullptr) {
      publish_prefix(manager, seq);
      // The next request comes later in the trace's time than a write takes:
      // what was published is readable by then (a Redis tier's queue sent).
      shared->settle();
    }
    append_chunk(manager, seq, request.output_length, {}, ks[e], vs[e], result.bytes_appended);
    const std::int64_t free = manager.num_free_blocks();
    result.peak_occupied_blocks = std::max(result.peak_occupied_blocks, config.num_blocks - free);
    result.peak_used_blocks =
        std::max(result.peak_used_blocks, config.num_blocks - free - manager.num_cached_blocks());
    if (options.decode_ms_per_token <= 0) {
      manager.release(seq);
    } else {
      running[e].push(
          {now + static_cast<double>(request.output_length) * options.decode_ms_per_token, order++,
           seq});
    }
    if (tuner) {
      tuner->observe();
      const std::int64_t budget = budget_blocks(manager);
      const std::int64_t over = budget - tuner->memory_limit();
      tuned.requests_over_limit += over > 0 ? 1 : 0;
      tuned.peak_over_limit = std::max(tuned.peak_over_limit, over);
      tuned.min_budget = std::min(tuned.min_budget, budget);
      tuned.max_budget = std::max(tuned.max_budget, budget);
    }
  }
  metrics_run.before_request(trace.requests.size(), result, /*last=*/true);
  for (std::size_t e = 0; e < engines; ++e) {
    while (!running[e].empty()) {
      managers[e]->release(running[e].top().seq);
      running[e].pop();
    }
    managers[e]->backend().synchronize();
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (std::size_t e = 0; e < engines; ++e) {
    const CacheStats stats = managers[e]->stats();
    result.blocks_requested += stats.prefix_blocks_requested;
    result.blocks_hit += stats.prefix_blocks_hit + stats.tier_hit_blocks;
    result.blocks_hit_tier += stats.tier_hit_blocks;
    result.evicted_blocks += stats.evicted_blocks;
    result.tier_offloads += stats.tier_offloads;
    result.tier_bytes_offloaded += stats.tier_bytes_offloaded;
    result.tier_bytes_onboarded += stats.tier_bytes_onboarded;
    result.published += stats.tier_published;
    if (tiers[e]) result.tier_evictions += tiers[e]->stats().evictions;
    if (tiers[e] || shared != nullptr) managers[e]->detach_tier();
  }
  if (shared != nullptr) result.tier_evictions += shared->stats().evictions;
  if (tuner) {
    const TunerStats& t = tuner->stats();
    tuned.decisions = t.decisions;
    tuned.grows = t.grows;
    tuned.shrinks = t.shrinks;
    tuned.limit_shrinks = t.limit_shrinks;
    tuned.refused = t.refused;
    tuned.final_budget = budget_blocks(*managers[0]);
    for (const TunerDecision& d : tuner->log()) {
      tuned.log.push_back(fmt::format("after {} requests: {} {} -> {} blocks: {}", d.request,
                                      d.action, d.budget_before, d.budget_after, d.reason));
    }
    result.tuned = std::move(tuned);
  }
  return result;
}

// The replay of `trace` under `Policy`, on the backend the options name
// (metadata only without a model).
template <class Policy>
ReplayResult run_policy(const Trace& trace, const ReplayOptions& options,
                        const RequestHook& on_request = {}) {
  if (!options.model) {
    return run_with<Policy>(
        trace, options, [] { return MetadataBackend(); }, on_request);
  }
  if (options.backend == "cuda")
    return run_with<Policy>(
        trace, options, [] { return CudaBackend(0); }, on_request);
  if (options.backend == "cpu")
    return run_with<Policy>(
        trace, options, [] { return HostBackend(); }, on_request);
  detail::raise<InvalidArgument>("replay: backend \"{}\" is not cpu or cuda", options.backend);
}

}  // namespace kvcache::replay::engine
