// Paged attention on a manager filled by StepDriver, for the CPU test (against
// a dense double-precision attention over the recorded K/V) and the CUDA test
// (against the CPU backend).
#pragma once

#include <cmath>
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

}  // namespace kvcache::testing
