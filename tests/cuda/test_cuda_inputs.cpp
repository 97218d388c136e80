// Chunked gathers, strided sources, non-finite inputs and an arena past
// 2 GiB for every codec on the CUDA backend, against the CPU backend (each
// case skips without a device).
#include "codec_inputs_suite.hpp"

namespace kvcache::testing {

INSTANTIATE_TYPED_TEST_SUITE_P(Cuda, CodecInputs, CodecInputCases<CudaBackend>, CodecInputNames);

}  // namespace kvcache::testing
