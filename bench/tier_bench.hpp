// The host tier's offload and onboard, through the manager as an engine uses
// it, against a plain copy of the same bytes in the same iteration: a pool
// of 2K blocks with a prompt's K blocks cached; a sequence reserving 2K
// blocks evicts them into the tier (offload: K blocks, page -> slot), then
// create_sequence(prompt) brings them back (onboard: K blocks, slot -> page).
// Geometry: Llama-3-8B-like, 32 layers x 8 KV heads x 128, fp16, block 16:
// 2 MiB per block. The copy it is compared with moves the same K blocks one
// block at a time between the same kinds of memory (CPU: memcpy; GPU:
// cudaMemcpyAsync between device and pinned memory).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "bench_common.hpp"
#include "kvcache/kvcache.hpp"
#include "kvcache/tier/host_tier.hpp"

namespace kvcache::bench {

template <class Backend>
class TierRoundTrip {
 public:
  using Policy = CachePolicy<PagedAllocation, LruEviction, PrefixSharing>;
  using Manager = KVCacheManager<Policy, Backend>;

  TierRoundTrip(std::int64_t blocks, Backend backend) : blocks_(blocks) {
    CacheConfig config;
    config.shape = ModelShape::gqa(smoke() ? 2 : 32, 8, 128, DType::kF16);
    config.block_size = 16;
    config.num_blocks = 2 * blocks;
    config.max_batch_tokens = static_cast<std::int32_t>(2 * blocks * 16);
    config.max_batch_sequences = 1;
    manager_ = std::make_unique<Manager>(config, std::move(backend));
    const auto block_bytes = static_cast<std::size_t>(manager_->bytes_per_block());
    tier_ = std::make_unique<HostTier<>>(
        manager_->bytes_per_block(), 2 * blocks,
        manager_->backend().allocate_host(block_bytes * static_cast<std::size_t>(2 * blocks)));
    manager_->attach_tier(*tier_);
    // The prompt, prefilled once (zero rows: the bytes do not matter here).
    for (std::int64_t i = 0; i < blocks * 16; ++i)
      prompt_.push_back(static_cast<std::int32_t>(1000 + i));
    const SeqId seq = manager_->create_sequence(prompt_);
    const auto tokens = static_cast<std::int32_t>(prompt_.size());
    (void)manager_->try_reserve(seq, tokens);
    const ModelShape& shape = manager_->shape();
    const auto row_bytes = static_cast<std::size_t>(shape.kv_width() * 2);
    Buffer rows = manager_->backend().allocate(row_bytes * prompt_.size());
    manager_->backend().fill_zero(rows.data(), rows.size());
    AppendBatch batch =
        manager_->prepare_append(std::vector<SeqId>{seq}, std::vector<std::int32_t>{tokens});
    const TensorView view =
        TensorView::packed(rows.data(), shape.dtype, tokens, shape.num_kv_heads, shape.head_dim);
    for (std::int32_t layer = 0; layer < shape.num_layers; ++layer)
      manager_->append(layer, batch, view, view);
    manager_->commit(batch);
    manager_->release(seq);  // K blocks cached in the pool
  }
  ~TierRoundTrip() { manager_->detach_tier(); }

  // Evicts the prompt's K cached blocks into the tier.
  void offload() {
    const SeqId seq = manager_->create_sequence();
    if (manager_->try_reserve(seq, 2 * blocks_ * 16) != ReserveStatus::kOk)
      throw std::runtime_error("tier bench: the pool did not make room");
    pending_ = seq;
  }
  // Untimed between the two: the reservation is given back.
  void settle() { manager_->release(pending_); }
  // Brings the prompt's K blocks back (and leaves them cached again).
  void onboard() {
    const SeqId seq = manager_->create_sequence(prompt_);
    if (manager_->sequence(seq).num_tokens != blocks_ * 16)
      throw std::runtime_error("tier bench: the prompt did not come back whole");
    pending_ = seq;
  }

  Manager& manager() { return *manager_; }
  std::int64_t blocks() const { return blocks_; }
  std::int64_t block_bytes() const { return manager_->bytes_per_block(); }

 private:
  std::int64_t blocks_;
  std::unique_ptr<HostTier<>> tier_;
  std::unique_ptr<Manager> manager_;
  std::vector<std::int32_t> prompt_;
  SeqId pending_ = 0;
};

}  // namespace kvcache::bench
