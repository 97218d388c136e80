// What an engine does with kvcache, end to end: build a manager for a model,
// prefill two prompts, decode a few tokens, hand the page table to attention,
// and read the cache back. Runs on the GPU when there is one, else on the CPU.
//
//   kvcache_quickstart [--cpu]
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "kvcache/kvcache.hpp"

namespace {

// Stand-in for the model: deterministic K/V rows for (sequence, position).
std::vector<std::uint16_t> make_kv(const kvcache::ModelShape& shape, std::int64_t tokens,
                                   std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::uint16_t> data(static_cast<std::size_t>(tokens * shape.kv_width()));
  for (auto& x : data)
    x = kvcache::float_to_half_bits(normal(rng));
  return data;
}

template <class Backend>
int run(Backend backend) {
  using namespace kvcache;
  // A Llama-3-8B-like model: 32 layers, GQA with 8 KV heads of 128, fp16.
  CacheConfig config;
  config.shape = ModelShape::gqa(32, 8, 128, DType::kF16);
  config.block_size = 16;
  config.budget_bytes = std::int64_t{256} << 20;  // 256 MiB of cache
  KVCacheManager<CachePolicy<PagedAllocation>, Backend> manager(config, std::move(backend));
  const ModelShape& shape = manager.shape();
  fmt::print("backend {}: {} blocks of {} tokens, {} bytes per token, {:.1f} MiB arena\n",
             manager.backend().name(), manager.num_blocks(), manager.block_size(),
             shape.bytes_per_token(), manager.memory().arena_bytes / 1048576.0);

  // Device buffers for one step's K and V (the model would write these).
  const std::int64_t max_tokens = 64;
  const auto row_bytes = static_cast<std::size_t>(shape.kv_width() * 2);
  Buffer k = manager.backend().allocate(row_bytes * max_tokens);
  Buffer v = manager.backend().allocate(row_bytes * max_tokens);

  const SeqId a = manager.create_sequence();
  const SeqId b = manager.create_sequence();
  std::vector<SeqId> seqs = {a, b};
  std::vector<std::int32_t> new_tokens = {37, 21};  // prompt lengths: the prefill step
  for (int step = 0; step < 5; ++step) {
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      if (manager.try_reserve(seqs[i], new_tokens[i]) != ReserveStatus::kOk) {
        fmt::print("pool full: the scheduler would preempt or evict here\n");
        return 1;
      }
    }
    AppendBatch batch = manager.prepare_append(seqs, new_tokens);
    FlashInferPageTable table = export_flashinfer(manager, batch);
    for (std::int32_t layer = 0; layer < shape.num_layers; ++layer) {
      const auto host_k = make_kv(shape, batch.num_tokens(), 1000u * step + 2u * layer);
      const auto host_v = make_kv(shape, batch.num_tokens(), 1000u * step + 2u * layer + 1u);
      manager.backend().copy_to_backend(k.data(), host_k.data(), host_k.size() * 2);
      manager.backend().copy_to_backend(v.data(), host_v.data(), host_v.size() * 2);
      manager.append(layer, batch,
                     TensorView::packed(k.data(), DType::kF16, batch.num_tokens(), 8, 128),
                     TensorView::packed(v.data(), DType::kF16, batch.num_tokens(), 8, 128));
      // attention(layer, q, table) would run here, reading the pages in place.
    }
    manager.commit(batch);
    if (step == 0 || step == 4) {
      fmt::print(
          "step {}: {} new tokens, indptr [{}], last_page_len [{}], first pages [{}]\n", step,
          batch.num_tokens(), fmt::join(table.indptr, " "), fmt::join(table.last_page_len, " "),
          fmt::join(std::vector<std::int32_t>(
                        table.indices.begin(),
                        table.indices.begin() + std::min<std::size_t>(6, table.indices.size())),
                    " "));
    }
    new_tokens = {1, 1};  // decode: one token per sequence per step
  }

  // Read sequence a's layer 31 back and check its last decoded token.
  const SequenceInfo info = manager.sequence(a);
  Buffer k_out = manager.backend().allocate(row_bytes * static_cast<std::size_t>(info.num_tokens));
  Buffer v_out = manager.backend().allocate(row_bytes * static_cast<std::size_t>(info.num_tokens));
  manager.gather(a, 31, TensorView::packed(k_out.data(), DType::kF16, info.num_tokens, 8, 128),
                 TensorView::packed(v_out.data(), DType::kF16, info.num_tokens, 8, 128));
  std::vector<std::uint16_t> back(static_cast<std::size_t>(info.num_tokens * shape.kv_width()));
  manager.backend().copy_to_host(back.data(), k_out.data(), back.size() * 2);
  const auto expected = make_kv(shape, 2, 1000u * 4 + 2u * 31);  // step 4: tokens of a, then b
  const bool same = std::memcmp(back.data() + (info.num_tokens - 1) * shape.kv_width(),
                                expected.data(), row_bytes) == 0;

  const MemoryStats stats = manager.memory();
  fmt::print(
      "sequence {}: {} tokens in {} blocks; gathered layer 31 matches what was appended: {}\n", a,
      info.num_tokens, info.blocks.size(), same ? "yes" : "NO");
  fmt::print("memory: {} of {} blocks used ({:.2f} MiB), {} tokens stored in {} token slots\n",
             stats.used_blocks, stats.num_blocks, stats.used_bytes() / 1048576.0,
             stats.stored_tokens, stats.reserved_tokens);
  fmt::print(
      "a dense cache of 2 x 2048 tokens would take {:.1f} MiB; the pages hold what is used\n",
      kv_cache_bytes(shape, 2048, 2) / 1048576.0);
  return same ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const bool force_cpu = argc > 1 && std::strcmp(argv[1], "--cpu") == 0;
  try {
    if (!force_cpu && kvcache::cuda_device_count() > 0) return run(kvcache::CudaBackend(0));
    fmt::print("{}; running on the CPU backend\n",
               force_cpu
                   ? "--cpu given"
                   : (kvcache::built_with_cuda() ? "no CUDA device found" : "built without CUDA"));
    return run(kvcache::HostBackend());
  } catch (const kvcache::Error& error) {
    std::fprintf(stderr, "kvcache error: %s\n", error.what());
    return 1;
  }
}
