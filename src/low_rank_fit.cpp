// The CPU low-rank fit (declared in kvcache/backend/host.hpp).
#include "kvcache/backend/host.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <cstdint>

#include "kvcache/codec/quant_math.hpp"

namespace kvcache::detail::cpu {

void low_rank_fit(const kernels::LowRankFitParams& p) {
  const kernels::SampleView& s = p.sample;
  for (std::int32_t h = 0; h < s.num_heads; ++h) {
    Eigen::MatrixXd rows(s.num_tokens, s.head_dim);
    for (std::int32_t t = 0; t < s.num_tokens; ++t) {
      const auto* row =
          static_cast<const std::byte*>(s.data) + t * s.token_bytes + h * s.head_bytes;
      for (std::int32_t d = 0; d < s.head_dim; ++d) {
        const float value = load_as_float(row, s.dtype, d);
        rows(t, d) = codec::is_finite(value) ? value : 0.0;
      }
    }
    Eigen::BDCSVD<Eigen::MatrixXd> svd(rows, Eigen::ComputeThinV);
    const Eigen::VectorXd& sigma = svd.singularValues();  // descending
    const Eigen::MatrixXd& v = svd.matrixV();             // head_dim x min(n, head_dim)
    double kept = 0.0;
    double total = 0.0;
    for (Eigen::Index i = 0; i < sigma.size(); ++i) {
      total += sigma(i) * sigma(i);
      if (i < p.rank) kept += sigma(i) * sigma(i);
    }
    float* basis = p.basis + static_cast<std::int64_t>(h) * s.head_dim * p.rank;
    for (std::int32_t d = 0; d < s.head_dim; ++d) {
      for (std::int32_t j = 0; j < p.rank; ++j) {
        // Fewer rows than rank leaves the extra directions empty.
        basis[d * p.rank + j] = j < v.cols() ? static_cast<float>(v(d, j)) : 0.0f;
      }
    }
    p.energy_kept[h] = total > 0.0 ? static_cast<float>(kept / total) : 1.0f;
  }
}

}  // namespace kvcache::detail::cpu
