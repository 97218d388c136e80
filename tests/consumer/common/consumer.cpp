// A minimal engine-side program: what a project linking kvcache::kvcache
// compiles and runs. Exits non-zero if the cache does not read back.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include <kvcache/kvcache.hpp>

int main() {
  using namespace kvcache;
  CacheConfig config;
  config.shape = ModelShape::gqa(2, 2, 64, DType::kF16);
  config.num_blocks = 8;
  KVCacheManager<> manager(config);
  const SeqId seq = manager.create_sequence();
  if (manager.try_reserve(seq, 3) != ReserveStatus::kOk) return 1;
  std::vector<std::uint16_t> k(3 * 128), v(3 * 128), out_k(3 * 128), out_v(3 * 128);
  for (std::size_t i = 0; i < k.size(); ++i) {
    k[i] = float_to_half_bits(static_cast<float>(i));
    v[i] = float_to_half_bits(-static_cast<float>(i));
  }
  AppendBatch batch = manager.prepare_append(std::vector<SeqId>{seq}, std::vector<std::int32_t>{3});
  for (int layer = 0; layer < 2; ++layer) {
    manager.append(layer, batch, TensorView::packed(k.data(), DType::kF16, 3, 2, 64),
                   TensorView::packed(v.data(), DType::kF16, 3, 2, 64));
  }
  manager.commit(batch);
  manager.gather(seq, 1, TensorView::packed(out_k.data(), DType::kF16, 3, 2, 64),
                 TensorView::packed(out_v.data(), DType::kF16, 3, 2, 64));
  const bool ok = out_k == k && out_v == v;
  std::printf("kvcache %d.%d.%d consumer: %s (CUDA backend built: %s)\n", kVersionMajor,
              kVersionMinor, kVersionPatch, ok ? "ok" : "MISMATCH",
              built_with_cuda() ? "yes" : "no");
  return ok ? 0 : 1;
}
