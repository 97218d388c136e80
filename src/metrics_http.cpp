// MetricsServer on cpp-httplib (Debian libcpp-httplib-dev).
#include "kvcache/metrics/http_server.hpp"

#include <httplib.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "kvcache/error.hpp"
#include "kvcache/metrics/exposition.hpp"

namespace kvcache::metrics {

struct MetricsServer::Impl {
  httplib::Server server;
  std::thread thread;
  int port = 0;
  std::mutex mutex;
  MetricsSnapshot snapshot;
  std::vector<Recommendation> recommendations;
  std::atomic<std::int64_t> requests{0};
  std::atomic<bool> stopped{false};

  // The latest snapshot, copied out under the lock (rendering happens outside it).
  std::pair<MetricsSnapshot, std::vector<Recommendation>> latest() {
    std::lock_guard lock(mutex);
    return {snapshot, recommendations};
  }
};

MetricsServer::MetricsServer(int port, std::string host) : impl_(std::make_unique<Impl>()) {
  if (port < 0 || port > 65535) {
    detail::raise<InvalidArgument>(
        "MetricsServer: port {} (allowed: 0 to 65535, 0 for any free port)", port);
  }
  Impl& impl = *impl_;
  // SO_REUSEADDR only: cpp-httplib's default also sets SO_REUSEPORT, with
  // which a second server on a taken port would bind and share its scrapes.
  impl.server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  impl.server.Get("/metrics", [&impl](const httplib::Request&, httplib::Response& res) {
    const auto [snapshot, recs] = impl.latest();
    res.set_content(to_prometheus(snapshot), "text/plain; version=0.0.4; charset=utf-8");
    impl.requests.fetch_add(1, std::memory_order_relaxed);
  });
  impl.server.Get("/metrics.json", [&impl](const httplib::Request&, httplib::Response& res) {
    const auto [snapshot, recs] = impl.latest();
    res.set_content(to_json(snapshot, recs), "application/json");
    impl.requests.fetch_add(1, std::memory_order_relaxed);
  });
  impl.port = port == 0 ? impl.server.bind_to_any_port(host)
                        : (impl.server.bind_to_port(host, port) ? port : -1);
  if (impl.port < 0) {
    detail::raise<Error>("MetricsServer: cannot listen on {}:{} (in use, or not a local address)",
                         host, port);
  }
  impl.thread = std::thread([&impl] {
    impl.server.listen_after_bind();
    impl.stopped.store(true, std::memory_order_release);
  });
  // stop() only stops a running server: return once it runs (or failed).
  while (!impl.server.is_running() && !impl.stopped.load(std::memory_order_acquire))
    std::this_thread::yield();
}

MetricsServer::~MetricsServer() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

int MetricsServer::port() const {
  return impl_->port;
}

void MetricsServer::publish(const MetricsSnapshot& snapshot,
                            std::span<const Recommendation> recommendations) {
  std::lock_guard lock(impl_->mutex);
  impl_->snapshot = snapshot;
  impl_->recommendations.assign(recommendations.begin(), recommendations.end());
}

std::int64_t MetricsServer::requests() const {
  return impl_->requests.load(std::memory_order_relaxed);
}

}  // namespace kvcache::metrics
