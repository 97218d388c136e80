// A prototype using kvcache header-only (kvcache::headers): a paged int8 cache
// with LRU eviction and prefix sharing on the CPU backend, no library linked.
// Exits non-zero if a shared prompt is not reused or the cache does not read back.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <kvcache/backend/host.hpp>
#include <kvcache/manager.hpp>

int main() {
  using namespace kvcache;
  CacheConfig config;
  config.shape = ModelShape::gqa(2, 2, 64, DType::kF32);
  config.block_size = 4;
  config.num_blocks = 32;
  using Policy = CachePolicy<PagedAllocation, LruEviction, PrefixSharing, Int8Codec<32>>;
  KVCacheManager<Policy, HostBackend> cache(config);
  const std::vector<std::int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const SeqId first = cache.create_sequence(prompt);
  if (cache.try_reserve(first, 9) != ReserveStatus::kOk) return 1;
  std::vector<float> k(9 * 128), v(9 * 128), out_k(9 * 128), out_v(9 * 128);
  for (std::size_t i = 0; i < k.size(); ++i) {
    k[i] = std::sin(static_cast<float>(i));
    v[i] = std::cos(static_cast<float>(i));
  }
  AppendBatch batch =
      cache.prepare_append(std::vector<SeqId>{first}, std::vector<std::int32_t>{9}, prompt);
  for (int layer = 0; layer < 2; ++layer) {
    cache.append(layer, batch, TensorView::packed(k.data(), DType::kF32, 9, 2, 64),
                 TensorView::packed(v.data(), DType::kF32, 9, 2, 64));
  }
  cache.commit(batch);
  cache.gather(first, 0, TensorView::packed(out_k.data(), DType::kF32, 9, 2, 64),
               TensorView::packed(out_v.data(), DType::kF32, 9, 2, 64));
  double error = 0.0;
  for (std::size_t i = 0; i < k.size(); ++i)
    error = std::fmax(error, std::fabs(out_k[i] - k[i]) + std::fabs(out_v[i] - v[i]));
  cache.release(first);
  const SeqId second = cache.create_sequence(prompt);
  const bool reused = cache.sequence(second).num_tokens == 8;  // two full blocks cached
  std::printf("kvcache header-only consumer: int8 round-trip error %.4f, prefix reused: %s\n",
              error, reused ? "yes" : "no");
  return error < 0.02 && reused ? 0 : 1;
}
