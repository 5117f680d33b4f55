// Subcommands of the stampmover binary that need more than wiring (the demo).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
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

// Which recorded tenant key an operator's `--tenant` names, for commands that have no source
// stamp to canonicalize it on (cutover, rollback, finalize, status, routes). In order: the
// migration records of `state_dir` (they keep the tenant columns' types: exact); the key
// verbatim if `recorded` has it; else the integer or uuid canonical form of `raw` (leading
// zeros, '+', upper case) if `recorded` has exactly one of them — taken with a note on stderr,
// or, when `exact_only` (commands that act), refused with the key to pass instead, since a text
// tenant column would make them different tenants. Returns `raw` when nothing matched (the
// caller reports the missing tenant). `where` names what `recorded` looks in, for messages.
using TenantLookup = std::function<stampmover::common::Result<bool>(const std::string& key)>;
stampmover::common::Result<std::string> resolveTenantArg(const std::string& raw,
                                                         const TenantLookup& recorded,
                                                         const std::string& state_dir,
                                                         bool exact_only,
                                                         const std::string& where);

struct RoutesArgs {
  std::string tenant;             // Default: "" (every tenant)
  std::string state_dir;          // Default: "" (records that help read --tenant exactly)
  std::string control_plane_dsn;  // Default: "" (libpq DSN of the control-plane database)
  std::string control_plane;      // Default: "" (a stamp of the stamps file, instead of the DSN)
  std::string config_path;        // Default: "" (the stamps file; needed with control_plane)
};

// `stampmover routes`: prints the routing directory (tenant, stamp, epoch, state, shadow,
// updated_at) to stdout. Read-only. Errors: kRefused for bad arguments, a tenant without an
// entry, or a database without a routing directory; kRetryable when the control plane is
// unreachable. The caller maps the class to the exit code.
stampmover::common::Status runRoutes(const RoutesArgs& args);

// `stampmover verify`: its own options (main registers the endpoint options beside them) and
// the run. See app/verify_command.cc.
namespace CLI {
class App;
}
namespace stampmover::orch {
struct CopyJobOptions;
}

struct VerifyArgs {
  uint32_t jobs = 4;               // Default: 4 concurrent queries per server
  uint64_t chunk_rows = 10'000;    // Default: 10000 rows per chunk
  std::string report;              // Default: none (no JSON report file)
  bool live = false;               // Default: false
  double live_wait_s = 60;         // Default: 60 s for the applier to pass a position
  uint32_t live_rounds = 6;        // Default: 6 re-reads of a differing page
  bool no_foreign = false;         // Default: false; deprecated, no effect
  std::string other_tenants = "ignore";  // Default: ignore (judge this tenant only)
  bool restart = false;            // Default: false (resume an interrupted verify)
  std::string progress = "auto";   // Default: auto (bars on a terminal)
  std::string dead_letter;         // Default: none (no dead-letter file checked)
};

// Adds verify's own options to `cmd`.
void addVerifyOptions(CLI::App* cmd, VerifyArgs& args);

// Verifies the tenant between base.source and base.destination (tenant, tenant columns and
// state dir from `base`), prints the report, writes --report. Returns the exit code: 0
// identical, 1 differences, 2 could not verify (refused or internal: the message says why),
// 3 retryable (server lost, applier not advancing, rows not settled under load), 130
// interrupted.
int runVerifyCommand(const VerifyArgs& args, const stampmover::orch::CopyJobOptions& base,
                     const std::atomic<bool>& cancel);

// `stampmover cutover|rollback|finalize`: a request to the worker migrating the tenant.
struct OperatorArgs {
  std::string action;             // cutover, rollback, finalize, finalize_purge
  std::string tenant;             // as typed; resolved with resolveTenantArg()
  std::string state_dir;          // Default: "" (records that help read --tenant exactly)
  std::string control_plane_dsn;
  int wait_seconds = 60;          // Default: 60 s for the worker to act
};
stampmover::common::Status runOperatorRequest(const OperatorArgs& args);
// Prints the control plane's migrations (every tenant, or one).
stampmover::common::Status runBoardStatus(const std::string& control_plane_dsn, const std::string& tenant,
                                          const std::string& state_dir);
