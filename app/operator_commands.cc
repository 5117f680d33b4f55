// `stampmover cutover|rollback|finalize`: ask the worker running a tenant's migration (through
// the control plane's migrations table) to act, then wait for it to report the outcome.
#include <chrono>
#include <cstdio>
#include <thread>

#include "app/commands.h"
#include "orchestrator/control_plane.h"

using stampmover::common::Result;
using stampmover::common::Status;

namespace {

// Phases that end each request.
bool settled(const std::string& action, const std::string& phase) {
  if (action == "cutover") return phase == "dual_write" || phase == "rolled_back" || phase == "finalized";
  if (action == "rollback") return phase == "rolled_back";
  return phase == "finalized";  // finalize, finalize_purge
}

}  // namespace

Status runOperatorRequest(const OperatorArgs& args) {
  if (args.control_plane_dsn.empty()) {
    return Status::refused("pass --control-plane-dsn (or $STAMPMOVER_CONTROL_PLANE_DSN)");
  }
  SM_ASSIGN_OR_RETURN(auto board, stampmover::orch::MigrationBoard::open(args.control_plane_dsn));
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

Status runBoardStatus(const std::string& control_plane_dsn, const std::string& tenant) {
  SM_ASSIGN_OR_RETURN(auto board, stampmover::orch::MigrationBoard::open(control_plane_dsn));
  SM_ASSIGN_OR_RETURN(auto rows, board.list());
  std::vector<stampmover::orch::MigrationRow> shown;
  for (auto& r : rows) {
    if (tenant.empty() || r.tenant == tenant) shown.push_back(r);
  }
  std::fputs(stampmover::orch::formatMigrationRows(shown).c_str(), stdout);
  return Status::ok();
}
