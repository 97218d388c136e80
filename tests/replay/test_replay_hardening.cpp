// Malformed traces and options that crashed, aborted, truncated or passed
// silently before: each is now an error naming the line or the option, with a
// bounded message (the fuzzer in tests/fuzz/ looks for more).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"
#include "kv_test_support.hpp"
#include "replay.hpp"
#include "trace.hpp"

namespace kvcache::replay {
namespace {

using kvcache::testing::throws_with;

const std::string kGood =
    R"({"timestamp": 0, "input_length": 600, "output_length": 10, "hash_ids": [1, 2]})";

Trace parse(const std::string& text, bool skip_bad = false) {
  std::istringstream input(text);
  return parse_trace(input, "test", skip_bad);
}

// The line's error names line 2 and stays short whatever the line held.
::testing::AssertionResult bad_second_line(const std::string& line,
                                           const std::vector<std::string>& fragments) {
  std::vector<std::string> all = {"line 2"};
  all.insert(all.end(), fragments.begin(), fragments.end());
  const auto result =
      throws_with<TraceError>([&] { (void)parse(kGood + "\n" + line + "\n"); }, all);
  if (!result) return result;
  try {
    (void)parse(kGood + "\n" + line + "\n");
  } catch (const TraceError& error) {
    if (std::string(error.what()).size() > 400) {
      return ::testing::AssertionFailure()
             << "a message of " << std::string(error.what()).size() << " bytes";
    }
  }
  return ::testing::AssertionSuccess();
}

std::string request(const std::string& timestamp, const std::string& output,
                    const std::string& ids = "[1]") {
  return R"({"timestamp": )" + timestamp + R"(, "input_length": 5, "output_length": )" + output +
         R"(, "hash_ids": )" + ids + "}";
}

TEST(TraceHardening, OutOfRangeNumbersAreLineErrors) {
  EXPECT_TRUE(bad_second_line(request("1e400", "3"), {"not valid JSON"}));
  EXPECT_TRUE(bad_second_line(request("-1e400", "3"), {}));
  EXPECT_TRUE(bad_second_line(request("1e300", "3"), {"timestamp", "not an integer in"}));
  EXPECT_TRUE(bad_second_line(request("2.5", "3"), {"timestamp"}));
  EXPECT_TRUE(bad_second_line(request("0", "4294967301"), {"output_length", "4294967301"}));
  EXPECT_TRUE(bad_second_line(request("0", "18446744073709551615"),
                              {"output_length", "18446744073709551615"}));
  EXPECT_TRUE(bad_second_line(request("0", "-3"), {"output_length", "-3"}));
  EXPECT_TRUE(bad_second_line(request("0", "3", "[1, 18446744073709551615]"), {"hash_ids"}));
  EXPECT_TRUE(bad_second_line(request("0", "3", "[1, -2]"), {"hash_ids", "-2"}));
  EXPECT_TRUE(bad_second_line(request("0", "3", "[1, \"x\"]"), {"hash_ids holds \"x\""}));
  EXPECT_TRUE(bad_second_line(request("0", "3", "[1, [2]]"), {"hash_ids holds array"}));
  // Within range they parse, as integers.
  const Trace trace = parse(request("9007199254740992", "16777216", "[9223372036854775807]"));
  EXPECT_EQ(trace.requests[0].timestamp_ms, 9007199254740992);
  EXPECT_EQ(trace.requests[0].hash_ids[0], 9223372036854775807);
}

TEST(TraceHardening, DeepNestingAndHugeLinesStayBounded) {
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  EXPECT_TRUE(bad_second_line(
      R"({"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": )" + deep + "}",
      {"nested more than"}));
  EXPECT_TRUE(bad_second_line(deep, {"nested more than"}));
  const std::string unterminated = "{\"timestamp\": \"" + std::string(100 << 20, 'a');
  EXPECT_TRUE(bad_second_line(unterminated, {"not valid JSON"}));
  EXPECT_TRUE(bad_second_line(R"({"timestamp": [[[1]]], "input_length": 1})", {"timestamp"}));
}

TEST(TraceHardening, EmptyInputsAndDirectoriesAreErrors) {
  EXPECT_TRUE(throws_with<TraceError>([] { (void)parse(""); }, {"no requests"}));
  EXPECT_TRUE(
      throws_with<TraceError>([] { (void)parse("\n  \n\t\n"); }, {"no requests in 3 lines"}));
  EXPECT_TRUE(throws_with<TraceError>([] { (void)parse("garbage\n", true); },
                                      {"no requests", "1 bad lines skipped"}));
  const auto directory = std::filesystem::temp_directory_path();
  EXPECT_TRUE(throws_with<TraceError>([&] { (void)load_trace(directory.string(), false); },
                                      {"is a directory"}));
  EXPECT_TRUE(throws_with<TraceError>(
      [&] { (void)load_trace((directory / "no-such-kvcache-trace.jsonl").string(), false); },
      {"cannot open"}));
}

TEST(TraceHardening, RequestsTooLargeToAppendNameTheirLine) {
  // 2^15 + 1 hash ids of 512 tokens: a prompt of 2^24 + 512 tokens, one block over the limit.
  std::string ids = "[0";
  for (int i = 1; i < (1 << 15) + 1; ++i) {
    ids += ',';
    ids += std::to_string(i);
  }
  ids += "]";
  const Trace trace = parse(kGood + "\n" + request("5", "1", ids) + "\n");
  ReplayOptions options;
  options.capacity_blocks = 100;
  EXPECT_TRUE(throws_with<TraceError>([&] { (void)run_replay(trace, options); },
                                      {"line 2", "16777216 tokens a request"}));
}

Arguments arguments(std::vector<std::string> words) {
  return parse_arguments(words);
}

TEST(CliHardening, EveryBadOptionIsNamedWithWhatItTakes) {
  EXPECT_TRUE(throws_with<UsageError>(
      [] {
        (void)arguments({"--block-size", "0"});
      },
      {"--block-size", "[1, 1024]", "\"0\""}));
  EXPECT_TRUE(throws_with<UsageError>(
      [] {
        (void)arguments({"--block-size", "4294967296"});
      },
      {"--block-size", "4294967296"}));
  EXPECT_TRUE(throws_with<UsageError>(
      [] {
        (void)arguments({"--block-size", "48"});
      },
      {"--block-size 48", "power of two"}));
  EXPECT_TRUE(throws_with<UsageError>(
      [] {
        (void)arguments({"--model", "0:1:8"});
      },
      {"--model", "num_layers 0"}));
  EXPECT_TRUE(throws_with<UsageError>(
      [] {
        (void)arguments({"--model", "1:1:99999999999"});
      },
      {"--model"}));
  for (const char* bad : {"nan", "inf", "-1", "1e400", "", "3x"}) {
    EXPECT_TRUE(throws_with<UsageError>(
        [&] {
          (void)arguments({"--decode-ms", bad});
        },
        {"--decode-ms"}))
        << bad;
  }
  EXPECT_TRUE(throws_with<UsageError>(
      [] {
        (void)arguments({"--capacity", "-5"});
      },
      {"--capacity"}));
  EXPECT_TRUE(throws_with<UsageError>(
      [] {
        (void)arguments({"--capacity", "18446744073709551615"});
      },
      {"--capacity"}));
  EXPECT_TRUE(throws_with<UsageError>(
      [] {
        (void)arguments({"--policy", "mru"});
      },
      {"--policy \"mru\"", "none, lru"}));
  EXPECT_TRUE(throws_with<UsageError>(
      [] {
        (void)arguments({"--backend", "tpu"});
      },
      {"--backend \"tpu\""}));
  EXPECT_TRUE(throws_with<UsageError>([] { (void)arguments({"--capacity"}); }, {"needs a value"}));
  EXPECT_TRUE(throws_with<UsageError>([] { (void)arguments({"--frobnicate"}); },
                                      {"unknown option --frobnicate"}));
  EXPECT_TRUE(throws_with<UsageError>(
      [] {
        (void)arguments({"a.jsonl", "b.jsonl"});
      },
      {"more than one trace"}));
  EXPECT_TRUE(throws_with<UsageError>(
      [] {
        (void)arguments({"--budget-gib", "20"});
      },
      {"need --model"}));
  const std::string long_option(100 << 10, 'x');
  try {
    (void)arguments({"--policy", long_option});
    ADD_FAILURE() << "accepted";
  } catch (const UsageError& error) {
    EXPECT_LT(std::string(error.what()).size(), 400u);
  }
  const Arguments good = arguments({"t.jsonl", "--policy", "s3-fifo", "--block-size", "256",
                                    "--decode-ms", "0.5", "--capacity", "100"});
  EXPECT_EQ(good.options.block_size, 256);
  EXPECT_EQ(good.options.policy, "s3-fifo");
}

}  // namespace
}  // namespace kvcache::replay
