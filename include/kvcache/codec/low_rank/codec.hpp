// LowRankCodec<Rank, C>: per layer, K/V and head a basis of Rank directions
// fitted to calibration rows (the top right singular vectors: Eigen's SVD on
// the CPU, covariance + cuSOLVER syevd on the GPU); pages hold only the Rank
// coefficients of each row (C bytes each: 2 = fp16, 4 = fp32), never the
// reconstructed rows.
//
//   encode: c_j = sum_i x_i B[i][j]        decode: x_i = sum_j c_j B[i][j]
//
// Both sums run in index order with plain (unfused) multiply and add, on the
// CPU and on the GPU, so both give the same coefficients and rows bit for bit.
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "kvcache/buffer.hpp"
#include "kvcache/codec/low_rank/rows.hpp"
#include "kvcache/codec/page_view.hpp"
#include "kvcache/codec/quant_math.hpp"
#include "kvcache/codec/storage.hpp"
#include "kvcache/codec/token_codec.hpp"
#include "kvcache/error.hpp"
#include "kvcache/kernels/params.hpp"
#include "kvcache/types.hpp"

namespace kvcache {

// Workspace a backend's low-rank fit needs (two-phase, as CUB's temp storage:
// the storage asks once, at construction, and passes it to every fit).
template <class Backend>
Buffer low_rank_fit_workspace(Backend&, std::int32_t, std::int32_t, std::int32_t) {
  return Buffer();
}

template <std::int32_t Rank = 32, std::int32_t CoefficientBytes = 2>
struct LowRankCodec : codec::TokenCodec<LowRankRows<Rank, CoefficientBytes>> {
  static_assert(CoefficientBytes == 2 || CoefficientBytes == 4, "coefficients are 16-bit or fp32");
  static constexpr CodecKind kKind = CodecKind::kLowRank;
  static constexpr std::int32_t kRank = Rank;

  template <class Backend>
  class Calibration {
   public:
    static constexpr bool kFits = true;
    Calibration(const CacheConfig& config, Backend& backend)
        : workspace_(low_rank_fit_workspace(backend, config.shape.num_kv_heads,
                                            config.shape.head_dim, Rank)) {}
    void fit(Backend& backend, const kernels::SampleView& sample, float* basis, float* energy) {
      kernels::LowRankFitParams params;
      params.sample = sample;
      params.rank = Rank;
      params.basis = basis;
      params.energy_kept = energy;
      params.workspace = workspace_.data();
      params.workspace_bytes = workspace_.size();
      launch(backend, params);
    }

   private:
    Buffer workspace_;
  };
  template <class Backend>
  using Storage = codec::TokenCodecStorage<LowRankCodec, Backend>;

  static std::string name() { return fmt::format("low-rank-r{}", Rank); }
  static void validate(const CacheConfig& config) {
    codec::require_nhd(config.layout, name());
    if (Rank < 1 || Rank > config.shape.head_dim) {
      detail::raise<InvalidArgument>("{}: rank {} is outside [1, head_dim {}]", name(), Rank,
                                     config.shape.head_dim);
    }
  }
};

}  // namespace kvcache
