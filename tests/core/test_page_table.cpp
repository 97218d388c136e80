// Page-table export, checked against an independent computation from the
// block tables, and by reading every cached element through the exported
// pointers and strides (not through gather).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache {
namespace {

using Manager = KVCacheManager<CachePolicy<PagedAllocation>, HostBackend>;
using kvcache::testing::StepDriver;

class PageTableTest : public ::testing::TestWithParam<KVLayout> {
 protected:
  PageTableTest() {
    CacheConfig c;
    c.shape = ModelShape::gqa(2, 4, 64, DType::kF16);
    c.block_size = 8;
    c.num_blocks = 64;
    c.layout = GetParam();
    manager_ = std::make_unique<Manager>(c);
    driver_ = std::make_unique<StepDriver<Manager>>(*manager_, seed_);
    // Interleave the sequences' growth so their blocks are not contiguous.
    for (int i = 0; i < 4; ++i)
      seqs_.push_back(manager_->create_sequence());
    EXPECT_TRUE(driver_->step(seqs_, {5, 8, 17, 1}));
    EXPECT_TRUE(driver_->step({seqs_[0], seqs_[2]}, {9, 3}));
    EXPECT_TRUE(driver_->step(seqs_, {1, 1, 1, 1}));
  }
  std::uint64_t seed_ = kvcache::testing::test_seed();
  std::unique_ptr<Manager> manager_;
  std::unique_ptr<StepDriver<Manager>> driver_;
  std::vector<SeqId> seqs_;
};

// Reads element (token, head, d) of a layer's K or V through the table alone.
std::uint16_t read_through(const CacheAddressing& a, bool is_v, std::int32_t layer,
                           std::int32_t page, std::int32_t token_in_page, std::int32_t head,
                           std::int32_t d) {
  const auto* base = static_cast<const std::uint16_t*>(is_v ? a.v_data(layer) : a.k_data(layer));
  return base[page * a.stride_page + token_in_page * a.stride_token + head * a.stride_head + d];
}

TEST_P(PageTableTest, FlashInferFormMatchesTheBlockTables) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  const FlashInferPageTable table = export_flashinfer(*manager_, seqs_);
  ASSERT_EQ(table.indptr.size(), seqs_.size() + 1);
  EXPECT_EQ(table.indptr[0], 0);
  for (std::size_t b = 0; b < seqs_.size(); ++b) {
    const SequenceInfo info = manager_->sequence(seqs_[b]);
    const std::int64_t pages = (info.num_tokens + 7) / 8;
    EXPECT_EQ(table.indptr[b + 1] - table.indptr[b], pages);
    EXPECT_EQ(table.last_page_len[b], info.num_tokens - (pages - 1) * 8);
    for (std::int64_t i = 0; i < pages; ++i) {
      EXPECT_EQ(table.indices[static_cast<std::size_t>(table.indptr[b] + i)],
                info.blocks[static_cast<std::size_t>(i)]);
    }
  }
  const CacheAddressing& a = table.cache;
  EXPECT_EQ(a.layout, GetParam());
  EXPECT_EQ(a.page_size, 8);
  EXPECT_EQ(a.stride_page, 2 * 2 * 8 * 4 * 64);  // layers x (K,V) x page of 8 tokens x 4 heads x 64
  EXPECT_EQ(GetParam() == KVLayout::kNHD ? a.stride_token : a.stride_head,
            GetParam() == KVLayout::kNHD ? 4 * 64 : 8 * 64);
  // Every cached element, read through the exported addressing.
  for (std::size_t b = 0; b < seqs_.size(); ++b) {
    for (std::int32_t layer = 0; layer < 2; ++layer) {
      for (int kv = 0; kv < 2; ++kv) {
        const auto& recorded =
            (kv == 0 ? driver_->recorded.k : driver_->recorded.v)[{seqs_[b], layer}];
        const auto* expected = reinterpret_cast<const std::uint16_t*>(recorded.data());
        const std::int64_t tokens = static_cast<std::int64_t>(recorded.size()) / (4 * 64 * 2);
        for (std::int64_t t = 0; t < tokens; ++t) {
          const std::int32_t page =
              table.indices[static_cast<std::size_t>(table.indptr[b] + t / 8)];
          for (std::int32_t h = 0; h < 4; ++h) {
            for (std::int32_t d = 0; d < 64; ++d) {
              ASSERT_EQ(
                  read_through(a, kv == 1, layer, page, static_cast<std::int32_t>(t % 8), h, d),
                  expected[(t * 4 + h) * 64 + d]);
            }
          }
        }
      }
    }
  }
}

TEST_P(PageTableTest, BatchExportIncludesTheStepsNewTokens) {
  for (SeqId seq : seqs_)
    ASSERT_EQ(manager_->try_reserve(seq, 3), ReserveStatus::kOk);
  const std::vector<std::int32_t> counts = {3, 0, 1, 2};
  AppendBatch batch = manager_->prepare_append(seqs_, counts);
  const FlashInferPageTable table = export_flashinfer(*manager_, batch);
  for (std::size_t b = 0; b < seqs_.size(); ++b) {
    const std::int64_t tokens = manager_->sequence(seqs_[b]).num_tokens + counts[b];
    EXPECT_EQ(table.indptr[b + 1] - table.indptr[b], (tokens + 7) / 8);
    EXPECT_EQ(table.last_page_len[b], tokens - ((tokens + 7) / 8 - 1) * 8);
  }
}

TEST_P(PageTableTest, VllmFormMatchesTheBlockTables) {
  for (SeqId seq : seqs_)
    ASSERT_EQ(manager_->try_reserve(seq, 2), ReserveStatus::kOk);
  const std::vector<std::int32_t> counts = {2, 1, 0, 2};
  AppendBatch batch = manager_->prepare_append(seqs_, counts);
  const VllmPageTable table = export_vllm(*manager_, batch, 8);
  std::size_t widest = 0;
  for (SeqId seq : seqs_)
    widest = std::max(widest, manager_->sequence(seq).blocks.size());
  ASSERT_EQ(table.max_blocks_per_seq, static_cast<std::int32_t>(widest));
  ASSERT_EQ(table.slot_mapping.size(), 8u);
  std::size_t token = 0;
  for (std::size_t b = 0; b < seqs_.size(); ++b) {
    const SequenceInfo info = manager_->sequence(seqs_[b]);
    EXPECT_EQ(table.seq_lens[b], info.num_tokens + counts[b]);
    EXPECT_EQ(table.query_start_loc[b + 1] - table.query_start_loc[b], counts[b]);
    for (std::size_t i = 0; i < widest; ++i) {
      const std::int32_t expected = i < info.blocks.size() ? info.blocks[i] : -1;
      EXPECT_EQ(table.block_table[b * widest + i], expected);
    }
    for (std::int32_t t = 0; t < counts[b]; ++t, ++token) {
      const std::int64_t position = info.num_tokens + t;
      EXPECT_EQ(
          table.slot_mapping[token],
          std::int64_t{info.blocks[static_cast<std::size_t>(position / 8)]} * 8 + position % 8);
    }
  }
  for (; token < 8; ++token)
    EXPECT_EQ(table.slot_mapping[token], -1);  // padding
  EXPECT_EQ(std::vector<std::int64_t>(batch.slot_mapping().begin(), batch.slot_mapping().end()),
            std::vector<std::int64_t>(table.slot_mapping.begin(), table.slot_mapping.begin() + 5));
}

INSTANTIATE_TEST_SUITE_P(Layouts, PageTableTest, ::testing::Values(KVLayout::kNHD, KVLayout::kHND),
                         [](const auto& param_info) {
                           return std::string(layout_name(param_info.param));
                         });

}  // namespace
}  // namespace kvcache
