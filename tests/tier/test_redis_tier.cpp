// The Redis tier against a real redis-server (started by each test on a free
// loopback port, stopped at its end): two engines in two processes share a
// prefix byte for byte (plain and int8); a killed server is a miss and the
// engine goes on, then reconnects when it is back; a corrupt value, one of
// another fingerprint, a full write queue, a paused server (timeouts),
// authentication, databases, TTLs; a host tier with Redis below it; and a
// load of several client processes with zero wrong blocks. Without a
// redis-server binary every test skips, saying so.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint_support.hpp"
#include "kv_test_support.hpp"
#include "kvcache/kvcache.hpp"
#include "kvcache/tier/host_tier.hpp"
#include "kvcache/tier/publish.hpp"
#include "kvcache/tier/redis_tier.hpp"
#include "redis_server.hpp"

namespace kvcache::testing {
namespace {

using namespace std::chrono_literals;

#define KVCACHE_REQUIRE_REDIS()                                           \
  if (!have_redis_server())                                               \
  GTEST_SKIP() << "no redis-server binary (Debian: redis-server; or set " \
                  "KVCACHE_REDIS_SERVER): the Redis tier is built but cannot be tested here"

template <class Codec>
using Cache = KVCacheManager<CachePolicy<PagedAllocation, LruEviction, PrefixSharing, Codec>>;

constexpr std::int32_t kBlock = 8;

CacheConfig config(std::int64_t blocks = 64, std::int32_t head_dim = 32) {
  CacheConfig c;
  c.shape = ModelShape::gqa(2, 2, head_dim, DType::kF16);
  c.block_size = kBlock;
  c.num_blocks = blocks;
  c.max_batch_tokens = 512;
  c.max_batch_sequences = 4;
  return c;
}

RedisTierOptions options_for(const RedisServer& server, const std::string& credentials = "") {
  RedisTierOptions o;
  o.url = server.url(credentials);
  o.connect_timeout = 2000ms;  // generous: these tests also run under ThreadSanitizer
  o.command_timeout = 2000ms;
  o.backoff_min = 10ms;
  o.backoff_max = 100ms;
  o.dedupe_window = 50ms;
  return o;
}

std::vector<std::int32_t> prompt_of(std::int32_t first, std::int32_t tokens) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(tokens));
  for (std::int32_t i = 0; i < tokens; ++i)
    ids[static_cast<std::size_t>(i)] = first + i;
  return ids;
}

// The chained keys of a prompt's full blocks (what the cache stores them under).
std::vector<EvictionKey> keys_of(const std::vector<std::int32_t>& prompt) {
  std::vector<EvictionKey> keys;
  EvictionKey parent = PrefixSharing::kRootKey;
  for (std::size_t i = 0; i + kBlock <= prompt.size(); i += kBlock) {
    parent =
        PrefixSharing::block_hash(parent, std::span<const std::int32_t>(prompt).subspan(i, kBlock));
    keys.push_back(parent);
  }
  return keys;
}

// A cache that prefilled `prompt` (fresh random rows) and published it.
template <class Codec>
SeqId prefill_and_publish(Cache<Codec>& cache, StepDriver<Cache<Codec>>& driver,
                          const std::vector<std::int32_t>& prompt) {
  const SeqId seq = cache.create_sequence(prompt);
  EXPECT_TRUE(driver.step(
      {seq}, {static_cast<std::int32_t>(prompt.size() - cache.sequence(seq).num_tokens)}));
  publish_prefix(cache, seq);
  return seq;
}

// Rows of a held sequence cut to its first `tokens` tokens.
HeldSequence first_tokens(HeldSequence h, std::int64_t tokens, const ModelShape& shape) {
  const auto row = static_cast<std::size_t>(shape.kv_width() * dtype_size(shape.dtype));
  for (auto& r : h.rows)
    r.resize(static_cast<std::size_t>(tokens) * row);
  h.tokens = tokens;
  return h;
}

// ---- without a server ------------------------------------------------------------

TEST(RedisUrl, PartsAreParsedAndBadOnesNamed) {
  const RedisEndpoint a = RedisEndpoint::parse("redis://alice:s3cret@10.0.0.7:6380/4");
  EXPECT_EQ(a.user, "alice");
  EXPECT_EQ(a.password, "s3cret");
  EXPECT_EQ(a.host, "10.0.0.7");
  EXPECT_EQ(a.port, 6380);
  EXPECT_EQ(a.db, 4);
  EXPECT_EQ(a.describe().find("s3cret"), std::string::npos) << "the password is never printed";
  const RedisEndpoint b = RedisEndpoint::parse("redis://localhost");
  EXPECT_EQ(b.port, 6379);
  EXPECT_EQ(b.db, 0);
  EXPECT_TRUE(b.password.empty());
  EXPECT_EQ(RedisEndpoint::parse("redis://:pw@h:1/").password, "pw");
  EXPECT_TRUE(
      throws_with<InvalidArgument>([] { RedisEndpoint::parse("http://h:1"); }, {"redis://"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([] { RedisEndpoint::parse("redis://h:99999"); },
                                           {"port", "99999", "1 to 65535"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([] { RedisEndpoint::parse("redis://h:1/x"); },
                                           {"database", "'x'"}));
  EXPECT_TRUE(
      throws_with<InvalidArgument>([] { RedisEndpoint::parse("redis://:1"); }, {"no host"}));
}

TEST(RedisTierOptionsCheck, BadOptionsAreRefusedNamingThem) {
  RedisTierOptions o;
  o.queue_bytes = 0;
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { RedisTier t(64, o); }, {"queue_bytes", "0"}));
  o = {};
  o.key_prefix = "a:b";
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { RedisTier t(64, o); }, {"key_prefix", "a:b"}));
  o = {};
  o.backoff_max = 1ms;
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { RedisTier t(64, o); }, {"backoff_max"}));
  EXPECT_TRUE(throws_with<InvalidArgument>([&] { RedisTier t(-1); }, {"block_bytes", "-1"}));
}

// Nothing listens: every call is a miss at once, never an exception.
TEST(RedisTierOffline, ARefusedConnectionIsAMiss) {
  RedisTierOptions o;
  o.url = "redis://127.0.0.1:1/0";
  RedisTier tier(16, o);
  std::vector<std::byte> block(16, std::byte{7});
  const EvictionKey keys[2] = {11, 12};
  EXPECT_EQ(tier.contains(1, keys), 0u);
  EXPECT_FALSE(tier.get(1, 11, block));
  EXPECT_TRUE(tier.put(1, 11, block));  // queued; its send fails
  EXPECT_TRUE(tier.flush(5s));
  const RedisTierStats s = tier.redis_stats();
  EXPECT_GE(s.errors, 1);
  EXPECT_EQ(s.failed_writes, 1);
  EXPECT_EQ(s.written, 0);
}

// ---- a real server ---------------------------------------------------------------

TEST(RedisTierServer, BlocksRoundTripAndALookupStopsAtTheFirstMissingOne) {
  KVCACHE_REQUIRE_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.running());
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  RedisTier tier(4096, options_for(server));
  std::vector<std::vector<std::byte>> blocks(6, std::vector<std::byte>(4096));
  std::vector<EvictionKey> keys;
  for (auto& b : blocks) {
    for (auto& x : b)
      x = static_cast<std::byte>(rng());
    keys.push_back(rng() | 1);
  }
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    if (i != 4) {
      ASSERT_TRUE(tier.put(99, keys[i], blocks[i]));  // block 4 never stored
    }
  }
  ASSERT_TRUE(tier.flush(5s));
  EXPECT_EQ(tier.redis_stats().written, 5);
  EXPECT_EQ(tier.contains(99, keys), 4u) << "the run stops at the first missing block";
  EXPECT_EQ(tier.redis_stats().lookups, 1);
  std::vector<std::byte> out(4096);
  for (std::size_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(tier.get(99, keys[i], out));
    EXPECT_EQ(out, blocks[i]) << "block " << i;
  }
  EXPECT_EQ(tier.redis_stats().lookups, 1) << "the gets were served from the one fetch";
  ASSERT_TRUE(tier.get(99, keys[5], out));  // past the run: its own GET
  EXPECT_EQ(out, blocks[5]);
  EXPECT_EQ(tier.contains(98, std::span<const EvictionKey>(keys).first(1)), 0u)
      << "another fingerprint";
  EXPECT_TRUE(tier.erase(99, keys[0]));
  EXPECT_EQ(tier.contains(99, keys), 0u);
  // Values are the header and the block as stored.
  const auto raw = server.get_raw(tier.key_of(99, keys[1]));
  ASSERT_TRUE(raw.has_value());
  EXPECT_EQ(raw->size(), 40u + 4096u);
}

// Engine A (a child process) prefills a prompt and publishes it; engine B
// (this process) finds its full blocks in Redis and reads back A's bytes.
template <class Codec>
void two_processes_share_a_prefix() {
  RedisServer server;
  ASSERT_TRUE(server.running());
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const auto prompt = prompt_of(500, 5 * kBlock + 3);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    int code = 0;
    try {
      Cache<Codec> a(config());
      RedisTier tier(a.bytes_per_block(), options_for(server));
      a.attach_tier(tier);
      StepDriver<Cache<Codec>> driver(a, seed);
      const SeqId seq = prefill_and_publish(a, driver, prompt);
      if (a.stats().tier_published != 5 || !tier.flush(10s) || tier.redis_stats().written != 5)
        code = 2;
      const HeldSequence h = held(a, seq);
      for (const auto& rows : h.rows) {
        const std::uint64_t n = rows.size();
        if (::write(fds[1], &n, sizeof(n)) != sizeof(n) ||
            ::write(fds[1], rows.data(), rows.size()) != static_cast<ssize_t>(rows.size()))
          code = 3;
      }
      a.detach_tier();
    } catch (...) {
      code = 4;
    }
    ::close(fds[1]);
    _exit(code);
  }
  ::close(fds[1]);
  HeldSequence theirs;
  std::uint64_t n = 0;
  while (::read(fds[0], &n, sizeof(n)) == sizeof(n)) {
    std::vector<std::byte> rows(n);
    std::size_t got = 0;
    while (got < n) {
      const ssize_t r = ::read(fds[0], rows.data() + got, n - got);
      ASSERT_GT(r, 0);
      got += static_cast<std::size_t>(r);
    }
    theirs.rows.push_back(std::move(rows));
  }
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "engine A failed: " << status;

  Cache<Codec> b(config());
  RedisTier tier(b.bytes_per_block(), options_for(server));
  b.attach_tier(tier);
  const SeqId seq = b.create_sequence(prompt);
  ASSERT_EQ(b.sequence(seq).num_tokens, 5 * kBlock) << "every full block came from Redis";
  EXPECT_EQ(b.stats().tier_hit_blocks, 5);
  EXPECT_EQ(tier.redis_stats().lookups, 1) << "one round trip for the prompt";
  theirs.tokens = static_cast<std::int64_t>(prompt.size());
  EXPECT_EQ(held(b, seq), first_tokens(theirs, 5 * kBlock, b.shape()));
  ASSERT_NO_THROW(b.check_invariants());
  b.detach_tier();
}

TEST(RedisTierServer, TwoProcessesShareAPrefixPlain) {
  KVCACHE_REQUIRE_REDIS();
  two_processes_share_a_prefix<PlainCodec>();
}

TEST(RedisTierServer, TwoProcessesShareAPrefixInt8) {
  KVCACHE_REQUIRE_REDIS();
  two_processes_share_a_prefix<Int8Codec<8, 2>>();
}

// The server is killed mid-run: lookups miss, the engine goes on caching
// locally; started again (empty), the tier reconnects and serves again.
TEST(RedisTierServer, AKilledServerIsAMissAndTheTierReconnects) {
  KVCACHE_REQUIRE_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.running());
  const std::uint64_t seed = test_seed();
  Cache<PlainCodec> a(config());
  RedisTier tier_a(a.bytes_per_block(), options_for(server));
  a.attach_tier(tier_a);
  StepDriver<Cache<PlainCodec>> driver_a(a, seed);
  const auto prompt = prompt_of(100, 4 * kBlock);
  const SeqId seq = prefill_and_publish(a, driver_a, prompt);
  ASSERT_TRUE(tier_a.flush(5s));

  server.kill();
  Cache<PlainCodec> b(config());
  RedisTier tier_b(b.bytes_per_block(), options_for(server));
  b.attach_tier(tier_b);
  StepDriver<Cache<PlainCodec>> driver_b(b, seed + 1);
  const SeqId miss = b.create_sequence(prompt);
  EXPECT_EQ(b.sequence(miss).num_tokens, 0) << "no server: a miss";
  EXPECT_GE(tier_b.redis_stats().errors, 1);
  // The engine goes on: it computes the prompt itself and caches it locally.
  ASSERT_TRUE(driver_b.step({miss}, {static_cast<std::int32_t>(prompt.size())}));
  publish_prefix(b, miss);  // queued, then lost with the connection: counted
  EXPECT_TRUE(tier_b.flush(5s));
  b.release(miss);
  EXPECT_EQ(b.sequence(b.create_sequence(prompt)).num_tokens, 4 * kBlock) << "local cache";

  server.start();
  ASSERT_TRUE(server.running());
  Cache<PlainCodec> c(config());
  RedisTier tier_c(c.bytes_per_block(), options_for(server));
  c.attach_tier(tier_c);
  std::int64_t found = 0;
  for (int attempt = 0; attempt < 200 && found < 4 * kBlock; ++attempt) {
    publish_prefix(a, seq);  // past the dedupe window: sent again
    tier_a.flush(5s);
    const SeqId s = c.create_sequence(prompt);
    found = c.sequence(s).num_tokens;
    c.release(s);  // what it found stays cached in c's pool
    if (found < 4 * kBlock) std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(found, 4 * kBlock) << "after the restart the blocks are shared again";
  EXPECT_GE(tier_a.redis_stats().reconnects, 1);
  a.detach_tier();
  b.detach_tier();
  c.detach_tier();
}

// A stored value with one byte changed, cut short, or written for another
// fingerprint is a miss, counted; never data.
TEST(RedisTierServer, CorruptAndForeignValuesAreMisses) {
  KVCACHE_REQUIRE_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.running());
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  Cache<PlainCodec> a(config());
  RedisTier tier_a(a.bytes_per_block(), options_for(server));
  a.attach_tier(tier_a);
  StepDriver<Cache<PlainCodec>> driver(a, seed);
  const auto prompt = prompt_of(7000, 3 * kBlock);
  (void)prefill_and_publish(a, driver, prompt);
  ASSERT_TRUE(tier_a.flush(5s));
  const std::vector<EvictionKey> keys = keys_of(prompt);
  const std::uint64_t fp = a.fingerprint();

  // One byte of block 0's payload flipped.
  const std::string key0 = tier_a.key_of(fp, keys[0]);
  std::string value = server.get_raw(key0).value();
  value[40 + rng() % (value.size() - 40)] ^= static_cast<char>(1 + rng() % 255);
  ASSERT_TRUE(server.set_raw(key0, value));
  {
    Cache<PlainCodec> b(config());
    RedisTier tier(b.bytes_per_block(), options_for(server));
    b.attach_tier(tier);
    EXPECT_EQ(b.sequence(b.create_sequence(prompt)).num_tokens, 0);
    EXPECT_EQ(tier.redis_stats().corrupt, 1);
    b.detach_tier();
  }
  // Cut short.
  ASSERT_TRUE(server.set_raw(key0, value.substr(0, 30)));
  {
    Cache<PlainCodec> b(config());
    RedisTier tier(b.bytes_per_block(), options_for(server));
    b.attach_tier(tier);
    EXPECT_EQ(b.sequence(b.create_sequence(prompt)).num_tokens, 0);
    EXPECT_EQ(tier.redis_stats().corrupt, 1);
    b.detach_tier();
  }
  // A model of another shape (same block bytes: head_dim 32 x 2 heads vs
  // 64 x 1) has another fingerprint: A's blocks copied under its keys are
  // foreign to it, and its own keys hold nothing of A's.
  CacheConfig other = config();
  other.shape = ModelShape::gqa(2, 1, 64, DType::kF16);
  Cache<PlainCodec> b(other);
  ASSERT_EQ(b.bytes_per_block(), a.bytes_per_block());
  ASSERT_NE(b.fingerprint(), fp);
  RedisTier tier_b(b.bytes_per_block(), options_for(server));
  b.attach_tier(tier_b);
  EXPECT_EQ(b.sequence(b.create_sequence(prompt)).num_tokens, 0) << "nothing under its keys";
  const std::string key1 = tier_a.key_of(fp, keys[1]);
  ASSERT_TRUE(
      server.set_raw(tier_b.key_of(b.fingerprint(), keys[0]), server.get_raw(key1).value()));
  EXPECT_EQ(b.sequence(b.create_sequence(prompt)).num_tokens, 0);
  EXPECT_EQ(tier_b.redis_stats().foreign, 1);
  b.detach_tier();
  a.detach_tier();
}

// A paused server: writes queue up to the byte budget, the rest are dropped
// at once and counted; reads time out as misses; resumed, all is well.
TEST(RedisTierServer, AFullQueueDropsAndASlowServerTimesOut) {
  KVCACHE_REQUIRE_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.running());
  RedisTierOptions o = options_for(server);
  o.command_timeout = 1000ms;
  o.batch_blocks = 2;
  o.queue_bytes = 3 * (40 + 1024);
  RedisTier tier(1024, o);
  std::vector<std::byte> block(1024, std::byte{5});
  ASSERT_TRUE(tier.put(1, 1, block));
  ASSERT_TRUE(tier.flush(5s));
  ASSERT_EQ(tier.redis_stats().written, 1) << "connected";

  server.pause();
  int accepted = 0;
  for (EvictionKey key = 100; key < 140; ++key)
    accepted += tier.put(1, key, block) ? 1 : 0;
  RedisTierStats s = tier.redis_stats();
  EXPECT_EQ(s.dropped_queue_full, 40 - accepted);
  EXPECT_GE(s.dropped_queue_full, 30) << "the queue holds three blocks (and a batch in flight)";
  const auto start = std::chrono::steady_clock::now();
  const EvictionKey one = 1;
  EXPECT_EQ(tier.contains(1, std::span<const EvictionKey>(&one, 1)), 0u) << "timed out: a miss";
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(waited, 5.0) << "the lookup hung instead of timing out";
  EXPECT_GE(tier.redis_stats().timeouts, 1);

  server.resume();
  EXPECT_TRUE(tier.flush(10s));
  std::size_t found = 0;
  for (int attempt = 0; attempt < 200 && found == 0; ++attempt) {
    found = tier.contains(1, std::span<const EvictionKey>(&one, 1));
    if (found == 0) std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(found, 1u) << "after the pause the tier reconnects";
  s = tier.redis_stats();
  EXPECT_EQ(s.queued + s.dropped_queue_full, 41);
  EXPECT_EQ(s.written + s.failed_writes, s.queued);
}

// AUTH with a password, with a user and password (ACL), a database other
// than 0, and a wrong password (a miss, counted).
TEST(RedisTierServer, AuthenticationAndDatabases) {
  KVCACHE_REQUIRE_REDIS();
  RedisServer server(
      {"--requirepass", "s3cret", "--user", "alice", "on", ">wonder", "~*", "&*", "+@all"});
  ASSERT_TRUE(server.running());
  std::vector<std::byte> block(256, std::byte{9});
  const EvictionKey key = 42;
  {
    RedisTierOptions o = options_for(server, ":s3cret");
    o.url = server.url(":s3cret", 3);
    RedisTier tier(256, o);
    ASSERT_TRUE(tier.put(1, key, block));
    ASSERT_TRUE(tier.flush(5s));
    EXPECT_EQ(tier.redis_stats().written, 1);
    EXPECT_TRUE(server.get_raw(tier.key_of(1, key), 3, "s3cret").has_value()) << "in database 3";
    EXPECT_FALSE(server.get_raw(tier.key_of(1, key), 0, "s3cret").has_value());
  }
  {
    RedisTierOptions o = options_for(server, "alice:wonder");
    o.url = server.url("alice:wonder", 3);
    RedisTier tier(256, o);
    std::vector<std::byte> out(256);
    EXPECT_EQ(tier.contains(1, std::span<const EvictionKey>(&key, 1)), 1u) << "user alice";
    EXPECT_TRUE(tier.get(1, key, out));
    EXPECT_EQ(out, block);
  }
  {
    RedisTier tier(256, options_for(server, ":wrong"));
    EXPECT_EQ(tier.contains(1, std::span<const EvictionKey>(&key, 1)), 0u);
    EXPECT_GE(tier.redis_stats().errors, 1);
  }
}

// With a TTL, keys expire, and an expired block is a miss.
TEST(RedisTierServer, ExpiredBlocksAreMisses) {
  KVCACHE_REQUIRE_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.running());
  RedisTierOptions o = options_for(server);
  o.ttl_seconds = 2;
  RedisTier tier(64, o);
  std::vector<std::byte> block(64, std::byte{1});
  const EvictionKey key = 5;
  ASSERT_TRUE(tier.put(2, key, block));
  ASSERT_TRUE(tier.flush(5s));
  const long long ttl = server.ttl_raw(tier.key_of(2, key));
  EXPECT_GE(ttl, 0);
  EXPECT_LE(ttl, 2);
  std::this_thread::sleep_for(2500ms);
  EXPECT_EQ(tier.contains(2, std::span<const EvictionKey>(&key, 1)), 0u);
  EXPECT_EQ(tier.redis_stats().missing, 1);
}

// A host tier with Redis below it: blocks the host tier evicts go down to
// Redis, published blocks go straight there, and a cache whose host tier
// lacks them brings them up from Redis, byte for byte.
TEST(RedisTierServer, AHostTierOverRedis) {
  KVCACHE_REQUIRE_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.running());
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Cache<PlainCodec> a(config(16));
  RedisTier redis(a.bytes_per_block(), options_for(server));
  HostTier<> host(a.bytes_per_block(), 4,
                  a.backend().allocate_host(static_cast<std::size_t>(a.bytes_per_block() * 4)));
  host.set_lower(&redis);
  a.attach_tier(host);
  StepDriver<Cache<PlainCodec>> driver(a, seed);
  const auto prompt = prompt_of(3000, 6 * kBlock);
  const SeqId seq = prefill_and_publish(a, driver, prompt);
  const HeldSequence before = held(a, seq);
  EXPECT_EQ(a.stats().tier_published, 6) << "published through the host tier to Redis";
  a.release(seq);
  // Other prompts push the blocks out of the pool (and of the small host tier).
  for (std::int32_t round = 0; round < 3; ++round) {
    const SeqId s = a.create_sequence(prompt_of(90000 + round * 1000, 15 * kBlock));
    ASSERT_TRUE(driver.step({s}, {15 * kBlock}));
    a.release(s);
  }
  ASSERT_TRUE(redis.flush(5s));
  EXPECT_GT(host.stats().demotions, 0) << "the host tier handed evictions down";
  const SeqId again = a.create_sequence(prompt);
  EXPECT_EQ(a.sequence(again).num_tokens, 6 * kBlock);
  EXPECT_GT(host.stats().promotions, 0) << "brought up from Redis";
  EXPECT_EQ(held(a, again), first_tokens(before, 6 * kBlock, a.shape()));
  host.check_invariants();
  a.detach_tier();
}

// Redis holds the prompt's first two blocks of four, under a host tier that
// holds none: one lookup (the host tier does not ask Redis again for what it
// already answered), two blocks back.
TEST(RedisTierServer, AShortAnswerUnderAHostTierIsOneLookup) {
  KVCACHE_REQUIRE_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.running());
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const auto prompt = prompt_of(800, 4 * kBlock);
  {
    Cache<PlainCodec> a(config());
    RedisTier redis(a.bytes_per_block(), options_for(server));
    a.attach_tier(redis);
    StepDriver<Cache<PlainCodec>> driver(a, seed);
    (void)prefill_and_publish(
        a, driver, std::vector<std::int32_t>(prompt.begin(), prompt.begin() + 2 * kBlock));
    ASSERT_TRUE(redis.flush(5s));
    a.detach_tier();
  }
  Cache<PlainCodec> b(config());
  RedisTier redis(b.bytes_per_block(), options_for(server));
  HostTier<> host(b.bytes_per_block(), 8,
                  b.backend().allocate_host(static_cast<std::size_t>(b.bytes_per_block() * 8)));
  host.set_lower(&redis);
  b.attach_tier(host);
  EXPECT_EQ(b.sequence(b.create_sequence(prompt)).num_tokens, 2 * kBlock);
  EXPECT_EQ(redis.redis_stats().lookups, 1);
  EXPECT_EQ(redis.redis_stats().missing, 1);
  b.detach_tier();
}

// Several client processes put and fetch blocks of known content (a
// function of the key) at once; no fetched block may differ from it.
TEST(RedisTierLoad, ManyClientsNoWrongBlock) {
  KVCACHE_REQUIRE_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.running());
  const char* env = std::getenv("KVCACHE_REDIS_LOAD_SECONDS");
  const double seconds = env != nullptr ? std::atof(env) : 3.0;
  constexpr int kClients = 4;
  constexpr std::size_t kBytes = 64 << 10;
  constexpr EvictionKey kKeys = 512;
  auto content = [](EvictionKey key, std::vector<std::byte>& out) {
    std::mt19937_64 rng(key * 7919);
    for (std::size_t i = 0; i < out.size(); i += 8) {
      const std::uint64_t v = rng();
      std::memcpy(out.data() + i, &v, 8);
    }
  };
  struct Counts {
    std::int64_t puts = 0, lookups = 0, blocks = 0, wrong = 0;
  };
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::vector<pid_t> pids;
  for (int client = 0; client < kClients; ++client) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(fds[0]);
      Counts c;
      try {
        RedisTier tier(kBytes, options_for(server));
        std::mt19937_64 rng(static_cast<std::uint64_t>(client) + 1);
        std::vector<std::byte> block(kBytes), out(kBytes), want(kBytes);
        const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
        while (std::chrono::steady_clock::now() < end) {
          EvictionKey run[8];
          const EvictionKey first = 1 + rng() % kKeys;
          for (EvictionKey i = 0; i < 8; ++i)
            run[i] = first + i;
          if (rng() % 2 == 0) {
            for (EvictionKey key : run) {
              content(key, block);
              c.puts += tier.put(3, key, block) ? 1 : 0;
            }
          } else {
            ++c.lookups;
            const std::size_t n = tier.contains(3, run);
            for (std::size_t i = 0; i < n; ++i) {
              if (!tier.get(3, run[i], out)) break;
              content(run[i], want);
              ++c.blocks;
              if (out != want) ++c.wrong;
            }
          }
        }
        tier.flush(10s);
      } catch (...) {
        _exit(3);
      }
      if (::write(fds[1], &c, sizeof(c)) != sizeof(c)) _exit(2);
      _exit(0);
    }
    pids.push_back(pid);
  }
  ::close(fds[1]);
  Counts total;
  Counts c;
  while (::read(fds[0], &c, sizeof(c)) == sizeof(c)) {
    total.puts += c.puts;
    total.lookups += c.lookups;
    total.blocks += c.blocks;
    total.wrong += c.wrong;
  }
  ::close(fds[0]);
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_EQ(total.wrong, 0) << "a fetched block differed from what was put";
  EXPECT_GT(total.blocks, 0);
  const double mb = static_cast<double>((total.puts + total.blocks) * kBytes) / 1e6;
  std::printf(
      "redis load: %d clients, %.1f s: %lld blocks put, %lld lookups, %lld blocks fetched, %lld "
      "wrong; %.0f MB/s of 64 KiB blocks\n",
      kClients, seconds, static_cast<long long>(total.puts), static_cast<long long>(total.lookups),
      static_cast<long long>(total.blocks), static_cast<long long>(total.wrong), mb / seconds);
}

}  // namespace
}  // namespace kvcache::testing
