// Codec benchmarks (CPU backend) and the strategy table.
//
// BM_CodecAppend / BM_CodecGather: the manager's fused quantize-append and
// dequantize-gather for 16 sequences x 1024 tokens, 8 KV heads x 128, fp16
// in and out; bytes are the fewest each must move (fp16 rows read and codes
// plus scales written, or the reverse), compared with memcpy moving as many
// bytes in the same iteration. BM_CodecDecodeAttention: PagedAttention over
// the same cache read where it lies, one decode row per sequence, 32 query
// heads over the 8 KV heads; bytes are the cache's stored bytes (codes and
// scales; KIVI's window rows in fp16), "keys/s" the keys attended per second
// (one per token and KV head), to compare codecs with the plain cache. After the runs a table
// gives, for every codec: bytes per token and tokens per GiB (Llama-3-8B: 32 layers, 8 x 128,
// fp16), round-trip and decode-attention error on N(0, 1) rows, and append and gather speed
// relative to the plain fp16 cache. The low-rank codecs' append and gather also report
// "gemm_ratio": an Eigen GEMM of the same shapes (eigen_gemm.hpp) over their time.
//
//   kvcache_codec_bench [--smoke] [google benchmark flags]
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "eigen_gemm.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache::bench {
namespace {

constexpr std::int32_t kHeads = 8, kDim = 128, kSequences = 16;

std::int32_t tokens_each() {
  return smoke() ? 64 : 1024;
}

struct Row {
  std::string name;
  double bytes_per_token = 0;  // Llama-3-8B, all layers
  double append_gbps = 0, gather_gbps = 0;
  double append_seconds = 0, gather_seconds = 0, attention_seconds = 0;
  double round_trip_error = 0, attention_error = 0;
};

std::map<std::string, Row>& table() {
  static std::map<std::string, Row> rows;
  return rows;
}
std::vector<std::string>& order() {
  static std::vector<std::string> names;
  return names;
}

template <class Codec>
using Manager =
    KVCacheManager<CachePolicy<PagedAllocation, NoEviction, NoPrefixSharing, Codec>, HostBackend>;

template <class Codec>
CacheConfig config() {
  CacheConfig c;
  c.shape = ModelShape::gqa(1, kHeads, kDim, DType::kF16);
  c.block_size = 32;
  c.num_blocks = kSequences * (tokens_each() / 32 + 8);
  c.max_batch_tokens = kSequences * tokens_each();
  c.max_batch_sequences = kSequences;
  c.max_sequences = kSequences;
  return c;
}

std::vector<std::uint16_t> normal_rows(std::size_t count, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::uint16_t> rows(count);
  for (auto& x : rows)
    x = float_to_half_bits(normal(rng));
  return rows;
}

// Decode attention of one query over one head's rows, float64.
std::vector<double> attention(const std::vector<double>& q, const std::vector<std::uint16_t>& k,
                              const std::vector<std::uint16_t>& v, std::int64_t tokens,
                              std::int32_t head) {
  std::vector<double> scores(static_cast<std::size_t>(tokens));
  double top = -1e300;
  for (std::int64_t t = 0; t < tokens; ++t) {
    double dot = 0;
    for (std::int32_t d = 0; d < kDim; ++d)
      dot += q[static_cast<std::size_t>(d)] *
             half_bits_to_float(k[static_cast<std::size_t>((t * kHeads + head) * kDim + d)]);
    scores[static_cast<std::size_t>(t)] = dot / std::sqrt(double{kDim});
    top = std::max(top, scores[static_cast<std::size_t>(t)]);
  }
  double sum = 0;
  for (double& s : scores)
    sum += (s = std::exp(s - top));
  std::vector<double> out(kDim, 0.0);
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int32_t d = 0; d < kDim; ++d) {
      out[static_cast<std::size_t>(d)] +=
          scores[static_cast<std::size_t>(t)] / sum *
          half_bits_to_float(v[static_cast<std::size_t>((t * kHeads + head) * kDim + d)]);
    }
  }
  return out;
}

// Fills the sequences (calibrating fp8 / low-rank on the first batch) and
// returns the prepared batch of their next tokens.
template <class Codec>
struct Setup {
  Manager<Codec> manager{config<Codec>()};
  std::vector<SeqId> seqs;
  std::vector<std::uint16_t> k, v;
  std::int64_t tokens = 0;

  Setup() {
    tokens = std::int64_t{kSequences} * tokens_each();
    k = normal_rows(static_cast<std::size_t>(tokens * kHeads * kDim), 1);
    v = normal_rows(static_cast<std::size_t>(tokens * kHeads * kDim), 2);
    for (int i = 0; i < kSequences; ++i) {
      seqs.push_back(manager.create_sequence());
      if (manager.try_reserve(seqs.back(), tokens_each()) != ReserveStatus::kOk)
        throw Error("bench: pool too small");
    }
  }
  TensorView view(std::vector<std::uint16_t>& rows) const {
    return TensorView::packed(rows.data(), DType::kF16, tokens, kHeads, kDim);
  }
  AppendBatch batch() {
    const std::vector<std::int32_t> counts(kSequences, tokens_each());
    return manager.prepare_append(seqs, counts);
  }
};

template <class Codec>
double stored_bytes_per_token() {
  return static_cast<double>(
             Codec::block_bytes(ModelShape::gqa(1, kHeads, kDim, DType::kF16), 32)) /
         32.0;
}

// Low-rank codecs: "gemm_ratio", an Eigen GEMM of the same shapes (one per
// K/V head, in float) timed in the same run, over the codec's time (1 = as
// fast as the GEMM).
template <class Codec>
void publish_gemm_ratio(benchmark::State& state, std::int64_t tokens, bool append,
                        double kernel_seconds) {
  if constexpr (Codec::kKind == CodecKind::kLowRank) {
    if (!eigen_gemm_runs_here() || kernel_seconds <= 0) return;
    const std::int32_t inner = append ? kDim : Codec::kRank;
    const std::int32_t cols = append ? Codec::kRank : kDim;
    state.counters["gemm_ratio"] =
        eigen_gemm_seconds(tokens, inner, cols, 2 * kHeads, 3) / kernel_seconds;
  }
}

template <class Codec>
void BM_CodecAppend(benchmark::State& state) {
  Setup<Codec> setup;
  AppendBatch batch = setup.batch();
  setup.manager.append(0, batch, setup.view(setup.k), setup.view(setup.v));  // calibrates
  const double bytes = static_cast<double>(setup.tokens) *
                       (2.0 * kHeads * kDim * 2 + stored_bytes_per_token<Codec>());
  std::vector<std::byte> from(static_cast<std::size_t>(bytes / 2)), to(from.size());
  std::memset(from.data(), 1, from.size());
  const RatioCounter ratio = time_against_memcpy(
      state, bytes,
      [&] { setup.manager.append(0, batch, setup.view(setup.k), setup.view(setup.v)); },
      [&] { std::memcpy(to.data(), from.data(), from.size()); });
  Row& row = table()[Codec::name()];
  row.append_gbps = state.counters["GB/s"];
  row.append_seconds = ratio.kernel_seconds / static_cast<double>(state.iterations());
  publish_gemm_ratio<Codec>(state, setup.tokens, true, row.append_seconds);
}

template <class Codec>
void BM_CodecGather(benchmark::State& state) {
  Setup<Codec> setup;
  AppendBatch batch = setup.batch();
  setup.manager.append(0, batch, setup.view(setup.k), setup.view(setup.v));
  setup.manager.commit(batch);
  std::vector<std::uint16_t> out_k(setup.k.size()), out_v(setup.v.size());
  const double bytes = static_cast<double>(setup.tokens) *
                       (2.0 * kHeads * kDim * 2 + stored_bytes_per_token<Codec>());
  std::vector<std::byte> from(static_cast<std::size_t>(bytes / 2)), to(from.size());
  std::memset(from.data(), 1, from.size());
  const RatioCounter ratio = time_against_memcpy(
      state, bytes,
      [&] { setup.manager.gather(setup.seqs, 0, setup.view(out_k), setup.view(out_v)); },
      [&] { std::memcpy(to.data(), from.data(), from.size()); });
  Row& row = table()[Codec::name()];
  row.gather_gbps = state.counters["GB/s"];
  row.gather_seconds = ratio.kernel_seconds / static_cast<double>(state.iterations());
  publish_gemm_ratio<Codec>(state, setup.tokens, false, row.gather_seconds);
  // Quality, on the same rows: K round trip, and attention of 4 queries per head.
  double difference = 0, norm = 0;
  for (std::size_t i = 0; i < setup.k.size(); ++i) {
    const double a = half_bits_to_float(setup.k[i]), b = half_bits_to_float(out_k[i]);
    difference += (a - b) * (a - b);
    norm += a * a;
  }
  row.round_trip_error = std::sqrt(difference / norm);
  std::mt19937_64 rng(9);
  std::normal_distribution<double> normal(0.0, 1.0);
  double attention_error = 0;
  const std::int64_t tokens = tokens_each();  // the first sequence
  for (int query = 0; query < 4; ++query) {
    std::vector<double> q(kDim);
    for (double& x : q)
      x = normal(rng);
    const std::int32_t head = query % kHeads;
    const auto exact = attention(q, setup.k, setup.v, tokens, head);
    const auto approx = attention(q, out_k, out_v, tokens, head);
    double d2 = 0, n2 = 0;
    for (std::int32_t d = 0; d < kDim; ++d) {
      d2 += (approx[static_cast<std::size_t>(d)] - exact[static_cast<std::size_t>(d)]) *
            (approx[static_cast<std::size_t>(d)] - exact[static_cast<std::size_t>(d)]);
      n2 += exact[static_cast<std::size_t>(d)] * exact[static_cast<std::size_t>(d)];
    }
    attention_error += std::sqrt(d2 / n2) / 4;
  }
  row.attention_error = attention_error;
  row.bytes_per_token =
      static_cast<double>(Codec::block_bytes(ModelShape::gqa(32, 8, 128, DType::kF16), 32)) / 32.0;
  row.name = Codec::name();
}

template <class Codec>
void BM_CodecDecodeAttention(benchmark::State& state) {
  Setup<Codec> setup;
  AppendBatch batch = setup.batch();
  setup.manager.append(0, batch, setup.view(setup.k), setup.view(setup.v));
  setup.manager.commit(batch);
  constexpr std::int32_t kQHeads = 4 * kHeads;
  const std::vector<std::int32_t> rows(kSequences, 1);
  PagedAttention<Manager<Codec>> attention(setup.manager, setup.seqs, rows, kQHeads,
                                           1.0f / std::sqrt(static_cast<float>(kDim)));
  std::vector<float> q(static_cast<std::size_t>(kSequences) * kQHeads * kDim, 0.01f);
  std::vector<float> out(q.size());
  const MemoryStats memory = setup.manager.memory();
  const double bytes = static_cast<double>(memory.used_bytes() + memory.residual_bytes);
  std::vector<std::byte> from(static_cast<std::size_t>(bytes)), to(from.size());
  std::memset(from.data(), 1, from.size());
  const RatioCounter ratio = time_against_memcpy(
      state, bytes, [&] { attention.run(0, q.data(), out.data()); },
      [&] { std::memcpy(to.data(), from.data(), from.size()); });
  const double seconds = ratio.kernel_seconds / static_cast<double>(state.iterations());
  state.counters["keys/s"] = static_cast<double>(setup.tokens * kHeads) / seconds;
  table()[Codec::name()].attention_seconds = seconds;
}

template <class Codec>
void register_codec() {
  order().push_back(Codec::name());
  benchmark::RegisterBenchmark(("BM_CodecAppend/" + Codec::name()).c_str(), BM_CodecAppend<Codec>)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(("BM_CodecGather/" + Codec::name()).c_str(), BM_CodecGather<Codec>)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(("BM_CodecDecodeAttention/" + Codec::name()).c_str(),
                               BM_CodecDecodeAttention<Codec>)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
}

void print_table() {
  const Row* plain = table().count("plain") != 0 ? &table()["plain"] : nullptr;
  std::printf(
      "\nStrategy table (CPU backend; capacity for Llama-3-8B, 32 layers x 8 KV heads x 128, "
      "fp16;\n"
      "errors on N(0, 1) rows; speed relative to the plain fp16 cache in this run)\n\n");
  std::printf(
      "| codec | bytes/token | tokens/GiB | x fp16 | round-trip error | attention error | append "
      "speed | gather speed | attention speed |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const std::string& name : order()) {
    if (table().count(name) == 0) continue;
    const Row& row = table()[name];
    if (row.bytes_per_token == 0) continue;
    const double tokens_per_gib = 1073741824.0 / row.bytes_per_token;
    std::printf(
        "| %s | %.0f | %.0f | %.2f | %.3f%% | %.3f%% | %.2fx | %.2fx | %.2fx |\n", name.c_str(),
        row.bytes_per_token, tokens_per_gib,
        plain != nullptr ? plain->bytes_per_token / row.bytes_per_token : 0.0,
        100 * row.round_trip_error, 100 * row.attention_error,
        plain != nullptr && row.append_seconds > 0 ? plain->append_seconds / row.append_seconds
                                                   : 0.0,
        plain != nullptr && row.gather_seconds > 0 ? plain->gather_seconds / row.gather_seconds
                                                   : 0.0,
        plain != nullptr && row.attention_seconds > 0
            ? plain->attention_seconds / row.attention_seconds
            : 0.0);
  }
  std::printf(
      "\nKIVI rows hold, besides the pages, R recent tokens per live sequence in full "
      "precision.\n");
}

}  // namespace
}  // namespace kvcache::bench

int main(int argc, char** argv) {
  using namespace kvcache;
  bench::parse_smoke(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  bench::register_codec<PlainCodec>();
  bench::register_codec<Int8Codec<32>>();
  bench::register_codec<Int8Codec<64>>();
  bench::register_codec<Int8Codec<128>>();
  bench::register_codec<Fp8Codec<Fp8Scale::kPerHead>>();
  bench::register_codec<Fp8Codec<Fp8Scale::kPerTensor>>();
  bench::register_codec<KiviCodec<4, 32, 128>>();
  bench::register_codec<KiviCodec<2, 32, 128>>();
  bench::register_codec<LowRankCodec<32>>();
  bench::register_codec<LowRankCodec<64>>();
  benchmark::RunSpecifiedBenchmarks();
  bench::print_table();
  benchmark::Shutdown();
  return 0;
}
