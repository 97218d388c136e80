// The CPU backend's paged attention: the lanes of kernels/attention.hpp run
// in turn for each (query row, head), then merged as the CUDA kernel merges
// them. Callers validate the parameters first.
#pragma once

#include <cstdint>
#include <vector>

#include "kvcache/kernels/attention.hpp"

KVCACHE_EXACT_FP_BEGIN  // no FMA contraction here (config.hpp)

namespace kvcache::detail::cpu {

template <class T>
void paged_attention(const kernels::AttentionParams& p) {
  using kernels::kAttentionLanes;
  const std::int32_t d = p.cache.head_dim;
  std::vector<float> acc(static_cast<std::size_t>(kAttentionLanes) * static_cast<std::size_t>(d));
  float max[kAttentionLanes], sum[kAttentionLanes];
  for (std::int32_t row = 0; row < p.num_rows; ++row) {
    for (std::int32_t head = 0; head < p.num_q_heads; ++head) {
      for (std::int32_t lane = 0; lane < kAttentionLanes; ++lane) {
        kernels::attention_lane<T>(p, row, head, lane, acc.data() + std::int64_t{lane} * d, 1,
                                   max[lane], sum[lane]);
      }
      float* out = p.out + (std::int64_t{row} * p.num_q_heads + head) * d;
      for (std::int32_t lane = 0; lane < kAttentionLanes; ++lane)
        kernels::attention_merge_lane(max, sum, acc.data(), d, d, lane, out);
    }
  }
}

}  // namespace kvcache::detail::cpu
KVCACHE_EXACT_FP_END
