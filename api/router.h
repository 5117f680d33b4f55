// The API's routes and what they do, apart from the transport: a request (method, target,
// headers that matter, body) in, a JSON response out. The Beast server (server.h) feeds it;
// tests and the OpenAPI check read routeTable(). No Beast or Asio here.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "api/tokens.h"

namespace stampmover::queue {
class MoveQueue;
}
namespace stampmover::routing {
class RoutingDirectory;
}
namespace stampmover::metrics {
class Registry;
}

namespace stampmover::api {

// Who may call a route.
enum class Access { kPublic, kRead, kOperate };

struct RouteSpec {
  std::string method;   // "GET", "POST"
  std::string path;     // template, as in the OpenAPI document: /v1/moves/{id}/cutover
  Access access;
  std::string summary;  // one line, for docs
};

// Every route the server answers, in a stable order. api/openapi.yaml lists exactly these.
const std::vector<RouteSpec>& routeTable();

struct HttpRequest {
  std::string method;
  std::string target;         // path and query as received
  std::string authorization;  // the Authorization header ("" if absent)
  std::string content_type;   // the Content-Type header ("" if absent)
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
  std::string route = "unmatched";  // route template for metrics and logs
};

// {"code": code, "message": message} with `status`. Codes are stable (see openapi.yaml).
HttpResponse errorResponse(int status, const std::string& code, const std::string& message);

struct RouterDeps {
  queue::MoveQueue* queue = nullptr;                // required; outlives the router
  const TokenStore* tokens = nullptr;               // required
  metrics::Registry* metrics = nullptr;             // required (/metrics serializes it)
  // Optional: when set, POST /v1/moves refuses a tenant the directory routes to another stamp
  // than `from` (code tenant_not_on_stamp).
  routing::RoutingDirectory* routing = nullptr;     // Default: none
  bool metrics_public = false;  // Default: false (/metrics needs a read token)
  // Optional: answers the fleet routes (/v1/stamps, /v1/plans...: see routeTable()) after
  // authentication, with the route template, the {id} or {stamp} ("" if none), the body and
  // whether the token has the operate role (a route may need it for some bodies: a drain that
  // is not a dry run); returns (status, JSON body). Default: none (501 not_configured).
  std::function<std::pair<int, std::string>(const std::string& route, const std::string& id,
                                            const std::string& body, bool operate)>
      fleet;
  // Extra readiness condition (the worker pool started, say); Default: none (always true).
  std::function<bool(std::string* why)> ready_extra;
};

// Thread-safe: handle() may run on many threads at once (the queue and the registry are
// thread-safe; the router itself holds no mutable state but the draining flag).
class Router {
 public:
  explicit Router(RouterDeps deps) : deps_(std::move(deps)) {}
  // Answers one request. Never throws: a bug inside a handler becomes 500 internal.
  HttpResponse handle(const HttpRequest& request) const;
  // Once set, /readyz answers 503 draining (load balancers stop sending) and new moves are
  // refused with 503 draining.
  void setDraining() { draining_.store(true); }
  bool draining() const { return draining_.load(); }
  metrics::Registry* metrics() const { return deps_.metrics; }

 private:
  HttpResponse dispatch(const HttpRequest& request) const;
  RouterDeps deps_;
  std::atomic<bool> draining_{false};
};

}  // namespace stampmover::api
