// A small HTTP(S) client for the API, used by the `stampmover move ...` verbs: one request per
// call, TLS verified against a CA file (or the system's CAs) with the host name checked, a
// bearer token, a deadline. Beast and Asio stay inside client.cc.
#pragma once

#include <chrono>
#include <string>

#include "common/status.h"

namespace stampmover::api {

struct ClientOptions {
  std::string base_url;   // Default: none (required): http://host:port or https://host:port
  std::string token;      // Default: "" (no Authorization header); a secret, never logged
  std::string ca_file;    // Default: "" (the system's CA store) for https
  std::chrono::milliseconds timeout{30000};  // Default: 30 s for connect, request and answer
};

struct ClientResponse {
  int status = 0;
  std::string body;
};

// Sends one request and reads the answer (any status: the caller looks at it). Errors:
// kRefused for a bad URL or a certificate that does not verify (the fix is configuration);
// kRetryable when the server cannot be reached, the connection drops, or the deadline passes.
// Thread-safe: each call has its own connection.
common::Result<ClientResponse> httpRequest(const ClientOptions& options, const std::string& method,
                                           const std::string& path, const std::string& body = "");

}  // namespace stampmover::api
