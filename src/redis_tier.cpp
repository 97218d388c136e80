// The Redis tier (tier/redis_tier.hpp), on hiredis: one connection for the
// calls of the engine's threads (locked), one for the writer thread.
#include "kvcache/tier/redis_tier.hpp"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdarg>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kvcache/error.hpp"

namespace kvcache {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kValueMagic = 0x5443564bu;  // "KVCT"
constexpr std::uint32_t kValueVersion = 1;
constexpr std::size_t kValueHeader = 40;

void put_le(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}

std::uint64_t get_le(const char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

std::uint64_t value_checksum(const void* data, std::size_t n, std::uint64_t fingerprint,
                             EvictionKey key) {
  return XXH3_64bits_withSeed(data, n, fingerprint ^ (key * 0x9e3779b97f4a7c15ULL));
}

int parse_int(std::string_view text, std::string_view url, const char* what, int low, int high) {
  int value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size() || value < low || value > high) {
    detail::raise<InvalidArgument>("Redis URL '{}': {} '{}' (allowed: {} to {})", url, what, text,
                                   low, high);
  }
  return value;
}

// While alive, a write to a socket the server closed cannot kill the process
// with SIGPIPE (hiredis writes with write()): the signal is blocked in this
// thread, and one it raised is taken back before the mask is restored.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;
  ~SigpipeGuard() {
    sigset_t pending;
    sigpending(&pending);
    if (!was_pending_ && sigismember(&pending, SIGPIPE) == 1) {
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe_, nullptr, &zero) == -1 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t pipe_{}, old_{};
  bool was_pending_ = false;
};

struct ReplyDeleter {
  void operator()(redisReply* r) const {
    if (r != nullptr) freeReplyObject(r);
  }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct Counters {
  RedisTierStats s;
};

// One connection, made on demand, dropped on any failure and made again
// after a backoff that doubles up to its maximum.
class Connection {
 public:
  Connection(const RedisEndpoint& endpoint, const RedisTierOptions& options)
      : endpoint_(endpoint), options_(options), backoff_(options.backoff_min) {}
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { close(); }

  // The live context, or null while backing off / when connecting failed.
  redisContext* get(RedisTierStats& stats) {
    if (ctx_ != nullptr) return ctx_;
    if (Clock::now() < next_attempt_) {
      ++stats.offline;
      return nullptr;
    }
    ctx_ = redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port,
                                   timeval_of(options_.connect_timeout));
    if (ctx_ == nullptr || ctx_->err != 0) return failed(stats, false);
    if (redisSetTimeout(ctx_, timeval_of(options_.command_timeout)) != REDIS_OK)
      return failed(stats, false);
    if (!endpoint_.password.empty()) {
      Reply r(endpoint_.user.empty()
                  ? command("AUTH %s", endpoint_.password.c_str())
                  : command("AUTH %s %s", endpoint_.user.c_str(), endpoint_.password.c_str()));
      if (!ok(r.get())) return failed(stats, r == nullptr);
    }
    if (endpoint_.db != 0) {
      Reply r(command("SELECT %d", endpoint_.db));
      if (!ok(r.get())) return failed(stats, r == nullptr);
    }
    if (ever_connected_) ++stats.reconnects;
    ever_connected_ = true;
    backoff_ = options_.backoff_min;
    return ctx_;
  }

  // After a failed command: counts it and drops the connection.
  void fail(RedisTierStats& stats) { (void)failed(stats, true); }
  // Failures so far (read from other threads).
  std::int64_t failures() const { return failures_.load(std::memory_order_relaxed); }

  redisReply* command(const char* format, ...) {
    va_list args;
    va_start(args, format);
    void* reply = redisvCommand(ctx_, format, args);
    va_end(args);
    return static_cast<redisReply*>(reply);
  }

 private:
  static timeval timeval_of(std::chrono::milliseconds ms) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
    return tv;
  }
  static bool ok(const redisReply* r) { return r != nullptr && r->type != REDIS_REPLY_ERROR; }

  redisContext* failed(RedisTierStats& stats, bool io) {
    ++stats.errors;
    failures_.fetch_add(1, std::memory_order_relaxed);
    if (io && ctx_ != nullptr && ctx_->err == REDIS_ERR_IO &&
        (errno == EAGAIN || errno == EWOULDBLOCK ||
         std::strstr(ctx_->errstr, "temporarily unavailable") != nullptr)) {
      ++stats.timeouts;
    }
    close();
    next_attempt_ = Clock::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, options_.backoff_max);
    return nullptr;
  }
  void close() {
    if (ctx_ != nullptr) redisFree(ctx_);
    ctx_ = nullptr;
  }

  const RedisEndpoint& endpoint_;
  const RedisTierOptions& options_;
  redisContext* ctx_ = nullptr;
  bool ever_connected_ = false;
  std::atomic<std::int64_t> failures_{0};
  std::chrono::milliseconds backoff_;
  Clock::time_point next_attempt_{};
};

}  // namespace

// ---- the URL ---------------------------------------------------------------------

RedisEndpoint RedisEndpoint::parse(std::string_view url) {
  constexpr std::string_view scheme = "redis://";
  if (url.substr(0, scheme.size()) != scheme) {
    detail::raise<InvalidArgument>(
        "Redis URL '{}': it must start with redis:// (TLS, rediss://, is not supported)", url);
  }
  RedisEndpoint e;
  std::string_view rest = url.substr(scheme.size());
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view credentials = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const auto colon = credentials.find(':');
    if (colon == std::string_view::npos) {
      e.password = std::string(credentials);  // redis://password@host
    } else {
      e.user = std::string(credentials.substr(0, colon));
      e.password = std::string(credentials.substr(colon + 1));
    }
  }
  std::string_view host_port = rest;
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    host_port = rest.substr(0, slash);
    const std::string_view db = rest.substr(slash + 1);
    if (!db.empty()) e.db = parse_int(db, url, "database", 0, 1 << 20);
  }
  if (const auto colon = host_port.rfind(':'); colon != std::string_view::npos) {
    e.port = parse_int(host_port.substr(colon + 1), url, "port", 1, 65535);
    host_port = host_port.substr(0, colon);
  }
  if (host_port.empty()) detail::raise<InvalidArgument>("Redis URL '{}': no host", url);
  e.host = std::string(host_port);
  return e;
}

std::string RedisEndpoint::describe() const {
  return fmt::format("redis://{}{}{}:{}/{}", user, user.empty() && password.empty() ? "" : "@",
                     host, port, db);
}

// ---- the tier --------------------------------------------------------------------

struct RedisTier::Impl {
  struct Write {
    EvictionKey id;  // in `recent`
    std::string key;
    std::string value;
  };

  Impl(std::int64_t bytes, RedisTierOptions o)
      : block_bytes(bytes),
        options(std::move(o)),
        endpoint(RedisEndpoint::parse(options.url)),
        reader(endpoint, options),
        writer_connection(endpoint, options) {}

  // Checks a value fetched for (fingerprint, key); counts what is wrong.
  bool valid(const redisReply* r, std::uint64_t fingerprint, EvictionKey key) {
    if (r == nullptr || r->type != REDIS_REPLY_STRING) {
      ++counters.s.missing;
      return false;
    }
    const auto len = static_cast<std::size_t>(r->len);
    if (len < kValueHeader || get_le(r->str, 4) != kValueMagic ||
        get_le(r->str + 4, 4) != kValueVersion) {
      ++counters.s.corrupt;
      return false;
    }
    if (get_le(r->str + 8, 8) != fingerprint || get_le(r->str + 16, 8) != key) {
      ++counters.s.foreign;
      return false;
    }
    if (get_le(r->str + 24, 8) != static_cast<std::uint64_t>(block_bytes) ||
        len != kValueHeader + static_cast<std::size_t>(block_bytes) ||
        get_le(r->str + 32, 8) !=
            value_checksum(r->str + kValueHeader, len - kValueHeader, fingerprint, key)) {
      ++counters.s.corrupt;
      return false;
    }
    return true;
  }

  // Notes a block as written or read now; the oldest notes go past kRecent
  // (an order entry only removes the note it was made with).
  void remember(EvictionKey id) {
    const std::uint64_t seq = ++recent_seq;
    recent[id] = Recent{Clock::now(), seq};
    recent_order.emplace_back(id, seq);
    while (recent_order.size() > kRecent) {
      const auto [old, old_seq] = recent_order.front();
      recent_order.pop_front();
      if (auto it = recent.find(old); it != recent.end() && it->second.seq == old_seq)
        recent.erase(it);
    }
  }
  // Written or read by this client within the dedupe window (and within the
  // TTL: a put past it refreshes the key's expiry).
  bool known(EvictionKey id) const {
    const auto it = recent.find(id);
    if (it == recent.end()) return false;
    auto window = options.dedupe_window;
    if (options.ttl_seconds > 0)
      window = std::min(window, std::chrono::milliseconds(options.ttl_seconds * 1000 / 2));
    return Clock::now() - it->second.at < window;
  }
  static EvictionKey id_of(std::uint64_t fingerprint, EvictionKey key) {
    const std::uint64_t parts[2] = {fingerprint, key};
    return XXH3_64bits(parts, sizeof(parts));
  }

  void writer_loop() {
    // This thread only talks to Redis: SIGPIPE stays blocked (never delivered).
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    std::vector<Write> batch;
    while (true) {
      std::size_t batch_bytes = 0;
      {
        std::unique_lock lock(queue_mutex);
        queue_cv.wait(lock, [&] { return stop || !queue.empty(); });
        if (queue.empty()) return;  // stopping, nothing left
        while (!queue.empty() && batch.size() < static_cast<std::size_t>(options.batch_blocks)) {
          batch_bytes += queue.front().value.size();
          batch.push_back(std::move(queue.front()));
          queue.pop_front();
        }
        in_flight = batch.size();
      }
      std::vector<bool> written(batch.size(), false);
      RedisTierStats connection;  // this send's connection counters, merged below
      send(batch, written, connection);
      const auto done = static_cast<std::size_t>(std::count(written.begin(), written.end(), true));
      if (done < batch.size()) {
        // Not written: a later put of these blocks must send them.
        std::lock_guard lock(mutex);
        for (std::size_t i = 0; i < batch.size(); ++i) {
          if (!written[i]) recent.erase(batch[i].id);
        }
      }
      {
        std::lock_guard lock(queue_mutex);
        writer_counters.s.written += static_cast<std::int64_t>(done);
        writer_counters.s.errors += connection.errors;
        writer_counters.s.timeouts += connection.timeouts;
        writer_counters.s.reconnects += connection.reconnects;
        writer_counters.s.offline += connection.offline;
        writer_counters.s.failed_writes += static_cast<std::int64_t>(batch.size() - done);
        queued_bytes -= static_cast<std::int64_t>(batch_bytes);
        in_flight = 0;
      }
      done_cv.notify_all();
      batch.clear();
    }
  }

  // One pipelined round trip of SETs; `written[i]`: the server took batch[i].
  void send(const std::vector<Write>& batch, std::vector<bool>& written, RedisTierStats& counts) {
    redisContext* ctx = writer_connection.get(counts);
    if (ctx == nullptr) return;
    const std::string ttl = std::to_string(options.ttl_seconds);
    for (const Write& w : batch) {
      const char* argv[5] = {"SET", w.key.c_str(), w.value.data(), "EX", ttl.c_str()};
      const std::size_t lens[5] = {3, w.key.size(), w.value.size(), 2, ttl.size()};
      redisAppendCommandArgv(ctx, options.ttl_seconds > 0 ? 5 : 3, argv, lens);
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      void* raw = nullptr;
      if (redisGetReply(ctx, &raw) != REDIS_OK) {
        writer_connection.fail(counts);
        return;
      }
      Reply r(static_cast<redisReply*>(raw));
      written[i] = r->type != REDIS_REPLY_ERROR;
    }
  }

  static constexpr std::size_t kRecent = 1 << 16;

  std::int64_t block_bytes;
  RedisTierOptions options;
  RedisEndpoint endpoint;

  // The engine side (reader connection, prefetched blocks), under `mutex`.
  mutable std::mutex mutex;
  Connection reader;
  Counters counters;
  std::uint64_t prefetch_fingerprint = 0;
  // Blocks the last lookup fetched and checked: key -> payload, inside the
  // reply that holds it (kept alive while any of its blocks is unread).
  struct Fetched {
    std::shared_ptr<redisReply> reply;
    const char* data = nullptr;
  };
  std::unordered_map<EvictionKey, Fetched> prefetched;
  struct Recent {
    Clock::time_point at;
    std::uint64_t seq = 0;
  };
  std::unordered_map<EvictionKey, Recent> recent;  // ids written or read lately
  std::deque<std::pair<EvictionKey, std::uint64_t>> recent_order;
  std::uint64_t recent_seq = 0;
  std::int64_t seen_failures = 0;

  // The write queue and the writer's counters, under `queue_mutex`.
  mutable std::mutex queue_mutex;
  std::condition_variable queue_cv, done_cv;
  std::deque<Write> queue;
  std::int64_t queued_bytes = 0;
  std::size_t in_flight = 0;
  bool stop = false;
  Counters writer_counters;
  Connection writer_connection;
  std::thread writer;
};

RedisTier::RedisTier(std::int64_t block_bytes, RedisTierOptions options) {
  if (block_bytes < 0) {
    detail::raise<InvalidArgument>("RedisTier: block_bytes {} (allowed: 0 or more)", block_bytes);
  }
  auto positive = [](std::int64_t v, const char* what) {
    if (v < 1) detail::raise<InvalidArgument>("RedisTier: {} {} (allowed: 1 or more)", what, v);
  };
  positive(options.connect_timeout.count(), "connect_timeout (ms)");
  positive(options.command_timeout.count(), "command_timeout (ms)");
  positive(options.queue_bytes, "queue_bytes");
  positive(options.batch_blocks, "batch_blocks");
  positive(options.backoff_min.count(), "backoff_min (ms)");
  positive(options.fetch_bytes, "fetch_bytes");
  if (options.dedupe_window.count() < 0) {
    detail::raise<InvalidArgument>("RedisTier: dedupe_window {} ms (allowed: 0 or more)",
                                   options.dedupe_window.count());
  }
  if (options.backoff_max < options.backoff_min) {
    detail::raise<InvalidArgument>("RedisTier: backoff_max {} ms under backoff_min {} ms",
                                   options.backoff_max.count(), options.backoff_min.count());
  }
  if (options.ttl_seconds < 0 || options.capacity_blocks < 0) {
    detail::raise<InvalidArgument>(
        "RedisTier: ttl_seconds {} and capacity_blocks {} (allowed: 0 or more)",
        options.ttl_seconds, options.capacity_blocks);
  }
  if (options.key_prefix.empty() || options.key_prefix.find(':') != std::string::npos) {
    detail::raise<InvalidArgument>(
        "RedisTier: key_prefix '{}' (allowed: a non-empty name without ':')", options.key_prefix);
  }
  impl_ = std::make_unique<Impl>(block_bytes, std::move(options));
  impl_->writer = std::thread([impl = impl_.get()] { impl->writer_loop(); });
}

RedisTier::~RedisTier() {
  {
    std::lock_guard lock(impl_->queue_mutex);
    impl_->stop = true;
  }
  impl_->queue_cv.notify_all();
  impl_->writer.join();
}

std::int64_t RedisTier::block_bytes() const {
  return impl_->block_bytes;
}
std::int64_t RedisTier::capacity_blocks() const {
  return impl_->options.capacity_blocks;
}
std::int64_t RedisTier::size_blocks() const {
  std::lock_guard lock(impl_->queue_mutex);
  return impl_->writer_counters.s.written;
}
const RedisEndpoint& RedisTier::endpoint() const {
  return impl_->endpoint;
}

std::string RedisTier::key_of(std::uint64_t fingerprint, EvictionKey key) const {
  return fmt::format("{}:{:016x}:{:016x}", impl_->options.key_prefix, fingerprint, key);
}

std::string RedisTier::encode_value(std::uint64_t fingerprint, EvictionKey key,
                                    std::span<const std::byte> bytes) {
  std::string value;
  value.reserve(kValueHeader + bytes.size());
  put_le(value, kValueMagic, 4);
  put_le(value, kValueVersion, 4);
  put_le(value, fingerprint, 8);
  put_le(value, key, 8);
  put_le(value, bytes.size(), 8);
  put_le(value, value_checksum(bytes.data(), bytes.size(), fingerprint, key), 8);
  value.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  return value;
}

bool RedisTier::put(std::uint64_t fingerprint, EvictionKey key, std::span<const std::byte> bytes) {
  Impl& d = *impl_;
  if (static_cast<std::int64_t>(bytes.size()) != d.block_bytes) return false;
  {
    std::lock_guard lock(d.mutex);
    // A connection failed since (the server may have restarted empty): what
    // was written before is no longer known to be there.
    const std::int64_t failures = d.reader.failures() + d.writer_connection.failures();
    if (failures != d.seen_failures) {
      d.recent.clear();
      d.recent_order.clear();
      d.seen_failures = failures;
    }
    const EvictionKey id = Impl::id_of(fingerprint, key);
    if (d.known(id)) {
      ++d.counters.s.deduplicated;
      return true;
    }
    d.remember(id);
  }
  Impl::Write w{Impl::id_of(fingerprint, key), key_of(fingerprint, key),
                encode_value(fingerprint, key, bytes)};
  bool queued = false;
  {
    std::lock_guard lock(d.queue_mutex);
    const auto size = static_cast<std::int64_t>(w.value.size());
    if (d.queued_bytes + size <= d.options.queue_bytes) {
      d.queued_bytes += size;
      ++d.writer_counters.s.queued;
      d.queue.push_back(std::move(w));
      queued = true;
    } else {
      ++d.writer_counters.s.dropped_queue_full;
    }
  }
  if (!queued) {
    std::lock_guard engine(d.mutex);
    d.recent.erase(w.id);  // not written: a later put may try again
    return false;
  }
  d.queue_cv.notify_one();
  return true;
}

std::size_t RedisTier::contains(std::uint64_t fingerprint, std::span<const EvictionKey> keys) {
  Impl& d = *impl_;
  std::lock_guard lock(d.mutex);
  const SigpipeGuard no_sigpipe;
  // What the last lookup fetched answers a lookup of the same run (a host
  // tier above asks again, one key at a time).
  std::size_t n = 0;
  if (d.prefetch_fingerprint == fingerprint) {
    while (n < keys.size() && d.prefetched.count(keys[n]) != 0)
      ++n;
  }
  if (n == keys.size()) return n;
  // Only this run's blocks stay (each holds its whole reply).
  if (n == 0) {
    d.prefetched.clear();
  } else {
    std::unordered_map<EvictionKey, Impl::Fetched> run;
    for (std::size_t i = 0; i < n; ++i)
      run.emplace(keys[i], std::move(d.prefetched.at(keys[i])));
    d.prefetched = std::move(run);
  }
  d.prefetch_fingerprint = fingerprint;
  const auto per_block = static_cast<std::int64_t>(kValueHeader) + d.block_bytes;
  const std::size_t most = std::min(
      keys.size() - n,
      static_cast<std::size_t>(std::max<std::int64_t>(1, d.options.fetch_bytes / per_block)));
  redisContext* ctx = d.reader.get(d.counters.s);
  if (ctx == nullptr) return n;
  std::vector<std::string> names;
  names.reserve(most);
  for (std::size_t i = 0; i < most; ++i)
    names.push_back(key_of(fingerprint, keys[n + i]));
  // One MGET for the run (a Lua script that stopped at the first missing key
  // on the server ran 4x slower there, copying every value into Lua): the
  // values after the first missing or bad one are read and dropped.
  std::vector<const char*> argv = {"MGET"};
  std::vector<std::size_t> lens = {4};
  for (const std::string& name : names) {
    argv.push_back(name.c_str());
    lens.push_back(name.size());
  }
  ++d.counters.s.lookups;
  std::shared_ptr<redisReply> r(static_cast<redisReply*>(redisCommandArgv(
                                    ctx, static_cast<int>(argv.size()), argv.data(), lens.data())),
                                ReplyDeleter{});
  if (r == nullptr) {
    d.reader.fail(d.counters.s);
    return n;
  }
  if (r->type != REDIS_REPLY_ARRAY) {
    ++d.counters.s.errors;  // an error reply (say, a server that refuses MGET)
    return n;
  }
  std::size_t found = 0;
  for (; found < r->elements; ++found) {
    const redisReply* v = r->element[found];
    const EvictionKey key = keys[n + found];
    if (!d.valid(v, fingerprint, key)) break;
    d.prefetched[key] = Impl::Fetched{r, v->str + kValueHeader};
    d.remember(Impl::id_of(fingerprint, key));
    ++d.counters.s.fetched;
  }
  return n + found;
}

bool RedisTier::get(std::uint64_t fingerprint, EvictionKey key, std::span<std::byte> out) {
  Impl& d = *impl_;
  if (static_cast<std::int64_t>(out.size()) != d.block_bytes) return false;
  std::lock_guard lock(d.mutex);
  if (d.prefetch_fingerprint == fingerprint) {
    if (auto it = d.prefetched.find(key); it != d.prefetched.end()) {
      if (!out.empty()) std::memcpy(out.data(), it->second.data, out.size());
      d.prefetched.erase(it);
      ++d.counters.s.served;
      return true;
    }
  }
  const SigpipeGuard no_sigpipe;
  redisContext* ctx = d.reader.get(d.counters.s);
  if (ctx == nullptr) return false;
  const std::string name = key_of(fingerprint, key);
  Reply r(d.reader.command("GET %b", name.data(), name.size()));
  if (r == nullptr) {
    d.reader.fail(d.counters.s);
    return false;
  }
  if (!d.valid(r.get(), fingerprint, key)) return false;
  if (!out.empty()) std::memcpy(out.data(), r->str + kValueHeader, out.size());
  d.remember(Impl::id_of(fingerprint, key));
  ++d.counters.s.fetched;
  ++d.counters.s.served;
  return true;
}

bool RedisTier::erase(std::uint64_t fingerprint, EvictionKey key) {
  Impl& d = *impl_;
  std::lock_guard lock(d.mutex);
  d.prefetched.erase(key);
  d.recent.erase(Impl::id_of(fingerprint, key));
  const SigpipeGuard no_sigpipe;
  redisContext* ctx = d.reader.get(d.counters.s);
  if (ctx == nullptr) return false;
  const std::string name = key_of(fingerprint, key);
  Reply r(d.reader.command("DEL %b", name.data(), name.size()));
  if (r == nullptr) {
    d.reader.fail(d.counters.s);
    return false;
  }
  const bool removed = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
  if (removed) ++d.counters.s.erased;
  return removed;
}

bool RedisTier::flush(std::chrono::milliseconds timeout) {
  Impl& d = *impl_;
  std::unique_lock lock(d.queue_mutex);
  return d.done_cv.wait_for(lock, timeout, [&] { return d.queue.empty() && d.in_flight == 0; });
}

void RedisTier::settle() {
  (void)flush(10 * impl_->options.command_timeout);
}

RedisTierStats RedisTier::redis_stats() const {
  const Impl& d = *impl_;
  RedisTierStats s;
  {
    std::lock_guard lock(d.mutex);
    s = d.counters.s;
  }
  std::lock_guard lock(d.queue_mutex);
  const RedisTierStats& w = d.writer_counters.s;
  s.queued = w.queued;
  s.written = w.written;
  s.dropped_queue_full = w.dropped_queue_full;
  s.failed_writes = w.failed_writes;
  s.errors += w.errors;
  s.timeouts += w.timeouts;
  s.reconnects += w.reconnects;
  s.offline += w.offline;
  s.queue_bytes = d.queued_bytes;
  return s;
}

TierStats RedisTier::stats() const {
  const RedisTierStats r = redis_stats();
  TierStats s;
  s.capacity_blocks = impl_->options.capacity_blocks;
  s.blocks = r.written;
  s.puts = r.queued;
  s.hits = r.served;
  s.misses = r.missing + r.corrupt + r.foreign;
  s.erases = r.erased;
  s.rejected = r.dropped_queue_full;
  s.bytes_in = r.written * impl_->block_bytes;
  s.bytes_out = r.served * impl_->block_bytes;
  return s;
}

}  // namespace kvcache
