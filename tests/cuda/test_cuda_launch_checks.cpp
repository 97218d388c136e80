// The CUDA launchers refuse what the CPU backend refuses
// (tests/support/launch_cases.hpp), with cudaErrorMisalignedAddress for an
// alignment problem and cudaErrorInvalidValue otherwise, before any CUDA
// call: these run without a device (the host pointers are never read). And
// an error a kernel's fault left in the context is reported as an earlier
// operation's, found by the call that met it.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "kvcache/kernels/cuda.hpp"
#include "launch_cases.hpp"

namespace kvcache::testing {
namespace {

template <class Params, class Make>
void expect_launcher_refusals(Make make, const std::vector<LaunchCase<Params>>& cases) {
  for (const LaunchCase<Params>& c : cases) {
    SCOPED_TRACE(::testing::Message() << Params::kName << ": " << c.name);
    auto f = std::make_unique<LaunchFixture>();
    Params p = make(*f);
    c.spoil(p);
    EXPECT_EQ(kernels::cuda::launch(p, nullptr),
              c.misaligned ? cudaErrorMisalignedAddress : cudaErrorInvalidValue);
  }
}

TEST(CudaLaunchChecks, EveryLauncherRefusesWhatTheCpuBackendRefuses) {
  expect_launcher_refusals([](LaunchFixture& f) { return f.append(); }, append_cases());
  expect_launcher_refusals([](LaunchFixture& f) { return f.gather(); }, gather_cases());
  expect_launcher_refusals([](LaunchFixture& f) { return f.copy_blocks(); }, copy_blocks_cases());
  expect_launcher_refusals([](LaunchFixture& f) { return f.codec_append<LaneRows, LaneCodec>(); },
                           codec_append_cases());
  expect_launcher_refusals([](LaunchFixture& f) { return f.codec_gather<LaneRows, LaneCodec>(); },
                           codec_gather_cases());
  expect_launcher_refusals([](LaunchFixture& f) { return f.codec_append<LowRankR, LowRank>(); },
                           low_rank_append_cases());
  expect_launcher_refusals([](LaunchFixture& f) { return f.kivi_flush<KiviR, Kivi>(); },
                           kivi_flush_cases());
  expect_launcher_refusals([](LaunchFixture& f) { return f.kivi_gather<KiviR, Kivi>(); },
                           kivi_gather_cases());
}

// int8 with groups of 4 over fp16 rows of 4 values: 8 bytes, no whole lane.
// The launcher divided by the zero lanes (SIGFPE) before it checked.
TEST(CudaLaunchChecks, RowsShorterThanALaneAreRefusedNotDividedByZero) {
  auto f = std::make_unique<LaunchFixture>();
  auto p = f->codec_append<Int8Rows<4, 2>, Int8Codec<4, 2>>();
  p.cache.head_dim = 4;
  EXPECT_EQ(kernels::cuda::launch(p, nullptr), cudaErrorInvalidValue);
  auto g = f->codec_gather<Int8Rows<4, 2>, Int8Codec<4, 2>>();
  g.cache.head_dim = 4;
  EXPECT_EQ(kernels::cuda::launch(g, nullptr), cudaErrorInvalidValue);
}

TEST(CudaLaunchChecks, StickyErrorsAreNamedAsAnEarlierOperations) {
  for (cudaError_t sticky :
       {cudaErrorIllegalAddress, cudaErrorMisalignedAddress, cudaErrorLaunchFailure,
        cudaErrorAssert, cudaErrorIllegalInstruction}) {
    EXPECT_TRUE(kernels::cuda::is_sticky_error(sticky)) << cudaGetErrorName(sticky);
    const std::string message = kernels::cuda::describe_error("codec_append launch", 3, sticky);
    EXPECT_NE(message.find("codec_append launch on device 3 found"), std::string::npos) << message;
    EXPECT_NE(message.find("earlier asynchronous operation"), std::string::npos) << message;
    EXPECT_NE(message.find("did not run"), std::string::npos) << message;
    EXPECT_NE(message.find(cudaGetErrorName(sticky)), std::string::npos) << message;
  }
  for (cudaError_t plain : {cudaErrorInvalidValue, cudaErrorMemoryAllocation,
                            cudaErrorInvalidConfiguration, cudaErrorNoDevice}) {
    EXPECT_FALSE(kernels::cuda::is_sticky_error(plain)) << cudaGetErrorName(plain);
    const std::string message = kernels::cuda::describe_error("cudaMemcpyAsync(H2D)", 0, plain);
    EXPECT_NE(message.find("cudaMemcpyAsync(H2D) on device 0 failed"), std::string::npos)
        << message;
    EXPECT_EQ(message.find("earlier"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace kvcache::testing
