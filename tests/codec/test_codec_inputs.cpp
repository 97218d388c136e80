// Chunked gathers, strided sources, non-finite inputs and an arena past
// 2 GiB for every codec on the CPU backend.
#include "codec_inputs_suite.hpp"

namespace kvcache::testing {

INSTANTIATE_TYPED_TEST_SUITE_P(Cpu, CodecInputs, CodecInputCases<HostBackend>, CodecInputNames);

}  // namespace kvcache::testing
