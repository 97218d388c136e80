// The conformance suite for compressed caches on the CPU backend.
#include "conformance_suite.hpp"

namespace kvcache::testing {

INSTANTIATE_TYPED_TEST_SUITE_P(CpuCodecs, Conformance, CodecCombos<HostBackend>, ComboNames);

}  // namespace kvcache::testing
