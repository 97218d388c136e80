// Fitting the low-rank codec's bases on the CPU: per head, the top `rank`
// right singular vectors of the calibration rows (Eigen's BDCSVD), and the
// fraction of the rows' energy (squared Frobenius norm) they keep.
//
// Compiled once into the library (src/low_rank_fit.cpp), so that code which
// includes the headers does not parse Eigen.
#pragma once

#include "kvcache/kernels/codec_params.hpp"

namespace kvcache::kernels::cpu {

void low_rank_fit(const LowRankFitParams& p);

}  // namespace kvcache::kernels::cpu
