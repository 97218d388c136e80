// libFuzzer target: the input is read as a run of public API operations on a
// small cache (the first byte picks the policy), valid ones checked against a
// reference model (each sequence's token ids; rows are content-addressed,
// so a sequence must read back exactly its own prompt's rows whether its
// blocks were shared, copied or appended), and misuse of every kind checked
// to throw kvcache::Error and change nothing. A divergence or an exception
// of any other type aborts (a crash to libFuzzer).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "conformance_support.hpp"
#include "fuzz_input.hpp"
#include "kvcache/kvcache.hpp"
#include "snapshot.hpp"

namespace kvcache::fuzz {
namespace {

using testing::TokenHistory;

[[noreturn]] void diverged(const std::string& what) {
  std::fprintf(stderr, "fuzz_manager: divergence: %s\n", what.c_str());
  std::abort();
}

void require(bool condition, const std::string& what) {
  if (!condition) diverged(what);
}

struct ModelSequence {
  TokenHistory history;               // committed tokens
  std::vector<std::int32_t> pending;  // prompt tokens not yet appended
  bool parked = false;
};

template <class Policy>
class ModelRun {
 public:
  using Manager = KVCacheManager<Policy>;
  static constexpr std::int32_t kBlock = 4;
  static constexpr bool kSharing = Policy::sharing::kEnabled;
  static constexpr bool kRetains = Policy::eviction::kRetains;

  explicit ModelRun(FuzzInput& in) : in_(in), m_(config()) {
    m_.set_eviction_listener([this](const EvictionEvent& e) {
      if (e.kind == EvictionKind::kSequence) evicted_.insert(e.sequence);
    });
  }

  void run() {
    for (int step = 0; step < 400 && !in_.empty(); ++step) {
      switch (in_.below(9)) {
        case 0:
          create();
          break;
        case 1:
        case 2:
          append_batch();
          break;
        case 3:
          fork();
          break;
        case 4:
          release();
          break;
        case 5:
          park_or_unpark();
          break;
        case 6:
          gather();
          break;
        default:
          misuse();
          break;
      }
      check();
    }
    for (auto& [id, s] : model_) {
      if (evicted_.count(id) == 0) reads_back({id});
    }
  }

 private:
  static CacheConfig config() {
    CacheConfig c;
    c.shape = ModelShape::gqa(2, 2, 8, DType::kF16);
    c.block_size = kBlock;
    c.num_blocks = 16;
    c.max_batch_tokens = 32;
    c.max_batch_sequences = 4;
    c.initial_tokens = 2 * kBlock;
    return c;
  }

  const ModelShape& shape() const { return m_.shape(); }

  std::vector<SeqId> live(bool parked) const {
    std::vector<SeqId> ids;
    for (auto& [id, s] : model_) {
      if (s.parked == parked && evicted_.count(id) == 0) ids.push_back(id);
    }
    return ids;
  }

  std::optional<SeqId> pick(const std::vector<SeqId>& ids) {
    if (ids.empty()) return std::nullopt;
    return ids[in_.below(static_cast<std::uint32_t>(ids.size()))];
  }

  // ---- valid operations ----------------------------------------------------

  void create() {
    static const std::vector<std::vector<std::int32_t>> systems = {
        {500, 501, 502, 503, 504, 505, 506, 507, 508}, {600, 601, 602, 603, 604}, {}};
    std::vector<std::int32_t> prompt = systems[in_.below(3)];
    for (std::uint32_t extra = in_.below(10); extra > 0; --extra)
      prompt.push_back(static_cast<std::int32_t>(in_.below(5)));
    const SeqId id = m_.create_sequence(prompt);
    const std::int64_t cached = m_.sequence(id).num_tokens;
    require(cached % kBlock == 0 && cached <= static_cast<std::int64_t>(prompt.size()),
            "a prefix hit of " + std::to_string(cached) + " tokens");
    require(kSharing || cached == 0, "a prefix hit without sharing");
    ModelSequence& s = model_[id];
    for (std::int64_t i = 0; i < cached; ++i)
      s.history.push(prompt[static_cast<std::size_t>(i)]);
    s.pending.assign(prompt.begin() + cached, prompt.end());
  }

  // The K or V rows of one layer for every sequence of a batch, in order.
  std::vector<std::byte> batch_rows(const std::vector<SeqId>& seqs,
                                    const std::vector<TokenHistory>& extended, std::int32_t layer,
                                    int kv) const {
    std::vector<std::byte> rows;
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      const std::int64_t first = model_.at(seqs[i]).history.size();
      const auto part =
          testing::history_rows(shape(), extended[i], first, extended[i].size() - first, layer, kv);
      rows.insert(rows.end(), part.begin(), part.end());
    }
    return rows;
  }

  void append_layer(std::int32_t layer, const AppendBatch& batch, const std::vector<SeqId>& seqs,
                    const std::vector<TokenHistory>& extended) {
    const auto k = batch_rows(seqs, extended, layer, 0), v = batch_rows(seqs, extended, layer, 1);
    m_.append(layer, batch,
              TensorView::packed(k.data(), shape().dtype, batch.num_tokens(), shape().num_kv_heads,
                                 shape().head_dim),
              TensorView::packed(v.data(), shape().dtype, batch.num_tokens(), shape().num_kv_heads,
                                 shape().head_dim));
  }

  void append_batch() {
    const auto active = live(false);
    std::vector<SeqId> seqs;
    std::vector<std::int32_t> counts, flat;
    std::vector<TokenHistory> extended;
    for (std::uint32_t want = 1 + in_.below(3); want > 0; --want) {
      const auto id = pick(active);
      if (!id || std::find(seqs.begin(), seqs.end(), *id) != seqs.end()) continue;
      ModelSequence& s = model_.at(*id);
      const std::int32_t count = static_cast<std::int32_t>(in_.below(7));
      if (m_.try_reserve(*id, count) != ReserveStatus::kOk) return;  // full: nothing appended
      extended.push_back(s.history);
      for (std::int32_t t = 0; t < count; ++t) {
        const std::size_t p = static_cast<std::size_t>(t);
        const std::int32_t token =
            p < s.pending.size() ? s.pending[p] : static_cast<std::int32_t>(in_.below(5));
        extended.back().push(token);
        flat.push_back(token);
      }
      seqs.push_back(*id);
      counts.push_back(count);
    }
    if (seqs.empty()) return;
    const bool with_ids = in_.below(4) != 0;
    AppendBatch batch =
        with_ids ? m_.prepare_append(seqs, counts, flat) : m_.prepare_append(seqs, counts);
    // Sometimes a layer is left out: commit must refuse and change nothing.
    const std::int32_t skipped =
        static_cast<std::int32_t>(in_.below(static_cast<std::uint32_t>(shape().num_layers) * 3));
    for (std::int32_t layer = 0; layer < shape().num_layers; ++layer) {
      if (layer != skipped) append_layer(layer, batch, seqs, extended);
    }
    if (skipped < shape().num_layers && batch.num_tokens() > 0) {
      refused("commit with a layer missing", [&] { m_.commit(batch); });
      append_layer(skipped, batch, seqs, extended);
    }
    m_.commit(batch);
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      ModelSequence& s = model_.at(seqs[i]);
      const std::size_t used = std::min(s.pending.size(), static_cast<std::size_t>(counts[i]));
      s.pending.erase(s.pending.begin(), s.pending.begin() + static_cast<std::ptrdiff_t>(used));
      s.history = extended[i];
    }
  }

  void fork() {
    const auto parent = pick(live(false));
    if (!parent) return;
    const auto child = m_.fork(*parent);
    if (child) {
      model_[*child] = model_.at(*parent);
    } else {
      require(Policy::allocation::kContiguous, "a paged fork that found no room");
    }
  }

  void release() {
    std::vector<SeqId> all = live(false);
    const auto parked = live(true);
    all.insert(all.end(), parked.begin(), parked.end());
    const auto id = pick(all);
    if (!id) return;
    m_.release(*id);
    model_.erase(*id);
    released_.push_back(*id);
  }

  void park_or_unpark() {
    if (in_.below(2) == 0) {
      if (const auto id = pick(live(false))) {
        m_.park(*id);
        model_.at(*id).parked = true;
      }
      return;
    }
    std::vector<SeqId> parked;
    for (auto& [id, s] : model_) {
      if (s.parked) parked.push_back(id);
    }
    const auto id = pick(parked);
    if (!id) return;
    const bool hit = m_.unpark(*id);
    require(hit == (evicted_.count(*id) == 0), "unpark of " + std::to_string(*id));
    if (hit) {
      model_.at(*id).parked = false;
    } else {
      require(kRetains, "a sequence evicted by a policy that keeps nothing");
      model_.erase(*id);
      evicted_.erase(*id);
      released_.push_back(*id);
    }
  }

  void gather() {
    std::vector<SeqId> seqs;
    std::vector<SeqId> all = live(false);
    const auto parked = live(true);
    all.insert(all.end(), parked.begin(), parked.end());
    for (std::uint32_t n = 1 + in_.below(3); n > 0; --n) {
      if (const auto id = pick(all)) seqs.push_back(*id);
    }
    if (!seqs.empty()) reads_back(seqs);
  }

  // Every layer of `seqs`, gathered in one call, holds their histories' rows.
  void reads_back(const std::vector<SeqId>& seqs) {
    std::int64_t tokens = 0;
    for (SeqId id : seqs)
      tokens += model_.at(id).history.size();
    const auto row = static_cast<std::size_t>(shape().kv_width() * dtype_size(shape().dtype));
    std::vector<std::byte> k(static_cast<std::size_t>(tokens) * row + 1);
    std::vector<std::byte> v(k.size());
    for (std::int32_t layer = 0; layer < shape().num_layers; ++layer) {
      m_.gather(seqs, layer,
                TensorView::packed(k.data(), shape().dtype, tokens, shape().num_kv_heads,
                                   shape().head_dim),
                TensorView::packed(v.data(), shape().dtype, tokens, shape().num_kv_heads,
                                   shape().head_dim));
      std::size_t offset = 0;
      for (SeqId id : seqs) {
        const TokenHistory& h = model_.at(id).history;
        for (int kv = 0; kv < 2; ++kv) {
          const auto want = testing::history_rows(shape(), h, 0, h.size(), layer, kv);
          const std::vector<std::byte>& got = kv == 0 ? k : v;
          require(std::equal(want.begin(), want.end(), got.begin() + offset),
                  "sequence " + std::to_string(id) + " layer " + std::to_string(layer) +
                      " reads back rows that are not its own");
        }
        offset += want_bytes(h, row);
      }
    }
  }

  static std::size_t want_bytes(const TokenHistory& h, std::size_t row) {
    return static_cast<std::size_t>(h.size()) * row;
  }

  // ---- misuse ----------------------------------------------------------------

  // `call` must throw kvcache::Error and leave the manager as it was.
  template <class Call>
  void refused(const char* what, Call&& call) {
    std::vector<SeqId> ids;
    for (auto& [id, s] : model_)
      ids.push_back(id);
    const testing::Snapshot before = testing::Snapshot::of(m_, ids);
    try {
      call();
    } catch (const Error&) {
      require(before == testing::Snapshot::of(m_, ids), std::string(what) + " changed the cache");
      return;
    }
    diverged(std::string(what) + " was accepted");
  }

  SeqId unknown_id() {
    if (!released_.empty() && in_.below(2) == 0)
      return released_[in_.below(static_cast<std::uint32_t>(released_.size()))];
    SeqId id = static_cast<SeqId>(in_.wide());
    while (m_.contains(id) || evicted_.count(id) != 0)
      ++id;
    return id;
  }

  TensorView rows_view(std::vector<std::byte>& rows, std::int64_t tokens) const {
    rows.assign(static_cast<std::size_t>(std::max<std::int64_t>(tokens, 1) * shape().kv_width() *
                                         dtype_size(shape().dtype)),
                std::byte{0});
    return TensorView::packed(rows.data(), shape().dtype, tokens, shape().num_kv_heads,
                              shape().head_dim);
  }

  void misuse() {
    const auto active = pick(live(false));
    std::vector<std::byte> rows;
    switch (in_.below(10)) {
      case 0: {  // a reservation of any size, negative and huge included
        if (!active) return;
        const std::int64_t tokens = in_.wide() >> in_.below(64);
        if (tokens < 0) {
          refused("a negative reservation", [&] { (void)m_.try_reserve(*active, tokens); });
          return;
        }
        const SequenceInfo before = m_.sequence(*active);
        const bool past_pool = tokens > m_.num_blocks() * kBlock - before.num_tokens;
        const ReserveStatus status = m_.try_reserve(*active, tokens);
        require(!past_pool || status == ReserveStatus::kPoolFull,
                "a reservation of " + std::to_string(tokens) + " tokens past the pool succeeded");
        if (status == ReserveStatus::kPoolFull) {
          require(m_.sequence(*active).num_tokens == before.num_tokens,
                  "a refused reservation changed the sequence");
        }
        return;
      }
      case 1: {  // any call with an id that is not a live sequence
        const SeqId id = unknown_id();
        switch (in_.below(6)) {
          case 0:
            refused("release of an unknown id", [&] { m_.release(id); });
            break;
          case 1:
            refused("park of an unknown id", [&] { m_.park(id); });
            break;
          case 2:
            refused("unpark of an unknown id", [&] { (void)m_.unpark(id); });
            break;
          case 3:
            refused("fork of an unknown id", [&] { (void)m_.fork(id); });
            break;
          case 4:
            refused("reserve of an unknown id", [&] { (void)m_.try_reserve(id, 1); });
            break;
          default:
            refused("append of an unknown id", [&] {
              (void)m_.prepare_append(std::vector<SeqId>{id}, std::vector<std::int32_t>{1});
            });
        }
        return;
      }
      case 2: {  // counts past the reservation, negative, or not matching
        if (!active) return;
        const std::int32_t count = static_cast<std::int32_t>(in_.wide());
        const SequenceInfo s = m_.sequence(*active);
        if (count >= 0 && count <= s.reserved_tokens - s.num_tokens) return;
        refused("a count outside the reservation", [&] {
          (void)m_.prepare_append(std::vector<SeqId>{*active}, std::vector<std::int32_t>{count});
        });
        return;
      }
      case 3: {  // a sequence listed twice, or counts and ids of other lengths
        if (!active) return;
        if (in_.below(2) == 0) {
          refused("a sequence listed twice", [&] {
            (void)m_.prepare_append(std::vector<SeqId>{*active, *active},
                                    std::vector<std::int32_t>{0, 0});
          });
        } else {
          refused("token ids of the wrong length", [&] {
            (void)m_.prepare_append(std::vector<SeqId>{*active}, std::vector<std::int32_t>{0},
                                    std::vector<std::int32_t>{1, 2});
          });
        }
        return;
      }
      case 4: {  // a bad layer, token count or stride in append
        if (!active || m_.try_reserve(*active, 1) != ReserveStatus::kOk) return;
        AppendBatch batch =
            m_.prepare_append(std::vector<SeqId>{*active}, std::vector<std::int32_t>{1});
        TensorView good = rows_view(rows, 1);
        TensorView bad = good;
        std::int32_t layer = 0;
        switch (in_.below(4)) {
          case 0:
            layer = static_cast<std::int32_t>(in_.wide()) | shape().num_layers;
            break;
          case 1:
            bad.num_tokens = 2 + in_.below(1000);
            break;
          case 2:
            bad.token_stride = -1 - static_cast<std::int64_t>(in_.below(1000));
            break;
          default:
            bad.data = nullptr;
        }
        refused("a bad append", [&] { m_.append(layer, batch, good, bad); });
        return;
      }
      case 5: {  // a batch of another manager (made by the same calls), or one made stale
        if (!active) return;
        Manager mine(config()), theirs(config());
        const std::int32_t count = static_cast<std::int32_t>(1 + in_.below(8));
        AppendBatch batches[2];
        Manager* both[2] = {&mine, &theirs};
        for (int i = 0; i < 2; ++i) {
          const SeqId id = both[i]->create_sequence();
          (void)both[i]->try_reserve(id, count);
          batches[i] =
              both[i]->prepare_append(std::vector<SeqId>{id}, std::vector<std::int32_t>{count});
        }
        const TensorView t = rows_view(rows, count);
        for (Manager* m : both) {
          AppendBatch& foreign = batches[m == &mine ? 1 : 0];
          try {
            m->append(0, foreign, t, t);
            diverged("another manager's batch was accepted by append");
          } catch (const Error&) {
          }
          try {
            m->commit(foreign);
            diverged("another manager's batch was accepted by commit");
          } catch (const Error&) {
          }
        }
        refused("another manager's batch", [&] { m_.commit(batches[0]); });
        AppendBatch stale =
            m_.prepare_append(std::vector<SeqId>{*active}, std::vector<std::int32_t>{0});
        (void)m_.prepare_append(std::vector<SeqId>{*active}, std::vector<std::int32_t>{0});
        refused("a replaced batch", [&] { m_.commit(stale); });
        return;
      }
      case 6: {  // park what is parked, unpark what is active
        if (const auto parked = pick(live(true))) {
          refused("park twice", [&] { m_.park(*parked); });
        }
        if (active) refused("unpark of an active sequence", [&] { (void)m_.unpark(*active); });
        return;
      }
      case 7: {  // gather into the wrong size, or a bad layer
        if (!active) return;
        const std::int64_t tokens = m_.sequence(*active).num_tokens;
        const TensorView good = rows_view(rows, tokens);
        TensorView bad = good;
        bad.num_tokens = tokens + 1 + in_.below(50);
        refused("a gather of the wrong size", [&] { m_.gather(*active, 0, bad, good); });
        refused("a gather of a bad layer", [&] {
          m_.gather(*active, -1 - static_cast<std::int32_t>(in_.below(9)), good, good);
        });
        return;
      }
      case 8: {  // page tables with any padding: up to max_batch_tokens, or refused
        if (!active) return;
        AppendBatch batch =
            m_.prepare_append(std::vector<SeqId>{*active}, std::vector<std::int32_t>{0});
        const std::int64_t pad = in_.below(2) == 0 ? in_.wide() : in_.below(80);
        if (pad < 0 || pad > m_.config().max_batch_tokens) {
          refused("an absurd padding", [&] { (void)export_vllm(m_, batch, pad); });
        } else {
          require(export_vllm(m_, batch, pad).slot_mapping.size() == static_cast<std::size_t>(pad),
                  "a slot mapping padded to another length");
        }
        return;
      }
      default: {  // a reservation that could never fit evicts nothing
        if (!active) return;
        refused("a reservation past the pool", [&] {
          if (m_.try_reserve(*active, m_.num_blocks() * kBlock + 1) == ReserveStatus::kPoolFull)
            throw OutOfMemory("refused as it should be");
        });
      }
    }
  }

  void check() {
    try {
      m_.check_invariants();
    } catch (const Error& e) {
      diverged(e.what());
    }
    std::int64_t live_sequences = 0;
    for (auto& [id, s] : model_) {
      if (evicted_.count(id) != 0) {
        require(s.parked && !m_.contains(id), "an active sequence was evicted");
        continue;
      }
      ++live_sequences;
      require(m_.sequence(id).num_tokens == s.history.size(),
              "sequence " + std::to_string(id) + " has another length than the model's");
    }
    require(m_.num_sequences() == live_sequences, "the manager holds other sequences");
  }

  FuzzInput& in_;
  Manager m_;
  std::map<SeqId, ModelSequence> model_;
  std::set<SeqId> evicted_;
  std::vector<SeqId> released_;
};

template <class Policy>
void run(FuzzInput& in) {
  ModelRun<Policy> model_run(in);
  model_run.run();
}

}  // namespace
}  // namespace kvcache::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kvcache;
  fuzz::FuzzInput in(data, size);
  switch (in.below(3)) {
    case 0:
      fuzz::run<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>>(in);
      break;
    case 1:
      fuzz::run<CachePolicy<DynamicAllocation, NoEviction, NoPrefixSharing>>(in);
      break;
    default:
      fuzz::run<CachePolicy<PagedAllocation, S3FifoEviction, PrefixSharing>>(in);
  }
  return 0;
}
