// libFuzzer target for kvcache-replay's untrusted inputs. The first byte
// picks what the rest is: a trace file (parsed strictly or with skip_bad,
// and when it parses, replayed on a small pool under the policy the next
// byte names), or a command line (words split at NUL bytes). Both may only
// succeed or throw kvcache::Error with a bounded message; anything else
// (another exception, a crash, a hang) is a finding.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"
#include "registry.hpp"
#include "replay.hpp"
#include "trace.hpp"

namespace {

constexpr std::size_t kMaxMessage = 4096;

void check_message(const kvcache::Error& error) {
  if (std::string(error.what()).size() > kMaxMessage) {
    std::fprintf(stderr, "fuzz_trace: a message of %zu bytes\n", std::string(error.what()).size());
    std::abort();
  }
}

void trace_input(std::uint8_t choice, const std::uint8_t* data, std::size_t size, bool skip_bad) {
  using namespace kvcache::replay;
  std::istringstream input(std::string(reinterpret_cast<const char*>(data), size));
  Trace trace;
  try {
    trace = parse_trace(input, "fuzz", skip_bad);
  } catch (const kvcache::Error& error) {
    check_message(error);
    return;
  }
  if (trace.requests.size() > 64) return;  // the replay's cost grows with the trace
  ReplayOptions options;
  const auto table = policies();
  options.policy = std::string(table[static_cast<std::size_t>(choice / 3) % table.size()].name);
  options.capacity_blocks = 64;
  options.block_size = 1 << (choice % 11);
  try {
    const ReplayResult result = run_replay(trace, options);
    if (result.requests != static_cast<std::int64_t>(trace.requests.size()) ||
        result.blocks_hit > result.blocks_requested) {
      std::fprintf(stderr, "fuzz_trace: a replay counted %lld requests of %zu\n",
                   static_cast<long long>(result.requests), trace.requests.size());
      std::abort();
    }
  } catch (const kvcache::Error& error) {
    check_message(error);
  }
}

void command_line(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> words(1);
  for (std::size_t i = 0; i < size && words.size() <= 32; ++i) {
    if (data[i] == 0) {
      words.emplace_back();
    } else {
      words.back() += static_cast<char>(data[i]);
    }
  }
  try {
    (void)kvcache::replay::parse_arguments(words);
  } catch (const kvcache::Error& error) {
    check_message(error);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  switch (data[0] % 3) {
    case 0:
      trace_input(data[0], data + 1, size - 1, false);
      break;
    case 1:
      trace_input(data[0], data + 1, size - 1, true);
      break;
    default:
      command_line(data + 1, size - 1);
  }
  return 0;
}
