#include "serve.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <unordered_set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "kvcache/checkpoint/checkpoint.hpp"
#include "kvcache/kvcache.hpp"
#include "kvcache/metrics/monitor.hpp"

namespace kvcache::demo {

// ---- the workload ------------------------------------------------------------

namespace {

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void check_option(std::int64_t value, std::int64_t low, std::int64_t high, const char* name) {
  if (value < low || value > high)
    throw InvalidArgument(fmt::format("{} {}: allowed {} to {}", name, value, low, high));
}

}  // namespace

std::int64_t Workload::max_tokens() const {
  std::int64_t most = 0;
  for (const Request& r : requests)
    most =
        std::max<std::int64_t>(most, static_cast<std::int64_t>(r.prompt.size()) + r.output_tokens);
  return most;
}

std::int64_t Workload::prompt_tokens() const {
  std::int64_t total = 0;
  for (const Request& r : requests)
    total += static_cast<std::int64_t>(r.prompt.size());
  return total;
}

std::int64_t Workload::output_tokens() const {
  std::int64_t total = 0;
  for (const Request& r : requests)
    total += r.output_tokens;
  return total;
}

Workload make_workload(const replay::Trace& trace, const WorkloadOptions& options,
                       const ModelConfig& model) {
  check_option(options.requests, 1, 100000, "--requests");
  check_option(options.prompt_scale, 1, 512, "--prompt-scale");
  check_option(options.output_scale, 1, 1 << 20, "--output-scale");
  check_option(options.max_output, 1, 4096, "--max-output");
  if (512 % options.prompt_scale != 0)
    throw InvalidArgument(
        fmt::format("--prompt-scale {}: must divide 512 (a hash block becomes 512 / scale tokens)",
                    options.prompt_scale));
  const std::int64_t block = 512 / options.prompt_scale;
  Workload w;
  w.source = trace.source;
  w.options = options;
  for (const replay::TraceRequest& t : trace.requests) {
    if (static_cast<std::int32_t>(w.requests.size()) == options.requests) break;
    Request r;
    r.line = t.line;
    // Prompt: input_length / scale tokens, block i made of hash id i's tokens.
    const std::int64_t length = std::max<std::int64_t>(1, t.input_length / options.prompt_scale);
    for (std::int64_t p = 0; p < length; ++p) {
      const auto i = static_cast<std::size_t>(p / block);
      // Past the listed ids (a trace may list fewer): the previous id's run continues.
      const std::int64_t id = t.hash_ids.empty()      ? -1
                              : i < t.hash_ids.size() ? t.hash_ids[i]
                                                      : t.hash_ids.back() + 1000003 * (p / block);
      const std::uint64_t h =
          mix(static_cast<std::uint64_t>(id) * 1024 + static_cast<std::uint64_t>(p % block));
      r.prompt.push_back(
          static_cast<std::int32_t>(h % static_cast<std::uint64_t>(model.vocab_size)));
    }
    const std::int64_t out = t.output_length / options.output_scale;
    r.output_tokens =
        static_cast<std::int32_t>(std::clamp<std::int64_t>(out, 1, options.max_output));
    // A checkpoint's context: keep the whole request inside it.
    const std::int64_t room = model.max_seq_len - r.output_tokens;
    if (room < 1) r.output_tokens = std::max(1, model.max_seq_len / 2);
    const std::int64_t keep = std::min<std::int64_t>(static_cast<std::int64_t>(r.prompt.size()),
                                                     model.max_seq_len - r.output_tokens);
    r.prompt.resize(static_cast<std::size_t>(std::max<std::int64_t>(1, keep)));
    w.requests.push_back(std::move(r));
  }
  if (w.requests.empty()) throw InvalidArgument("the trace holds no request");
  return w;
}

// ---- one run -----------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Live {
  std::size_t request = 0;
  SeqId seq = 0;
  std::int64_t computed = 0;  // positions whose K/V the cache holds
  std::int32_t produced = 0;  // outputs so far
  bool parked = false;
};

// The run's own state, saved beside the cache in a checkpoint: what each
// request has produced and where it stands (waiting, running, set aside),
// and the counters. Sequence ids are the cache's at the time of the save.
struct RunState {
  std::int64_t done = 0, steps = 0, computed = 0, recomputed = 0, preemptions = 0;
  std::vector<std::size_t> waiting;
  std::vector<Live> live;
  std::vector<std::optional<Live>> parked;
  std::vector<std::vector<std::int32_t>> tokens;
};

void put(std::vector<std::byte>& out, std::int64_t v) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<std::byte>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xffu));
}

class Cursor {
 public:
  explicit Cursor(std::span<const std::byte> in) : in_(in) {}
  std::int64_t get() {
    if (at_ + 8 > in_.size()) throw Error("the checkpoint's run state is cut short");
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v |= static_cast<std::uint64_t>(in_[at_ + static_cast<std::size_t>(i)]) << (8 * i);
    at_ += 8;
    return static_cast<std::int64_t>(v);
  }
  std::int64_t count(std::int64_t most) {
    const std::int64_t n = get();
    if (n < 0 || n > most) throw Error(fmt::format("the checkpoint's run state: a count of {}", n));
    return n;
  }

 private:
  std::span<const std::byte> in_;
  std::size_t at_ = 0;
};

void put_live(std::vector<std::byte>& out, const Live& l) {
  put(out, static_cast<std::int64_t>(l.request));
  put(out, static_cast<std::int64_t>(l.seq));
  put(out, l.computed);
  put(out, l.produced);
  put(out, l.parked ? 1 : 0);
}
Live get_live(Cursor& in, std::size_t requests) {
  Live l;
  l.request = static_cast<std::size_t>(in.count(static_cast<std::int64_t>(requests) - 1));
  l.seq = static_cast<SeqId>(in.get());
  l.computed = in.get();
  l.produced = static_cast<std::int32_t>(in.count(1 << 30));
  l.parked = in.get() != 0;
  return l;
}

std::vector<std::byte> encode(const RunState& s) {
  std::vector<std::byte> out;
  for (std::int64_t v : {s.done, s.steps, s.computed, s.recomputed, s.preemptions})
    put(out, v);
  put(out, static_cast<std::int64_t>(s.waiting.size()));
  for (std::size_t r : s.waiting)
    put(out, static_cast<std::int64_t>(r));
  put(out, static_cast<std::int64_t>(s.live.size()));
  for (const Live& l : s.live)
    put_live(out, l);
  put(out, static_cast<std::int64_t>(s.parked.size()));
  for (const auto& p : s.parked) {
    put(out, p ? 1 : 0);
    if (p) put_live(out, *p);
  }
  put(out, static_cast<std::int64_t>(s.tokens.size()));
  for (const auto& t : s.tokens) {
    put(out, static_cast<std::int64_t>(t.size()));
    for (std::int32_t v : t)
      put(out, v);
  }
  return out;
}

RunState decode(std::span<const std::byte> in, std::size_t requests) {
  Cursor c(in);
  RunState s;
  s.done = c.get();
  s.steps = c.get();
  s.computed = c.get();
  s.recomputed = c.get();
  s.preemptions = c.get();
  const auto n = static_cast<std::int64_t>(requests);
  for (std::int64_t i = c.count(n); i-- > 0;)
    s.waiting.push_back(static_cast<std::size_t>(c.count(n - 1)));
  for (std::int64_t i = c.count(n); i-- > 0;)
    s.live.push_back(get_live(c, requests));
  if (c.count(n) != n) throw Error("the checkpoint's run state is for another workload");
  s.parked.resize(requests);
  for (auto& p : s.parked)
    if (c.get() != 0) p = get_live(c, requests);
  if (c.count(n) != n) throw Error("the checkpoint's run state is for another workload");
  s.tokens.resize(requests);
  for (auto& t : s.tokens) {
    t.resize(static_cast<std::size_t>(c.count(1 << 30)));
    for (auto& v : t)
      v = static_cast<std::int32_t>(c.get());
  }
  return s;
}

template <class T>
void to_dtype(const float* in, std::size_t n, T* out) {
  if constexpr (std::is_same_v<T, float>) {
    std::copy(in, in + n, out);
  } else {
    for (std::size_t i = 0; i < n; ++i)
      out[i] = float_to_half_bits(in[i]);
  }
}

template <class T>
float from_dtype(const T& x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    return half_bits_to_float(x);
  }
}

template <class Manager>
std::unique_ptr<Manager> make_manager(const CacheConfig& config) {
  if constexpr (std::is_same_v<typename Manager::backend_type, CudaBackend>)
    return std::make_unique<Manager>(config, CudaBackend(0));
  else
    return std::make_unique<Manager>(config);
}

// Backend memory for `bytes` that a host pointer stands for on the CPU
// backend (no copy), or a device buffer filled and read by copies.
template <class Backend>
class Staged {
 public:
  static constexpr bool kCopies = Backend::kDeviceMemory;
  Staged(Backend& backend, std::size_t bytes) : backend_(backend) {
    if constexpr (kCopies) buffer_ = backend.allocate(bytes);
  }
  const void* upload(const void* host, std::size_t bytes) {
    if constexpr (!kCopies) return host;
    backend_.copy_to_backend(buffer_.data(), host, bytes);
    return buffer_.data();
  }
  void* target(void* host) { return kCopies ? buffer_.data() : host; }
  void download(void* host, std::size_t bytes) {
    if constexpr (kCopies) backend_.copy_to_host(host, buffer_.data(), bytes);
  }

 private:
  Backend& backend_;
  Buffer buffer_;
};

template <class Policy, class T, class Backend = HostBackend>
RunResult serve(const ConfigInfo& info, CacheConfig config, const Model& model, const Workload& w,
                const ServeOptions& options, const Outputs* reference) {
  using Manager = KVCacheManager<Policy, Backend>;
  // Plain pages are read in place through the page table (by the model, or
  // by PagedAttention on the cache's backend); compressed ones through
  // PagedAttention, which decodes them as it reads (or, with
  // gather_attention, decoded by the codec's gather into a scratch copy).
  constexpr bool kPages = Policy::codec::kKind == CodecKind::kPlain;
  const bool kernel_attention =
      kPages ? options.kernel_attention || Backend::kDeviceMemory : !options.gather_attention;
  const ModelConfig& mc = model.config();
  const std::int32_t kvd = mc.kv_dim(), hd = mc.head_dim(), heads = mc.num_kv_heads;
  const auto vocab = static_cast<std::size_t>(mc.vocab_size);
  // Preempted requests: parked when the policy can evict them (the cache is
  // kept while it survives), released when it cannot (recomputed later).
  constexpr bool kKeepPreempted = !std::is_same_v<typename Policy::eviction, NoEviction>;
  const std::unique_ptr<Manager> owner = make_manager<Manager>(config);
  Manager& manager = *owner;
  std::optional<metrics::Monitor<Manager>> monitor;
  if (options.on_metrics) monitor.emplace(manager, 16);
  RunResult result;
  result.name = info.name;
  result.strategy = info.strategy;
  result.block_size = config.block_size;
  result.sharing = Policy::sharing::kEnabled;
  const MemoryStats initial = manager.memory();
  result.pool_bytes = initial.arena_bytes + initial.residual_bytes;

  const std::size_t n = w.requests.size();
  result.outputs.tokens.resize(n);
  result.outputs.logits.resize(n);
  // Input tokens: the prompt, then the outputs fed back (the reference's
  // when scoring against it).
  auto token_at = [&](std::size_t r, std::int64_t p) {
    const Request& q = w.requests[r];
    const auto prompt = static_cast<std::int64_t>(q.prompt.size());
    if (p < prompt) return q.prompt[static_cast<std::size_t>(p)];
    const auto& fed = reference != nullptr ? reference->tokens[r] : result.outputs.tokens[r];
    return fed[static_cast<std::size_t>(p - prompt)];
  };
  // Every position computed so far, keyed by the hash of its whole prefix.
  std::unordered_set<std::uint64_t> computed_keys;
  std::vector<std::vector<std::uint64_t>> keys(n);
  auto key_at = [&](std::size_t r, std::int64_t p) {
    auto& k = keys[r];
    while (static_cast<std::int64_t>(k.size()) <= p) {
      const std::uint64_t previous = k.empty() ? 0x5eedull : k.back();
      k.push_back(mix(
          previous ^ static_cast<std::uint32_t>(token_at(r, static_cast<std::int64_t>(k.size())))));
    }
    return k[static_cast<std::size_t>(p)];
  };

  std::deque<std::size_t> waiting;
  for (std::size_t r = 0; r < n; ++r)
    waiting.push_back(r);
  std::vector<Live> live;  // in admission order
  std::vector<std::optional<Live>> parked(n);
  double cache_seconds = 0;
  std::int64_t done = 0;
  // Checkpoints: resume from what the directory holds, then keep writing.
  std::optional<CheckpointDirectory<Manager>> checkpoints;
  auto run_state = [&] {
    RunState s{done,
               result.steps,
               result.computed_tokens,
               result.recomputed_tokens,
               result.preemptions,
               {waiting.begin(), waiting.end()},
               live,
               parked,
               result.outputs.tokens};
    return encode(s);
  };
  if (!options.checkpoint_dir.empty()) {
    checkpoints.emplace(manager, options.checkpoint_dir, options.checkpoint_every);
    if (const std::optional<RestoreReport> restored = checkpoints->restore()) {
      RunState s = decode(restored->app, n);
      auto id = [&](SeqId saved) { return saved == 0 ? SeqId{0} : restored->ids.at(saved); };
      for (Live& l : s.live)
        l.seq = id(l.seq);
      for (auto& p : s.parked)
        if (p) p->seq = id(p->seq);
      done = s.done;
      result.steps = s.steps;
      result.computed_tokens = s.computed;
      result.recomputed_tokens = s.recomputed;
      result.preemptions = s.preemptions;
      waiting.assign(s.waiting.begin(), s.waiting.end());
      live = std::move(s.live);
      parked = std::move(s.parked);
      result.outputs.tokens = std::move(s.tokens);
      if (options.checkpoint_log) {
        options.checkpoint_log(fmt::format(
            "resumed from {}: step {}, {} of {} requests done, {} sequences, {} log records{}",
            options.checkpoint_dir, result.steps, done, n, restored->ids.size(), restored->records,
            restored->notes.empty() ? "" : fmt::format(" ({})", fmt::join(restored->notes, "; "))));
      }
    }
  }
  const auto start = Clock::now();
  std::vector<T> k_rows, v_rows;
  std::vector<T> gather_k, gather_v;
  // Step rows in the backend's memory: K/V of the cache's dtype, queries and
  // attention outputs in fp32.
  const auto max_rows = static_cast<std::size_t>(config.max_batch_tokens);
  Staged<Backend> staged_k(manager.backend(), max_rows * kvd * sizeof(T));
  Staged<Backend> staged_v(manager.backend(), max_rows * kvd * sizeof(T));
  Staged<Backend> staged_q(manager.backend(), max_rows * mc.dim * sizeof(float));
  Staged<Backend> staged_out(manager.backend(), max_rows * mc.dim * sizeof(float));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // Pages attended by the library's kernel: one object, prepared per step.
  std::optional<PagedAttention<Manager>> attention;
  if (kernel_attention) attention.emplace(manager, mc.num_heads, scale);

  auto known = [&](const Live& l) {
    return static_cast<std::int64_t>(w.requests[l.request].prompt.size()) + l.produced;
  };
  auto set_aside = [&](Live l) {
    if (kKeepPreempted) {
      manager.park(l.seq);
      l.parked = true;
    } else {
      manager.release(l.seq);
      l.seq = 0;
    }
    parked[l.request] = l;
  };
  auto preempt = [&](std::size_t index) {
    set_aside(live[index]);
    waiting.push_front(live[index].request);
    live.erase(live.begin() + static_cast<std::ptrdiff_t>(index));
    ++result.preemptions;
  };

  while (done < static_cast<std::int64_t>(n)) {
    auto t0 = Clock::now();
    // Room for the running requests first, oldest first; the youngest is
    // parked when there is none (vLLM's recompute preemption, with the cache
    // kept while the eviction policy keeps it).
    for (std::size_t i = 0; i < live.size();) {
      if (manager.try_reserve(live[i].seq, known(live[i]) - live[i].computed) ==
          ReserveStatus::kOk) {
        ++i;
        continue;
      }
      if (live.size() == 1)
        throw OutOfMemory(fmt::format("{}: a pool of {} bytes cannot hold one request of {} tokens",
                                      info.name, result.pool_bytes, known(live[i])));
      preempt(live.size() - 1);
      if (i >= live.size()) break;
    }
    // Then new (or preempted) requests while there is room.
    while (!waiting.empty() && static_cast<std::int32_t>(live.size()) < options.concurrency) {
      const std::size_t r = waiting.front();
      Live l;
      if (parked[r] && parked[r]->parked && manager.unpark(parked[r]->seq)) {
        l = *parked[r];
        l.parked = false;
      } else {
        l.request = r;
        l.produced = parked[r] ? parked[r]->produced : 0;
        std::vector<std::int32_t> tokens;
        for (std::int64_t p = 0; p < known(l); ++p)
          tokens.push_back(token_at(r, p));
        l.seq = manager.create_sequence(tokens);
        l.computed = manager.sequence(l.seq).num_tokens;
      }
      parked[r].reset();
      if (manager.try_reserve(l.seq, known(l) - l.computed) != ReserveStatus::kOk) {
        if (live.empty())
          throw OutOfMemory(
              fmt::format("{}: a pool of {} bytes cannot hold one request of {} tokens", info.name,
                          result.pool_bytes, known(l)));
        set_aside(l);
        break;
      }
      waiting.pop_front();
      live.push_back(l);
    }
    // One step: every running request computes its known positions.
    std::vector<SeqId> seqs;
    std::vector<std::int32_t> counts;
    std::vector<std::vector<std::int32_t>> step_tokens;
    std::vector<StepSequence> step;
    for (const Live& l : live) {
      seqs.push_back(l.seq);
      counts.push_back(static_cast<std::int32_t>(known(l) - l.computed));
      std::vector<std::int32_t> tokens;
      for (std::int64_t p = l.computed; p < known(l); ++p) {
        tokens.push_back(token_at(l.request, p));
        if (!computed_keys.insert(key_at(l.request, p)).second) ++result.recomputed_tokens;
      }
      step_tokens.push_back(std::move(tokens));
    }
    for (std::size_t b = 0; b < live.size(); ++b)
      step.push_back({live[b].computed, counts[b], step_tokens[b].data()});
    const AppendBatch batch = manager.prepare_append(seqs, counts);
    std::optional<FlashInferPageTable> table;
    if (attention) {
      attention->prepare(batch);
    } else if constexpr (kPages) {
      table = export_flashinfer(manager, batch);
    }
    cache_seconds += since(t0);

    KvAccess access;
    access.store = [&](std::int32_t layer, const float* k, const float* v) {
      const auto t1 = Clock::now();
      const auto total = static_cast<std::size_t>(batch.num_tokens());
      k_rows.resize(total * kvd);
      v_rows.resize(total * kvd);
      to_dtype(k, total * kvd, k_rows.data());
      to_dtype(v, total * kvd, v_rows.data());
      const std::size_t bytes = total * kvd * sizeof(T);
      manager.append(layer, batch,
                     TensorView::packed(staged_k.upload(k_rows.data(), bytes), config.shape.dtype,
                                        batch.num_tokens(), heads, hd),
                     TensorView::packed(staged_v.upload(v_rows.data(), bytes), config.shape.dtype,
                                        batch.num_tokens(), heads, hd));
      cache_seconds += since(t1);
    };
    if (attention) {
      access.attend = [&](std::int32_t layer, const float* q, float* out) {
        const auto t1 = Clock::now();
        const auto bytes = static_cast<std::size_t>(batch.num_tokens()) * mc.dim * sizeof(float);
        attention->run(layer, static_cast<const float*>(staged_q.upload(q, bytes)),
                       static_cast<float*>(staged_out.target(out)));
        staged_out.download(out, bytes);
        cache_seconds += since(t1);
      };
    }
    access.past = [&](std::int32_t layer, std::int32_t b, float* k, float* v) {
      const auto t1 = Clock::now();
      const std::int64_t past = live[static_cast<std::size_t>(b)].computed;
      if constexpr (kPages) {
        // Through the exported page table, as an attention kernel reads it.
        const FlashInferPageTable& t = *table;
        const CacheAddressing& a = t.cache;
        const auto* k_base = static_cast<const T*>(a.k_data(layer));
        const auto* v_base = static_cast<const T*>(a.v_data(layer));
        for (std::int64_t j = 0; j < past; ++j) {
          const std::int64_t page = t.indices[static_cast<std::size_t>(
              t.indptr[static_cast<std::size_t>(b)] + j / a.page_size)];
          const std::int64_t slot = page * a.stride_page + (j % a.page_size) * a.stride_token;
          for (std::int32_t h = 0; h < heads; ++h) {
            const std::int64_t at = slot + h * a.stride_head;
            float* kr = k + j * kvd + h * hd;
            float* vr = v + j * kvd + h * hd;
            for (std::int32_t i = 0; i < hd; ++i) {
              kr[i] = from_dtype(k_base[at + i]);
              vr[i] = from_dtype(v_base[at + i]);
            }
          }
        }
      } else {
        const auto rows = static_cast<std::size_t>(past) * static_cast<std::size_t>(kvd);
        gather_k.resize(rows);
        gather_v.resize(rows);
        manager.gather(live[static_cast<std::size_t>(b)].seq, layer,
                       TensorView::packed(gather_k.data(), config.shape.dtype, past, heads, hd),
                       TensorView::packed(gather_v.data(), config.shape.dtype, past, heads, hd));
        for (std::size_t i = 0; i < rows; ++i) {
          k[i] = from_dtype(gather_k[i]);
          v[i] = from_dtype(gather_v[i]);
        }
        result.peak_scratch_bytes = std::max<std::int64_t>(
            result.peak_scratch_bytes,
            static_cast<std::int64_t>((gather_k.capacity() + gather_v.capacity()) * sizeof(T) +
                                      2 * rows * sizeof(float)));  // and their fp32 copies
      }
      cache_seconds += since(t1);
    };
    const std::vector<float> logits = model.forward(step, access);
    t0 = Clock::now();
    manager.commit(batch);
    const MemoryStats m = manager.memory();
    const std::int64_t live_bytes = m.used_bytes() + m.residual_bytes;
    if (live_bytes > result.peak_live_bytes) {
      result.peak_live_bytes = live_bytes;
      result.tokens_at_peak = m.stored_tokens;
    }
    result.peak_held_bytes =
        std::max(result.peak_held_bytes, live_bytes + m.cached_blocks * m.bytes_per_block);
    cache_seconds += since(t0);

    // Outputs, then release what finished.
    for (std::size_t b = 0; b < live.size(); ++b) {
      Live& l = live[b];
      result.computed_tokens += counts[b];
      l.computed = known(l);
      const float* row = &logits[b * vocab];
      const auto best = static_cast<std::int32_t>(std::max_element(row, row + vocab) - row);
      auto& tokens = result.outputs.tokens[l.request];
      auto& saved = result.outputs.logits[l.request];
      // A recomputed request reaches outputs it had already produced: keep the first.
      if (static_cast<std::int32_t>(tokens.size()) == l.produced) {
        tokens.push_back(best);
        saved.insert(saved.end(), row, row + vocab);
      }
      ++l.produced;
    }
    t0 = Clock::now();
    for (std::size_t b = live.size(); b-- > 0;) {
      if (live[b].produced == w.requests[live[b].request].output_tokens) {
        manager.release(live[b].seq);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(b));
        ++done;
      }
    }
    cache_seconds += since(t0);
    ++result.steps;
    if (checkpoints && checkpoints->step(run_state()) && options.checkpoint_log)
      options.checkpoint_log(fmt::format("checkpoint at step {}", result.steps));
    if (options.progress) options.progress(info.name, done, static_cast<std::int64_t>(n));
    if (monitor) {
      const metrics::MetricsSnapshot& snap = monitor->sample();
      options.on_metrics(info.name, snap, metrics::recommend(*monitor));
    }
  }
  result.seconds = since(start);
  result.cache_seconds = cache_seconds;
  result.generated_tokens = w.output_tokens();
  result.bytes_per_token =
      result.tokens_at_peak > 0
          ? static_cast<double>(result.peak_live_bytes) / static_cast<double>(result.tokens_at_peak)
          : 0;
  const CacheStats stats = manager.stats();
  result.evicted_blocks = stats.evicted_blocks;
  result.evicted_sequences = stats.evicted_sequences;
  result.prefix_hit_rate = stats.prefix_hit_rate();
  manager.check_invariants();

  if (reference != nullptr) {
    std::int64_t same = 0, outputs = 0;
    double error_sum = 0;
    for (std::size_t r = 0; r < n; ++r) {
      for (std::size_t o = 0; o < result.outputs.tokens[r].size(); ++o) {
        ++outputs;
        same += result.outputs.tokens[r][o] == reference->tokens[r][o] ? 1 : 0;
        double diff = 0, norm = 0;
        for (std::size_t i = 0; i < vocab; ++i) {
          const double a = result.outputs.logits[r][o * vocab + i];
          const double b = reference->logits[r][o * vocab + i];
          diff += (a - b) * (a - b);
          norm += b * b;
        }
        const double e = norm > 0 ? std::sqrt(diff / norm) : 0;
        error_sum += e;
        result.max_logit_error = std::max(result.max_logit_error, e);
      }
    }
    result.agreement = outputs > 0 ? static_cast<double>(same) / static_cast<double>(outputs) : 1;
    result.logit_error = outputs > 0 ? error_sum / static_cast<double>(outputs) : 0;
  }
  return result;
}

}  // namespace

// ---- the configurations ------------------------------------------------------

namespace {

const ConfigInfo kConfigs[] = {
    {"reference", "paged fp32, unlimited: the run every other is scored against"},
    {"baseline", "contiguous fp16 per request, preallocated at the longest request"},
    {"dynamic", "contiguous fp16 regions that grow by doubling (from 32 tokens)"},
    {"paged", "fp16 pages of 16 tokens"},
    {"paged+lru", "fp16 pages, LRU eviction of preempted requests, a tight pool"},
    {"paged+sharing", "fp16 pages, prefix sharing, LRU eviction of cached prefixes"},
    {"int8", "int8 pages, a scale per 32 values"},
    {"fp8", "fp8 e4m3 pages, a calibrated scale per head"},
    {"int4-kivi", "KIVI int4: keys per channel, values per token, the 32 newest tokens fp16"},
    {"low-rank", "rank-32 projection of each head (PCA of a calibration batch)"},
    {"paged-gpu",
     "fp16 pages in GPU memory, attention by the paged-attention kernel on the GPU (the "
     "model's products stay on the CPU)"},
};

std::int64_t blocks_for(std::int64_t tokens, std::int32_t block) {
  return (tokens + block - 1) / block;
}

}  // namespace

std::span<const ConfigInfo> configs() {
  return kConfigs;
}

RunResult run_config(std::string_view name, const Model& model, const Workload& workload,
                     const ServeOptions& options, std::int64_t pool_bytes,
                     const Outputs* reference) {
  if (options.concurrency < 1 || options.concurrency > 1024)
    throw InvalidArgument(fmt::format("--concurrency {}: allowed 1 to 1024", options.concurrency));
  const ConfigInfo* info = nullptr;
  for (const ConfigInfo& c : kConfigs)
    if (name == c.name) info = &c;
  if (info == nullptr) {
    std::string names;
    for (const ConfigInfo& c : kConfigs)
      names += fmt::format("{}{}", names.empty() ? "" : ", ", c.name);
    throw InvalidArgument(fmt::format("configuration '{}': allowed {}", name, names));
  }
  const ModelConfig& mc = model.config();
  const std::int64_t longest = workload.max_tokens();
  CacheConfig config;
  config.shape = ModelShape::gqa(mc.num_layers, mc.num_kv_heads, mc.head_dim(), DType::kF16);
  config.block_size = 16;
  config.max_batch_sequences = options.concurrency;
  config.max_batch_tokens = static_cast<std::int32_t>(
      std::min<std::int64_t>(std::int64_t{options.concurrency} * longest, std::int64_t{1} << 30));
  config.max_sequences = options.concurrency;
  // Sized for the workload when no pool is given: every running request at its longest.
  auto size_pool = [&](std::int32_t block) {
    if (pool_bytes > 0) {
      config.budget_bytes = pool_bytes;
    } else {
      config.num_blocks = options.concurrency * blocks_for(longest, block);
    }
  };
  using Paged = PagedAllocation;
  // The uncompressed configurations, in fp16 (or fp32 when asked).
  auto plain = [&]<class Policy, class Backend = HostBackend>(CacheConfig c) {
    if (options.fp32_cache || c.shape.dtype == DType::kF32) {
      c.shape.dtype = DType::kF32;
      return serve<Policy, float, Backend>(*info, c, model, workload, options, reference);
    }
    return serve<Policy, std::uint16_t, Backend>(*info, c, model, workload, options, reference);
  };
  if (name == "reference") {
    config.shape.dtype = DType::kF32;
    config.num_blocks = options.concurrency * blocks_for(longest, config.block_size);
    return plain.template operator()<CachePolicy<Paged>>(config);
  }
  if (name == "baseline") {
    config.initial_tokens = blocks_for(longest, config.block_size) * config.block_size;
    config.num_blocks = options.concurrency * blocks_for(longest, config.block_size);
    return plain.template operator()<CachePolicy<DynamicAllocation>>(config);
  }
  if (name == "dynamic") {
    config.initial_tokens = 32;
    size_pool(config.block_size);
    return plain.template operator()<CachePolicy<DynamicAllocation>>(config);
  }
  size_pool(config.block_size);
  if (name == "paged") return plain.template operator()<CachePolicy<Paged>>(config);
  if (name == "paged-gpu") {
    if (cuda_device_count() == 0)
      throw Unsupported(
          "configuration 'paged-gpu': no CUDA device (cudaGetDeviceCount found none, or the "
          "library was built without KVCACHE_CUDA)");
    return plain.template operator()<CachePolicy<Paged>, CudaBackend>(config);
  }
  if (name == "paged+lru")
    return plain.template operator()<CachePolicy<Paged, LruEviction>>(config);
  if (name == "paged+sharing")
    return plain.template operator()<CachePolicy<Paged, LruEviction, PrefixSharing>>(config);
  if (name == "int8")
    return serve<CachePolicy<Paged, NoEviction, NoPrefixSharing, Int8Codec<32>>, std::uint16_t>(
        *info, config, model, workload, options, reference);
  if (name == "fp8")
    return serve<CachePolicy<Paged, NoEviction, NoPrefixSharing, Fp8Codec<>>, std::uint16_t>(
        *info, config, model, workload, options, reference);
  if (name == "low-rank")
    return serve<CachePolicy<Paged, NoEviction, NoPrefixSharing, LowRankCodec<32>>, std::uint16_t>(
        *info, config, model, workload, options, reference);
  // KIVI: a page is one key group of 32 tokens.
  config.block_size = 32;
  config.num_blocks = 0;
  config.budget_bytes = 0;
  size_pool(config.block_size);
  return serve<CachePolicy<Paged, NoEviction, NoPrefixSharing, KiviCodec<4, 32, 32>>,
               std::uint16_t>(*info, config, model, workload, options, reference);
}

const RunResult* DemoResult::find(std::string_view name) const {
  for (const RunResult& r : runs)
    if (r.name == name) return &r;
  return nullptr;
}

DemoResult run_all(const Model& model, const Workload& workload, const ServeOptions& options,
                   std::span<const std::string> only) {
  if (!(options.lru_fraction > 0.05 && options.lru_fraction <= 1.0))
    throw InvalidArgument(
        fmt::format("--lru-fraction {}: allowed (0.05, 1]", options.lru_fraction));
  auto wanted = [&](std::string_view name) {
    if (only.empty()) return name != "paged-gpu" || cuda_device_count() > 0;
    return name == "reference" || name == "baseline" ||
           std::find(only.begin(), only.end(), name) != only.end();
  };
  for (const std::string& name : only) {
    bool known = false;
    for (const ConfigInfo& c : kConfigs)
      known = known || name == c.name;
    // Unknown, or the GPU's without one: throws, naming it.
    if (!known || (name == "paged-gpu" && cuda_device_count() == 0))
      run_config(name, model, workload, options, 0, nullptr);
  }
  DemoResult demo;
  demo.runs.push_back(run_config("reference", model, workload, options, 0, nullptr));
  const Outputs reference = demo.runs.front().outputs;  // a copy: runs grows
  demo.runs.push_back(run_config("baseline", model, workload, options, 0, &reference));
  demo.budget_bytes = demo.runs.back().pool_bytes;
  std::int64_t paged_peak = 0;
  for (const ConfigInfo& c : kConfigs) {
    const std::string_view name = c.name;
    if (name == "reference" || name == "baseline" || !wanted(name)) continue;
    std::int64_t pool = demo.budget_bytes;
    if (name == "paged+lru") {
      if (paged_peak == 0)
        paged_peak =
            run_config("paged", model, workload, options, pool, &reference).peak_live_bytes;
      pool = static_cast<std::int64_t>(options.lru_fraction * static_cast<double>(paged_peak));
    }
    demo.runs.push_back(run_config(name, model, workload, options, pool, &reference));
    if (name == "paged") paged_peak = demo.runs.back().peak_live_bytes;
  }
  return demo;
}

}  // namespace kvcache::demo
