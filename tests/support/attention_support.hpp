// Paged attention on a manager filled by StepDriver, for the CPU test (against
// a dense double-precision attention over the recorded K/V) and the CUDA test
// (against the CPU backend).
#pragma once

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache::testing {

// Random fp32 queries: [rows][q_heads][head_dim], N(0, 1).
inline std::vector<float> random_queries(std::int64_t rows, std::int32_t q_heads,
                                         std::int32_t head_dim, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(static_cast<std::size_t>(rows * q_heads * head_dim));
  for (float& x : q)
    x = normal(rng);
  return q;
}

// PagedAttention over the committed sequences on the manager's backend, one
// layer; the output back on the host.
template <class Manager>
std::vector<float> run_attention(Manager& m, const std::vector<SeqId>& seqs,
                                 const std::vector<std::int32_t>& rows, std::int32_t q_heads,
                                 std::int32_t layer, const std::vector<float>& q) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(m.shape().head_dim));
  PagedAttention<Manager> attention(m, seqs, rows, q_heads, scale);
  const std::size_t bytes = q.size() * sizeof(float);
  Buffer dq = m.backend().allocate(bytes), dout = m.backend().allocate(bytes);
  m.backend().copy_to_backend(dq.data(), q.data(), bytes);
  attention.run(layer, static_cast<const float*>(dq.data()), static_cast<float*>(dout.data()));
  std::vector<float> out(q.size());
  m.backend().copy_to_host(out.data(), dout.data(), bytes);
  return out;
}

// The lanes of kernels/attention.hpp run one after another, merged as the
// CUDA kernel merges them: the device's order of operations, on the host.
// The CPU backend runs the lanes side by side; both must give these bits.
template <class T>
std::vector<float> lane_by_lane(const kernels::AttentionParams& p) {
  using kernels::kAttentionLanes;
  const std::int32_t d = p.cache.head_dim;
  std::vector<float> out(static_cast<std::size_t>(p.num_rows) * p.num_q_heads * d);
  std::vector<float> acc(static_cast<std::size_t>(kAttentionLanes) * d);
  float max[kAttentionLanes], sum[kAttentionLanes];
  for (std::int32_t row = 0; row < p.num_rows; ++row) {
    for (std::int32_t head = 0; head < p.num_q_heads; ++head) {
      for (std::int32_t lane = 0; lane < kAttentionLanes; ++lane)
        kernels::attention_lane<T>(p, row, head, lane, acc.data() + std::int64_t{lane} * d, 1,
                                   max[lane], sum[lane]);
      float* o = out.data() + (std::int64_t{row} * p.num_q_heads + head) * d;
      for (std::int32_t lane = 0; lane < kAttentionLanes; ++lane)
        kernels::attention_merge_lane(max, sum, acc.data(), d, d, lane, o);
    }
  }
  return out;
}
template <class Rows, class T>
std::vector<float> lane_by_lane(const kernels::CodecAttentionParams<Rows>& p) {
  using kernels::kAttentionLanes;
  const std::int32_t d = p.cache.head_dim;
  std::vector<float> out(static_cast<std::size_t>(p.num_rows) * p.num_q_heads * d);
  float max[kAttentionLanes], sum[kAttentionLanes];
  for (std::int32_t row = 0; row < p.num_rows; ++row) {
    for (std::int32_t head = 0; head < p.num_q_heads; ++head) {
      const auto r = kernels::codec_attention_row<Rows, T>(p, row, head);
      const std::int32_t dim = r.reader.dim();
      std::vector<float> acc(static_cast<std::size_t>(kAttentionLanes) * dim), query(dim),
          merged(dim);
      for (std::int32_t i = 0; i < dim; ++i)
        query[static_cast<std::size_t>(i)] = r.reader.query(r.q, i);
      for (std::int32_t lane = 0; lane < kAttentionLanes; ++lane)
        kernels::attention_lane_over(r.reader, r.keys, query.data(), p.scale, lane,
                                     acc.data() + std::int64_t{lane} * dim, 1, max[lane],
                                     sum[lane]);
      for (std::int32_t i = 0; i < dim; ++i)
        merged[static_cast<std::size_t>(i)] =
            kernels::attention_merge(max, sum, acc.data(), dim, 1, i);
      float* o = out.data() + (std::int64_t{row} * p.num_q_heads + head) * d;
      for (std::int32_t i = 0; i < d; ++i)
        o[i] = canonical_float(r.reader.output(merged.data(), i));
    }
  }
  return out;
}

// The CPU backend's attention (lanes side by side) against the lanes run one
// after another (the device's order): true when every bit agrees.
template <class Manager>
bool lanes_agree(Manager& m, const std::vector<SeqId>& seqs, const std::vector<std::int32_t>& rows,
                 std::int32_t q_heads, std::int32_t layer, const std::vector<float>& q) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(m.shape().head_dim));
  PagedAttention<Manager> attention(m, seqs, rows, q_heads, scale);
  std::vector<float> got(q.size());
  attention.run(layer, q.data(), got.data());
  const auto p = attention.params(layer, q.data(), got.data());
  const std::vector<float> want = dispatch_dtype(m.shape().dtype, [&]<class T>() {
    if constexpr (Manager::Codec::kKind == CodecKind::kPlain) {
      return lane_by_lane<T>(p);
    } else {
      return lane_by_lane<typename Manager::Codec::Rows, T>(p);
    }
  });
  return want.size() == got.size() &&
         std::memcmp(want.data(), got.data(), got.size() * sizeof(float)) == 0;
}

// The largest |out - dense attention| in double precision, for query rows
// laid out as for run_attention over sequences whose K and V are given as
// [tokens][kv_heads][head_dim] of `dtype` (k[b], v[b]; lengths[b] tokens).
inline double worst_against_dense(const std::vector<const std::byte*>& k,
                                  const std::vector<const std::byte*>& v,
                                  const std::vector<std::int64_t>& lengths, DType dtype,
                                  std::int32_t kv_heads, std::int32_t d,
                                  const std::vector<std::int32_t>& rows, std::int32_t q_heads,
                                  const std::vector<float>& q, const std::vector<float>& out) {
  double worst = 0;
  std::int64_t row = 0;
  for (std::size_t b = 0; b < rows.size(); ++b) {
    for (std::int32_t i = 0; i < rows[b]; ++i, ++row) {
      const std::int64_t keys = lengths[b] - rows[b] + i + 1;
      for (std::int32_t h = 0; h < q_heads; ++h) {
        const std::int32_t kv = h / (q_heads / kv_heads);
        const float* qh = &q[static_cast<std::size_t>((row * q_heads + h) * d)];
        std::vector<double> score(static_cast<std::size_t>(keys));
        double top = -1e300;
        for (std::int64_t j = 0; j < keys; ++j) {
          double dot = 0;
          for (std::int32_t e = 0; e < d; ++e)
            dot += double{qh[e]} * load_as_float(k[b], dtype, (j * kv_heads + kv) * d + e);
          score[static_cast<std::size_t>(j)] = dot / std::sqrt(double(d));
          top = std::max(top, score[static_cast<std::size_t>(j)]);
        }
        double total = 0;
        for (double& s : score)
          total += (s = std::exp(s - top));
        for (std::int32_t e = 0; e < d; ++e) {
          double want = 0;
          for (std::int64_t j = 0; j < keys; ++j)
            want += score[static_cast<std::size_t>(j)] / total *
                    load_as_float(v[b], dtype, (j * kv_heads + kv) * d + e);
          const float got = out[static_cast<std::size_t>((row * q_heads + h) * d + e)];
          worst = std::max(worst, std::abs(got - want));
        }
      }
    }
  }
  return worst;
}

// The same over what gather() returns for each sequence of `layer` (the
// reference a codec's attention is held to: its decoded values).
template <class Manager>
double worst_against_gathered(Manager& m, const std::vector<SeqId>& seqs,
                              const std::vector<std::int32_t>& rows, std::int32_t q_heads,
                              std::int32_t layer, const std::vector<float>& q,
                              const std::vector<float>& out) {
  const ModelShape& shape = m.shape();
  std::vector<std::vector<std::byte>> k(seqs.size()), v(seqs.size());
  std::vector<const std::byte*> kp, vp;
  std::vector<std::int64_t> lengths;
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    const std::int64_t length = m.sequence(seqs[b]).num_tokens;
    const auto bytes =
        static_cast<std::size_t>(length * shape.kv_width() * dtype_size(shape.dtype));
    Buffer dk = m.backend().allocate(bytes), dv = m.backend().allocate(bytes);
    m.gather(
        seqs[b], layer,
        TensorView::packed(dk.data(), shape.dtype, length, shape.num_kv_heads, shape.head_dim),
        TensorView::packed(dv.data(), shape.dtype, length, shape.num_kv_heads, shape.head_dim));
    k[b].resize(bytes);
    v[b].resize(bytes);
    m.backend().copy_to_host(k[b].data(), dk.data(), bytes);
    m.backend().copy_to_host(v[b].data(), dv.data(), bytes);
    kp.push_back(k[b].data());
    vp.push_back(v[b].data());
    lengths.push_back(length);
  }
  return worst_against_dense(kp, vp, lengths, shape.dtype, shape.num_kv_heads, shape.head_dim, rows,
                             q_heads, q, out);
}

}  // namespace kvcache::testing
