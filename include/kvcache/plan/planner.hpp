// Capacity planning: how much K/V cache a device holds for a model, under
// each codec, and the device profile the library would start from.
//
//   const auto model = plan::find_model("llama-3-8b");          // or "32:8:128[:bf16]"
//   const plan::Plan p = plan::make_plan({model, 24 * GiB, {}, 8192});
//   p.rows[i]: codec, bytes per token, blocks, tokens and sequences that fit
//
// Weights are the model's parameters at 2 bytes each (its dtype's size for
// fp32) unless given; the cache gets the profile's share of what the weights
// leave (the rest: activations, workspace, the allocator's slack). A model
// whose weights do not fit gets rows of zeros and a note saying so.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "kvcache/dtype.hpp"
#include "kvcache/error.hpp"
#include "kvcache/model_shape.hpp"
#include "kvcache/plan/codec_costs.hpp"

namespace kvcache::plan {

inline constexpr std::int64_t kGiB = std::int64_t{1} << 30;

struct ModelPreset {
  std::string_view name;
  ModelShape shape;
  double params_billion = 0;  // 0: unknown (a shape given by hand): give the weights' size
};

// Real shapes (config.json of each release): layers, KV heads, head_dim.
inline std::span<const ModelPreset> model_presets() {
  static const ModelPreset kModels[] = {
      {"llama-2-7b", ModelShape::gqa(32, 32, 128, DType::kF16), 6.74},
      {"llama-2-13b", ModelShape::gqa(40, 40, 128, DType::kF16), 13.0},
      {"llama-3-8b", ModelShape::gqa(32, 8, 128, DType::kBF16), 8.03},
      {"llama-3-70b", ModelShape::gqa(80, 8, 128, DType::kBF16), 70.6},
      {"mistral-7b", ModelShape::gqa(32, 8, 128, DType::kBF16), 7.24},
      {"qwen2.5-7b", ModelShape::gqa(28, 4, 128, DType::kBF16), 7.62},
      {"qwen2.5-72b", ModelShape::gqa(80, 8, 128, DType::kBF16), 72.7},
  };
  return kModels;
}

// A shape written "layers:kv_heads:head_dim[:fp16|bf16|fp32]"; InvalidArgument
// naming the part that is wrong (and, for anything else, `presets`: the
// names the caller also takes).
inline ModelShape parse_shape(std::string_view name, std::string_view presets) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t colon = name.find(':', start);
    parts.push_back(name.substr(start, colon == std::string_view::npos ? colon : colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  if (parts.size() < 3 || parts.size() > 4) {
    kvcache::detail::raise<InvalidArgument>(
        "model \"{}\" is not {}{}layers:kv_heads:head_dim[:fp16|bf16|fp32]", name, presets,
        presets.empty() ? "" : " nor ");
  }
  auto number = [&](std::string_view text) {
    int value = 0;
    bool ok = !text.empty() && text.size() <= 6;
    for (char c : text) {
      ok = ok && c >= '0' && c <= '9';
      if (ok) value = value * 10 + (c - '0');
    }
    if (!ok) {  // the shape's own check names a value out of range
      kvcache::detail::raise<InvalidArgument>("model \"{}\": \"{}\" is not a number", name, text);
    }
    return value;
  };
  DType dtype = DType::kF16;
  if (parts.size() == 4) {
    if (parts[3] == "bf16") {
      dtype = DType::kBF16;
    } else if (parts[3] == "fp32") {
      dtype = DType::kF32;
    } else if (parts[3] != "fp16") {
      kvcache::detail::raise<InvalidArgument>(
          "model \"{}\": dtype \"{}\" is not fp16, bf16 or fp32", name, parts[3]);
    }
  }
  ModelShape shape = ModelShape::gqa(number(parts[0]), number(parts[1]), number(parts[2]), dtype);
  shape.validate();
  return shape;
}

// A preset by name, or a shape (parse_shape; its parameter count unknown).
inline ModelPreset find_model(std::string_view name) {
  std::string presets;
  for (const ModelPreset& m : model_presets()) {
    if (m.name == name) return m;
    presets += (presets.empty() ? "" : ", ") + std::string(m.name);
  }
  return ModelPreset{name, parse_shape(name, presets), 0};
}

// What the library starts from on a device of a given memory.
struct DeviceProfile {
  std::int64_t memory_gib = 0;
  std::int32_t block_size = 16;
  double cache_share = 0.9;  // of the memory the weights leave
  std::int32_t max_batch = 1;
  std::string_view codec;  // the default codec
  std::string_view why;
};

inline std::span<const DeviceProfile> device_profiles() {
  static const DeviceProfile kProfiles[] = {
      {8, 16, 0.80, 2, "int8",
       "the original design's 8 GB preset (batch 2, chunks of 128, compression at 0.6 of memory) "
       "cannot "
       "hold a 7B model in fp16: its weights alone are 12.6 GiB. With 4-bit weights (about 3.7 "
       "GiB) the cache gets 3.4 GiB: LLaMA-2-7B's fp16 K/V (0.5 MiB a token) holds 7,000 tokens, "
       "batch 3 at 2048; int8 from the start doubles it"},
      {16, 16, 0.85, 4, "plain",
       "the original design's 16 GB preset (batch 4, chunks of 256): a 7B fp16 model leaves 3.4 "
       "GiB, "
       "2.9 GiB of cache: LLaMA-2-7B holds about 6,000 tokens (batch 4 at 1024, not at 2048; int8 "
       "reaches batch 5 at 2048); LLaMA-3-8B's 15 GiB of weights leave 0.9 GiB of cache, about "
       "7,000 tokens (its 8 KV heads make a token a quarter of LLaMA-2-7B's)"},
      {24, 16, 0.90, 8, "plain",
       "the original design's 24 GB preset (batch 8, chunks of 512): LLaMA-2-7B leaves 11.4 GiB, "
       "10.3 GiB "
       "of cache, 21,000 tokens: batch 8 at 2048 fits; LLaMA-3-8B (GQA, 128 KiB a token) holds "
       "about 66,000 tokens"},
      {40, 16, 0.90, 16, "plain", "A100 40GB: a 7B or 8B model with room for long contexts"},
      {48, 16, 0.90, 24, "plain", "L40S / RTX 6000 Ada: as 40 GiB, more sequences"},
      {80, 16, 0.90, 64, "plain", "A100 / H100 80GB: 8B models at high batch; 70B needs two"},
      {96, 16, 0.90, 96, "plain", "H100 NVL / GH200 96GB"},
      {141, 16, 0.92, 128, "plain",
       "H200: a 70B model's bf16 weights (131.5 GiB) fill the card; with 8-bit weights (66 GiB) "
       "about 69 GiB of cache holds 226,000 tokens of LLaMA-3-70B (320 KiB a token)"},
  };
  return kProfiles;
}

// The largest profile not above `memory_bytes` (the smallest below them all).
inline const DeviceProfile& profile_for(std::int64_t memory_bytes) {
  const auto profiles = device_profiles();
  const DeviceProfile* best = &profiles.front();
  for (const DeviceProfile& p : profiles) {
    if (p.memory_gib * kGiB <= memory_bytes + kGiB / 2) best = &p;  // "24 GB" cards show 23.6 GiB
  }
  return *best;
}

struct PlanInput {
  ModelPreset model;
  std::int64_t memory_bytes = 0;
  std::optional<double> weights_gib;       // default: parameters x dtype size
  std::int64_t context = 8192;             // tokens per sequence
  std::optional<std::int32_t> block_size;  // default: the profile's
};

struct PlanRow {
  std::string_view codec;
  double bytes_per_token = 0;
  std::int64_t block_bytes = 0;
  std::int64_t blocks = 0;
  std::int64_t tokens = 0;
  std::int64_t sequences = 0;  // of `context` tokens
};

struct Plan {
  const DeviceProfile* profile = nullptr;
  std::int32_t block_size = 0;
  std::int64_t weights_bytes = 0;
  std::int64_t cache_bytes = 0;
  std::vector<PlanRow> rows;
  std::vector<std::string> notes;
};

// InvalidArgument for a memory, weights, context or block size out of range
// (naming the value and the range).
inline Plan make_plan(const PlanInput& in) {
  if (in.memory_bytes < kGiB / 4 || in.memory_bytes > std::int64_t{1} << 50) {
    kvcache::detail::raise<InvalidArgument>("plan: memory of {} bytes (allowed: 256 MiB to 1 PiB)",
                                            in.memory_bytes);
  }
  if (in.context < 1 || in.context > (std::int64_t{1} << 24)) {
    kvcache::detail::raise<InvalidArgument>("plan: context of {} tokens (allowed: 1 to 2^24)",
                                            in.context);
  }
  if (in.weights_gib && (*in.weights_gib < 0 || *in.weights_gib > 1e6)) {
    kvcache::detail::raise<InvalidArgument>("plan: weights of {} GiB (allowed: 0 to 10^6)",
                                            *in.weights_gib);
  }
  if (!in.weights_gib && in.model.params_billion <= 0) {
    kvcache::detail::raise<InvalidArgument>(
        "plan: model '{}' is a shape without a parameter count: give the weights' size",
        in.model.name);
  }
  Plan p;
  p.profile = &profile_for(in.memory_bytes);
  p.block_size = in.block_size.value_or(p.profile->block_size);
  if (p.block_size < 1 || p.block_size > 1024 || (p.block_size & (p.block_size - 1)) != 0) {
    kvcache::detail::raise<InvalidArgument>(
        "plan: block size {} (allowed: a power of two from 1 to 1024)", p.block_size);
  }
  const ModelShape& shape = in.model.shape;
  p.weights_bytes = in.weights_gib
                        ? static_cast<std::int64_t>(*in.weights_gib * static_cast<double>(kGiB))
                        : static_cast<std::int64_t>(in.model.params_billion * 1e9 *
                                                    static_cast<double>(dtype_size(shape.dtype)));
  const std::int64_t left = in.memory_bytes - p.weights_bytes;
  if (left <= 0) {
    p.notes.push_back(fmt::format(
        "the weights ({:.1f} GiB) do not fit in {:.1f} GiB: no room for a cache (give "
        "--weights-gib for quantized weights)",
        static_cast<double>(p.weights_bytes) / kGiB, static_cast<double>(in.memory_bytes) / kGiB));
  }
  p.cache_bytes =
      left <= 0 ? 0 : static_cast<std::int64_t>(static_cast<double>(left) * p.profile->cache_share);
  const std::int64_t pages_per_sequence = (in.context + p.block_size - 1) / p.block_size;
  for (const CodecCost& codec : codec_costs()) {
    PlanRow row;
    row.codec = codec.name;
    std::int64_t block_bytes = 0;
    try {
      block_bytes = codec.block_bytes(shape, p.block_size);
    } catch (const InvalidArgument&) {
      // KIVI's pages are whole groups: size it at its group.
      block_bytes = codec.block_bytes(shape, 32) * p.block_size / 32;
      if (block_bytes == 0) block_bytes = codec.block_bytes(shape, 32);
    }
    row.block_bytes = block_bytes;
    row.bytes_per_token = static_cast<double>(block_bytes) / p.block_size;
    const std::int64_t fixed = codec.fixed_bytes(shape, p.profile->max_batch);
    row.blocks = p.cache_bytes > fixed ? (p.cache_bytes - fixed) / block_bytes : 0;
    row.tokens = row.blocks * p.block_size;
    row.sequences = row.blocks / pages_per_sequence;
    p.rows.push_back(row);
  }
  return p;
}

}  // namespace kvcache::plan
