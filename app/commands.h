// Subcommands of the stampmover binary that need more than wiring (the demo).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "common/status.h"

struct DemoArgs {
  uint64_t tenant_items = 200'000;  // Default: 200000 rows in the largest table
  uint32_t jobs = 0;                // Default: 0 (auto)
  uint32_t writer_seconds = 10;     // Default: 10 s of concurrent writes during the migration
};

// Starts two local stamps, seeds, copies tenant 42, checks the copy independently, prints the
// report. Returns the process exit code.
int runDemo(const DemoArgs& args, const std::atomic<bool>& cancel);

struct RoutesArgs {
  std::string tenant;             // Default: "" (every tenant)
  std::string control_plane_dsn;  // Default: "" (libpq DSN of the control-plane database)
  std::string control_plane;      // Default: "" (a stamp of the stamps file, instead of the DSN)
  std::string config_path;        // Default: "" (the stamps file; needed with control_plane)
};

// `stampmover routes`: prints the routing directory (tenant, stamp, epoch, state, shadow,
// updated_at) to stdout. Read-only. Errors: kRefused for bad arguments, a tenant without an
// entry, or a database without a routing directory; kRetryable when the control plane is
// unreachable. The caller maps the class to the exit code.
stampmover::common::Status runRoutes(const RoutesArgs& args);

// `stampmover cutover|rollback|finalize`: a request to the worker migrating the tenant.
struct OperatorArgs {
  std::string action;             // cutover, rollback, finalize, finalize_purge
  std::string tenant;
  std::string control_plane_dsn;
  int wait_seconds = 60;          // Default: 60 s for the worker to act
};
stampmover::common::Status runOperatorRequest(const OperatorArgs& args);
// Prints the control plane's migrations (every tenant, or one).
stampmover::common::Status runBoardStatus(const std::string& control_plane_dsn, const std::string& tenant);
