// `stampmover serve`: the API server and the worker pool in one process (issue 12). Settings come
// from the `serve:` section of the config file, overridden by flags.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace CLI {
class App;
}

struct ServeFlags {
  std::string listen;               // host:port
  std::string tls_cert;
  std::string tls_key;
  std::string tokens_file;
  bool insecure_plaintext = false;
  std::string control_plane_dsn;    // a secret: never logged
  std::string control_plane;        // a stamp of the stamps file
  uint32_t workers = 4;
  uint32_t max_moves = 8;
  uint32_t max_per_source = 2;
  uint32_t max_per_destination = 2;
  uint32_t max_per_stamp = 0;       // 0: off; a move counts against both of its stamps
  double lease_ttl_s = 15;
  uint64_t max_body_bytes = 64 * 1024;
  uint32_t max_header_bytes = 8 * 1024;
  uint32_t max_connections = 256;
  double request_timeout_s = 10;
  uint32_t api_threads = 4;
  double drain_timeout_s = 60;
  double soak_s = 10;
  bool metrics_public = false;
  std::string owner;
  uint64_t throttle_source_lag_bytes = 0;  // 0: off
  std::string throttle_load_query;         // "": off
  double throttle_load_threshold = 0;
  double throttle_delay_ms = 200;
  CLI::App* cmd = nullptr;          // to tell given flags from defaults
};

// Adds serve's flags to `cmd`.
void addServeOptions(CLI::App* cmd, ServeFlags& flags);

// Runs the service until `cancel` (SIGTERM/SIGINT), then drains: stops accepting, finishes
// in-flight requests, drains the worker pool (moves stop at a checkpoint, leases released).
// `config_path` is the stamps file, which may carry a `serve:` section. Returns the exit code:
// 0 after a clean drain, 2 refused (bad settings), 3 control plane unreachable at start, 1 when
// the drain timed out.
int runServe(const ServeFlags& flags, const std::string& config_path, const std::string& state_dir,
             const std::atomic<bool>& cancel);
