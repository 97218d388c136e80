#include <gtest/gtest.h>

#include "kv_test_support.hpp"
#include "kvcache/model_shape.hpp"

namespace kvcache {
namespace {

using kvcache::testing::throws_with;

TEST(ModelShape, ReproducesTheArticleExample) {
  // LLaMA-7B: 32 layers, hidden 4096 (32 heads x 128); 2048 tokens, batch 4.
  // The article's formula 2 x layers x seq x hidden x batch x bytes:
  const ModelShape llama7b = ModelShape::mha(32, 4096, 32, DType::kF16);
  EXPECT_EQ(llama7b.head_dim, 128);
  EXPECT_EQ(kv_cache_bytes(llama7b, 2048, 4), std::int64_t{2} * 32 * 2048 * 4096 * 4 * 2);
  // Those factors multiply to 4,294,967,296 bytes (4 GiB) at 2 bytes per
  // element; the 8,589,934,592 quoted with them is the same formula at 4
  // bytes per element (fp32).
  EXPECT_EQ(kv_cache_bytes(llama7b, 2048, 4), 4294967296);
  const ModelShape llama7b_fp32 = ModelShape::mha(32, 4096, 32, DType::kF32);
  EXPECT_EQ(kv_cache_bytes(llama7b_fp32, 2048, 4), 8589934592);
  EXPECT_EQ(llama7b.bytes_per_token(), 524288);  // 512 KiB per token
}

TEST(ModelShape, GroupedQueryAttentionUsesKvHeadsNotHidden) {
  // Llama-3-8B: hidden 4096 with 32 query heads, but only 8 KV heads of 128.
  const ModelShape llama3 = ModelShape::gqa(32, 8, 128, DType::kBF16);
  EXPECT_EQ(llama3.kv_width(), 1024);
  EXPECT_EQ(llama3.bytes_per_token(), 2 * 32 * 8 * 128 * 2);
  EXPECT_EQ(kv_cache_bytes(llama3, 8192, 1), std::int64_t{1} << 30);  // 1 GiB at 8K context
  // Four times smaller than the hidden-size formula would say.
  const ModelShape as_if_mha = ModelShape::mha(32, 4096, 32, DType::kBF16);
  EXPECT_EQ(as_if_mha.bytes_per_token(), 4 * llama3.bytes_per_token());
}

TEST(Sizing, BlocksAndTokensForABudget) {
  const ModelShape shape = ModelShape::gqa(32, 8, 128, DType::kF16);
  const CacheSizing sizing = size_cache(shape, 16, std::int64_t{1} << 30);
  EXPECT_EQ(sizing.bytes_per_block, 16 * 131072);
  EXPECT_EQ(sizing.num_blocks, 512);
  EXPECT_EQ(sizing.num_tokens, 8192);
  EXPECT_EQ(sizing.bytes_used, std::int64_t{1} << 30);
  // A budget that is not a multiple of the block keeps the whole blocks only.
  const CacheSizing partial = size_cache(shape, 16, (std::int64_t{1} << 30) + 12345);
  EXPECT_EQ(partial.num_blocks, 512);
  EXPECT_LE(partial.bytes_used, (std::int64_t{1} << 30) + 12345);
  EXPECT_EQ(size_cache(shape, 16, 1000).num_blocks, 0);
}

TEST(Sizing, RejectsBadShapesNamingTheValue) {
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [] { ModelShape::gqa(0, 8, 128, DType::kF16).validate(); }, {"num_layers 0", "[1, 4096]"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [] { ModelShape::gqa(2, -1, 128, DType::kF16).validate(); }, {"num_kv_heads -1"}));
  EXPECT_TRUE(throws_with<InvalidArgument>(
      [] { ModelShape::gqa(2, 8, 2048, DType::kF16).validate(); }, {"head_dim 2048", "[1, 1024]"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([] { (void)ModelShape::mha(2, 4096, 48, DType::kF16); },
                                           {"hidden 4096", "num_heads 48"}));
  const ModelShape shape = ModelShape::gqa(2, 2, 64, DType::kF16);
  EXPECT_TRUE(
      throws_with<InvalidArgument>([&] { (void)size_cache(shape, 0, 1 << 20); }, {"block_size 0"}));
  EXPECT_TRUE(
      throws_with<InvalidArgument>([&] { (void)size_cache(shape, 16, -5); }, {"budget_bytes -5"}));
}

}  // namespace
}  // namespace kvcache
