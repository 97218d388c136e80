// Prints a digest of what kvcache's CPU kernels compute from a seed (paged
// attention over fp16 and fp32 pages, KIVI and low-rank decode, the shared
// exponential) and of a control computed by this file's own arithmetic.
// compare.cmake runs it from a build with FMA and one without.
//
//   exact_math SEED | exact_math --has-fma
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kvcache/attention.hpp"
#include "kvcache/kvcache.hpp"

namespace {

using namespace kvcache;

std::uint64_t digest(const void* data, std::size_t bytes) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

template <class T>
void print(const char* name, const std::vector<T>& values) {
  std::printf("%s %016llx\n", name,
              static_cast<unsigned long long>(digest(values.data(), values.size() * sizeof(T))));
}

// A random value in [-scale, scale) from integer bits and one product: the
// inputs must not depend on the build (std's distributions fuse their own
// arithmetic in the FMA build).
float uniform(std::mt19937& rng, float scale) {
  return static_cast<float>(static_cast<std::int32_t>(rng())) * (scale / 2147483648.0f);
}

// Rows of random values stored as `dtype`.
std::vector<std::byte> random_rows(std::mt19937& rng, DType dtype, std::int64_t count) {
  std::vector<std::byte> out(static_cast<std::size_t>(count * dtype_size(dtype)));
  for (std::int64_t i = 0; i < count; ++i)
    store_from_float(out.data(), dtype, i, uniform(rng, 2.0f));
  return out;
}

CacheConfig config_for(DType dtype, std::int32_t block_size, std::int32_t head_dim) {
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 2, head_dim, dtype);
  c.block_size = block_size;
  c.num_blocks = 64;
  c.max_sequences = 8;
  return c;
}

// Three sequences prefilled in one step; every layer appended, then read
// back by gather (and, for plain pages, attended by PagedAttention).
template <class Policy>
void run_cache(const char* name, std::mt19937& rng, DType dtype, std::int32_t block_size,
               std::int32_t head_dim) {
  KVCacheManager<Policy, HostBackend> m(config_for(dtype, block_size, head_dim));
  const ModelShape& shape = m.shape();
  const std::vector<SeqId> seqs = {m.create_sequence(), m.create_sequence(), m.create_sequence()};
  const std::vector<std::int32_t> counts = {70, 97, 33};
  for (std::size_t i = 0; i < seqs.size(); ++i)
    (void)m.try_reserve(seqs[i], counts[i]);
  AppendBatch batch = m.prepare_append(seqs, counts);
  const std::int64_t tokens = batch.num_tokens();
  const std::int32_t q_heads = 4 * shape.num_kv_heads;
  std::vector<float> attention_out;
  for (std::int32_t layer = 0; layer < shape.num_layers; ++layer) {
    auto k = random_rows(rng, dtype, tokens * shape.kv_width());
    auto v = random_rows(rng, dtype, tokens * shape.kv_width());
    m.append(layer, batch,
             TensorView::packed(k.data(), dtype, tokens, shape.num_kv_heads, shape.head_dim),
             TensorView::packed(v.data(), dtype, tokens, shape.num_kv_heads, shape.head_dim));
    if constexpr (Policy::codec::kKind == CodecKind::kPlain) {
      PagedAttention<decltype(m)> attention(m, batch, q_heads,
                                            1.0f / std::sqrt(static_cast<float>(head_dim)));
      std::vector<float> q(static_cast<std::size_t>(tokens * q_heads * head_dim));
      for (float& x : q)
        x = uniform(rng, 2.0f);
      std::vector<float> out(q.size());
      attention.run(layer, q.data(), out.data());
      attention_out.insert(attention_out.end(), out.begin(), out.end());
    }
  }
  m.commit(batch);
  std::vector<std::byte> gathered;
  for (std::int32_t layer = 0; layer < shape.num_layers; ++layer) {
    std::vector<std::byte> k(
        static_cast<std::size_t>(tokens * shape.kv_width() * dtype_size(dtype))),
        v(k.size());
    m.gather(seqs, layer, TensorView::packed(k.data(), dtype, tokens, shape.num_kv_heads, head_dim),
             TensorView::packed(v.data(), dtype, tokens, shape.num_kv_heads, head_dim));
    gathered.insert(gathered.end(), k.begin(), k.end());
    gathered.insert(gathered.end(), v.begin(), v.end());
  }
  print((std::string(name) + "_gather").c_str(), gathered);
  if (!attention_out.empty()) print((std::string(name) + "_attention").c_str(), attention_out);
}

// This file's own sums of products: contracted into FMAs in the FMA build.
void control(std::mt19937& rng) {
  std::vector<float> a(4096), b(4096), sums(64);
  for (std::size_t i = 0; i < a.size(); ++i) {
    a[i] = uniform(rng, 2.0f);
    b[i] = uniform(rng, 2.0f);
  }
  for (std::size_t s = 0; s < sums.size(); ++s) {
    float sum = 0.0f;
    for (std::size_t i = s; i < a.size(); i += sums.size())
      sum = a[i] * b[i] + sum;
    sums[s] = sum;
  }
  print("control", sums);
}

bool cpu_has_fma() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: exact_math SEED | exact_math --has-fma\n");
    return 2;
  }
  if (std::strcmp(argv[1], "--has-fma") == 0) return cpu_has_fma() ? 0 : 1;
  std::mt19937 rng(static_cast<std::uint32_t>(std::stoul(argv[1])));
  try {
    std::vector<float> exps(8192);
    for (float& x : exps)
      x = kernels::attention_exp(uniform(rng, 90.0f));
    print("attention_exp", exps);
    run_cache<CachePolicy<PagedAllocation>>("plain_fp16", rng, DType::kF16, 16, 64);
    run_cache<CachePolicy<PagedAllocation>>("plain_fp32", rng, DType::kF32, 16, 128);
    using Kivi = KiviCodec<4, 32, 64, 2>;
    run_cache<CachePolicy<PagedAllocation, NoEviction, NoPrefixSharing, Kivi>>("kivi_fp32", rng,
                                                                               DType::kF32, 32, 64);
    using LowRank = LowRankCodec<16, 4>;
    run_cache<CachePolicy<PagedAllocation, NoEviction, NoPrefixSharing, LowRank>>(
        "low_rank_fp32", rng, DType::kF32, 16, 64);
    control(rng);
  } catch (const Error& error) {
    std::fprintf(stderr, "kvcache error: %s\n", error.what());
    return 1;
  }
  return 0;
}
