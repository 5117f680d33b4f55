// The routing directory: which stamp serves each tenant, under which epoch and in which state
// (active, frozen for a cutover, dual_write during the soak). Every change is a compare-and-set
// on the epoch, which is also the fencing token a stale worker cannot get past. The interface
// is the seam; PgRoutingDirectory keeps it in a control-plane PostgreSQL.
#pragma once

#include <chrono>
#include <map>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/pg.h"
#include "common/status.h"

namespace stampmover::routing {

// Epochs start at 1 (put) and grow by exactly 1 on every successful compareAndSet.
using Epoch = uint64_t;

enum class RouteState {
  kActive,     // the stamp serves reads and writes
  kFrozen,     // a cutover is fencing writes: callers retry shortly
  kDualWrite,  // the stamp serves; the shadow stamp is kept exact by the reverse stream
};

// "active", "frozen", "dual_write": the spelling stored in the directory.
const char* routeStateName(RouteState s);
// Parses a stored state name. Errors: kRefused naming the text and the accepted names.
common::Result<RouteState> parseRouteState(std::string_view text);

struct RouteEntry {
  std::string tenant;
  std::string stamp;  // the stamp that serves the tenant
  Epoch epoch = 0;    // fencing token; 0 never occurs in a stored entry
  RouteState state = RouteState::kActive;
  std::optional<std::string> shadow_stamp;  // set in dual_write: the rollback target
  std::string updated_at;                   // UTC, ISO 8601: "2026-01-31T12:00:00.123456Z"

  bool operator==(const RouteEntry&) const = default;
};

// The new content of an entry; the epoch is not part of it (the directory writes epoch+1).
struct RouteChange {
  std::string stamp;
  RouteState state = RouteState::kActive;   // Default: active
  std::optional<std::string> shadow_stamp;  // Default: none
  std::string reason;                       // Default: "" (recorded in the history only)
};

// Checks a change before it is written: a non-empty stamp; dual_write needs a shadow stamp;
// the shadow differs from the stamp. Errors: kRefused naming the tenant and the problem.
common::Status validateRouteChange(const std::string& tenant, const RouteChange& change);

// The kRefused error of a compare-and-set that lost: names the tenant, the expected and the
// actual epoch. Shared by every implementation so callers see one wording.
common::Status staleEpochError(const std::string& tenant, Epoch expected, Epoch actual);

// The routing directory seam. Implementations are thread-safe unless they say otherwise.
class RoutingDirectory {
 public:
  virtual ~RoutingDirectory() = default;

  // Creates the directory or upgrades it to the newest version this binary knows; a no-op when
  // it is current. Safe to run from many workers at once. Errors: kRetryable when the store is
  // unreachable; kRefused when the stored version is newer than this binary knows.
  virtual common::Status ensureSchema() = 0;

  // The tenant's entry, or nullopt when it has none. Errors: kRetryable when the store is
  // unreachable; kRefused when the directory does not exist there (wrong database?).
  virtual common::Result<std::optional<RouteEntry>> get(const std::string& tenant) = 0;

  // Every entry, ordered by tenant. Errors as get().
  virtual common::Result<std::vector<RouteEntry>> list() = 0;

  // Creates an active entry at epoch 1 and returns it. Errors: kRefused when the tenant already
  // has an entry (the message names its stamp and epoch) or the input is empty; otherwise as
  // get().
  virtual common::Result<RouteEntry> put(const std::string& tenant, const std::string& stamp) = 0;

  // Writes `change` at epoch expected_epoch+1 if and only if the stored epoch is
  // expected_epoch, atomically with an append to the history, and returns the new entry.
  // Errors: kRefused when the epoch is stale (staleEpochError: nothing was changed), the
  // tenant has no entry, or the change is invalid (validateRouteChange); kRetryable when the
  // store is unreachable, in which case the outcome is unknown: get() and compare epochs.
  virtual common::Result<RouteEntry> compareAndSet(const std::string& tenant, Epoch expected_epoch,
                                                   const RouteChange& change) = 0;
};

struct PgRoutingDirectoryOptions {
  std::string label = "control plane";  // Default: "control plane" (names it in errors)
  std::chrono::milliseconds statement_timeout{10'000};  // Default: 10 s per statement (0 = none)
};

// The directory in a control-plane PostgreSQL: schema `stampmover_routing` with tables
// `schema_version`, `routes` and the append-only `route_history`, created and upgraded from
// versioned SQL migrations held in this file's .cc, under an advisory lock. Every statement is
// parameterised.
//
// Thread-safe: one connection, opened on first use and reopened after it is lost, shared
// under a mutex (calls are serialised; give each busy thread its own instance for
// parallelism). The DSN may hold a password: it reaches libpq only, errors show it redacted.
class PgRoutingDirectory final : public RoutingDirectory {
 public:
  explicit PgRoutingDirectory(std::string dsn, PgRoutingDirectoryOptions options = {});

  common::Status ensureSchema() override;
  common::Result<std::optional<RouteEntry>> get(const std::string& tenant) override;
  common::Result<std::vector<RouteEntry>> list() override;
  common::Result<RouteEntry> put(const std::string& tenant, const std::string& stamp) override;
  common::Result<RouteEntry> compareAndSet(const std::string& tenant, Epoch expected_epoch,
                                           const RouteChange& change) override;

  // Marks `stamp` draining (put() then refuses new tenants there, naming `note`) or not.
  // Existing tenants, their moves and rollbacks are unaffected. Idempotent. Errors: kRefused
  // when the directory does not exist (ensureSchema first); kRetryable when unreachable.
  common::Status setDraining(const std::string& stamp, bool draining, const std::string& note);
  // Draining stamps and their notes. Errors as get().
  common::Result<std::map<std::string, std::string>> drainingStamps();

  // The stored schema version: 0 when the directory was never created. Errors: kRetryable
  // when the store is unreachable.
  common::Result<int> schemaVersion();

  // The newest schema version this binary knows (and ensureSchema() installs).
  static int latestSchemaVersion();

 private:
  // Returns the open connection, connecting first when there is none. Caller holds mu_.
  common::Result<common::PgConnection*> connection();
  // Refuses, with a message naming the fix, when the routes table does not exist yet.
  // Caller holds mu_.
  common::Status requireDirectory(common::PgConnection& conn);
  // Forgets a connection that failed, so the next call reconnects. Caller holds mu_.
  void dropIfBroken(const common::Status& st);
  // Runs `read` once more on a fresh connection when the first attempt lost its connection
  // (reads are idempotent; a pooled connection may have died while idle).
  template <class Fn>
  auto readWithReconnect(Fn&& read) -> decltype(read(std::declval<common::PgConnection&>()));

  std::string dsn_;
  PgRoutingDirectoryOptions options_;
  std::mutex mu_;
  common::PgConnection conn_;    // guarded by mu_
  bool directory_seen_ = false;  // guarded by mu_: the routes table was found once
};

}  // namespace stampmover::routing
