// Hand-built kernel parameters, each valid but for one spoiled field, for the
// launch-check tests of both backends (tests/kernels/test_launch_checks.cpp
// on the CPU backend, tests/cuda/test_cuda_launch_checks.cpp on the CUDA
// launchers, which refuse them without a device). Each case names the field
// the refusal must name and whether it is an alignment problem.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kvcache/codec/codecs.hpp"
#include "kvcache/kernels/params.hpp"
#include "kvcache/layout.hpp"

namespace kvcache::testing {

template <class Params>
struct LaunchCase {
  std::string name;
  std::function<void(Params&)> spoil;
  std::string field;  // the refusal names it
  bool misaligned = false;
};

// Host memory for a small cache of every kind, and valid parameters over it.
struct LaunchFixture {
  static constexpr std::int32_t kPages = 4, kPageSize = 32, kLayers = 2, kHeads = 2, kDim = 64;
  static constexpr std::int32_t kTokens = 3;
  alignas(256) std::byte arena[kPages * kLayers * 2 * kPageSize * kHeads * kDim * 2]{};
  alignas(256) std::byte ring[4 * kLayers * 2 * kPageSize * kHeads * kDim * 2]{};
  alignas(16) std::byte source[2][kTokens * kHeads * kDim * 2]{};
  alignas(16) std::byte out[2][kPages * kPageSize * kHeads * kDim * 4]{};
  std::int64_t slots[kTokens] = {0, 33, 70};
  std::int32_t indptr[3] = {0, 1, 3};
  std::int32_t indices[3] = {2, 0, 1};
  std::int32_t last_page_len[2] = {5, 32};
  std::int64_t out_row_offset[3] = {0, 5, 69};
  // KIVI: sequence 0 has 5 tokens in its ring, sequence 1 a page of 32 and 5.
  std::int32_t kivi_indptr[3] = {0, 0, 1};
  std::int32_t kivi_indices[1] = {2};
  std::int32_t kivi_last_page_len[2] = {0, 32};
  std::int64_t kivi_out_row_offset[3] = {0, 5, 42};
  std::int64_t paged_tokens[2] = {0, 32};
  std::int64_t total_tokens[2] = {5, 37};
  std::int64_t side_slot[2] = {0, 1};
  std::int64_t flush_sources[kPageSize]{};
  std::int32_t flush_pages[1] = {3};
  std::int32_t pairs[2] = {0, 1};
  float state[kLayers * 2 * kHeads * kDim * 64]{};

  LaunchFixture() {
    for (std::int32_t t = 0; t < kPageSize; ++t)
      flush_sources[t] = t < kTokens ? -t - 1 : t;
    for (float& s : state)
      s = 0.125f;
  }

  PagedKVView plain(DType dtype = DType::kF16) {
    return make_plain_view(arena, kPages, kPageSize, kLayers, kHeads, kDim, dtype, KVLayout::kNHD);
  }
  kernels::AppendSource append_source() {
    return {source[0], source[1], std::int64_t{kHeads} * kDim * 2, std::int64_t{kDim} * 2};
  }
  kernels::PageTableView table() { return {indptr, indices, last_page_len, out_row_offset, 2, 3}; }
  kernels::GatherOutput output() { return {out[0], out[1]}; }

  template <class Codec>
  CodecPageView codec_view(DType dtype = DType::kF16) {
    const ModelShape shape = ModelShape::gqa(kLayers, kHeads, kDim, dtype);
    const RegionLayout k = Codec::region(shape, kPageSize, 0);
    const RegionLayout v = Codec::region(shape, kPageSize, 1);
    return make_codec_view(arena, kPages, kPageSize, kLayers, kHeads, kDim, dtype, k, v);
  }

  kernels::AppendParams append() { return {plain(), 1, append_source(), {slots, kTokens}}; }
  kernels::GatherParams gather() { return {plain(), 1, table(), output()}; }
  kernels::CopyBlocksParams copy_blocks() { return {arena, plain().page_bytes, kPages, pairs, 1}; }
  template <class Rows, class Codec>
  kernels::CodecAppendParams<Rows> codec_append() {
    kernels::CodecAppendParams<Rows> p;
    p.cache = codec_view<Codec>();
    p.layer = 1;
    p.source = append_source();
    p.slots = {slots, kTokens};
    p.state = Rows::state_floats(kDim) > 0 ? state : nullptr;
    return p;
  }
  template <class Rows, class Codec>
  kernels::CodecGatherParams<Rows> codec_gather() {
    kernels::CodecGatherParams<Rows> p;
    p.cache = codec_view<Codec>();
    p.layer = 1;
    p.table = table();
    p.out = output();
    p.state = Rows::state_floats(kDim) > 0 ? state : nullptr;
    return p;
  }
  template <class Rows, class Codec>
  kernels::KiviFlushParams<Rows> kivi_flush() {
    kernels::KiviFlushParams<Rows> p;
    p.cache = codec_view<Codec>();
    p.residual =
        make_plain_view(ring, 4, kPageSize, kLayers, kHeads, kDim, DType::kF16, KVLayout::kNHD);
    p.layer = 1;
    p.source = append_source();
    p.sources = flush_sources;
    p.pages = flush_pages;
    p.num_groups = 1;
    return p;
  }
  template <class Rows, class Codec>
  kernels::KiviGatherParams<Rows> kivi_gather() {
    kernels::KiviGatherParams<Rows> p;
    p.cache = codec_view<Codec>();
    p.residual =
        make_plain_view(ring, 4, kPageSize, kLayers, kHeads, kDim, DType::kF16, KVLayout::kNHD);
    p.layer = 1;
    p.table = {kivi_indptr, kivi_indices, kivi_last_page_len, kivi_out_row_offset, 2, 1};
    p.side = {paged_tokens, total_tokens, side_slot, 42};
    p.out = output();
    return p;
  }
};

// What can go wrong with any view of plain pages (the cache, or KIVI's rings).
template <class Params, class View>
void add_plain_view_cases(std::vector<LaunchCase<Params>>& cases, View Params::*member,
                          const std::string& prefix) {
  const auto on = [member](auto f) { return [member, f](Params& p) { f(p.*member); }; };
  const std::string view = prefix.empty() ? "cache." : "residual.";
  cases.push_back({prefix + "page size 0", on([](View& v) { v.page_size = 0; }), "page_size"});
  cases.push_back({prefix + "no heads", on([](View& v) { v.num_heads = 0; }), "num_heads"});
  cases.push_back({prefix + "40000 heads", on([](View& v) { v.num_heads = 40000; }), "num_heads"});
  cases.push_back({prefix + "head_dim 0", on([](View& v) { v.head_dim = 0; }), "head_dim"});
  cases.push_back({prefix + "head_dim 2048", on([](View& v) { v.head_dim = 2048; }), "head_dim"});
  cases.push_back(
      {prefix + "rows of 8 bytes", on([](View& v) { v.head_dim = 4; }), "row bytes", true});
  cases.push_back({prefix + "token stride 8 mod 16", on([](View& v) { v.token_bytes += 8; }),
                   view + "token_bytes", true});
  cases.push_back({prefix + "head stride 8 mod 16", on([](View& v) { v.head_bytes += 8; }),
                   view + "head_bytes", true});
  cases.push_back({prefix + "kv stride 8 mod 16", on([](View& v) { v.kv_bytes += 8; }),
                   view + "kv_bytes", true});
  cases.push_back({prefix + "layer stride 8 mod 16", on([](View& v) { v.layer_bytes += 8; }),
                   view + "layer_bytes", true});
  cases.push_back({prefix + "page stride 8 mod 16", on([](View& v) { v.page_bytes += 8; }),
                   view + "page_bytes", true});
  cases.push_back(
      {prefix + "misaligned data", on([](View& v) { v.data += 8; }), view + "data", true});
  cases.push_back({prefix + "null data", on([](View& v) { v.data = nullptr; }), view + "data"});
}

template <class Params>
void add_codec_view_cases(std::vector<LaunchCase<Params>>& cases) {
  cases.push_back({"page size 0", [](Params& p) { p.cache.page_size = 0; }, "page_size"});
  cases.push_back({"no heads", [](Params& p) { p.cache.num_heads = 0; }, "num_heads"});
  cases.push_back({"no layers", [](Params& p) { p.cache.num_layers = 0; }, "num_layers"});
  cases.push_back({"page stride 8 mod 16", [](Params& p) { p.cache.page_bytes += 8; },
                   "cache.page_bytes", true});
  cases.push_back({"layer stride 8 mod 16", [](Params& p) { p.cache.layer_bytes += 8; },
                   "cache.layer_bytes", true});
  cases.push_back({"region 8 mod 16", [](Params& p) { p.cache.region[0].bytes += 8; },
                   "cache.region[0].bytes", true});
  cases.push_back({"misaligned data", [](Params& p) { p.cache.data += 8; }, "cache.data", true});
  cases.push_back({"layer 2 of 2", [](Params& p) { p.layer = 2; }, "layer"});
  cases.push_back({"layer -1", [](Params& p) { p.layer = -1; }, "layer"});
}

template <class Params>
void add_source_cases(std::vector<LaunchCase<Params>>& cases) {
  cases.push_back({"misaligned k",
                   [](Params& p) { p.source.k = static_cast<const std::byte*>(p.source.k) + 8; },
                   "source.k", true});
  cases.push_back({"null v", [](Params& p) { p.source.v = nullptr; }, "source.v"});
  cases.push_back({"source token stride 8 mod 16", [](Params& p) { p.source.token_bytes += 8; },
                   "source.token_bytes", true});
  cases.push_back({"source head stride 8 mod 16", [](Params& p) { p.source.head_bytes += 8; },
                   "source.head_bytes", true});
}

template <class Params>
void add_table_cases(std::vector<LaunchCase<Params>>& cases) {
  cases.push_back({"null indptr", [](Params& p) { p.table.indptr = nullptr; }, "table.indptr"});
  cases.push_back({"null last_page_len", [](Params& p) { p.table.last_page_len = nullptr; },
                   "table.last_page_len"});
  cases.push_back(
      {"negative batch", [](Params& p) { p.table.batch_size = -1; }, "table.batch_size"});
  cases.push_back({"misaligned out.k",
                   [](Params& p) { p.out.k = static_cast<std::byte*>(p.out.k) + 4; }, "out.k",
                   true});
  cases.push_back({"null out.v", [](Params& p) { p.out.v = nullptr; }, "out.v"});
}

inline std::vector<LaunchCase<kernels::AppendParams>> append_cases() {
  using P = kernels::AppendParams;
  std::vector<LaunchCase<P>> cases;
  add_plain_view_cases(cases, &P::cache, "");
  add_source_cases(cases);
  cases.push_back({"null slots", [](P& p) { p.slots.slots = nullptr; }, "slots.slots"});
  cases.push_back({"negative tokens", [](P& p) { p.slots.num_tokens = -3; }, "slots.num_tokens"});
  cases.push_back({"layer 2 of 2", [](P& p) { p.layer = 2; }, "layer"});
  return cases;
}

inline std::vector<LaunchCase<kernels::GatherParams>> gather_cases() {
  using P = kernels::GatherParams;
  std::vector<LaunchCase<P>> cases;
  add_plain_view_cases(cases, &P::cache, "");
  add_table_cases(cases);
  cases.push_back({"layer -1", [](P& p) { p.layer = -1; }, "layer"});
  return cases;
}

inline std::vector<LaunchCase<kernels::CopyBlocksParams>> copy_blocks_cases() {
  using P = kernels::CopyBlocksParams;
  return {{"page stride 8 mod 16", [](P& p) { p.page_bytes += 8; }, "page_bytes", true},
          {"pages of 0 bytes", [](P& p) { p.page_bytes = 0; }, "page_bytes"},
          {"misaligned data", [](P& p) { p.data += 8; }, "data", true},
          {"null pairs", [](P& p) { p.pairs = nullptr; }, "pairs"},
          {"negative pairs", [](P& p) { p.num_pairs = -1; }, "num_pairs"}};
}

// int8 with groups of 32 over fp16 rows: the lane and group checks too.
using LaneRows = Int8Rows<32, 2>;
using LaneCodec = Int8Codec<32, 2>;

inline std::vector<LaunchCase<kernels::CodecAppendParams<LaneRows>>> codec_append_cases() {
  using P = kernels::CodecAppendParams<LaneRows>;
  std::vector<LaunchCase<P>> cases;
  add_codec_view_cases(cases);
  add_source_cases(cases);
  // head_dim 4 over fp16: an 8-byte row, no whole 16-byte lane (the launcher
  // divided by zero lanes before it checked this).
  cases.push_back(
      {"rows of half a lane", [](P& p) { p.cache.head_dim = 4; }, "head_dim x dtype size"});
  cases.push_back(
      {"rows of 1.5 lanes", [](P& p) { p.cache.head_dim = 12; }, "head_dim x dtype size"});
  cases.push_back(
      {"head_dim not a multiple of the group", [](P& p) { p.cache.head_dim = 40; }, "head_dim"});
  cases.push_back({"null slots", [](P& p) { p.slots.slots = nullptr; }, "slots.slots"});
  return cases;
}

inline std::vector<LaunchCase<kernels::CodecGatherParams<LaneRows>>> codec_gather_cases() {
  using P = kernels::CodecGatherParams<LaneRows>;
  std::vector<LaunchCase<P>> cases;
  add_codec_view_cases(cases);
  add_table_cases(cases);
  cases.push_back(
      {"rows of half a lane", [](P& p) { p.cache.head_dim = 4; }, "head_dim x dtype size"});
  return cases;
}

using LowRank = LowRankCodec<16, 2>;
using LowRankR = LowRankRows<16, 2>;

inline std::vector<LaunchCase<kernels::CodecAppendParams<LowRankR>>> low_rank_append_cases() {
  using P = kernels::CodecAppendParams<LowRankR>;
  std::vector<LaunchCase<P>> cases;
  add_codec_view_cases(cases);
  add_source_cases(cases);
  cases.push_back({"no basis", [](P& p) { p.state = nullptr; }, "state"});
  // A rank above head_dim (16 directions in 8 dimensions): the gather's
  // coefficient tile would overflow its shared array.
  cases.push_back({"rank above head_dim", [](P& p) { p.cache.head_dim = 8; }, "head_dim"});
  return cases;
}

using Kivi = KiviCodec<4, 32, 64, 2>;
using KiviR = KiviRows<4, 32, 2>;

inline std::vector<LaunchCase<kernels::KiviFlushParams<KiviR>>> kivi_flush_cases() {
  using P = kernels::KiviFlushParams<KiviR>;
  std::vector<LaunchCase<P>> cases;
  add_codec_view_cases(cases);
  add_source_cases(cases);
  add_plain_view_cases(cases, &P::residual, "residual ");
  cases.push_back(
      {"page size 16, groups of 32", [](P& p) { p.cache.page_size = 16; }, "cache.page_size"});
  cases.push_back({"null sources", [](P& p) { p.sources = nullptr; }, "sources"});
  cases.push_back({"null pages", [](P& p) { p.pages = nullptr; }, "pages"});
  return cases;
}

inline std::vector<LaunchCase<kernels::KiviGatherParams<KiviR>>> kivi_gather_cases() {
  using P = kernels::KiviGatherParams<KiviR>;
  std::vector<LaunchCase<P>> cases;
  add_codec_view_cases(cases);
  add_table_cases(cases);
  add_plain_view_cases(cases, &P::residual, "residual ");
  cases.push_back({"null side slots", [](P& p) { p.side.side_slot = nullptr; }, "side.side_slot"});
  cases.push_back(
      {"rings of 70000 tokens", [](P& p) { p.residual.page_size = 70000; }, "residual.page_size"});
  cases.push_back({"negative side rows", [](P& p) { p.side.total_rows = -1; }, "side.total_rows"});
  return cases;
}

}  // namespace kvcache::testing
