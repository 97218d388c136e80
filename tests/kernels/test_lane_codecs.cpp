// The lane split of the codec kernels, on the CPU: a row encoded lane by
// lane (N values per thread, a scale group's statistics combined over its
// lanes, as kernels/row_codec.cuh does through shared memory) gives the same
// codes, scales and non-finite count as the whole-row encode the CPU backend
// runs, and lane decodes give the same values. Fresh random rows, with NaN,
// +-Inf, all-zero groups and outliers mixed in.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/codec/codecs.hpp"

namespace kvcache::testing {
namespace {

std::vector<float> random_row(std::int32_t d, std::mt19937_64& rng, int trial) {
  std::normal_distribution<float> normal(0.0f, trial % 7 == 0 ? 1000.0f : 1.0f);
  std::vector<float> x(static_cast<std::size_t>(d));
  for (float& v : x)
    v = normal(rng);
  const auto at = [&] { return static_cast<std::size_t>(rng() % static_cast<std::uint64_t>(d)); };
  if (trial % 5 == 0) x[at()] = std::numeric_limits<float>::quiet_NaN();
  if (trial % 6 == 0) x[at()] = -std::numeric_limits<float>::infinity();
  if (trial % 8 == 0) x[at()] = std::numeric_limits<float>::infinity();
  if (trial % 9 == 0) std::fill(x.begin(), x.begin() + std::min<std::int32_t>(d, 8), 0.0f);
  return x;
}

template <class Rows, std::int32_t N>
void expect_lanes_match_rows(std::int32_t d, const float* state, std::mt19937_64& rng) {
  SCOPED_TRACE(::testing::Message() << "head_dim " << d << ", " << N << " values a lane");
  const std::int32_t lanes = d / N;
  const auto code_bytes = static_cast<std::size_t>(Rows::code_bytes(d));
  const auto scale_bytes = static_cast<std::size_t>(Rows::scale_bytes(d));
  for (int trial = 0; trial < 300; ++trial) {
    const std::vector<float> x = random_row(d, rng, trial);
    std::vector<std::uint8_t> row_codes(code_bytes + 1, 0xaa), row_scales(scale_bytes + 1, 0xaa);
    const std::int32_t row_bad = Rows::encode(
        d, [&](std::int32_t i) { return x[static_cast<std::size_t>(i)]; }, row_codes.data(),
        row_scales.data(), state);
    std::vector<std::uint8_t> lane_codes(code_bytes + 1, 0x55), lane_scales(scale_bytes + 1, 0x55);
    std::vector<typename Rows::Partial> partials(static_cast<std::size_t>(lanes));
    std::vector<std::array<float, N>> values(static_cast<std::size_t>(lanes));
    for (std::int32_t l = 0; l < lanes; ++l) {
      float v[N];
      for (std::int32_t i = 0; i < N; ++i)
        v[i] = values[static_cast<std::size_t>(l)][static_cast<std::size_t>(i)] =
            x[static_cast<std::size_t>(l * N + i)];
      partials[static_cast<std::size_t>(l)] = Rows::template lane_partial<N>(v);
    }
    std::int32_t lane_bad = 0;
    for (std::int32_t l = 0; l < lanes; ++l) {
      typename Rows::Partial group{};
      if constexpr (Rows::template kGroupSpansLanes<N>) {
        constexpr std::int32_t kGroupLanes = Rows::kGroup / N;
        const std::int32_t first = l - l % kGroupLanes;
        group = partials[static_cast<std::size_t>(first)];
        for (std::int32_t i = 1; i < kGroupLanes; ++i)
          group = Rows::combine(group, partials[static_cast<std::size_t>(first + i)]);
      }
      float v[N];
      std::memcpy(v, values[static_cast<std::size_t>(l)].data(), sizeof(v));
      lane_bad +=
          Rows::template encode_lane<N>(l, v, group, lane_codes.data(), lane_scales.data(), state);
    }
    ASSERT_EQ(std::memcmp(lane_codes.data(), row_codes.data(), code_bytes), 0) << "trial " << trial;
    ASSERT_EQ(std::memcmp(lane_scales.data(), row_scales.data(), scale_bytes), 0)
        << "trial " << trial;
    ASSERT_EQ(lane_bad, row_bad);
    // Nothing past the row was touched.
    ASSERT_EQ(lane_codes[code_bytes], 0x55);
    ASSERT_EQ(lane_scales[scale_bytes], 0x55);
    std::vector<float> row_out(static_cast<std::size_t>(d));
    Rows::decode(d, row_codes.data(), row_scales.data(), state, [&](std::int32_t i, float value) {
      row_out[static_cast<std::size_t>(i)] = value;
    });
    for (std::int32_t l = 0; l < lanes; ++l) {
      float out[N];
      Rows::template decode_lane<N>(l, row_codes.data(), row_scales.data(), state, out);
      for (std::int32_t i = 0; i < N; ++i) {
        const float expected = row_out[static_cast<std::size_t>(l * N + i)];
        ASSERT_EQ(std::memcmp(&out[i], &expected, sizeof(float)), 0)
            << "trial " << trial << " value " << l * N + i;
      }
    }
  }
}

template <class Rows>
void expect_both_lane_widths(std::int32_t d, const float* state = nullptr) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  expect_lanes_match_rows<Rows, 8>(d, state, rng);  // fp16 / bf16 inputs
  expect_lanes_match_rows<Rows, 4>(d, state, rng);  // fp32 inputs
}

TEST(LaneCodecs, Int8LanesEqualRows) {
  for (std::int32_t d : {64, 128, 256}) {
    expect_both_lane_widths<Int8Rows<32, 2>>(d);
    expect_both_lane_widths<Int8Rows<32, 4>>(d);
    expect_both_lane_widths<Int8Rows<64, 2>>(d);
    expect_both_lane_widths<Int8Rows<128, 4>>(d == 64 ? 128 : d);
    expect_both_lane_widths<Int8Rows<8, 2>>(d);
    expect_both_lane_widths<Int8Rows<4, 2>>(d);
    expect_both_lane_widths<Int8Rows<2, 4>>(d);
  }
  expect_both_lane_widths<Int8Rows<4, 4>>(8);  // the conformance suite's tiny rows
}

TEST(LaneCodecs, Fp8LanesEqualRows) {
  const float scale = 1.0f / 64.0f;
  for (std::int32_t d : {8, 64, 128, 256})
    expect_both_lane_widths<Fp8Rows>(d, &scale);
}

TEST(LaneCodecs, KiviValueLanesEqualRows) {
  for (std::int32_t d : {64, 128, 256}) {
    expect_both_lane_widths<KiviRows<4, 32, 2>>(d);
    expect_both_lane_widths<KiviRows<2, 32, 2>>(d);
    expect_both_lane_widths<KiviRows<4, 64, 4>>(d);
  }
  expect_both_lane_widths<KiviRows<4, 4, 2>>(8);
  expect_both_lane_widths<KiviRows<2, 4, 2>>(8);
}

}  // namespace
}  // namespace kvcache::testing
