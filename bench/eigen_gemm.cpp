#include "eigen_gemm.hpp"

#include <chrono>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>
#include <Eigen/Dense>

namespace kvcache::bench {
namespace {
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
}  // namespace

double eigen_gemm_seconds(std::int64_t rows, std::int32_t inner, std::int32_t cols,
                          std::int32_t products, std::int32_t repeats) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<Matrix> a, b, c;
  for (std::int32_t p = 0; p < products; ++p) {
    a.emplace_back(Matrix::NullaryExpr(rows, inner, [&] { return normal(rng); }));
    b.emplace_back(Matrix::NullaryExpr(inner, cols, [&] { return normal(rng); }));
    c.emplace_back(Matrix::Zero(rows, cols));
  }
  using Clock = std::chrono::steady_clock;
  double total = 0;
  for (std::int32_t r = 0; r <= repeats; ++r) {  // the first pass warms up
    const auto start = Clock::now();
    for (std::int32_t p = 0; p < products; ++p)
      c[static_cast<std::size_t>(p)].noalias() =
          a[static_cast<std::size_t>(p)] * b[static_cast<std::size_t>(p)];
    benchmark::ClobberMemory();
    if (r > 0) total += std::chrono::duration<double>(Clock::now() - start).count();
  }
  return total / repeats;
}

}  // namespace kvcache::bench
