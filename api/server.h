// The HTTP server of `stampmover serve`: listens (TLS when a certificate is configured), enforces
// the limits (body, headers, connections, time per request), hands each request to a Router and
// drains on request. Beast and Asio stay inside server.cc.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "api/router.h"
#include "common/status.h"

namespace stampmover::api {

struct ServerOptions {
  std::string listen_address = "127.0.0.1";  // Default: 127.0.0.1 (an IP address or localhost)
  uint16_t port = 8443;                       // Default: 8443; 0 picks a free port (see port())
  std::string tls_cert_file;                  // Default: none (PEM chain; TLS when set)
  std::string tls_key_file;                   // Default: none (PEM key; required with the cert)
  // Without TLS only a loopback address is accepted unless this says otherwise (tokens would
  // cross the network in clear).
  bool insecure_plaintext = false;            // Default: false
  uint64_t max_body_bytes = 64 * 1024;        // Default: 64 KiB (413 above)
  uint32_t max_header_bytes = 8 * 1024;       // Default: 8 KiB (431 above)
  uint32_t max_connections = 256;             // Default: 256 (more are closed at accept)
  // Bounds reading one request (a keep-alive connection idle this long is closed too) and,
  // separately, writing its response.
  std::chrono::milliseconds request_timeout{10000};  // Default: 10 s
  uint32_t threads = 4;                       // Default: 4 I/O threads (handlers run on them)
};

// Thread-safety: beginDrain(), waitDrained() and port() may be called from any thread.
class Server {
 public:
  // Validates the options (TLS files load, key matches, address allowed), binds and starts
  // serving on `threads` threads. `router` must outlive the server.
  // Errors: kRefused (bad address, plaintext on a non-loopback address, unreadable certificate
  // or key, address in use).
  static common::Result<std::unique_ptr<Server>> start(const ServerOptions& options,
                                                       Router& router);
  ~Server();  // stops at once (no drain): closes every connection, joins the threads
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound port (the picked one when options.port was 0).
  uint16_t port() const;
  // Whether TLS is on.
  bool tls() const;
  // Stops accepting, tells the router (readyz 503), closes idle keep-alive connections and lets
  // in-flight requests finish (their responses carry Connection: close).
  void beginDrain();
  // Waits until no connection is open or `timeout` passes; returns whether all were done. Then
  // the I/O threads are stopped. Call after beginDrain().
  bool waitDrained(std::chrono::milliseconds timeout);
  // Connections open now.
  uint32_t openConnections() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace stampmover::api
