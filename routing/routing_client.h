// The client library routers and applications link: resolve a tenant to its stamp through a
// short-lived cache over the routing directory, treat `frozen` as "retry shortly", and reject
// writes that carry a stale epoch. Time comes from a Clock so tests advance it, never sleep.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>

#include "common/status.h"
#include "routing/clock.h"
#include "routing/routing_directory.h"

namespace stampmover::routing {

struct RoutingClientOptions {
  // How long a resolved entry (or the absence of one) is served from the cache. A frozen entry
  // is kept at most retry_after, so a retry after the flip sees the new stamp.
  std::chrono::milliseconds cache_ttl{1000};  // Default: 1 s
  // What a frozen tenant's callers are told to wait before retrying.
  std::chrono::milliseconds retry_after{50};  // Default: 50 ms
  // A tenant frozen at the same epoch for longer than this (as this client observed it) was
  // left frozen by a worker that died inside the window: resolve it to its stamp again. The
  // source fence expires on its own within the same bound, so writes succeed there.
  std::chrono::milliseconds frozen_expiry{10000};  // Default: 10 s
};

// Where to send a tenant's reads and writes. Writers carry `epoch` with the write, so the
// receiving side can refuse it once the entry has moved on (checkEpoch).
struct Route {
  std::string stamp;
  Epoch epoch = 0;
  RouteState state = RouteState::kActive;   // active or dual_write (frozen resolves to Retry)
  std::optional<std::string> shadow_stamp;  // set in dual_write: kept exact by the reverse stream
};

// The tenant is frozen for a cutover: send nothing now; resolve again after `after`.
struct Retry {
  std::chrono::milliseconds after{0};
  Epoch epoch = 0;  // the frozen entry's epoch
};

using Resolution = std::variant<Route, Retry>;

// How fresh the entry that checkEpoch() judges against must be.
enum class Consistency {
  kCached,  // the cached entry (at most cache_ttl old); refreshed when the write is ahead of it
  kLatest,  // read from the directory now (one round trip): for writes that must not race a flip
};

// Judges a write for `current.tenant` that carries `epoch`, arriving at `at_stamp` (empty: do
// not check the stamp). Pure. Errors: kRefused when the epoch is older than current (stale:
// re-resolve and resend), newer than current (never issued: a bug or a stale `current`), or
// the stamp is not the one serving the tenant; kRetryable when the entry is frozen (retry
// after `retry_after`). OK means the write may be applied.
common::Status checkWriteEpoch(const RouteEntry& current, Epoch epoch, std::string_view at_stamp,
                               std::chrono::milliseconds retry_after);

// Thread-safe: every method may be called from any thread. The cache is guarded by a mutex
// that is never held across a directory round trip; round trips themselves are serialised by
// the directory (one connection for PgRoutingDirectory).
class RoutingClient {
 public:
  // Reads the routing directory in the control-plane PostgreSQL at `dsn` (connected on first
  // use, reconnected after a loss; the DSN may hold a password and is never logged). Does not
  // create the directory. `clock` must outlive the client.
  RoutingClient(std::string dsn, RoutingClientOptions options, Clock& clock);
  // Reads `directory`, which must outlive the client (tests, the orchestrator's own directory).
  RoutingClient(RoutingDirectory& directory, RoutingClientOptions options, Clock& clock);

  // The tenant's route, from the cache when it is younger than cache_ttl. A frozen entry
  // yields Retry{retry_after}: callers wait and resolve again (it is cached at most
  // retry_after). Errors: kRefused when the tenant has no entry (also cached for cache_ttl) or
  // the directory does not exist; kRetryable when the control plane is unreachable (nothing
  // is cached: the next call asks again).
  common::Result<Resolution> resolve(const std::string& tenant);

  // Drops the tenant's cached entry: the next resolve() reads the directory. Call it when a
  // stamp refuses a write as fenced or stale.
  void invalidate(const std::string& tenant);
  // Drops every cached entry.
  void invalidateAll();

  // For writers and the stamps that receive writes: refuses a write for `tenant` that carries
  // `epoch` unless that epoch is current (see checkWriteEpoch for the error classes). With
  // Consistency::kCached a write carrying an epoch newer than the cache refreshes it first,
  // and a stale epoch is refused without a round trip (epochs only grow). `at_stamp`, when not
  // empty, must be the stamp serving the tenant. Errors as resolve() as well.
  common::Status checkEpoch(const std::string& tenant, Epoch epoch, std::string_view at_stamp = {},
                            Consistency consistency = Consistency::kCached);

  const RoutingClientOptions& options() const { return options_; }

 private:
  struct Slot {
    std::optional<RouteEntry> entry;  // nullopt: the tenant has no entry
    Clock::TimePoint expires;
  };
  // The tenant's entry from the cache, or from the directory when absent, expired or `fresh`.
  common::Result<std::optional<RouteEntry>> lookup(const std::string& tenant, bool fresh);

  std::unique_ptr<RoutingDirectory> owned_;  // set by the DSN constructor
  RoutingDirectory* directory_;
  RoutingClientOptions options_;
  Clock& clock_;
  std::mutex mu_;
  std::unordered_map<std::string, Slot> cache_;  // guarded by mu_
  uint64_t generation_ = 0;  // guarded by mu_: bumped by invalidate; older fetches not cached
  // First time this client saw each tenant frozen at an epoch. Guarded by mu_.
  std::unordered_map<std::string, std::pair<Epoch, Clock::TimePoint>> frozen_since_;
};

}  // namespace stampmover::routing
