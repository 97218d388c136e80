// The conformance suite on the CPU backend.
#include "conformance_suite.hpp"

namespace kvcache::testing {

INSTANTIATE_TYPED_TEST_SUITE_P(Cpu, Conformance, ConformanceCombos<HostBackend>, ComboNames);

}  // namespace kvcache::testing
