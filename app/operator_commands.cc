// `stampmover cutover|rollback|finalize`: ask the worker running a tenant's migration (through
// the control plane's migrations table) to act, then wait for it to report the outcome.
#include <chrono>
#include <cstdio>
#include <thread>

#include "app/commands.h"
#include "common/tenant_key.h"
#include "orchestrator/control_plane.h"
#include "orchestrator/copy_job.h"
#include "orchestrator/ledger.h"

using stampmover::common::Result;
using stampmover::common::Status;

namespace {

// Phases that end each request.
bool settled(const std::string& action, const std::string& phase) {
  // "aborted": rolled back before the flip (orchestrator/phase.h).
  if (action == "cutover") {
    return phase == "dual_write" || phase == "rolled_back" || phase == "finalized" ||
           phase == "aborted";
  }
  if (action == "rollback") return phase == "rolled_back" || phase == "aborted";
  return phase == "finalized";  // finalize, finalize_purge
}

}  // namespace

Result<std::string> resolveTenantArg(const std::string& raw, const TenantLookup& recorded,
                                     const std::string& state_dir, bool exact_only,
                                     const std::string& where) {
  namespace common = stampmover::common;
  SM_ASSIGN_OR_RETURN(auto from_state, stampmover::orch::tenantKeysFromState(state_dir, raw));
  if (from_state.size() > 1) {
    std::string all;
    for (const auto& k : from_state) all += (all.empty() ? "" : ", ") + k.text();
    return Status::refused("tenant key '" + raw + "' names several migrations in state directory " +
                           state_dir + " (" + all + "); pass one of them exactly");
  }
  if (from_state.size() == 1) return from_state.front().text();
  SM_ASSIGN_OR_RETURN(bool verbatim, recorded(raw));
  if (verbatim) return raw;
  // Without the column's type only these two rewrites are candidates; which one (if any) is
  // the same tenant depends on the type, which nothing here records.
  std::vector<std::string> found;
  for (auto kind : {common::TenantKeyKind::kInteger, common::TenantKeyKind::kUuid}) {
    auto canon = common::canonicalTenantTextOffline(raw, kind);
    if (!canon || *canon == raw) continue;
    SM_ASSIGN_OR_RETURN(bool has, recorded(*canon));
    if (has) found.push_back(*canon);
  }
  if (found.empty()) return raw;
  if (found.size() == 1 && !exact_only) {
    std::fprintf(stderr, "note: tenant '%s' read as '%s', the form recorded in %s\n", raw.c_str(),
                 found.front().c_str(), where.c_str());
    return found.front();
  }
  return Status::refused("tenant '" + raw + "' is not recorded in " + where + ", but '" +
                         found.front() + "' is (the same tenant if the tenant column is " +
                         (common::canonicalTenantTextOffline(raw, common::TenantKeyKind::kInteger)
                              ? "an integer" : "a uuid") +
                         "); pass --tenant " + found.front() +
                         " (or --state-dir of the worker, whose records tell)");
}

Status runOperatorRequest(const OperatorArgs& raw_args) {
  if (raw_args.control_plane_dsn.empty()) {
    return Status::refused("pass --control-plane-dsn (or $STAMPMOVER_CONTROL_PLANE_DSN)");
  }
  SM_ASSIGN_OR_RETURN(auto board, stampmover::orch::MigrationBoard::open(raw_args.control_plane_dsn));
  OperatorArgs args = raw_args;
  SM_ASSIGN_OR_RETURN(
      args.tenant,
      resolveTenantArg(
          raw_args.tenant,
          [&board](const std::string& key) -> Result<bool> {
            SM_ASSIGN_OR_RETURN(auto r, board.get(key));
            return r.has_value();
          },
          raw_args.state_dir, true, "the control plane's migrations"));
  SM_ASSIGN_OR_RETURN(auto row, board.get(args.tenant));
  if (!row) {
    return Status::refused("no migration of tenant " + args.tenant +
                           " is registered in the control plane; start it with `stampmover migrate "
                           "--cutover manual --control-plane-dsn ...`");
  }
  if (row->age_seconds > 30) {
    return Status::refused("the worker migrating tenant " + args.tenant + " has not reported for " +
                           std::to_string(static_cast<int>(row->age_seconds)) +
                           " s (phase " + row->phase + "); restart `stampmover migrate` for it first");
  }
  if (settled(args.action, row->phase)) {
    std::printf("tenant %s is already %s\n", args.tenant.c_str(), row->phase.c_str());
    return Status::ok();
  }
  const std::string last_before = row->last_cutover;
  const auto window_before = row->last_window_ms;
  SM_RETURN_IF_ERROR(board.request(args.tenant, args.action));
  std::printf("asked the worker to %s tenant %s; waiting up to %d s\n", args.action.c_str(),
              args.tenant.c_str(), args.wait_seconds);
  std::fflush(stdout);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(args.wait_seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    SM_ASSIGN_OR_RETURN(auto now, board.get(args.tenant));
    if (!now) return Status::internal("the migration row of tenant " + args.tenant + " disappeared");
    if (settled(args.action, now->phase)) {
      std::fputs(stampmover::orch::formatMigrationRows({*now}).c_str(), stdout);
      return Status::ok();
    }
    // A cutover attempt that rolled back reports its reason without changing the phase.
    if (args.action == "cutover" && !now->requested_action &&
        (now->last_cutover != last_before || now->last_window_ms != window_before) &&
        now->last_cutover != "flipped") {
      return Status::retryable("cutover of tenant " + args.tenant + " rolled back: " + now->last_cutover);
    }
  }
  return Status::retryable("the worker did not " + args.action + " tenant " + args.tenant + " within " +
                           std::to_string(args.wait_seconds) + " s; see `stampmover status`");
}

Status runBoardStatus(const std::string& control_plane_dsn, const std::string& raw_tenant,
                      const std::string& state_dir) {
  SM_ASSIGN_OR_RETURN(auto board, stampmover::orch::MigrationBoard::open(control_plane_dsn));
  std::string tenant = raw_tenant;
  if (!raw_tenant.empty()) {
    SM_ASSIGN_OR_RETURN(tenant, resolveTenantArg(
                                    raw_tenant,
                                    [&board](const std::string& key) -> Result<bool> {
                                      SM_ASSIGN_OR_RETURN(auto r, board.get(key));
                                      return r.has_value();
                                    },
                                    state_dir, false, "the control plane's migrations"));
  }
  SM_ASSIGN_OR_RETURN(auto rows, board.list());
  std::vector<stampmover::orch::MigrationRow> shown;
  for (auto& r : rows) {
    if (tenant.empty() || r.tenant == tenant) shown.push_back(r);
  }
  std::fputs(stampmover::orch::formatMigrationRows(shown).c_str(), stdout);
  // Each migration's ledger as the worker mirrored it: what it still has on which server.
  if (!shown.empty()) {
    SM_ASSIGN_OR_RETURN(auto cp, stampmover::common::PgConnection::connect(control_plane_dsn,
                                                                           "control plane"));
    for (const auto& r : shown) {
      const std::string id =
          stampmover::mover::migrationId(r.tenant, r.source_stamp, r.destination_stamp);
      SM_ASSIGN_OR_RETURN(auto entries, stampmover::orch::mirroredLedger(cp, id));
      std::printf("ledger of %s: %s\n", id.c_str(),
                  entries.empty() ? "empty" : (std::to_string(entries.size()) + " object(s)").c_str());
      for (const auto& e : entries) {
        std::printf("  %s\n", stampmover::orch::describeLedgerEntry(
                                   e, "source stamp '" + r.source_stamp + "'",
                                   "destination stamp '" + r.destination_stamp + "'")
                                   .c_str());
      }
    }
  }
  return Status::ok();
}
