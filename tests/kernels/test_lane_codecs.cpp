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
#include <numeric>
#include <random>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/codec/codecs.hpp"
#include "kvcache/kernels/launch_checks.hpp"

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
    // Lanes in a random order, as threads run: a lane that wrote another
    // lane's codes or scales (or a group's scale from a lane not its first)
    // would leave its bytes behind.
    std::vector<std::int32_t> order(static_cast<std::size_t>(lanes));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    for (std::int32_t l : order) {
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
    expect_both_lane_widths<Int8Rows<1, 4>>(d);  // 32 scale bytes a lane: two accesses
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
  expect_both_lane_widths<KiviRows<4, 2, 4>>(64);  // 4 groups a lane
}

// KIVI keys: a channel's codes and its scale and zero go out as single
// accesses (LaneBytes); the channel round trip equals encode_part and
// decode_value's, bit for bit, for every group size.
template <std::int32_t B, std::int32_t G, std::int32_t S>
void expect_key_channels_match(std::mt19937_64& rng) {
  using Rows = KiviRows<B, G, S>;
  const std::int32_t d = 16;
  const RegionLayout region = channel_major_region(G, 2, d, B, S);
  const CodecPageView view = make_codec_view(nullptr, 1, G, 1, 2, d, DType::kF32, region, region);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> x = random_row(G * 2 * d, rng, trial);
    std::vector<std::uint8_t> page(static_cast<std::size_t>(region.bytes), 0x5a);
    for (std::int32_t h = 0; h < 2; ++h) {
      for (std::int32_t c = 0; c < d; ++c) {
        const auto at = [&](std::int32_t t) {
          return x[static_cast<std::size_t>((t * 2 + h) * d + c)];
        };
        Rows::encode_key_channel(view, at, page.data(), h, c);
        // The reference: the group's values through encode_part.
        float values[G];
        for (std::int32_t t = 0; t < G; ++t)
          values[t] = at(t);
        std::vector<std::uint8_t> codes(static_cast<std::size_t>(Rows::kChannelCodeBytes)),
            scales(static_cast<std::size_t>(2 * S));
        Rows::encode_part(values, G, Rows::stat(values, G), codes.data(), 0, scales.data());
        ASSERT_EQ(std::memcmp(codes.data(), Rows::key_codes(view, page.data(), h, c), codes.size()),
                  0);
        ASSERT_EQ(
            std::memcmp(scales.data(), Rows::key_scale(view, page.data(), h, c), scales.size()), 0);
        Rows::decode_key_channel(view, page.data(), h, c, [&](std::int32_t t, float value) {
          const float expected = Rows::decode_key(view, page.data(), h, c, t);
          ASSERT_EQ(std::memcmp(&value, &expected, sizeof(float)), 0) << "token " << t;
        });
      }
    }
  }
}

TEST(LaneCodecs, KiviKeyChannelsMoveAsWholeAccesses) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  expect_key_channels_match<4, 32, 2>(rng);
  expect_key_channels_match<2, 32, 2>(rng);
  expect_key_channels_match<4, 4, 2>(rng);
  expect_key_channels_match<2, 4, 4>(rng);
  expect_key_channels_match<2, 24, 2>(rng);  // 6 bytes: three 2-byte accesses
  expect_key_channels_match<4, 128, 4>(rng);
}

// Every codec's own page layout keeps each lane's (and key channel's) single
// access aligned, for every dtype and head_dim the manager accepts: the
// launch checks pass it.
template <class Codec>
void expect_layouts_aligned() {
  using Rows = typename Codec::Rows;
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    for (std::int32_t d = 16 / dtype_size(dtype); d <= 512; d += 16 / dtype_size(dtype)) {
      if constexpr (requires { Rows::kGroup; }) {
        if (d % Rows::kGroup != 0) continue;
      }
      for (std::int32_t heads : {1, 3, 8}) {
        const ModelShape shape = ModelShape::gqa(2, heads, d, dtype);
        std::int32_t page = 16;
        if constexpr (Codec::kKind == CodecKind::kKivi) page = Rows::kGroup;
        const CodecPageView view =
            make_codec_view(reinterpret_cast<std::byte*>(std::uintptr_t{4096}), 4, page, 2, heads,
                            d, dtype, Codec::region(shape, page, 0), Codec::region(shape, page, 1));
        const kernels::LaunchProblem problem = kernels::checks::rows<Rows>(view);
        ASSERT_FALSE(problem) << Codec::name() << " " << dtype_name(dtype) << " head_dim " << d
                              << " heads " << heads << ": " << problem.field << " "
                              << problem.value;
      }
    }
  }
}

TEST(LaneCodecs, EveryCodecsLayoutKeepsLaneAccessesAligned) {
  expect_layouts_aligned<Int8Codec<32, 2>>();
  expect_layouts_aligned<Int8Codec<8, 4>>();
  expect_layouts_aligned<Int8Codec<4, 2>>();
  expect_layouts_aligned<Int8Codec<1, 4>>();
  expect_layouts_aligned<Fp8Codec<Fp8Scale::kPerHead>>();
  expect_layouts_aligned<KiviCodec<4, 32, 64, 2>>();
  expect_layouts_aligned<KiviCodec<2, 32, 32, 4>>();
  expect_layouts_aligned<KiviCodec<4, 4, 8, 2>>();
  expect_layouts_aligned<KiviCodec<2, 24, 48, 2>>();
  // ... and a layout that would misalign them is refused.
  using Kivi = KiviCodec<4, 32, 64, 2>;
  const ModelShape shape = ModelShape::gqa(1, 2, 128, DType::kF16);
  CodecPageView view = make_codec_view(nullptr, 1, 32, 1, 2, 128, DType::kF16,
                                       Kivi::region(shape, 32, 0), Kivi::region(shape, 32, 1));
  view.region[1].code_head_bytes += 2;  // value lanes move 4 bytes of codes
  EXPECT_TRUE(kernels::checks::rows<Kivi::Rows>(view).misaligned);
  view.region[1].code_head_bytes -= 2;
  view.region[0].code_head_bytes += 8;  // key channels move 16 bytes
  EXPECT_TRUE(kernels::checks::rows<Kivi::Rows>(view).misaligned);
  view.region[0].code_head_bytes -= 8;
  view.region[1].scale_head_bytes += 2;  // a group's scale and zero: 4 bytes
  EXPECT_TRUE(kernels::checks::rows<Kivi::Rows>(view).misaligned);
  view.region[1].scale_head_bytes -= 2;
  view.region[0].scale_head_bytes += 2;  // a key channel's scale and zero: 4 bytes
  EXPECT_TRUE(kernels::checks::rows<Kivi::Rows>(view).misaligned);
  view.region[0].scale_head_bytes -= 2;
  // Keys are channel-major whatever code_token_bytes says.
  view.region[0].code_token_bytes = 16;
  view.region[0].code_head_bytes += 4;
  EXPECT_TRUE(kernels::checks::rows<Kivi::Rows>(view).misaligned);
}

}  // namespace
}  // namespace kvcache::testing
