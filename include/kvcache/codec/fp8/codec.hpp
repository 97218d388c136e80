// Fp8Codec<Mode>: OCP fp8 e4m3 codes with a static scale per head or per
// tensor (layer, K/V), fitted to the first batch appended to each layer (or
// to calibrate()): scale = abs-max / 448, so the sample's largest value maps
// to e4m3's largest finite code.
// The row math and e4m3 conversions are in codec/fp8/rows.hpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "kvcache/buffer.hpp"
#include "kvcache/codec/fp8/rows.hpp"
#include "kvcache/codec/page_view.hpp"
#include "kvcache/codec/quant_math.hpp"
#include "kvcache/codec/storage.hpp"
#include "kvcache/codec/token_codec.hpp"
#include "kvcache/config.hpp"
#include "kvcache/dtype.hpp"
#include "kvcache/kernels/params.hpp"
#include "kvcache/types.hpp"

namespace kvcache {

enum class Fp8Scale { kPerTensor, kPerHead };

template <Fp8Scale Mode = Fp8Scale::kPerHead>
struct Fp8Codec : codec::TokenCodec<Fp8Rows> {
  static constexpr CodecKind kKind = CodecKind::kFp8;
  static constexpr Fp8Scale kMode = Mode;

  // Scales from a sample's abs-max per head (kPerHead) or over the heads
  // (kPerTensor). The abs-max buffer is allocated once, at construction.
  template <class Backend>
  class Calibration {
   public:
    static constexpr bool kFits = true;
    Calibration(const CacheConfig& config, Backend& backend)
        : amax_(backend.allocate(static_cast<std::size_t>(config.shape.num_kv_heads) *
                                 sizeof(float))),
          scales_(static_cast<std::size_t>(config.shape.num_kv_heads), 0.0f) {}

    void fit(Backend& backend, const kernels::SampleView& sample, float* state, float*) {
      launch(backend, kernels::AbsMaxParams{sample, amax_.template as<float>()});
      const std::size_t bytes = scales_.size() * sizeof(float);
      backend.copy_to_host(scales_.data(), amax_.data(), bytes);
      const float tensor_max = *std::max_element(scales_.begin(), scales_.end());
      for (float& scale : scales_)
        scale = codec::fp8_scale(Mode == Fp8Scale::kPerTensor ? tensor_max : scale);
      backend.copy_to_backend(state, scales_.data(), bytes);
    }

   private:
    Buffer amax_;
    std::vector<float> scales_;
  };
  template <class Backend>
  using Storage = codec::TokenCodecStorage<Fp8Codec, Backend>;

  static std::string name() {
    return Mode == Fp8Scale::kPerHead ? "fp8-e4m3-head" : "fp8-e4m3-tensor";
  }
  static void validate(const CacheConfig& config) { codec::require_nhd(config.layout, name()); }
};

}  // namespace kvcache
