// Crash safety, for real: a child process checkpoints a cache step after step
// (full checkpoints and log records, every write flushed) and is killed with
// SIGKILL at a random moment (after a random number of durable steps and a
// random part of one more), 120 times. Each time the directory restores,
// and what it gives back is a state the child had reached: at least the last
// one the child reported durable (nothing it held is lost), at most the one
// after, and its bytes are exactly that state's.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include "checkpoint_support.hpp"

namespace kvcache::testing {
namespace {

namespace fs = std::filesystem;
using Cache = KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing>>;

CacheConfig crash_config() {
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 2, 16, DType::kF16);
  c.block_size = 4;
  c.num_blocks = 512;
  c.max_batch_tokens = 64;
  c.max_batch_sequences = 4;
  return c;
}

// Step k of the workload: a new sequence every 5 steps, then 7 tokens for
// the two most recent ones (fresh rows from a fixed seed: the parent replays
// the same steps to know each state).
void workload_step(Cache& m, StepDriver<Cache>& driver, std::vector<SeqId>& seqs, int k) {
  if (k % 5 == 1) seqs.push_back(m.create_sequence());
  std::vector<SeqId> batch = {seqs.back()};
  if (seqs.size() > 1) batch.push_back(seqs[seqs.size() - 2]);
  std::vector<std::int32_t> counts(batch.size(), 7);
  if (!driver.step(batch, counts)) _exit(3);
}

[[noreturn]] void child(const fs::path& dir, std::uint64_t seed, int report) {
  Cache m(crash_config());
  StepDriver<Cache> driver(m, seed);
  CheckpointDirectory<Cache> periodic(m, dir, 1);
  std::vector<SeqId> seqs;
  for (int k = 1; k <= 60; ++k) {
    workload_step(m, driver, seqs, k);
    const std::int64_t state = k;
    periodic.step(std::as_bytes(std::span<const std::int64_t>(&state, 1)));
    // Durable now: say so.
    if (::write(report, &state, sizeof(state)) != sizeof(state)) _exit(4);
  }
  _exit(0);
}

TEST(CheckpointCrash, AKilledWriterAlwaysLeavesTheLastGoodCheckpoint) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  // The states the child goes through, replayed here.
  std::vector<std::vector<HeldSequence>> states = {{}};
  {
    Cache m(crash_config());
    StepDriver<Cache> driver(m, seed);
    std::vector<SeqId> seqs;
    for (int k = 1; k <= 60; ++k) {
      workload_step(m, driver, seqs, k);
      std::vector<HeldSequence> state;
      for (SeqId s : seqs)
        state.push_back(held(m, s));
      states.push_back(std::move(state));
    }
  }
  // How long a whole run takes here: the kills land within it.
  auto run_child = [&](const fs::path& dir, int report) {
    const pid_t pid = ::fork();
    if (pid == 0) child(dir, seed, report);
    return pid;
  };
  std::int64_t run_micros = 0;
  {
    const fs::path dir =
        fs::temp_directory_path() / ("kvcache-crash-whole-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const auto start = std::chrono::steady_clock::now();
    const pid_t pid = run_child(dir, fds[1]);
    ASSERT_GE(pid, 0);
    ::close(fds[1]);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    run_micros = std::chrono::duration_cast<std::chrono::microseconds>(
                     std::chrono::steady_clock::now() - start)
                     .count();
    ::close(fds[0]);
    fs::remove_all(dir);
  }
  int kills = 0, restored = 0, torn = 0;
  for (int trial = 0; trial < 120; ++trial) {
    const fs::path dir =
        fs::temp_directory_path() / ("kvcache-crash-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    const pid_t pid = run_child(dir, pipe_fds[1]);
    ASSERT_GE(pid, 0);
    ::close(pipe_fds[1]);
    // The kill lands at a random point of the run whatever this machine's
    // speed: wait until the child has reported a random state, then a random
    // part of one step more (a step takes about run_micros / 60).
    std::int64_t reported = 0, value = 0;
    const std::int64_t target = 1 + static_cast<std::int64_t>(rng() % 56);
    while (reported < target && ::read(pipe_fds[0], &value, sizeof(value)) == sizeof(value))
      reported = value;
    std::this_thread::sleep_for(std::chrono::microseconds(
        static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(run_micros / 40 + 1))));
    const bool killed = ::kill(pid, SIGKILL) == 0;
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    if (killed && WIFSIGNALED(status)) ++kills;
    while (::read(pipe_fds[0], &value, sizeof(value)) == sizeof(value))
      reported = value;
    ::close(pipe_fds[0]);

    Cache m(crash_config());
    CheckpointDirectory<Cache> periodic(m, dir, 1);
    std::optional<RestoreReport> report;
    ASSERT_NO_THROW(report = periodic.restore()) << "trial " << trial;
    if (!report) {
      ASSERT_EQ(reported, 0) << "trial " << trial << ": the child reported state " << reported
                             << " durable, the directory holds nothing";
      fs::remove_all(dir);
      continue;
    }
    ++restored;
    if (!report->notes.empty()) ++torn;
    std::int64_t state = 0;
    ASSERT_EQ(report->app.size(), sizeof(state));
    std::memcpy(&state, report->app.data(), sizeof(state));
    ASSERT_GE(state, reported) << "trial " << trial << ": a durable state was lost";
    ASSERT_LE(state, reported + 1) << "trial " << trial;
    const std::vector<HeldSequence>& want = states[static_cast<std::size_t>(state)];
    ASSERT_EQ(report->ids.size(), want.size()) << "trial " << trial;
    std::size_t i = 0;
    for (const auto& [saved, id] : report->ids) {
      ASSERT_EQ(held(m, id), want[i])
          << "trial " << trial << ", state " << state << ", sequence " << i;
      ++i;
    }
    fs::remove_all(dir);
  }
  // A child that finished its run before the signal is a trial without a
  // kill (its restore is still checked): most must die mid-run.
  EXPECT_GE(kills, 90) << "the child should mostly die mid-run";
  EXPECT_EQ(restored, 120) << "every trial waited for at least one durable state";
  RecordProperty("kills", kills);
  RecordProperty("torn_tails", torn);
  std::printf("checkpoint crash test: %d kills, %d restores, %d with a torn log tail ignored\n",
              kills, restored, torn);
}

}  // namespace
}  // namespace kvcache::testing
