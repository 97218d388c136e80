// A shared block store on Redis: several engines (processes, machines) put
// the blocks they compute and find each other's prefixes (LMCache's and
// Mooncake Store's idea, on an existing, well-kept store). Compiled into the
// optional kvcache::redis library (src/redis_tier.cpp, hiredis; CMake option
// KVCACHE_REDIS): the core library never depends on it, and this header
// includes nothing of hiredis.
//
//   keys    PREFIX:FINGERPRINT:KEY (hex): the cache format's fingerprint
//           (model shape, block size, layout, codec and its parameters,
//           calibrated state, tier format version) and the chained prefix
//           key, so two models never read each other's blocks
//   values  a 40-byte header (magic "KVCT", version, fingerprint, key,
//           payload length, XXH3-64 of the payload seeded with fingerprint
//           and key), then the block as the codec stores it
//   writes  asynchronous: put() copies the block into a queue bounded by a
//           byte budget and returns; a writer thread sends the queue in
//           pipelined batches of SETs (with EX when a TTL is set). A put that
//           does not fit the budget is dropped and counted, never waited for
//   reads   contains(keys) fetches the run of blocks in one round trip
//           (MGET, at most fetch_bytes), keeps the longest present run of
//           good ones for the get() calls that follow, and drops the rest
//
// Redis handles capacity (maxmemory with an LRU policy) and expiry. A block
// that is missing or expired, a value with a bad header or checksum, one
// written under another fingerprint, a refused connection, a timeout or a
// server restart are all misses (counted in redis_stats()); a lost
// connection is retried with exponential backoff, and while it backs off
// every call returns at once. SIGPIPE from a closed socket is blocked on
// the tier's calls and its writer thread, never delivered. Calls may come from several threads (the
// reader connection is locked); the writer runs on its own thread and
// connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "kvcache/tier/block_store.hpp"

namespace kvcache {

// Where the server is: redis://[[user][:password]@]host[:port][/db].
struct RedisEndpoint {
  std::string host = "127.0.0.1";
  int port = 6379;
  int db = 0;
  std::string user;      // empty: AUTH with the password only (or no AUTH)
  std::string password;  // empty: no AUTH

  // InvalidArgument naming the part of the URL that is wrong.
  static RedisEndpoint parse(std::string_view url);
  // The URL again, the password left out.
  std::string describe() const;
};

struct RedisTierOptions {
  std::string url = "redis://127.0.0.1:6379/0";
  std::string key_prefix = "kvcache";  // the namespace of every key
  std::chrono::milliseconds connect_timeout{200};
  std::chrono::milliseconds command_timeout{200};      // a reply slower than this is a miss
  std::int64_t queue_bytes = std::int64_t{256} << 20;  // writes waiting, at most
  std::int32_t batch_blocks = 16;                      // SETs per pipelined round trip
  std::int64_t ttl_seconds = 0;                        // 0: keys do not expire
  std::chrono::milliseconds backoff_min{20};
  std::chrono::milliseconds backoff_max{2000};
  std::int64_t fetch_bytes = std::int64_t{256} << 20;  // one lookup fetches at most this
  std::int64_t capacity_blocks = 0;  // reported by capacity_blocks(); Redis's maxmemory decides
  // A put of a block this client wrote or read within the window is not sent
  // again (a hot prefix published by every request goes once); at most half
  // the TTL when one is set (a put refreshes the expiry); a failed
  // connection forgets them all (the server may have restarted empty).
  std::chrono::milliseconds dedupe_window{10000};
};

struct RedisTierStats {
  std::int64_t queued = 0;              // puts accepted into the write queue
  std::int64_t written = 0;             // SETs the server acknowledged
  std::int64_t dropped_queue_full = 0;  // puts refused: the queue's byte budget was used
  std::int64_t failed_writes = 0;       // queued writes lost to a failed connection
  std::int64_t deduplicated = 0;        // puts of a block this client just wrote or read
  std::int64_t lookups = 0;             // contains() round trips
  std::int64_t fetched = 0;             // blocks fetched and checked good
  std::int64_t served = 0;              // blocks handed out by get()
  std::int64_t missing = 0;             // a lookup's first missing (or expired) key
  std::int64_t corrupt = 0;             // values with a bad header, size or checksum
  std::int64_t foreign = 0;             // values written for another fingerprint or key
  std::int64_t errors = 0;              // commands that failed (refused, reset, timed out)
  std::int64_t timeouts = 0;            // ... of which timed out
  std::int64_t reconnects = 0;          // connections made again after a failure
  std::int64_t offline = 0;             // calls answered at once while backing off
  std::int64_t erased = 0;
  std::int64_t queue_bytes = 0;  // waiting now
};

class RedisTier final : public BlockStore {
 public:
  // Blocks of `block_bytes` (0: keys only, for metadata-only caches). Does
  // not connect yet: the first call does (and a refused connection is a
  // miss, like any other failure). InvalidArgument for a bad URL or option.
  RedisTier(std::int64_t block_bytes, RedisTierOptions options = {});
  RedisTier(const RedisTier&) = delete;
  RedisTier& operator=(const RedisTier&) = delete;
  // Sends what is queued (each batch bounded by the command timeout; while
  // the server is unreachable the rest is dropped at once), then stops the
  // writer.
  ~RedisTier() override;

  std::string_view name() const override { return "redis"; }
  std::int64_t block_bytes() const override;
  std::int64_t capacity_blocks() const override;
  // Blocks this client has written (Redis may have evicted some since).
  std::int64_t size_blocks() const override;
  BlockStore* shared_store() override { return this; }
  // flush() for at most ten command timeouts.
  void settle() override;

  bool put(std::uint64_t fingerprint, EvictionKey key, std::span<const std::byte> bytes) override;
  bool get(std::uint64_t fingerprint, EvictionKey key, std::span<std::byte> out) override;
  std::size_t contains(std::uint64_t fingerprint, std::span<const EvictionKey> keys) override;
  bool erase(std::uint64_t fingerprint, EvictionKey key) override;
  TierStats stats() const override;

  // Waits until the queue is empty (true) or `timeout` passed; a write the
  // server did not take is counted in failed_writes, not retried.
  bool flush(std::chrono::milliseconds timeout);
  RedisTierStats redis_stats() const;
  const RedisEndpoint& endpoint() const;
  // The key and value a block is stored as (tests and tools that inspect
  // the server).
  std::string key_of(std::uint64_t fingerprint, EvictionKey key) const;
  static std::string encode_value(std::uint64_t fingerprint, EvictionKey key,
                                  std::span<const std::byte> bytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvcache
