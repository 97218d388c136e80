// Content-addressed K/V for the conformance suite: the rows a "model" would
// write for a token depend only on the token ids up to it (as real keys and
// values do), so a sequence that reuses cached prefix blocks must read back
// exactly the rows of its own prompt. The reference model then needs no
// knowledge of sharing: it keeps each sequence's token ids.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "kvcache/kvcache.hpp"

namespace kvcache::testing {

inline std::uint64_t splitmix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Hash of the token ids [0, i] given the hash of [0, i - 1].
inline std::uint64_t extend_prefix(std::uint64_t previous, std::int32_t token) {
  std::uint64_t state =
      previous ^ (static_cast<std::uint64_t>(static_cast<std::uint32_t>(token)) * 0x100000001b3ULL);
  return splitmix(state);
}

// The K (kv = 0) or V (kv = 1) rows of one token of one layer.
inline void content_rows(const ModelShape& shape, std::uint64_t prefix, std::int32_t layer, int kv,
                         std::byte* out) {
  std::uint64_t state =
      prefix ^ (static_cast<std::uint64_t>(layer) << 40) ^ (static_cast<std::uint64_t>(kv) << 56);
  for (std::int64_t i = 0; i < shape.kv_width(); ++i) {
    const double unit = static_cast<double>(splitmix(state) >> 11) * 0x1.0p-53;  // [0, 1)
    store_from_float(out, shape.dtype, i, static_cast<float>(unit * 4.0 - 2.0));
  }
}

// Token ids and their prefix hashes.
struct TokenHistory {
  std::vector<std::int32_t> ids;
  std::vector<std::uint64_t> prefix;  // prefix[i]: hash of ids[0..i]

  void push(std::int32_t id) {
    prefix.push_back(extend_prefix(prefix.empty() ? 0x12345ULL : prefix.back(), id));
    ids.push_back(id);
  }
  std::int64_t size() const { return static_cast<std::int64_t>(ids.size()); }
};

// Packed [tokens][heads][head_dim] rows of tokens [first, first + count).
inline std::vector<std::byte> history_rows(const ModelShape& shape, const TokenHistory& history,
                                           std::int64_t first, std::int64_t count,
                                           std::int32_t layer, int kv) {
  const std::int64_t row = shape.kv_width() * dtype_size(shape.dtype);
  std::vector<std::byte> rows(static_cast<std::size_t>(count * row));
  for (std::int64_t t = 0; t < count; ++t) {
    content_rows(shape, history.prefix[static_cast<std::size_t>(first + t)], layer, kv,
                 rows.data() + t * row);
  }
  return rows;
}

// What a cache with codec `Codec` (pages `view`) reads back for these rows:
// plain rows as they are; per-token codecs each row through encode and decode
// with the manager's calibrated state; KIVI the first `quantized` tokens
// through its group codecs (keys per channel, values per token) and the rest
// exactly.
template <class Codec, class View>
std::vector<std::byte> codec_expected(const View& view, const std::vector<float>& state,
                                      const ModelShape& shape, const std::vector<std::byte>& rows,
                                      std::int64_t tokens, std::int64_t quantized,
                                      std::int32_t layer, int kv) {
  if constexpr (Codec::kKind == CodecKind::kPlain) {
    return rows;
  } else {
    using Rows = typename Codec::Rows;
    const std::int32_t heads = shape.num_kv_heads, d = shape.head_dim;
    std::vector<std::byte> out(rows.size());
    auto at = [&](std::int64_t t, std::int32_t h, std::int32_t i) {
      return (t * heads + h) * d + i;
    };
    std::vector<std::uint8_t> codes(static_cast<std::size_t>(view.region[1].bytes) + 64);
    std::vector<std::uint8_t> scales(static_cast<std::size_t>(view.region[1].bytes) + 64);
    if constexpr (Codec::kKind == CodecKind::kKivi) {
      if (!rows.empty()) std::memcpy(out.data(), rows.data(), rows.size());
      for (std::int64_t first = 0; first < quantized; first += view.page_size) {
        for (std::int32_t h = 0; h < heads; ++h) {
          if (kv == 0) {
            std::vector<std::uint8_t> region(static_cast<std::size_t>(view.region[0].bytes));
            for (std::int32_t c = 0; c < d; ++c) {
              Rows::encode_key_channel(
                  view,
                  [&](std::int32_t t) {
                    return load_as_float(rows.data(), shape.dtype, at(first + t, h, c));
                  },
                  region.data(), h, c);
              for (std::int32_t t = 0; t < view.page_size; ++t) {
                store_from_float(out.data(), shape.dtype, at(first + t, h, c),
                                 Rows::decode_key(view, region.data(), h, c, t));
              }
            }
          } else {
            for (std::int32_t t = 0; t < view.page_size; ++t) {
              Rows::encode(
                  d,
                  [&](std::int32_t i) {
                    return load_as_float(rows.data(), shape.dtype, at(first + t, h, i));
                  },
                  codes.data(), scales.data(), nullptr);
              Rows::decode(d, codes.data(), scales.data(), nullptr,
                           [&](std::int32_t i, float value) {
                             store_from_float(out.data(), shape.dtype, at(first + t, h, i), value);
                           });
            }
          }
        }
      }
      return out;
    } else {
      for (std::int64_t t = 0; t < tokens; ++t) {
        for (std::int32_t h = 0; h < heads; ++h) {
          const float* row_state =
              kernels::row_state<Rows>(state.empty() ? nullptr : state.data(), view, layer, kv, h);
          Rows::encode(
              d,
              [&](std::int32_t i) { return load_as_float(rows.data(), shape.dtype, at(t, h, i)); },
              codes.data(), scales.data(), row_state);
          Rows::decode(d, codes.data(), scales.data(), row_state, [&](std::int32_t i, float value) {
            store_from_float(out.data(), shape.dtype, at(t, h, i), value);
          });
        }
      }
      return out;
    }
  }
}

}  // namespace kvcache::testing
