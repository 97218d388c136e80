// The storage codecs: the fourth strategy axis of a KVCacheManager. A codec
// decides how a page stores K and V; the manager's API is the same for all
// (append takes and gather returns fp16 / bf16 / fp32 tensors of the model's
// dtype).
//
//   PlainCodec                  the model dtype as is (codec/plain/)
//   Int8Codec<G, S>             symmetric int8, one scale per G values along head_dim (per
//                               token), S-byte scales (2: fp16, 4: fp32)      (codec/int8/)
//   Fp8Codec<Mode>              OCP e4m3 with a static scale per tensor (layer, K/V) or per head,
//                               calibrated from the first batch of each layer  (codec/fp8/)
//   KiviCodec<B, G, R>          KIVI: B-bit asymmetric keys per channel, values per token, the
//                               last R tokens in full precision                (codec/kivi/)
//   LowRankCodec<Rank, C>       a per-head basis fitted by SVD; pages hold Rank coefficients
//                               per row                                         (codec/low_rank/)
//
// Each file holds its codec whole: the host-device row math the CPU and CUDA
// kernels share, and its storage (codec/concepts.hpp spells the contract).
#pragma once

#include "kvcache/codec/concepts.hpp"
#include "kvcache/codec/fp8/codec.hpp"
#include "kvcache/codec/int8/codec.hpp"
#include "kvcache/codec/kivi/codec.hpp"
#include "kvcache/codec/low_rank/codec.hpp"
#include "kvcache/codec/plain/codec.hpp"

namespace kvcache {

static_assert(CacheCodec<PlainCodec>);
static_assert(CacheCodec<Int8Codec<>>);
static_assert(CacheCodec<Fp8Codec<>>);
static_assert(CacheCodec<KiviCodec<>>);
static_assert(CacheCodec<LowRankCodec<>>);

}  // namespace kvcache
