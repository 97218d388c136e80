// The CPU backend's paged attention: the lanes of kernels/attention.hpp run
// in turn for each (query row, head), then merged as the CUDA kernel merges
// them. Callers validate the parameters first.
#pragma once

#include <cstdint>
#include <vector>

#include "kvcache/kernels/attention.hpp"
#include "kvcache/kernels/codec_attention.hpp"

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

// Over compressed pages (kernels/codec_attention.hpp): the same lanes, each
// (row, head)'s query first projected when the codec attends in a space of
// its own, the merged accumulator mapped back to the output after.
template <class Rows, class T>
void codec_attention(const kernels::CodecAttentionParams<Rows>& p) {
  using kernels::kAttentionLanes;
  const std::int32_t d = p.cache.head_dim;
  std::vector<float> acc, query, merged;
  float max[kAttentionLanes], sum[kAttentionLanes];
  for (std::int32_t row = 0; row < p.num_rows; ++row) {
    for (std::int32_t head = 0; head < p.num_q_heads; ++head) {
      const auto r = kernels::codec_attention_row<Rows, T>(p, row, head);
      const std::int32_t dim = r.reader.dim();
      acc.resize(static_cast<std::size_t>(kAttentionLanes) * static_cast<std::size_t>(dim));
      query.resize(static_cast<std::size_t>(dim));
      merged.resize(static_cast<std::size_t>(dim));
      for (std::int32_t i = 0; i < dim; ++i)
        query[static_cast<std::size_t>(i)] = r.reader.query(r.q, i);
      for (std::int32_t lane = 0; lane < kAttentionLanes; ++lane) {
        kernels::attention_lane_over(r.reader, r.keys, query.data(), p.scale, lane,
                                     acc.data() + std::int64_t{lane} * dim, 1, max[lane],
                                     sum[lane]);
      }
      for (std::int32_t i = 0; i < dim; ++i) {
        merged[static_cast<std::size_t>(i)] =
            kernels::attention_merge(max, sum, acc.data(), dim, 1, i);
      }
      float* out = p.out + (std::int64_t{row} * p.num_q_heads + head) * d;
      for (std::int32_t i = 0; i < d; ++i)
        out[i] = canonical_float(r.reader.output(merged.data(), i));
    }
  }
}

}  // namespace kvcache::detail::cpu
KVCACHE_EXACT_FP_END
