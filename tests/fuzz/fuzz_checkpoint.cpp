// libFuzzer target for the checkpoint reader, the one reader of bytes from a
// disk that may have been damaged. The first byte picks what the rest is: a
// full checkpoint (read, and when it reads, restored into a small cache), or
// a log applied to a fixed good checkpoint (then restored). Each may only
// succeed or throw kvcache::Error with a bounded message; a restore that
// succeeds leaves a cache whose invariants hold. Anything else is a finding.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "kvcache/checkpoint/checkpoint.hpp"
#include "kvcache/kvcache.hpp"

namespace {

using Cache = kvcache::KVCacheManager<
    kvcache::CachePolicy<kvcache::PagedAllocation, kvcache::LruEviction, kvcache::PrefixSharing>>;

kvcache::CacheConfig config() {
  kvcache::CacheConfig c;
  c.shape = kvcache::ModelShape::gqa(1, 1, 8, kvcache::DType::kF16);
  c.block_size = 4;
  c.num_blocks = 32;
  c.max_batch_tokens = 64;
  c.max_batch_sequences = 4;
  return c;
}

// The seed corpus's cache: two sequences sharing a block (the good base the
// log inputs apply to).
const std::vector<std::byte>& good_checkpoint() {
  static const std::vector<std::byte> bytes = [] {
    Cache m(config());
    const std::vector<std::int32_t> prompt = {1, 2, 3, 4, 5, 6};
    const kvcache::SeqId a = m.create_sequence(prompt);
    std::vector<std::uint16_t> rows(64 * 8, 0x3c00);
    auto fill = [&](kvcache::SeqId s, std::int32_t n) {
      (void)m.try_reserve(s, n);
      kvcache::AppendBatch batch =
          m.prepare_append(std::vector<kvcache::SeqId>{s}, std::vector<std::int32_t>{n});
      const auto view = kvcache::TensorView::packed(rows.data(), kvcache::DType::kF16, n, 1, 8);
      m.append(0, batch, view, view);
      m.commit(batch);
    };
    fill(a, 6);
    const kvcache::SeqId b = m.create_sequence(std::vector<std::int32_t>{1, 2, 3, 4, 9});
    fill(b, 1);
    return kvcache::checkpoint::encode_full(m, {}, {}, 77);
  }();
  return bytes;
}

void check_message(const kvcache::Error& error) {
  if (std::string(error.what()).size() > 4096) {
    std::fprintf(stderr, "fuzz_checkpoint: a message of %zu bytes\n",
                 std::string(error.what()).size());
    std::abort();
  }
}

void restore(const kvcache::checkpoint::Image& image) {
  Cache m(config());
  try {
    (void)kvcache::checkpoint::restore_image(m, image);
  } catch (const kvcache::Error& error) {
    check_message(error);
    if (m.num_sequences() != 0) {
      std::fprintf(stderr, "fuzz_checkpoint: a failed restore left %lld sequences\n",
                   static_cast<long long>(m.num_sequences()));
      std::abort();
    }
  }
  m.check_invariants();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::span<const std::byte> rest(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  try {
    if ((data[0] & 1u) == 0) {
      restore(kvcache::checkpoint::read_full(rest));
    } else {
      kvcache::checkpoint::Image image = kvcache::checkpoint::read_full(good_checkpoint());
      kvcache::checkpoint::apply_log(rest, image);
      restore(image);
    }
  } catch (const kvcache::Error& error) {
    check_message(error);
  }
  return 0;
}
