// Inputs the ordinary round trips never give, for every codec on one backend
// (instantiated for the CPU backend in the codec tests and for the CUDA
// backend in the CUDA tests, where each case skips without a device):
// - a gather of more sequences (or pages) than one staged chunk holds gives
//   the same rows as gathering each sequence alone, and as the CPU backend;
// - K and V read through strides (slices of a fused QKV projection with
//   padded heads) store exactly what their packed copies store;
// - NaN, +-Inf, -0 and subnormal inputs are stored and read back as the CPU
//   backend does, bit for bit, and are counted alike;
// - a cache past 2 GiB: a sequence on blocks beyond the 2^31-th byte reads
//   back what the same sequence reads near the start of a small arena.
// The reference is always a manager on the CPU backend fed the same rows.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"

namespace kvcache::testing {

template <class CodecT, class BackendT>
struct CodecOn {
  using Codec = CodecT;
  using Backend = BackendT;
};

// Packed rows of one step, per layer.
struct LayerRows {
  std::vector<std::byte> k, v;
};

// Raw bit patterns of the non-finite and tiny values of each dtype: NaN
// (quiet, with a payload, negative), +-Inf, -0, the smallest subnormal.
inline std::vector<std::uint32_t> special_bits(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return {0x7e00, 0x7e01, 0xfe00, 0x7c00, 0xfc00, 0x8000, 0x0001};
    case DType::kBF16:
      return {0x7fc0, 0x7fc1, 0xffc0, 0x7f80, 0xff80, 0x8000, 0x0001};
    default:
      return {0x7fc00000u, 0x7fc00001u, 0xffc00000u, 0x7f800000u, 0xff800000u, 0x80000000u, 1u};
  }
}

// Normal random rows with `share` of the elements replaced by special values.
inline std::vector<std::byte> rows_with_specials(DType dtype, std::int64_t elements, double share,
                                                 std::mt19937_64& rng) {
  auto rows = random_rows(dtype, elements, rng);
  const auto specials = special_bits(dtype);
  std::bernoulli_distribution pick(share);
  std::uniform_int_distribution<std::size_t> which(0, specials.size() - 1);
  const auto size = static_cast<std::size_t>(dtype_size(dtype));
  for (std::int64_t e = 0; e < elements; ++e) {
    if (!pick(rng)) continue;
    const std::uint32_t bits = specials[which(rng)];
    std::memcpy(rows.data() + static_cast<std::size_t>(e) * size, &bits, size);  // little endian
  }
  return rows;
}

// The same bytes, or for low-rank across backends (its dot products summed in
// another order) within 1 % relative error of the finite values.
inline void expect_same_rows(const std::vector<std::byte>& want, const std::vector<std::byte>& got,
                             DType dtype, bool exact, const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  if (exact) {
    if (std::memcmp(want.data(), got.data(), want.size()) == 0) return;
    const auto size = static_cast<std::size_t>(dtype_size(dtype));
    for (std::size_t i = 0; i < want.size(); i += size) {
      if (std::memcmp(want.data() + i, got.data() + i, size) != 0) {
        ADD_FAILURE() << what << ": first difference at element " << i / size << " ("
                      << load_as_float(want.data(), dtype, static_cast<std::int64_t>(i / size))
                      << " expected, "
                      << load_as_float(got.data(), dtype, static_cast<std::int64_t>(i / size))
                      << " read)";
        return;
      }
    }
  }
  double difference = 0, norm = 0;
  const auto elements = static_cast<std::int64_t>(want.size() / dtype_size(dtype));
  for (std::int64_t e = 0; e < elements; ++e) {
    const double a = load_as_float(want.data(), dtype, e), b = load_as_float(got.data(), dtype, e);
    if (!std::isfinite(a) || !std::isfinite(b)) {
      EXPECT_EQ(std::isnan(a), std::isnan(b)) << what << ", element " << e;
      continue;
    }
    difference += (a - b) * (a - b);
    norm += a * a;
  }
  EXPECT_LE(std::sqrt(difference / std::max(norm, 1e-30)), 1e-2) << what;
}

template <class Pair>
class CodecInputs : public ::testing::Test {
 protected:
  using Codec = typename Pair::Codec;
  using Backend = typename Pair::Backend;
  using Policy = CachePolicy<PagedAllocation, NoEviction, NoPrefixSharing, Codec>;
  using Subject = KVCacheManager<Policy, Backend>;
  using Reference = KVCacheManager<Policy, HostBackend>;
  static constexpr bool kDevice = Backend::kDeviceMemory;
  // Low-rank's projections sum in another order on the device.
  static constexpr bool kExactAcrossBackends = !kDevice || Codec::kKind != CodecKind::kLowRank;
  static constexpr std::int32_t kBlock = 32;

  void SetUp() override {
    if constexpr (kDevice) {
      if (cuda_device_count() == 0)
        GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount found none): the kernels are built "
                        "but cannot run here";
    }
  }

  static CacheConfig config(DType dtype, std::int64_t blocks, std::int32_t batch_sequences) {
    CacheConfig c;
    c.shape = ModelShape::gqa(2, 4, 128, dtype);
    c.block_size = kBlock;
    c.num_blocks = blocks;
    c.max_batch_tokens = 1024;
    c.max_batch_sequences = batch_sequences;
    c.max_sequences = 16;
    return c;
  }

  static std::unique_ptr<Subject> subject(const CacheConfig& c) {
    if constexpr (kDevice)
      return std::make_unique<Subject>(c, Backend(0));
    else
      return std::make_unique<Subject>(c);
  }

  // Rows for a step of `tokens` tokens (every layer).
  static std::vector<LayerRows> rows(const ModelShape& shape, std::int64_t tokens, double specials,
                                     std::mt19937_64& rng) {
    std::vector<LayerRows> layers(static_cast<std::size_t>(shape.num_layers));
    for (auto& l : layers) {
      l.k = rows_with_specials(shape.dtype, tokens * shape.kv_width(), specials, rng);
      l.v = rows_with_specials(shape.dtype, tokens * shape.kv_width(), specials, rng);
    }
    return layers;
  }

  // One engine step appending `layers` (packed rows, in sequence order).
  // With `fused`, K and V are read from a fused QKV projection: per token the
  // query heads (four per KV head), then K and V heads each padded to head_dim + 16 elements.
  template <class Manager>
  static void step(Manager& m, const std::vector<SeqId>& seqs,
                   const std::vector<std::int32_t>& counts, const std::vector<LayerRows>& layers,
                   bool fused = false) {
    for (std::size_t i = 0; i < seqs.size(); ++i)
      ASSERT_EQ(m.try_reserve(seqs[i], counts[i]), ReserveStatus::kOk) << "sequence " << i;
    AppendBatch batch = m.prepare_append(seqs, counts);
    const ModelShape& shape = m.shape();
    const std::int64_t tokens = batch.num_tokens();
    const std::int64_t element = dtype_size(shape.dtype);
    for (std::int32_t layer = 0; layer < shape.num_layers; ++layer) {
      const LayerRows& r = layers[static_cast<std::size_t>(layer)];
      if (!fused) {
        Buffer k = to_backend(m.backend(), r.k), v = to_backend(m.backend(), r.v);
        m.append(
            layer, batch,
            TensorView::packed(k.data(), shape.dtype, tokens, shape.num_kv_heads, shape.head_dim),
            TensorView::packed(v.data(), shape.dtype, tokens, shape.num_kv_heads, shape.head_dim));
        m.backend().synchronize();
        continue;
      }
      const std::int64_t head_stride = shape.head_dim + 16;
      const std::int64_t q_width = 4 * shape.kv_width();  // four query heads per KV head
      const std::int64_t token_stride = q_width + 2 * shape.num_kv_heads * head_stride;
      std::vector<std::byte> qkv(static_cast<std::size_t>(tokens * token_stride * element),
                                 std::byte{0x5a});
      for (std::int64_t t = 0; t < tokens; ++t) {
        for (std::int32_t h = 0; h < shape.num_kv_heads; ++h) {
          const std::int64_t packed = (t * shape.num_kv_heads + h) * shape.head_dim;
          const std::int64_t k_at = t * token_stride + q_width + h * head_stride;
          const std::int64_t v_at = k_at + shape.num_kv_heads * head_stride;
          const auto row = static_cast<std::size_t>(shape.head_dim * element);
          std::memcpy(qkv.data() + k_at * element, r.k.data() + packed * element, row);
          std::memcpy(qkv.data() + v_at * element, r.v.data() + packed * element, row);
        }
      }
      Buffer b = to_backend(m.backend(), qkv);
      auto view = [&](std::int64_t first) {
        return TensorView{b.bytes_data() + first * element,
                          shape.dtype,
                          tokens,
                          shape.num_kv_heads,
                          shape.head_dim,
                          token_stride,
                          head_stride};
      };
      m.append(layer, batch, view(q_width), view(q_width + shape.num_kv_heads * head_stride));
      m.backend().synchronize();
    }
    m.commit(batch);
  }

  // K and V of `seqs` for one layer, gathered in one call, on the host.
  template <class Manager>
  static LayerRows gather(Manager& m, const std::vector<SeqId>& seqs, std::int32_t layer) {
    std::int64_t tokens = 0;
    for (SeqId s : seqs)
      tokens += m.sequence(s).num_tokens;
    const ModelShape& shape = m.shape();
    const auto bytes =
        static_cast<std::size_t>(tokens * shape.kv_width() * dtype_size(shape.dtype));
    Buffer k = m.backend().allocate(std::max<std::size_t>(bytes, 16));
    Buffer v = m.backend().allocate(std::max<std::size_t>(bytes, 16));
    m.gather(seqs, layer,
             TensorView::packed(k.data(), shape.dtype, tokens, shape.num_kv_heads, shape.head_dim),
             TensorView::packed(v.data(), shape.dtype, tokens, shape.num_kv_heads, shape.head_dim));
    return {to_host(m.backend(), k, bytes), to_host(m.backend(), v, bytes)};
  }

  static void expect_same(const LayerRows& want, const LayerRows& got, DType dtype, bool exact,
                          const std::string& what) {
    expect_same_rows(want.k, got.k, dtype, exact, what + ", K");
    expect_same_rows(want.v, got.v, dtype, exact, what + ", V");
  }

  // A subject and a CPU reference of config `c`, each with `n` sequences.
  struct Managers {
    std::unique_ptr<Subject> subject;
    std::unique_ptr<Reference> reference;
    std::vector<SeqId> ss, rs;
  };
  static Managers make_managers(const CacheConfig& c, int n) {
    Managers p{subject(c), std::make_unique<Reference>(c), {}, {}};
    for (int i = 0; i < n; ++i) {
      p.ss.push_back(p.subject->create_sequence());
      p.rs.push_back(p.reference->create_sequence());
    }
    return p;
  }

  std::uint64_t seed_ = test_seed();
};

TYPED_TEST_SUITE_P(CodecInputs);

// Eight sequences (and forks whose pages count once per sequence) through a
// manager that stages three sequences and 64 pages per chunk.
TYPED_TEST_P(CodecInputs, ChunkedGathersEqualOneByOne) {
  using T = TestFixture;
  std::mt19937_64 rng(this->seed_);
  for (DType dtype : {DType::kF16, DType::kF32}) {
    SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << ", seed " << this->seed_);
    const CacheConfig c = T::config(dtype, 64, 3);
    auto subject = T::subject(c);
    typename T::Reference reference(c);
    std::vector<SeqId> ss, rs;
    std::uniform_int_distribution<std::int32_t> length(1, 200);
    for (int group = 0; group < 3; ++group) {
      std::vector<SeqId> s, r;
      std::vector<std::int32_t> counts;
      for (int i = 0; i < (group == 2 ? 2 : 3); ++i) {
        s.push_back(subject->create_sequence());
        r.push_back(reference.create_sequence());
        counts.push_back(group == 0 && i == 0 ? 320 : length(rng));
      }
      std::int64_t tokens = 0;
      for (auto n : counts)
        tokens += n;
      const auto layers = T::rows(c.shape, tokens, 0.0, rng);
      T::step(*subject, s, counts, layers);
      T::step(reference, r, counts, layers);
      ss.insert(ss.end(), s.begin(), s.end());
      rs.insert(rs.end(), r.begin(), r.end());
    }
    // Forks of the 320-token sequence: their shared pages count once per
    // sequence in a gather, past the pool's 64 pages in all.
    for (int f = 0; f < 8; ++f) {
      auto sf = subject->fork(ss[0]);
      auto rf = reference.fork(rs[0]);
      ASSERT_TRUE(sf && rf);
      ss.push_back(*sf);
      rs.push_back(*rf);
    }
    std::int64_t pages = 0;
    for (SeqId s : ss)
      pages += static_cast<std::int64_t>(subject->sequence(s).blocks.size());
    for (std::int32_t layer = 0; layer < c.shape.num_layers; ++layer) {
      const LayerRows all = T::gather(*subject, ss, layer);
      LayerRows each;
      for (SeqId s : ss) {
        const LayerRows one = T::gather(*subject, {s}, layer);
        each.k.insert(each.k.end(), one.k.begin(), one.k.end());
        each.v.insert(each.v.end(), one.v.begin(), one.v.end());
      }
      const std::string what = "layer " + std::to_string(layer) + ", " + std::to_string(ss.size()) +
                               " sequences, " + std::to_string(pages) + " pages";
      T::expect_same(each, all, dtype, true, what + ", one call against one by one");
      T::expect_same(T::gather(reference, rs, layer), all, dtype, T::kExactAcrossBackends,
                     what + ", against the CPU backend");
    }
    EXPECT_GT(pages, c.num_blocks) << "the forks should need more than one chunk of pages";
  }
}

TYPED_TEST_P(CodecInputs, StridedSourcesStoreWhatPackedOnesDo) {
  using T = TestFixture;
  std::mt19937_64 rng(this->seed_);
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << ", seed " << this->seed_);
    const CacheConfig c = T::config(dtype, 64, 4);
    auto [subject, reference_owner, ss, rs] = T::make_managers(c, 3);
    auto& reference = *reference_owner;
    for (const std::vector<std::int32_t>& counts :
         {std::vector<std::int32_t>{200, 45, 96}, {1, 1, 1}, {7, 33, 1}}) {
      const auto layers = T::rows(c.shape, counts[0] + counts[1] + counts[2], 0.0, rng);
      T::step(*subject, ss, counts, layers, /*fused=*/true);
      T::step(reference, rs, counts, layers, /*fused=*/false);
    }
    for (std::int32_t layer = 0; layer < c.shape.num_layers; ++layer) {
      T::expect_same(T::gather(reference, rs, layer), T::gather(*subject, ss, layer), dtype,
                     T::kExactAcrossBackends,
                     "layer " + std::to_string(layer) + ", strided against packed");
    }
  }
}

TYPED_TEST_P(CodecInputs, NonFiniteInputsAreStoredAsOnTheCpu) {
  using T = TestFixture;
  std::mt19937_64 rng(this->seed_);
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << ", seed " << this->seed_);
    const CacheConfig c = T::config(dtype, 64, 4);
    auto [subject, reference_owner, ss, rs] = T::make_managers(c, 2);
    auto& reference = *reference_owner;
    std::vector<LayerRows> fed;  // every layer-0 row appended, in append order per sequence
    for (const std::vector<std::int32_t>& counts :
         {std::vector<std::int32_t>{150, 70}, {1, 1}, {40, 1}}) {
      const auto layers = T::rows(c.shape, counts[0] + counts[1], 0.03, rng);
      T::step(*subject, ss, counts, layers);
      T::step(reference, rs, counts, layers);
      fed.push_back(layers[0]);
    }
    for (std::int32_t layer = 0; layer < c.shape.num_layers; ++layer) {
      T::expect_same(T::gather(reference, rs, layer), T::gather(*subject, ss, layer), dtype,
                     T::kExactAcrossBackends, "layer " + std::to_string(layer));
    }
    if constexpr (T::Codec::kKind == CodecKind::kPlain) {
      // A plain cache keeps every bit, NaN payloads and signs included.
      const ModelShape& shape = c.shape;
      const auto row = static_cast<std::size_t>(shape.kv_width() * dtype_size(dtype));
      const std::vector<std::vector<std::int32_t>> steps = {{150, 70}, {1, 1}, {40, 1}};
      for (std::size_t s = 0; s < ss.size(); ++s) {
        LayerRows want;
        for (std::size_t step = 0; step < steps.size(); ++step) {
          const std::size_t first = s == 0 ? 0 : static_cast<std::size_t>(steps[step][0]);
          const auto n = static_cast<std::size_t>(steps[step][s]);
          const auto& l = fed[step];
          want.k.insert(want.k.end(), l.k.begin() + first * row, l.k.begin() + (first + n) * row);
          want.v.insert(want.v.end(), l.v.begin() + first * row, l.v.begin() + (first + n) * row);
        }
        T::expect_same(want, T::gather(*subject, {ss[s]}, 0), dtype, true,
                       "sequence " + std::to_string(s) + " against its input");
      }
      EXPECT_EQ(subject->stats().nonfinite_values, 0);
    } else {
      EXPECT_GT(subject->stats().nonfinite_values, 0);
      EXPECT_EQ(subject->stats().nonfinite_values, reference.stats().nonfinite_values);
    }
  }
}

// Magnitudes at and past what 2-byte scales hold (the fp16 limit, and for
// bf16 / fp32 inputs groups whose maximum needs a scale past 65504 and
// values near fp32's limit): every codec saturates instead of decoding NaN,
// and the backends agree.
TYPED_TEST_P(CodecInputs, InputsNearTheFp16LimitSaturateAsOnTheCpu) {
  using T = TestFixture;
  std::mt19937_64 rng(this->seed_);
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << ", seed " << this->seed_);
    const std::vector<float> huge =
        dtype == DType::kF16
            ? std::vector<float>{65504.0f, -65504.0f, 60000.0f, 65000.0f}
            : std::vector<float>{65519.0f * 127, -65520.0f * 127, 1e7f, 65520.0f, -7e4f};
    const CacheConfig c = T::config(dtype, 64, 4);
    auto [subject, reference_owner, ss, rs] = T::make_managers(c, 2);
    auto& reference = *reference_owner;
    for (const std::vector<std::int32_t>& counts :
         {std::vector<std::int32_t>{96, 40}, {1, 1}, {33, 1}}) {
      auto layers = T::rows(c.shape, counts[0] + counts[1], 0.0, rng);
      std::bernoulli_distribution pick(0.05);
      std::uniform_int_distribution<std::size_t> which(0, huge.size() - 1);
      for (auto& l : layers) {
        for (auto* rows : {&l.k, &l.v}) {
          const auto n = static_cast<std::int64_t>(rows->size() / dtype_size(dtype));
          for (std::int64_t e = 0; e < n; ++e)
            if (pick(rng)) store_from_float(rows->data(), dtype, e, huge[which(rng)]);
        }
      }
      T::step(*subject, ss, counts, layers);
      T::step(reference, rs, counts, layers);
    }
    for (std::int32_t layer = 0; layer < c.shape.num_layers; ++layer) {
      const LayerRows got = T::gather(*subject, ss, layer);
      T::expect_same(T::gather(reference, rs, layer), got, dtype, T::kExactAcrossBackends,
                     "layer " + std::to_string(layer));
      for (const auto* rows : {&got.k, &got.v}) {
        const auto n = static_cast<std::int64_t>(rows->size() / dtype_size(dtype));
        std::int64_t nans = 0;
        for (std::int64_t e = 0; e < n; ++e)
          nans += std::isnan(load_as_float(rows->data(), dtype, e)) ? 1 : 0;
        EXPECT_EQ(nans, 0) << "layer " << layer << ": finite inputs decoded to NaN";
      }
    }
  }
}

// Two sequences on blocks whose bytes start past 2^31 read back what the same
// sequences read from the start of a small arena.
TYPED_TEST_P(CodecInputs, BlocksPast2GiBReadBackAsNearTheStart) {
  using T = TestFixture;
  std::mt19937_64 rng(this->seed_);
  const DType dtype = DType::kF16;
  SCOPED_TRACE(::testing::Message() << "seed " << this->seed_);
  typename T::Reference small(T::config(dtype, 32, 4));
  const std::int64_t block_bytes = small.bytes_per_block();
  const std::int64_t before = (std::int64_t{1} << 31) / block_bytes + 1;
  auto big = T::subject(T::config(dtype, before + 32, 4));
  ASSERT_GT(big->memory().arena_bytes, std::int64_t{1} << 31);
  // A sequence holding the first `before` blocks, never written.
  const SeqId filler = big->create_sequence();
  ASSERT_EQ(big->try_reserve(filler, before * T::kBlock + T::Codec::kResidualTokens),
            ReserveStatus::kOk);
  ASSERT_GE(static_cast<std::int64_t>(big->sequence(filler).blocks.size()), before);
  std::vector<SeqId> bs = {big->create_sequence(), big->create_sequence()};
  std::vector<SeqId> rs = {small.create_sequence(), small.create_sequence()};
  for (const std::vector<std::int32_t>& counts :
       {std::vector<std::int32_t>{300, 77}, {1, 1}, {64, 1}}) {
    const auto layers = T::rows(small.shape(), counts[0] + counts[1], 0.0, rng);
    T::step(*big, bs, counts, layers);
    T::step(small, rs, counts, layers);
  }
  for (SeqId s : bs) {
    for (BlockId b : big->sequence(s).blocks)
      ASSERT_GE(std::int64_t{b} * block_bytes, std::int64_t{1} << 31) << "block " << b;
  }
  for (std::int32_t layer = 0; layer < small.shape().num_layers; ++layer) {
    T::expect_same(T::gather(small, rs, layer), T::gather(*big, bs, layer), dtype,
                   T::kExactAcrossBackends, "layer " + std::to_string(layer));
  }
}

REGISTER_TYPED_TEST_SUITE_P(CodecInputs, ChunkedGathersEqualOneByOne,
                            StridedSourcesStoreWhatPackedOnesDo, NonFiniteInputsAreStoredAsOnTheCpu,
                            InputsNearTheFp16LimitSaturateAsOnTheCpu,
                            BlocksPast2GiBReadBackAsNearTheStart);

template <class Backend>
using CodecInputCases = ::testing::Types<
    CodecOn<PlainCodec, Backend>, CodecOn<Int8Codec<32>, Backend>,
    CodecOn<Int8Codec<128, 4>, Backend>, CodecOn<Fp8Codec<Fp8Scale::kPerHead>, Backend>,
    CodecOn<Fp8Codec<Fp8Scale::kPerTensor>, Backend>, CodecOn<KiviCodec<4, 32, 64>, Backend>,
    CodecOn<KiviCodec<2, 32, 32>, Backend>, CodecOn<LowRankCodec<32>, Backend>>;

struct CodecInputNames {
  template <class Pair>
  static std::string GetName(int index) {
    return std::string(codec_kind_name(Pair::Codec::kKind)) + "_" + std::to_string(index);
  }
};

}  // namespace kvcache::testing
