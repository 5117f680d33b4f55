// Migrations table in the control plane: see control_plane.h.
#include "orchestrator/control_plane.h"

#include <cstdio>

#include "routing/routing_directory.h"

namespace stampmover::orch {

using common::Result;
using common::Status;

namespace {

constexpr const char* kColumns =
    "tenant, source_stamp, destination_stamp, phase, last_window_ms, coalesce(last_cutover, ''), "
    "requested_action, extract(epoch FROM now() - updated_at)";

MigrationRow rowFrom(const common::PgResult& r, int i) {
  MigrationRow m;
  m.tenant = common::cell(r, i, 0);
  m.source_stamp = common::cell(r, i, 1);
  m.destination_stamp = common::cell(r, i, 2);
  m.phase = common::cell(r, i, 3);
  if (!common::cellIsNull(r, i, 4)) m.last_window_ms = std::stod(common::cell(r, i, 4));
  m.last_cutover = common::cell(r, i, 5);
  if (!common::cellIsNull(r, i, 6)) m.requested_action = common::cell(r, i, 6);
  m.age_seconds = std::stod(common::cell(r, i, 7));
  return m;
}

}  // namespace

Result<MigrationBoard> MigrationBoard::open(const std::string& dsn) {
  routing::PgRoutingDirectory dir(dsn);
  SM_RETURN_IF_ERROR(dir.ensureSchema());
  MigrationBoard b;
  SM_ASSIGN_OR_RETURN(b.conn_, common::PgConnection::connect(dsn, "control plane"));
  return b;
}

Status MigrationBoard::report(const std::string& tenant, const std::string& source,
                              const std::string& destination, const std::string& phase,
                              std::optional<double> window_ms, const std::string& last_cutover) {
  common::PgParam w = window_ms ? common::PgParam(std::to_string(*window_ms)) : common::PgParam();
  return conn_
      .query("INSERT INTO stampmover_routing.migrations (tenant, source_stamp, destination_stamp, "
             "phase, last_window_ms, last_cutover, worker) VALUES ($1, $2, $3, $4, $5::float8, "
             "nullif($6, ''), current_setting('application_name')) ON CONFLICT (tenant) DO UPDATE SET "
             "source_stamp = EXCLUDED.source_stamp, destination_stamp = EXCLUDED.destination_stamp, "
             "phase = EXCLUDED.phase, last_window_ms = coalesce(EXCLUDED.last_window_ms, "
             "migrations.last_window_ms), last_cutover = coalesce(EXCLUDED.last_cutover, "
             "migrations.last_cutover), updated_at = now()",
             {tenant, source, destination, phase, w, last_cutover})
      .status();
}

Result<std::optional<std::string>> MigrationBoard::takeRequest(const std::string& tenant) {
  SM_ASSIGN_OR_RETURN(auto r, conn_.query("UPDATE stampmover_routing.migrations m SET "
                                          "requested_action = NULL, updated_at = now() FROM "
                                          "(SELECT requested_action AS a FROM stampmover_routing.migrations "
                                          "WHERE tenant = $1 FOR UPDATE) old WHERE m.tenant = $1 AND "
                                          "m.requested_action IS NOT NULL RETURNING old.a",
                                          {tenant}));
  if (common::rowCount(r) == 0) return std::optional<std::string>();
  return std::optional<std::string>(common::cell(r, 0, 0));
}

Status MigrationBoard::request(const std::string& tenant, const std::string& action) {
  SM_ASSIGN_OR_RETURN(auto r, conn_.query("UPDATE stampmover_routing.migrations SET requested_action = $2, "
                                          "requested_at = now() WHERE tenant = $1",
                                          {tenant, action}));
  if (std::string(PQcmdTuples(r.get())) != "1") {
    return Status::refused("no migration of tenant " + tenant +
                           " is registered in the control plane; start one with "
                           "`stampmover migrate --cutover manual|auto --control-plane-dsn ...`");
  }
  return Status::ok();
}

Result<std::optional<MigrationRow>> MigrationBoard::get(const std::string& tenant) {
  SM_ASSIGN_OR_RETURN(auto r, conn_.query(std::string("SELECT ") + kColumns +
                                              " FROM stampmover_routing.migrations WHERE tenant = $1",
                                          {tenant}));
  if (common::rowCount(r) == 0) return std::optional<MigrationRow>();
  return std::optional<MigrationRow>(rowFrom(r, 0));
}

Result<std::vector<MigrationRow>> MigrationBoard::list() {
  SM_ASSIGN_OR_RETURN(auto r, conn_.query(std::string("SELECT ") + kColumns +
                                          " FROM stampmover_routing.migrations ORDER BY tenant"));
  std::vector<MigrationRow> out;
  for (int i = 0; i < common::rowCount(r); ++i) out.push_back(rowFrom(r, i));
  return out;
}

std::string formatMigrationRows(const std::vector<MigrationRow>& rows) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-12s %-24s %-24s %-12s %12s %-10s %s\n", "TENANT", "FROM", "TO",
                "PHASE", "LAST WINDOW", "REQUEST", "WORKER SEEN");
  out += line;
  for (const auto& m : rows) {
    char window[32] = "-";
    if (m.last_window_ms) std::snprintf(window, sizeof window, "%.1f ms", *m.last_window_ms);
    std::snprintf(line, sizeof line, "%-12s %-24s %-24s %-12s %12s %-10s %.0f s ago\n", m.tenant.c_str(),
                  m.source_stamp.c_str(), m.destination_stamp.c_str(), m.phase.c_str(), window,
                  m.requested_action.value_or("-").c_str(), m.age_seconds);
    out += line;
  }
  return out;
}

}  // namespace stampmover::orch
