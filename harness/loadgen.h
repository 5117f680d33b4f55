// The load generator (also used by the demo and tests): writes one tenant's rows at a fixed
// rate through the routing client, as an application would — resolve the stamp, retry on
// `frozen` and on the source fence — logs every acknowledged write, and reports the longest
// write stall and latency percentiles. verify() then checks every acknowledged write is
// present on the serving stamp.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace stampmover::harness {

struct LoadgenOptions {
  std::string control_plane_dsn;                   // Default: none (required)
  std::map<std::string, std::string> stamp_dsns;   // Default: none: stamp name -> DSN
  std::string tenant = "42";                       // Default: "42" (a bigint tenant_id)
  double rate = 200;                               // Default: 200 writes/s
  std::chrono::milliseconds duration{10000};       // Default: 10 s (bounded)
  int64_t first_id = 800'000'000;                  // Default: ids from 800000000 in `scratch`
};

struct LoadgenReport {
  uint64_t acknowledged = 0;
  uint64_t retries = 0;
  uint64_t failures = 0;          // gave up on a write (not acknowledged, not counted as lost)
  double max_stall_ms = 0;        // longest time from first attempt to acknowledgement
  double p50_ms = 0, p99_ms = 0;  // per-write latency including retries
};

// Thread-compatible: start/stop from one thread.
class Loadgen {
 public:
  explicit Loadgen(LoadgenOptions options);
  ~Loadgen();
  void start();
  void stop();
  // Waits until the configured duration is over (the writer stops by itself).
  void wait();
  LoadgenReport report() const;
  // Counts acknowledged writes missing from `dsn` (the serving stamp). Errors: connection.
  common::Result<uint64_t> missingOn(const std::string& dsn) const;

 private:
  void run();
  LoadgenOptions options_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<int64_t> acked_;        // guarded by mu_
  std::vector<double> latencies_ms_;  // guarded by mu_
  uint64_t retries_ = 0, failures_ = 0;
};

}  // namespace stampmover::harness
