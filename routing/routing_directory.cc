// The routing directory in a control-plane PostgreSQL (see routing_directory.h): the versioned
// schema migrations, and put / compare-and-set as single statements whose history append
// commits in the same implicit transaction as the change.
#include "routing/routing_directory.h"

#include <charconv>
#include <iterator>
#include <utility>

namespace stampmover::routing {

using common::ErrorClass;
using common::PgConnection;
using common::PgResult;
using common::Result;
using common::Status;

namespace {

// One step of the schema. Applied in order, each at most once, inside the transaction that
// holds the advisory lock; a step is never edited once released: add a new one instead.
struct SchemaMigration {
  int version;
  const char* description;
  const char* sql;
};

constexpr SchemaMigration kMigrations[] = {
    {1, "routes and append-only route_history",
     R"sql(
CREATE TABLE stampmover_routing.routes (
  tenant text PRIMARY KEY,
  stamp text NOT NULL,
  epoch bigint NOT NULL,
  state text NOT NULL CHECK (state IN ('active', 'frozen', 'dual_write')),
  shadow_stamp text,
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- One row per epoch of every tenant (put writes epoch 1): the content an entry had at that
-- epoch, who wrote it and why. The previous content of a change is the row at epoch - 1.
CREATE TABLE stampmover_routing.route_history (
  tenant text NOT NULL,
  epoch bigint NOT NULL,
  stamp text NOT NULL,
  state text NOT NULL CHECK (state IN ('active', 'frozen', 'dual_write')),
  shadow_stamp text,
  reason text NOT NULL DEFAULT '',
  changed_by text NOT NULL DEFAULT session_user,
  application_name text NOT NULL DEFAULT current_setting('application_name'),
  changed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, epoch)
);
CREATE FUNCTION stampmover_routing.route_history_append_only() RETURNS trigger
LANGUAGE plpgsql AS $f$
BEGIN
  RAISE EXCEPTION 'stampmover_routing.route_history is append-only' USING ERRCODE = '55000';
END $f$;
CREATE TRIGGER route_history_append_only BEFORE UPDATE OR DELETE
  ON stampmover_routing.route_history FOR EACH ROW
  EXECUTE FUNCTION stampmover_routing.route_history_append_only();
CREATE TRIGGER route_history_no_truncate BEFORE TRUNCATE
  ON stampmover_routing.route_history FOR EACH STATEMENT
  EXECUTE FUNCTION stampmover_routing.route_history_append_only();
)sql"},
    {2, "one row per migration: visibility and operator requests",
     R"sql(
-- Written by the worker that runs the migration (phase, last cutover window, liveness);
-- `requested_action` is how `stampmover cutover|rollback|finalize` ask that worker to act.
CREATE TABLE stampmover_routing.migrations (
  tenant text PRIMARY KEY,
  source_stamp text NOT NULL,
  destination_stamp text NOT NULL,
  phase text NOT NULL,
  last_window_ms double precision,
  last_cutover text,
  requested_action text CHECK (requested_action IN ('cutover', 'rollback', 'finalize', 'finalize_purge')),
  requested_at timestamptz,
  worker text NOT NULL DEFAULT '',
  updated_at timestamptz NOT NULL DEFAULT now()
);
)sql"},
    {3, "stamps that take no new tenants (draining)",
     R"sql(
-- A stamp listed here with draining = true is being emptied (`stampmover drain`): put() refuses
-- to place a new tenant on it. Moves and rollbacks of existing tenants are not affected.
CREATE TABLE stampmover_routing.stamps (
  stamp text PRIMARY KEY,
  draining boolean NOT NULL DEFAULT false,
  note text NOT NULL DEFAULT '',
  updated_at timestamptz NOT NULL DEFAULT now()
);
)sql"},
};

constexpr int kLatestVersion = kMigrations[std::size(kMigrations) - 1].version;

// Advisory lock serialising schema upgrades across workers: "sm_route" as a bigint.
constexpr int64_t kSchemaLockKey = 0x736d5f726f757465;

// Columns of a RouteEntry, in the order entryFromRow() reads them.
constexpr const char* kEntryColumns =
    "tenant, stamp, epoch, state, shadow_stamp, "
    "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

Result<Epoch> parseEpoch(const std::string& text) {
  Epoch v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return Status::internal("routing directory holds an invalid epoch '" + text + "'");
  }
  return v;
}

Result<int> parseVersion(const std::optional<std::string>& text) {
  if (!text) return 0;
  int v = 0;
  auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc() || ptr != text->data() + text->size() || v < 0) {
    return Status::internal("routing directory holds an invalid schema version '" + *text + "'");
  }
  return v;
}

Result<RouteEntry> entryFromRow(const PgResult& r, int row) {
  RouteEntry e;
  e.tenant = common::cell(r, row, 0);
  e.stamp = common::cell(r, row, 1);
  SM_ASSIGN_OR_RETURN(e.epoch, parseEpoch(common::cell(r, row, 2)));
  auto state = parseRouteState(common::cell(r, row, 3));
  if (!state) {
    return Status::internal("routing entry of tenant " + e.tenant + ": " +
                            state.status().message());
  }
  e.state = *state;
  if (!common::cellIsNull(r, row, 4)) e.shadow_stamp = common::cell(r, row, 4);
  e.updated_at = common::cell(r, row, 5);
  return e;
}

}  // namespace

const char* routeStateName(RouteState s) {
  switch (s) {
    case RouteState::kActive:
      return "active";
    case RouteState::kFrozen:
      return "frozen";
    case RouteState::kDualWrite:
      return "dual_write";
  }
  return "unknown";
}

Result<RouteState> parseRouteState(std::string_view text) {
  if (text == "active") return RouteState::kActive;
  if (text == "frozen") return RouteState::kFrozen;
  if (text == "dual_write") return RouteState::kDualWrite;
  return Status::refused("unknown routing state '" + std::string(text) +
                         "': expected active, frozen or dual_write");
}

Status validateRouteChange(const std::string& tenant, const RouteChange& change) {
  const std::string what = "routing change for tenant " + tenant + ": ";
  if (tenant.empty()) return Status::refused("routing change: the tenant is empty");
  if (change.stamp.empty()) return Status::refused(what + "the stamp is empty");
  if (change.shadow_stamp && change.shadow_stamp->empty()) {
    return Status::refused(what + "the shadow stamp is empty (leave it unset for none)");
  }
  if (change.state == RouteState::kDualWrite && !change.shadow_stamp) {
    return Status::refused(what +
                           "dual_write needs a shadow stamp (the stamp kept exact for rollback)");
  }
  if (change.shadow_stamp && *change.shadow_stamp == change.stamp) {
    return Status::refused(what + "the shadow stamp equals the stamp (" + change.stamp + ")");
  }
  return Status::ok();
}

Status staleEpochError(const std::string& tenant, Epoch expected, Epoch actual) {
  return Status::refused("routing entry of tenant " + tenant +
                         " changed underneath: expected epoch " + std::to_string(expected) +
                         ", actual epoch " + std::to_string(actual) +
                         "; another worker owns this tenant now (re-read the entry before acting)");
}

PgRoutingDirectory::PgRoutingDirectory(std::string dsn, PgRoutingDirectoryOptions options)
    : dsn_(std::move(dsn)), options_(std::move(options)) {}

int PgRoutingDirectory::latestSchemaVersion() { return kLatestVersion; }

Result<PgConnection*> PgRoutingDirectory::connection() {
  if (conn_.valid() && PQstatus(conn_.raw()) == CONNECTION_OK) return &conn_;
  conn_ = PgConnection();
  SM_ASSIGN_OR_RETURN(PgConnection c, PgConnection::connect(dsn_, options_.label));
  if (options_.statement_timeout.count() > 0) {
    auto set = c.query("SELECT set_config('statement_timeout', $1, false)",
                       {std::to_string(options_.statement_timeout.count()) + "ms"});
    if (!set) return set.status();
  }
  conn_ = std::move(c);
  return &conn_;
}

void PgRoutingDirectory::dropIfBroken(const Status& st) {
  if (!st.isOk() && conn_.valid() && PQstatus(conn_.raw()) != CONNECTION_OK) {
    conn_ = PgConnection();
  }
}

template <class Fn>
auto PgRoutingDirectory::readWithReconnect(Fn&& read)
    -> decltype(read(std::declval<PgConnection&>())) {
  for (int attempt = 1;; ++attempt) {
    auto conn = connection();
    if (!conn) return conn.status();
    auto r = read(**conn);
    if (r.isOk()) return r;
    bool lost = conn_.valid() && PQstatus(conn_.raw()) != CONNECTION_OK;
    dropIfBroken(r.status());
    if (!lost || attempt >= 2) return r;
  }
}

Status PgRoutingDirectory::requireDirectory(PgConnection& conn) {
  if (directory_seen_) return Status::ok();
  SM_ASSIGN_OR_RETURN(
      auto present, conn.queryValue("SELECT to_regclass('stampmover_routing.routes') IS NOT NULL"));
  if (!present || *present != "t") {
    return Status::refused(
        options_.label + " (database " + conn.database() +
        ") has no routing directory (schema stampmover_routing is absent): check that the DSN "
        "names the control-plane database; the directory is created by the first migration "
        "that uses it");
  }
  directory_seen_ = true;
  return Status::ok();
}

Result<int> PgRoutingDirectory::schemaVersion() {
  std::lock_guard lock(mu_);
  return readWithReconnect([&](PgConnection& c) -> Result<int> {
    SM_ASSIGN_OR_RETURN(
        auto present,
        c.queryValue("SELECT to_regclass('stampmover_routing.schema_version') IS NOT NULL"));
    if (!present || *present != "t") return 0;
    SM_ASSIGN_OR_RETURN(
        auto v,
        c.queryValue("SELECT coalesce(max(version), 0) FROM stampmover_routing.schema_version"));
    return parseVersion(v);
  });
}

Status PgRoutingDirectory::ensureSchema() {
  // Fast path without locks or DDL: the common case, and all a least-privileged router needs.
  SM_ASSIGN_OR_RETURN(int current, schemaVersion());
  if (current == kLatestVersion) return Status::ok();
  if (current > kLatestVersion) {
    return Status::refused(options_.label + ": routing directory schema is at version " +
                           std::to_string(current) + ", newer than this stampmover knows (" +
                           std::to_string(kLatestVersion) + "): upgrade stampmover");
  }

  std::lock_guard lock(mu_);
  SM_ASSIGN_OR_RETURN(PgConnection * conn, connection());
  auto upgrade = [&]() -> Status {
    // Notices ("schema ... already exists, skipping") would go to stderr through libpq.
    SM_RETURN_IF_ERROR(conn->exec("BEGIN; SET LOCAL client_min_messages = warning"));
    // Held to COMMIT: a second worker waits here, then finds the schema current.
    auto locked =
        conn->query("SELECT pg_advisory_xact_lock($1::bigint)", {std::to_string(kSchemaLockKey)});
    if (!locked) return locked.status();
    SM_RETURN_IF_ERROR(
        conn->exec("CREATE SCHEMA IF NOT EXISTS stampmover_routing; "
                   "CREATE TABLE IF NOT EXISTS stampmover_routing.schema_version ("
                   "version integer PRIMARY KEY, description text NOT NULL, "
                   "applied_at timestamptz NOT NULL DEFAULT now())"));
    SM_ASSIGN_OR_RETURN(auto v, conn->queryValue("SELECT coalesce(max(version), 0) FROM "
                                                 "stampmover_routing.schema_version"));
    SM_ASSIGN_OR_RETURN(int at, parseVersion(v));
    if (at > kLatestVersion) {
      return Status::refused(options_.label + ": routing directory schema is at version " +
                             std::to_string(at) + ", newer than this stampmover knows (" +
                             std::to_string(kLatestVersion) + "): upgrade stampmover");
    }
    for (const auto& m : kMigrations) {
      if (m.version <= at) continue;
      Status st = conn->exec(m.sql);
      if (!st) return st.withContext("routing schema migration " + std::to_string(m.version));
      auto rec = conn->query(
          "INSERT INTO stampmover_routing.schema_version (version, description) VALUES ($1, $2)",
          {std::to_string(m.version), std::string(m.description)});
      if (!rec) return rec.status();
    }
    return conn->exec("COMMIT");
  };
  Status st = upgrade();
  if (!st) {
    // Ends the aborted transaction; when the connection is gone there is nothing to end, and
    // the error that matters is `st`.
    conn->exec("ROLLBACK").ignore();
    dropIfBroken(st);
    return st.withContext(options_.label + ": create or upgrade the routing directory");
  }
  return Status::ok();
}

Result<std::optional<RouteEntry>> PgRoutingDirectory::get(const std::string& tenant) {
  std::lock_guard lock(mu_);
  return readWithReconnect([&](PgConnection& c) -> Result<std::optional<RouteEntry>> {
    SM_RETURN_IF_ERROR(requireDirectory(c));
    SM_ASSIGN_OR_RETURN(PgResult r, c.query(std::string("SELECT ") + kEntryColumns +
                                                " FROM stampmover_routing.routes WHERE tenant = $1",
                                            {tenant}));
    if (common::rowCount(r) == 0) return std::optional<RouteEntry>();
    SM_ASSIGN_OR_RETURN(RouteEntry e, entryFromRow(r, 0));
    return std::optional<RouteEntry>(std::move(e));
  });
}

Result<std::vector<RouteEntry>> PgRoutingDirectory::list() {
  std::lock_guard lock(mu_);
  return readWithReconnect([&](PgConnection& c) -> Result<std::vector<RouteEntry>> {
    SM_RETURN_IF_ERROR(requireDirectory(c));
    SM_ASSIGN_OR_RETURN(PgResult r, c.query(std::string("SELECT ") + kEntryColumns +
                                            " FROM stampmover_routing.routes ORDER BY tenant"));
    std::vector<RouteEntry> out;
    out.reserve(common::rowCount(r));
    for (int i = 0; i < common::rowCount(r); ++i) {
      SM_ASSIGN_OR_RETURN(RouteEntry e, entryFromRow(r, i));
      out.push_back(std::move(e));
    }
    return out;
  });
}

Result<RouteEntry> PgRoutingDirectory::put(const std::string& tenant, const std::string& stamp) {
  SM_RETURN_IF_ERROR(validateRouteChange(tenant, RouteChange{stamp, RouteState::kActive, {}, {}}));
  std::lock_guard lock(mu_);
  SM_ASSIGN_OR_RETURN(PgConnection * conn, connection());
  auto attempt = [&]() -> Result<RouteEntry> {
    SM_RETURN_IF_ERROR(requireDirectory(*conn));
    // A directory not yet upgraded to version 3 has no stamps table (and so no draining stamp).
    SM_ASSIGN_OR_RETURN(auto has_stamps,
                        conn->queryValue("SELECT to_regclass('stampmover_routing.stamps') IS NOT NULL"));
    const bool stamps_table = has_stamps && *has_stamps == "t";
    const std::string draining_guard =
        stamps_table ? "NOT EXISTS (SELECT 1 FROM stampmover_routing.stamps WHERE stamp = $2::text "
                       "AND draining)"
                     : "true";
    // One statement, so the entry and its history row commit together; ON CONFLICT makes a
    // concurrent put of the same tenant wait for the first and then insert nothing.
    SM_ASSIGN_OR_RETURN(
        PgResult r,
        conn->query(
            std::string("WITH ins AS ("
                        " INSERT INTO stampmover_routing.routes (tenant, stamp, epoch, state)"
                        " SELECT $1::text, $2::text, 1, 'active' WHERE " +
                        draining_guard + " ON CONFLICT (tenant) DO NOTHING"
                        " RETURNING *), "
                        "hist AS ("
                        " INSERT INTO stampmover_routing.route_history"
                        " (tenant, epoch, stamp, state, shadow_stamp, reason, changed_at)"
                        " SELECT tenant, epoch, stamp, state, shadow_stamp, 'created', updated_at"
                        " FROM ins) "
                        "SELECT ") +
                kEntryColumns + " FROM ins",
            {tenant, stamp}));
    if (common::rowCount(r) == 1) return entryFromRow(r, 0);
    SM_ASSIGN_OR_RETURN(
        PgResult cur,
        conn->query("SELECT stamp, epoch FROM stampmover_routing.routes WHERE tenant = $1",
                    {tenant}));
    if (common::rowCount(cur) == 0 && stamps_table) {
      SM_ASSIGN_OR_RETURN(auto draining,
                          conn->queryValue("SELECT note FROM stampmover_routing.stamps "
                                           "WHERE stamp = $1 AND draining",
                                           {stamp}));
      if (draining) {
        return Status::refused("stamp '" + stamp + "' is draining and takes no new tenants (" +
                               *draining + "): place tenant " + tenant + " on another stamp");
      }
    }
    if (common::rowCount(cur) == 0) {
      return Status::internal("put of tenant " + tenant +
                              " inserted nothing, yet no entry exists; retry");
    }
    return Status::refused("tenant " + tenant + " already has a routing entry (stamp " +
                           common::cell(cur, 0, 0) + ", epoch " + common::cell(cur, 0, 1) +
                           "): change it with a compare-and-set on its epoch");
  };
  auto r = attempt();
  if (!r) dropIfBroken(r.status());
  return r;
}

Result<RouteEntry> PgRoutingDirectory::compareAndSet(const std::string& tenant,
                                                     Epoch expected_epoch,
                                                     const RouteChange& change) {
  SM_RETURN_IF_ERROR(validateRouteChange(tenant, change));
  std::lock_guard lock(mu_);
  SM_ASSIGN_OR_RETURN(PgConnection * conn, connection());
  auto attempt = [&]() -> Result<RouteEntry> {
    SM_RETURN_IF_ERROR(requireDirectory(*conn));
    // Under READ COMMITTED a concurrent CAS on the same row waits for the row lock and then
    // re-checks `epoch = $2` against the committed version: exactly one of them matches.
    SM_ASSIGN_OR_RETURN(
        PgResult r,
        conn->query(
            std::string("WITH upd AS ("
                        " UPDATE stampmover_routing.routes"
                        " SET stamp = $3::text, state = $4::text, shadow_stamp = $5::text,"
                        " epoch = epoch + 1, updated_at = now()"
                        " WHERE tenant = $1::text AND epoch = $2::bigint"
                        " RETURNING *), "
                        "hist AS ("
                        " INSERT INTO stampmover_routing.route_history"
                        " (tenant, epoch, stamp, state, shadow_stamp, reason, changed_at)"
                        " SELECT tenant, epoch, stamp, state, shadow_stamp, $6::text, updated_at"
                        " FROM upd) "
                        "SELECT ") +
                kEntryColumns + " FROM upd",
            {tenant, std::to_string(expected_epoch), change.stamp, routeStateName(change.state),
             change.shadow_stamp, change.reason}));
    if (common::rowCount(r) == 1) return entryFromRow(r, 0);
    SM_ASSIGN_OR_RETURN(auto actual, conn->queryValue("SELECT epoch FROM stampmover_routing.routes "
                                                      "WHERE tenant = $1",
                                                      {tenant}));
    if (!actual) {
      return Status::refused("tenant " + tenant +
                             " has no routing entry: create it first (put), then compare-and-set");
    }
    SM_ASSIGN_OR_RETURN(Epoch now_at, parseEpoch(*actual));
    return staleEpochError(tenant, expected_epoch, now_at);
  };
  auto r = attempt();
  if (!r) dropIfBroken(r.status());
  return r;
}

Status PgRoutingDirectory::setDraining(const std::string& stamp, bool draining,
                                       const std::string& note) {
  if (stamp.empty()) return Status::refused("setDraining needs a stamp name");
  std::lock_guard lock(mu_);
  SM_ASSIGN_OR_RETURN(PgConnection * conn, connection());
  auto r = [&]() -> Status {
    SM_RETURN_IF_ERROR(requireDirectory(*conn));
    return conn
        ->query("INSERT INTO stampmover_routing.stamps (stamp, draining, note) VALUES ($1, $2, $3) "
                "ON CONFLICT (stamp) DO UPDATE SET draining = EXCLUDED.draining, "
                "note = EXCLUDED.note, updated_at = now()",
                {stamp, std::string(draining ? "t" : "f"), note})
        .status();
  }();
  if (!r) dropIfBroken(r);
  return r;
}

Result<std::map<std::string, std::string>> PgRoutingDirectory::drainingStamps() {
  std::lock_guard lock(mu_);
  return readWithReconnect([&](PgConnection& c) -> Result<std::map<std::string, std::string>> {
    SM_RETURN_IF_ERROR(requireDirectory(c));
    SM_ASSIGN_OR_RETURN(PgResult r, c.query("SELECT stamp, note FROM stampmover_routing.stamps "
                                            "WHERE draining ORDER BY stamp"));
    std::map<std::string, std::string> out;
    for (int i = 0; i < common::rowCount(r); ++i) {
      out[common::cell(r, i, 0)] = common::cell(r, i, 1);
    }
    return out;
  });
}

}  // namespace stampmover::routing
