// What every kernel launcher checks of its parameters before it reads or
// launches anything, written once for both backends: the CUDA launchers turn
// a problem into cudaErrorMisalignedAddress or cudaErrorInvalidValue, the CPU
// backend into InvalidArgument naming the field, its value and what is
// allowed. The manager never builds a view these refuse; the checks are for
// hand-built views (the launchers are public) and hold everything a kernel
// relies on: positive geometry (a zero page size would divide by zero on the
// device), 16-byte aligned bases and strides (the kernels move 16-byte
// vectors), a row that is a whole number of 16-byte lanes and of scale groups
// (the lane codecs split rows that way), null pointers only where nothing is
// read.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kvcache/codec/lane_bytes.hpp"
#include "kvcache/codec/page_view.hpp"
#include "kvcache/dtype.hpp"
#include "kvcache/kernels/params.hpp"
#include "kvcache/layout.hpp"

namespace kvcache::kernels {

// The largest head_dim a kernel takes (ModelShape's limit; the CPU kernels
// keep a row in a buffer of this size).
inline constexpr std::int32_t kMaxHeadDim = 1024;
inline constexpr std::int32_t kMaxHeads = 1024;

struct LaunchProblem {
  const char* field = nullptr;    // what is wrong; null when nothing is
  std::int64_t value = 0;         // its value (an address for a pointer)
  const char* allowed = nullptr;  // what would be accepted
  bool misaligned = false;        // an alignment problem (else an invalid value)
  explicit operator bool() const { return field != nullptr; }
};

namespace checks {

inline LaunchProblem invalid(const char* field, std::int64_t value, const char* allowed) {
  return LaunchProblem{field, value, allowed, false};
}
inline std::int64_t address(const void* pointer) {
  return static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(pointer));
}
inline LaunchProblem non_null(const char* field, const void* pointer) {
  return pointer == nullptr ? invalid(field, 0, "a non-null pointer") : LaunchProblem{};
}
inline LaunchProblem aligned(const char* field, const void* pointer) {
  if (pointer == nullptr) return invalid(field, 0, "a non-null, 16-byte aligned pointer");
  if (address(pointer) % 16 != 0)
    return LaunchProblem{field, address(pointer), "a 16-byte aligned pointer", true};
  return {};
}
inline LaunchProblem stride(const char* field, std::int64_t bytes) {
  if (bytes < 0) return invalid(field, bytes, "a non-negative multiple of 16 bytes");
  if (bytes % 16 != 0) return LaunchProblem{field, bytes, "a multiple of 16 bytes", true};
  return {};
}
inline LaunchProblem positive(const char* field, std::int64_t value) {
  return value < 1 ? invalid(field, value, "at least 1") : LaunchProblem{};
}
inline LaunchProblem count(const char* field, std::int64_t value) {
  return value < 0 ? invalid(field, value, "at least 0") : LaunchProblem{};
}
inline LaunchProblem layer(std::int32_t value, std::int32_t num_layers) {
  if (value < 0 || value >= num_layers) return invalid("layer", value, "0 <= layer < num_layers");
  return {};
}

// The first problem of several (checked in order).
template <class... Problems>
LaunchProblem first(const Problems&... problems) {
  LaunchProblem found;
  ((found = found ? found : problems), ...);
  return found;
}

inline LaunchProblem geometry(std::int32_t page_size, std::int32_t num_layers,
                              std::int32_t num_heads, std::int32_t head_dim, DType dtype) {
  if (LaunchProblem p = first(positive("page_size", page_size), positive("num_layers", num_layers),
                              positive("num_heads", num_heads), positive("head_dim", head_dim)))
    return p;
  if (head_dim > kMaxHeadDim) return invalid("head_dim", head_dim, "at most 1024");
  // ModelShape's limit, and what keeps 2 x heads within a grid's y (65535).
  if (num_heads > kMaxHeads) return invalid("num_heads", num_heads, "at most 1024");
  if (static_cast<std::uint8_t>(dtype) > static_cast<std::uint8_t>(DType::kF32))
    return invalid("dtype", static_cast<std::uint8_t>(dtype), "fp16 (0), bf16 (1), fp32 (2)");
  return {};
}

// `residual`: the view is KIVI's rings, named so in the problem.
inline LaunchProblem plain_view(const PagedKVView& v, bool residual = false) {
  static constexpr const char* kNames[2][6] = {
      {"cache.data", "cache.token_bytes", "cache.head_bytes", "cache.kv_bytes", "cache.layer_bytes",
       "cache.page_bytes"},
      {"residual.data", "residual.token_bytes", "residual.head_bytes", "residual.kv_bytes",
       "residual.layer_bytes", "residual.page_bytes"}};
  const char* const* name = kNames[residual ? 1 : 0];
  if (LaunchProblem p = geometry(v.page_size, v.num_layers, v.num_heads, v.head_dim, v.dtype))
    return p;
  return first(aligned(name[0], v.data), stride("row bytes (head_dim x dtype size)", v.row_bytes()),
               stride(name[1], v.token_bytes), stride(name[2], v.head_bytes),
               stride(name[3], v.kv_bytes), stride(name[4], v.layer_bytes),
               stride(name[5], v.page_bytes));
}

inline LaunchProblem codec_view(const CodecPageView& v) {
  if (LaunchProblem p = geometry(v.page_size, v.num_layers, v.num_heads, v.head_dim, v.dtype))
    return p;
  return first(aligned("cache.data", v.data), stride("cache.page_bytes", v.page_bytes),
               stride("cache.layer_bytes", v.layer_bytes),
               stride("cache.region[0].bytes", v.region[0].bytes),
               stride("cache.region[1].bytes", v.region[1].bytes),
               stride("cache.region[0].scales_offset", v.region[0].scales_offset),
               stride("cache.region[1].scales_offset", v.region[1].scales_offset));
}

inline LaunchProblem source(const AppendSource& s) {
  return first(aligned("source.k", s.k), aligned("source.v", s.v),
               stride("source.token_bytes", s.token_bytes),
               stride("source.head_bytes", s.head_bytes));
}

inline LaunchProblem table(const PageTableView& t) {
  return first(non_null("table.indptr", t.indptr), non_null("table.indices", t.indices),
               non_null("table.last_page_len", t.last_page_len),
               non_null("table.out_row_offset", t.out_row_offset));
}

inline LaunchProblem output(const GatherOutput& out) {
  return first(aligned("out.k", out.k), aligned("out.v", out.v));
}

// A stride of a region that one access of `width` bytes must stay aligned to.
inline LaunchProblem multiple(const char* field, std::int64_t bytes, std::int64_t width) {
  if (bytes < 0) return invalid(field, bytes, "a non-negative byte count");
  const std::int64_t alignment = width > 0 ? codec::access_alignment(width) : 1;
  if (bytes % alignment != 0) {
    return LaunchProblem{field, bytes, "a multiple of the bytes a lane moves in one access", true};
  }
  return {};
}

// A lane codec's rows split into 16-byte lanes of the input dtype, each
// holding whole scale groups or a part of one, and each lane's codes and
// scales sit at addresses aligned to the one access that moves them (the
// strides of the per-token region; KIVI's keys: a channel's packed codes).
template <class Rows>
LaunchProblem rows(const CodecPageView& v) {
  if constexpr (Rows::kLaneCodec) {
    const std::int64_t row_bytes = std::int64_t{v.head_dim} * dtype_size(v.dtype);
    if (row_bytes % 16 != 0) {
      return invalid("head_dim x dtype size", row_bytes,
                     "a multiple of 16 bytes (whole 16-byte lanes)");
    }
    if constexpr (requires { Rows::kGroup; }) {
      if (v.head_dim % Rows::kGroup != 0)
        return invalid("head_dim", v.head_dim, "a multiple of the codec's group size");
    }
    const bool wide = dtype_size(v.dtype) == 2;  // 8 values a lane, else 4
    const std::int64_t code_width =
        wide ? Rows::template kLaneCodeBytes<8> : Rows::template kLaneCodeBytes<4>;
    const std::int64_t scale_width =
        wide ? Rows::template kLaneScaleBytes<8> : Rows::template kLaneScaleBytes<4>;
    for (std::int32_t kv = 0; kv < 2; ++kv) {
      const RegionLayout& r = v.region[kv];
      if constexpr (requires { Rows::kChannelCodeBytes; }) {
        // KIVI's keys: channel-major whatever the view says; a channel's
        // codes, and its scale and zero, each move as one access.
        if (kv == 0) {
          if (LaunchProblem p = first(multiple("cache.region[0].code_head_bytes", r.code_head_bytes,
                                               Rows::kChannelCodeBytes),
                                      multiple("cache.region[0].scale_head_bytes",
                                               r.scale_head_bytes, Rows::kGroupScaleBytes)))
            return p;
          continue;
        }
      }
      static constexpr const char* kNames[2][4] = {
          {"cache.region[0].code_token_bytes", "cache.region[0].code_head_bytes",
           "cache.region[0].scale_token_bytes", "cache.region[0].scale_head_bytes"},
          {"cache.region[1].code_token_bytes", "cache.region[1].code_head_bytes",
           "cache.region[1].scale_token_bytes", "cache.region[1].scale_head_bytes"}};
      if (LaunchProblem p = first(multiple(kNames[kv][0], r.code_token_bytes, code_width),
                                  multiple(kNames[kv][1], r.code_head_bytes, code_width),
                                  multiple(kNames[kv][2], r.scale_token_bytes, scale_width),
                                  multiple(kNames[kv][3], r.scale_head_bytes, scale_width)))
        return p;
    }
  }
  if constexpr (requires { Rows::kRank; }) {
    // Low-rank: the basis has `rank` directions in head_dim dimensions.
    if (Rows::kRank > v.head_dim)
      return invalid("head_dim", v.head_dim, "at least the codec's rank");
  }
  if (Rows::state_floats(v.head_dim) < 0) return invalid("head_dim", v.head_dim, "a valid shape");
  return {};
}

template <class Rows>
LaunchProblem state(const CodecPageView& v, const float* state_pointer) {
  if (Rows::state_floats(v.head_dim) > 0 && state_pointer == nullptr)
    return invalid("state", 0, "the codec's calibrated state (non-null)");
  return {};
}

}  // namespace checks

// ---- per launch -------------------------------------------------------------------

inline LaunchProblem launch_problem(const AppendParams& p) {
  if (LaunchProblem e =
          checks::first(checks::count("slots.num_tokens", p.slots.num_tokens),
                        checks::plain_view(p.cache), checks::layer(p.layer, p.cache.num_layers)))
    return e;
  if (p.slots.num_tokens == 0) return {};
  return checks::first(checks::non_null("slots.slots", p.slots.slots), checks::source(p.source));
}

inline LaunchProblem launch_problem(const GatherParams& p) {
  if (LaunchProblem e =
          checks::first(checks::count("table.batch_size", p.table.batch_size),
                        checks::count("table.total_pages", p.table.total_pages),
                        checks::plain_view(p.cache), checks::layer(p.layer, p.cache.num_layers)))
    return e;
  if (p.table.batch_size == 0) return {};
  return checks::first(checks::table(p.table), checks::output(p.out));
}

inline LaunchProblem launch_problem(const CopyBlocksParams& p) {
  if (LaunchProblem e = checks::first(checks::count("num_pairs", p.num_pairs),
                                      checks::count("num_pages", p.num_pages)))
    return e;
  if (p.num_pairs == 0) return {};
  return checks::first(checks::aligned("data", p.data), checks::stride("page_bytes", p.page_bytes),
                       checks::positive("page_bytes", p.page_bytes),
                       checks::non_null("pairs", p.pairs));
}

template <class Rows>
LaunchProblem launch_problem(const CodecAppendParams<Rows>& p) {
  if (LaunchProblem e = checks::first(checks::count("slots.num_tokens", p.slots.num_tokens),
                                      checks::codec_view(p.cache), checks::rows<Rows>(p.cache),
                                      checks::layer(p.layer, p.cache.num_layers)))
    return e;
  if (p.slots.num_tokens == 0) return {};
  return checks::first(checks::non_null("slots.slots", p.slots.slots), checks::source(p.source),
                       checks::state<Rows>(p.cache, p.state));
}

template <class Rows>
LaunchProblem launch_problem(const CodecGatherParams<Rows>& p) {
  if (LaunchProblem e = checks::first(checks::count("table.batch_size", p.table.batch_size),
                                      checks::count("table.total_pages", p.table.total_pages),
                                      checks::codec_view(p.cache), checks::rows<Rows>(p.cache),
                                      checks::layer(p.layer, p.cache.num_layers)))
    return e;
  if (p.table.batch_size == 0) return {};
  return checks::first(checks::table(p.table), checks::output(p.out),
                       checks::state<Rows>(p.cache, p.state));
}

// KIVI: a page is one group of keys, the residual rings are a plain view.
template <class Rows>
LaunchProblem kivi_view(const CodecPageView& cache, const PagedKVView& residual,
                        std::int32_t layer) {
  if (LaunchProblem e =
          checks::first(checks::codec_view(cache), checks::rows<Rows>(cache),
                        checks::layer(layer, cache.num_layers), checks::plain_view(residual, true)))
    return e;
  if (cache.page_size != Rows::kGroup)
    return checks::invalid("cache.page_size", cache.page_size, "the codec's group size");
  if (residual.page_size > 65535)  // a grid's y: the ring gather's positions
    return checks::invalid("residual.page_size", residual.page_size, "at most 65535");
  if (std::int64_t{residual.num_pages} * residual.page_size > 0x7fffffff) {
    return checks::invalid("residual slots (num_pages x page_size)",
                           std::int64_t{residual.num_pages} * residual.page_size, "below 2^31");
  }
  if (residual.head_dim != cache.head_dim || residual.num_heads != cache.num_heads ||
      residual.dtype != cache.dtype || residual.num_layers != cache.num_layers) {
    return checks::invalid("residual.head_dim", residual.head_dim,
                           "the cache's geometry (head_dim, heads, layers, dtype)");
  }
  return {};
}

template <class Rows>
LaunchProblem launch_problem(const KiviFlushParams<Rows>& p) {
  if (LaunchProblem e = checks::first(checks::count("num_groups", p.num_groups),
                                      kivi_view<Rows>(p.cache, p.residual, p.layer)))
    return e;
  if (p.num_groups == 0) return {};
  return checks::first(checks::non_null("sources", p.sources), checks::non_null("pages", p.pages),
                       checks::source(p.source));
}

template <class Rows>
LaunchProblem launch_problem(const KiviGatherParams<Rows>& p) {
  if (LaunchProblem e = checks::first(checks::count("table.batch_size", p.table.batch_size),
                                      checks::count("table.total_pages", p.table.total_pages),
                                      checks::count("side.total_rows", p.side.total_rows),
                                      kivi_view<Rows>(p.cache, p.residual, p.layer)))
    return e;
  if (p.table.batch_size == 0) return {};
  return checks::first(checks::table(p.table), checks::output(p.out),
                       checks::non_null("side.paged_tokens", p.side.paged_tokens),
                       checks::non_null("side.total_tokens", p.side.total_tokens),
                       checks::non_null("side.side_slot", p.side.side_slot));
}

}  // namespace kvcache::kernels
