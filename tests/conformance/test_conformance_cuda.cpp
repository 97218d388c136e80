// The conformance suite on the CUDA backend (each case skips without a device).
#include "conformance_suite.hpp"

namespace kvcache::testing {

INSTANTIATE_TYPED_TEST_SUITE_P(Cuda, Conformance, ConformanceCombos<CudaBackend>, ComboNames);

}  // namespace kvcache::testing
