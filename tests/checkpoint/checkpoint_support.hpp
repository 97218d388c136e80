// Helpers of the checkpoint tests: a cache filled with a few sequences of
// fresh random rows (prompts sharing a prefix, a fork, a parked one), and
// what a cache holds, to compare a restored one with its original.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/checkpoint/checkpoint.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache::testing {

// What one sequence holds: token count, parked, and every layer's K and V.
struct HeldSequence {
  std::int64_t tokens = 0;
  bool parked = false;
  std::vector<std::vector<std::byte>> rows;
  bool operator==(const HeldSequence&) const = default;
};

template <class Manager>
HeldSequence held(Manager& m, SeqId seq) {
  HeldSequence h;
  const SequenceInfo info = m.sequence(seq);
  h.tokens = info.num_tokens;
  h.parked = info.parked;
  const ModelShape& shape = m.shape();
  const auto bytes =
      static_cast<std::size_t>(h.tokens * shape.kv_width() * dtype_size(shape.dtype));
  Buffer k = m.backend().allocate(std::max<std::size_t>(bytes, 16));
  Buffer v = m.backend().allocate(std::max<std::size_t>(bytes, 16));
  for (std::int32_t layer = 0; layer < shape.num_layers; ++layer) {
    m.gather(
        seq, layer,
        TensorView::packed(k.data(), shape.dtype, h.tokens, shape.num_kv_heads, shape.head_dim),
        TensorView::packed(v.data(), shape.dtype, h.tokens, shape.num_kv_heads, shape.head_dim));
    h.rows.push_back(to_host(m.backend(), k, bytes));
    h.rows.push_back(to_host(m.backend(), v, bytes));
  }
  return h;
}

// Distinct blocks the sequences' written pages use (shared ones once).
template <class Manager>
std::int64_t distinct_blocks(Manager& m, const std::vector<SeqId>& seqs) {
  std::vector<BlockId> all;
  for (SeqId s : seqs) {
    const SequenceInfo info = m.sequence(s);
    const auto written = kernels::pages_for_tokens(info.quantized_tokens, m.block_size());
    all.insert(all.end(), info.blocks.begin(), info.blocks.begin() + written);
  }
  std::sort(all.begin(), all.end());
  return std::unique(all.begin(), all.end()) - all.begin();
}

// Fills `m`: two prompts sharing their first blocks, a fork of the first
// with its own tokens after, a third sequence parked. Returns the ids.
template <class Manager>
std::vector<SeqId> fill(Manager& m, StepDriver<Manager>& driver, std::int32_t base = 100) {
  const std::int32_t b = m.block_size();
  std::vector<std::int32_t> shared;
  for (std::int32_t i = 0; i < 3 * b; ++i)
    shared.push_back(base + i);
  std::vector<SeqId> seqs;
  auto prefill = [&](std::vector<std::int32_t> prompt) {
    const SeqId s = m.create_sequence(prompt);
    const auto rest = static_cast<std::int32_t>(prompt.size() - m.sequence(s).num_tokens);
    EXPECT_TRUE(driver.step({s}, {rest}));
    seqs.push_back(s);
    return s;
  };
  std::vector<std::int32_t> a = shared, c = shared;
  for (std::int32_t i = 0; i < b + 3; ++i) {
    a.push_back(base + 1000 + i);
    c.push_back(base + 2000 + i);
  }
  const SeqId first = prefill(a);
  prefill(c);
  if (auto child = m.fork(first)) {
    seqs.push_back(*child);
    EXPECT_TRUE(driver.step({*child}, {5}));
  }
  std::vector<std::int32_t> d;
  for (std::int32_t i = 0; i < 2 * b + 1; ++i)
    d.push_back(base + 3000 + i);
  const SeqId parked = prefill(d);
  m.park(parked);
  EXPECT_TRUE(driver.step({first}, {2}));  // decode steps after the prefill
  return seqs;
}

}  // namespace kvcache::testing
