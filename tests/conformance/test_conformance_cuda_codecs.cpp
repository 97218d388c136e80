// The conformance suite for compressed caches on the CUDA backend (each case
// skips without a device).
#include "conformance_suite.hpp"

namespace kvcache::testing {

INSTANTIATE_TYPED_TEST_SUITE_P(CudaCodecs, Conformance, CodecCombos<CudaBackend>, ComboNames);

}  // namespace kvcache::testing
