// Every kernel's parameters are checked before anything runs, in one place
// shared by the CPU backend and the CUDA launchers
// (kvcache/kernels/launch_checks.hpp): each hand-built view spoiled in one
// field is refused with InvalidArgument naming the kernel and the field, and
// nothing in the cache, the rings or the outputs is touched; the unspoiled
// parameters run.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "kv_test_support.hpp"
#include "kvcache/backend/host.hpp"
#include "launch_cases.hpp"

namespace kvcache::testing {
namespace {

// The fixture's memory filled with fresh random bytes (so that a kernel that
// ran would change something), and a copy of it.
struct Snapshot {
  std::vector<std::byte> bytes;
  static std::vector<std::byte> of(const LaunchFixture& f) {
    std::vector<std::byte> out(sizeof(f.arena) + sizeof(f.ring) + sizeof(f.out));
    std::memcpy(out.data(), f.arena, sizeof(f.arena));
    std::memcpy(out.data() + sizeof(f.arena), f.ring, sizeof(f.ring));
    std::memcpy(out.data() + sizeof(f.arena) + sizeof(f.ring), f.out, sizeof(f.out));
    return out;
  }
};

void randomize(LaunchFixture& f, std::mt19937_64& rng) {
  // Small finite fp16 values: a valid launch must not meet NaN by chance.
  for (auto* buffer : {&f.arena, &f.ring}) {
    auto* halves = reinterpret_cast<std::uint16_t*>(*buffer);
    for (std::size_t i = 0; i < sizeof(f.arena) / 2; ++i)
      halves[i] = static_cast<std::uint16_t>(0x3000 + rng() % 0x0c00);
  }
  for (auto& source : f.source) {
    auto* halves = reinterpret_cast<std::uint16_t*>(source);
    for (std::size_t i = 0; i < sizeof(source) / 2; ++i)
      halves[i] = static_cast<std::uint16_t>(0x3000 + rng() % 0x0c00);
  }
  for (auto& out : f.out)
    for (auto& b : out)
      b = static_cast<std::byte>(rng());
}

template <class Params, class Make>
void expect_refusals(Make make, const std::vector<LaunchCase<Params>>& cases) {
  std::mt19937_64 rng(std::random_device{}());
  HostBackend backend;
  {
    auto f = std::make_unique<LaunchFixture>();
    randomize(*f, rng);
    const std::vector<std::byte> before = Snapshot::of(*f);
    Params p = make(*f);
    ASSERT_NO_THROW(launch(backend, p)) << "the unspoiled " << Params::kName << " parameters";
    EXPECT_NE(before, Snapshot::of(*f)) << "the unspoiled launch wrote nothing";
  }
  ASSERT_GE(cases.size(), 3u);
  for (const LaunchCase<Params>& c : cases) {
    SCOPED_TRACE(::testing::Message() << Params::kName << ": " << c.name);
    auto f = std::make_unique<LaunchFixture>();
    randomize(*f, rng);
    const std::vector<std::byte> before = Snapshot::of(*f);
    Params p = make(*f);
    c.spoil(p);
    const kernels::LaunchProblem problem = kernels::launch_problem(p);
    ASSERT_TRUE(problem) << "not refused";
    EXPECT_EQ(std::string(problem.field).rfind(c.field, 0), 0u)
        << "names '" << problem.field << "', expected '" << c.field << "'";
    EXPECT_EQ(problem.misaligned, c.misaligned);
    EXPECT_TRUE(throws_with<InvalidArgument>([&] { launch(backend, p); },
                                             {Params::kName, c.field, "allowed"}));
    EXPECT_EQ(before, Snapshot::of(*f)) << "a refused launch changed memory";
  }
}

TEST(LaunchChecks, PlainAppend) {
  expect_refusals([](LaunchFixture& f) { return f.append(); }, append_cases());
}

TEST(LaunchChecks, PlainGather) {
  expect_refusals([](LaunchFixture& f) { return f.gather(); }, gather_cases());
}

TEST(LaunchChecks, CopyBlocks) {
  expect_refusals([](LaunchFixture& f) { return f.copy_blocks(); }, copy_blocks_cases());
}

TEST(LaunchChecks, LaneCodecAppend) {
  expect_refusals([](LaunchFixture& f) { return f.codec_append<LaneRows, LaneCodec>(); },
                  codec_append_cases());
}

TEST(LaunchChecks, LaneCodecGather) {
  expect_refusals([](LaunchFixture& f) { return f.codec_gather<LaneRows, LaneCodec>(); },
                  codec_gather_cases());
}

TEST(LaunchChecks, LowRankAppend) {
  expect_refusals([](LaunchFixture& f) { return f.codec_append<LowRankR, LowRank>(); },
                  low_rank_append_cases());
}

TEST(LaunchChecks, KiviFlush) {
  expect_refusals([](LaunchFixture& f) { return f.kivi_flush<KiviR, Kivi>(); }, kivi_flush_cases());
}

TEST(LaunchChecks, KiviGather) {
  expect_refusals([](LaunchFixture& f) { return f.kivi_gather<KiviR, Kivi>(); },
                  kivi_gather_cases());
}

// Nothing to do is not an error, whatever the pointers: a count of zero.
TEST(LaunchChecks, EmptyLaunchesNeedNoPointers) {
  auto f = std::make_unique<LaunchFixture>();
  kernels::AppendParams append = f->append();
  append.slots = {nullptr, 0};
  append.source = {};
  EXPECT_FALSE(kernels::launch_problem(append));
  kernels::GatherParams gather = f->gather();
  gather.table = {};
  gather.out = {};
  EXPECT_FALSE(kernels::launch_problem(gather));
  // ... but the view and the layer are still checked.
  append.cache.page_size = 0;
  EXPECT_TRUE(kernels::launch_problem(append));
}

}  // namespace
}  // namespace kvcache::testing
