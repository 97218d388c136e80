// A real redis-server for a test: started on a free loopback port with a
// temporary directory (no persistence), stopped and removed at the end; it
// can be killed, started again on the same port, paused and resumed (fault
// injection). The binary: KVCACHE_REDIS_SERVER in the environment, else the
// one CMake found. A raw hiredis connection lets a test read and write the
// stored values themselves.
#pragma once

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace kvcache::testing {

inline std::string redis_server_binary() {
  if (const char* path = std::getenv("KVCACHE_REDIS_SERVER")) return path;
#ifdef KVCACHE_REDIS_SERVER
  return KVCACHE_REDIS_SERVER;
#else
  return "";
#endif
}

inline bool have_redis_server() {
  const std::string binary = redis_server_binary();
  return !binary.empty() && ::access(binary.c_str(), X_OK) == 0;
}

class RedisServer {
 public:
  // `extra`: more redis-server arguments (--requirepass, --user, ...).
  explicit RedisServer(std::vector<std::string> extra = {}) : extra_(std::move(extra)) {
    for (std::size_t i = 0; i + 1 < extra_.size(); ++i) {
      if (extra_[i] == "--requirepass") auth_ = extra_[i + 1];
    }
    // A port another test takes between the probe and the bind fails this
    // server's start: a few tries on fresh ports.
    for (int attempt = 0; attempt < 5 && pid_ <= 0; ++attempt) {
      port_ = free_port();
      dir_ = std::filesystem::temp_directory_path() /
             ("kvcache-redis-" + std::to_string(::getpid()) + "-" + std::to_string(port_));
      std::filesystem::create_directories(dir_);
      start();
      if (pid_ <= 0) {
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
      }
    }
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;
  ~RedisServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGCONT);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  int port() const { return port_; }
  bool running() const { return pid_ > 0; }
  std::string url(const std::string& credentials = "", int db = 0) const {
    return "redis://" + (credentials.empty() ? "" : credentials + "@") +
           "127.0.0.1:" + std::to_string(port_) + "/" + std::to_string(db);
  }

  // Starts the server (again, on the same port) and waits until it answers.
  void start() {
    const std::string binary = redis_server_binary();
    std::vector<std::string> args = {binary,
                                     "--port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--dir",
                                     dir_.string(),
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--logfile",
                                     (dir_ / "redis.log").string()};
    args.insert(args.end(), extra_.begin(), extra_.end());
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the test
      std::vector<char*> argv;
      for (std::string& a : args)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      _exit(127);
    }
    pid_ = pid;
    for (int i = 0; i < 500; ++i) {
      if (answers() && server_pid() == pid_) return;  // ours, not another test's
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill();  // never answered as itself
  }
  // SIGKILL: the server and everything it held are gone.
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // SIGSTOP / SIGCONT: a server that accepts connections and never answers.
  void pause() { ::kill(pid_, SIGSTOP); }
  void resume() { ::kill(pid_, SIGCONT); }

  // A raw command on a fresh connection (AUTH first when `password` is set).
  std::optional<std::string> get_raw(const std::string& key, int db = 0,
                                     const std::string& auth = "") const {
    std::optional<std::string> out;
    with_connection(db, auth, [&](redisContext* c) {
      auto* r = static_cast<redisReply*>(redisCommand(c, "GET %b", key.data(), key.size()));
      if (r != nullptr && r->type == REDIS_REPLY_STRING)
        out = std::string(r->str, static_cast<std::size_t>(r->len));
      if (r != nullptr) freeReplyObject(r);
    });
    return out;
  }
  bool set_raw(const std::string& key, const std::string& value, int db = 0,
               const std::string& auth = "") const {
    bool ok = false;
    with_connection(db, auth, [&](redisContext* c) {
      auto* r = static_cast<redisReply*>(
          redisCommand(c, "SET %b %b", key.data(), key.size(), value.data(), value.size()));
      ok = r != nullptr && r->type == REDIS_REPLY_STATUS;
      if (r != nullptr) freeReplyObject(r);
    });
    return ok;
  }
  long long ttl_raw(const std::string& key) const {
    long long ttl = -3;
    with_connection(0, "", [&](redisContext* c) {
      auto* r = static_cast<redisReply*>(redisCommand(c, "TTL %b", key.data(), key.size()));
      if (r != nullptr && r->type == REDIS_REPLY_INTEGER) ttl = r->integer;
      if (r != nullptr) freeReplyObject(r);
    });
    return ttl;
  }
  long long dbsize(int db = 0, const std::string& auth = "") const {
    long long n = -1;
    with_connection(db, auth, [&](redisContext* c) {
      auto* r = static_cast<redisReply*>(redisCommand(c, "DBSIZE"));
      if (r != nullptr && r->type == REDIS_REPLY_INTEGER) n = r->integer;
      if (r != nullptr) freeReplyObject(r);
    });
    return n;
  }

 private:
  static int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ::close(fd);
      return 0;
    }
    ::close(fd);
    return ntohs(addr.sin_port);
  }
  // The process_id the server on the port reports (INFO), or -1.
  long long server_pid() const {
    long long pid = -1;
    with_connection(0, auth_, [&](redisContext* c) {
      auto* r = static_cast<redisReply*>(redisCommand(c, "INFO server"));
      if (r != nullptr && r->type == REDIS_REPLY_STRING) {
        const std::string info(r->str, static_cast<std::size_t>(r->len));
        const auto at = info.find("process_id:");
        if (at != std::string::npos) pid = std::atoll(info.c_str() + at + 11);
      }
      if (r != nullptr) freeReplyObject(r);
    });
    return pid;
  }
  bool answers() const {
    bool ok = false;
    with_connection(0, "", [&](redisContext* c) {
      auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
      ok = r != nullptr;  // PONG, or NOAUTH from a server that wants a password: it is up
      if (r != nullptr) freeReplyObject(r);
    });
    return ok;
  }
  template <class F>
  void with_connection(int db, const std::string& auth, F f) const {
    timeval tv{1, 0};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
    if (c == nullptr || c->err != 0) {
      if (c != nullptr) redisFree(c);
      return;
    }
    redisSetTimeout(c, tv);
    if (!auth.empty()) freeReplyObject(redisCommand(c, "AUTH %s", auth.c_str()));
    if (db != 0) freeReplyObject(redisCommand(c, "SELECT %d", db));
    f(c);
    redisFree(c);
  }

  std::vector<std::string> extra_;
  std::string auth_;  // --requirepass, for the server's own checks
  int port_ = 0;
  pid_t pid_ = -1;
  std::filesystem::path dir_;
};

}  // namespace kvcache::testing
