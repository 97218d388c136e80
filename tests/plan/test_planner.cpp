// The capacity planner: its arithmetic against a hand computation, presets
// with their real shapes, shapes given by hand, profiles chosen by memory,
// a model that does not fit, and bad input refused naming the value.
#include <gtest/gtest.h>

#include <random>

#include "kv_test_support.hpp"
#include "kvcache/plan/planner.hpp"

namespace kvcache::testing {
namespace {

using plan::kGiB;

TEST(PlanModels, PresetsHaveTheirReleasedShapes) {
  const auto llama2 = plan::find_model("llama-2-7b");
  EXPECT_EQ(llama2.shape.num_layers, 32);
  EXPECT_EQ(llama2.shape.num_kv_heads, 32);
  EXPECT_EQ(llama2.shape.bytes_per_token(), 524288);  // 0.5 MiB: 2 x 32 x 32 x 128 x 2
  const auto llama3 = plan::find_model("llama-3-8b");
  EXPECT_EQ(llama3.shape.bytes_per_token(), 131072);  // grouped: 8 KV heads
  EXPECT_EQ(plan::find_model("llama-3-70b").shape.bytes_per_token(), 327680);
  EXPECT_EQ(plan::find_model("qwen2.5-7b").shape.num_kv_heads, 4);
  EXPECT_EQ(plan::find_model("mistral-7b").shape.num_kv_heads, 8);
  EXPECT_EQ(plan::find_model("qwen2.5-72b").shape.num_layers, 80);
  const auto custom = plan::find_model("40:8:64:fp32");
  EXPECT_EQ(custom.shape.num_layers, 40);
  EXPECT_EQ(custom.shape.dtype, DType::kF32);
  EXPECT_EQ(custom.params_billion, 0);
  EXPECT_TRUE(throws_with<InvalidArgument>([] { (void)plan::find_model("llama-4"); },
                                           {"\"llama-4\"", "llama-3-8b", "qwen2.5-72b"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([] { (void)plan::find_model("32:x:128"); },
                                           {"\"x\"", "is not a number"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([] { (void)plan::find_model("32:8:128:int4"); },
                                           {"\"int4\"", "fp16, bf16 or fp32"}));
}

// Fresh random memories and contexts: each row is the hand computation.
TEST(PlanArithmetic, RowsAreTheHandComputation) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 20; ++round) {
    const auto& presets = plan::model_presets();
    const plan::ModelPreset model = presets[rng() % presets.size()];
    plan::PlanInput in;
    in.model = model;
    in.memory_bytes = static_cast<std::int64_t>(8 + rng() % 200) * kGiB;
    in.context = 1 + static_cast<std::int64_t>(rng() % 32768);
    const plan::Plan p = plan::make_plan(in);
    const std::int64_t weights =
        static_cast<std::int64_t>(model.params_billion * 1e9 * dtype_size(model.shape.dtype));
    EXPECT_EQ(p.weights_bytes, weights);
    const std::int64_t left = in.memory_bytes - weights;
    EXPECT_EQ(p.cache_bytes, left <= 0 ? 0
                                       : static_cast<std::int64_t>(static_cast<double>(left) *
                                                                   p.profile->cache_share));
    ASSERT_EQ(p.rows.size(), plan::codec_costs().size());
    const plan::PlanRow& plain = p.rows[0];
    ASSERT_EQ(plain.codec, "plain");
    const std::int64_t block = model.shape.bytes_per_token() * p.block_size;
    EXPECT_EQ(plain.block_bytes, block);
    EXPECT_EQ(plain.blocks, p.cache_bytes / block);
    EXPECT_EQ(plain.tokens, plain.blocks * p.block_size);
    EXPECT_EQ(plain.sequences, plain.blocks / ((in.context + p.block_size - 1) / p.block_size));
    for (std::size_t i = 0; i < p.rows.size(); ++i) {
      const plan::PlanRow& r = p.rows[i];
      EXPECT_LE(r.bytes_per_token, plain.bytes_per_token) << r.codec;  // compression never costs
      // A codec with nothing beside its blocks holds at least plain's tokens.
      if (plan::codec_costs()[i].fixed_bytes(model.shape, p.profile->max_batch) == 0) {
        EXPECT_GE(r.tokens, plain.tokens) << r.codec;
      }
    }
    EXPECT_EQ(left <= 0, !p.notes.empty());
  }
}

TEST(PlanProfiles, TheLargestProfileNotAboveTheMemory) {
  EXPECT_EQ(plan::profile_for(8 * kGiB).memory_gib, 8);
  EXPECT_EQ(plan::profile_for(23 * kGiB + 600 * (kGiB >> 10)).memory_gib, 24) << "a 24 GB card";
  EXPECT_EQ(plan::profile_for(79 * kGiB).memory_gib, 48);
  EXPECT_EQ(plan::profile_for(80 * kGiB).memory_gib, 80);
  EXPECT_EQ(plan::profile_for(141 * kGiB).memory_gib, 141);
  EXPECT_EQ(plan::profile_for(4 * kGiB).memory_gib, 8) << "below every profile: the smallest";
  std::int64_t last = 0;
  for (const plan::DeviceProfile& p : plan::device_profiles()) {
    EXPECT_GT(p.memory_gib, last);
    last = p.memory_gib;
    EXPECT_FALSE(p.why.empty());
  }
}

// The article's 8 GB preset: a 7B model in fp16 does not fit beside its
// weights; with 4-bit weights it does, and int8 K/V nearly doubles it.
TEST(PlanProfiles, TheArticlesEightGigabytePresetIsCorrected) {
  plan::PlanInput in;
  in.model = plan::find_model("llama-2-7b");
  in.memory_bytes = 8 * kGiB;
  in.context = 2048;
  const plan::Plan fp16 = plan::make_plan(in);
  EXPECT_EQ(fp16.cache_bytes, 0);
  ASSERT_EQ(fp16.notes.size(), 1u);
  EXPECT_NE(fp16.notes[0].find("do not fit"), std::string::npos);
  EXPECT_EQ(fp16.rows[0].sequences, 0);
  in.weights_gib = 3.7;
  const plan::Plan int4_weights = plan::make_plan(in);
  EXPECT_EQ(int4_weights.rows[0].sequences, 3)
      << "batch 3 at 2048, not the original design's batch 2";
  EXPECT_GT(int4_weights.rows[1].tokens, 18 * int4_weights.rows[0].tokens / 10) << "int8";
}

TEST(PlanInputs, BadValuesAreRefusedNamingThem) {
  plan::PlanInput in;
  in.model = plan::find_model("llama-3-8b");
  in.memory_bytes = 1000;
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { (void)plan::make_plan(in); }, {"1000 bytes"}));
  in.memory_bytes = 24 * kGiB;
  in.context = 0;
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { (void)plan::make_plan(in); }, {"context of 0"}));
  in.context = 8192;
  in.block_size = 24;
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { (void)plan::make_plan(in); }, {"block size 24"}));
  in.block_size.reset();
  in.model = plan::find_model("32:8:128");
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { (void)plan::make_plan(in); }, {"weights"}));
  in.weights_gib = 15.0;
  EXPECT_EQ(plan::make_plan(in).weights_bytes, 15 * kGiB);
}

}  // namespace
}  // namespace kvcache::testing
