// /metrics over HTTP, for Prometheus to scrape: a small server on its own
// thread (cpp-httplib, in the compiled kvcache::metrics_http library: this
// header does not include it). The engine thread publishes a snapshot when
// it likes (each step, or every N); a scrape renders the latest one. The
// server never touches the manager, so the manager needs no lock.
//
//   kvcache::metrics::MetricsServer server(9400);        // 127.0.0.1:9400
//   each step: server.publish(monitor.sample(), recommendations);
//
//   GET /metrics       the Prometheus text format (metrics/exposition.hpp)
//   GET /metrics.json  the same snapshot as JSON, with the recommendations
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "kvcache/metrics/recommend.hpp"
#include "kvcache/metrics/snapshot.hpp"

namespace kvcache::metrics {

class MetricsServer {
 public:
  // Listens on host:port (port 0: any free port, see port()). Throws Error
  // naming the address when it cannot listen there; port must be in [0, 65535].
  explicit MetricsServer(int port, std::string host = "127.0.0.1");
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const;
  // What the next scrape serves (copied; the recommendations too).
  void publish(const MetricsSnapshot& snapshot,
               std::span<const Recommendation> recommendations = {});
  // Scrapes answered so far.
  std::int64_t requests() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvcache::metrics
