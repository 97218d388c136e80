// Test-side helpers for the codecs: quantize and dequantize whole tensors on
// the host with the library's row codecs, relative Frobenius error, and a
// small float64 reference decode attention.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "kvcache/codec/codecs.hpp"

namespace kvcache::testing {

// Relative Frobenius error ||approx - exact|| / ||exact||.
inline double relative_error(const std::vector<float>& exact, const std::vector<float>& approx) {
  double difference = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < exact.size(); ++i) {
    const double d = static_cast<double>(approx[i]) - exact[i];
    difference += d * d;
    norm += static_cast<double>(exact[i]) * exact[i];
  }
  return std::sqrt(difference / norm);
}

// decode(encode(row)) of every head_dim-row of `values` (row-major), with
// the codec's row math (Rows: Int8Rows, Fp8Rows, KiviRows, LowRankRows).
template <class Rows>
std::vector<float> round_trip_rows(std::int32_t d, const std::vector<float>& values,
                                   const float* state = nullptr,
                                   std::int32_t* nonfinite = nullptr) {
  std::vector<float> out(values.size());
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(d) * 4 + 64),
      scales(static_cast<std::size_t>(d) * 8 + 64);
  for (std::size_t row = 0; row * d < values.size(); ++row) {
    const float* x = values.data() + row * d;
    const std::int32_t bad = Rows::encode(
        d, [&](std::int32_t i) { return x[i]; }, codes.data(), scales.data(), state);
    if (nonfinite != nullptr) *nonfinite += bad;
    Rows::decode(d, codes.data(), scales.data(), state,
                 [&](std::int32_t i, float v) { out[row * d + i] = v; });
  }
  return out;
}

// KIVI-style per-channel quantization of keys: every channel of every group
// of `Group` consecutive rows is one asymmetric group.
template <std::int32_t Bits, std::int32_t Group>
std::vector<float> round_trip_per_channel(const std::vector<float>& keys, std::int32_t head_dim) {
  using Rows = KiviRows<Bits, Group, 2>;
  const RegionLayout region = channel_major_region(Group, 1, head_dim, Bits, 2);
  const CodecPageView view =
      make_codec_view(nullptr, 1, Group, 1, 1, head_dim, DType::kF32, region, region);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(region.bytes));
  std::vector<float> out(keys.size());
  const std::size_t rows = keys.size() / static_cast<std::size_t>(head_dim);
  for (std::size_t first = 0; first + Group <= rows; first += static_cast<std::size_t>(Group)) {
    for (std::int32_t c = 0; c < head_dim; ++c) {
      Rows::encode_key_channel(
          view,
          [&](std::int32_t t) {
            return keys[(first + static_cast<std::size_t>(t)) * head_dim + c];
          },
          bytes.data(), 0, c);
      for (std::int32_t t = 0; t < Group; ++t) {
        out[(first + static_cast<std::size_t>(t)) * head_dim + c] =
            Rows::decode_key(view, bytes.data(), 0, c, t);
      }
    }
  }
  return out;
}

// Decode attention of one query over T cached rows (one head), in float64:
// softmax(q . k_t / sqrt(d)) weighted sum of v_t.
inline std::vector<double> attention(const std::vector<float>& q, const std::vector<float>& k,
                                     const std::vector<float>& v, std::int32_t head_dim) {
  const std::size_t tokens = k.size() / static_cast<std::size_t>(head_dim);
  std::vector<double> scores(tokens);
  double top = -1e300;
  for (std::size_t t = 0; t < tokens; ++t) {
    double dot = 0.0;
    for (std::int32_t i = 0; i < head_dim; ++i)
      dot += static_cast<double>(q[static_cast<std::size_t>(i)]) * k[t * head_dim + i];
    scores[t] = dot / std::sqrt(static_cast<double>(head_dim));
    top = std::max(top, scores[t]);
  }
  double sum = 0.0;
  for (double& s : scores)
    sum += (s = std::exp(s - top));
  std::vector<double> out(static_cast<std::size_t>(head_dim), 0.0);
  for (std::size_t t = 0; t < tokens; ++t) {
    for (std::int32_t i = 0; i < head_dim; ++i)
      out[static_cast<std::size_t>(i)] += scores[t] / sum * v[t * head_dim + i];
  }
  return out;
}

inline double relative_error(const std::vector<double>& exact, const std::vector<double>& approx) {
  double difference = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < exact.size(); ++i) {
    difference += (approx[i] - exact[i]) * (approx[i] - exact[i]);
    norm += exact[i] * exact[i];
  }
  return std::sqrt(difference / norm);
}

}  // namespace kvcache::testing
