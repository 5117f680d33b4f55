// The verify job: discovers the tenant's tables on the source catalog, runs the verifier
// (verify/verifier.h) with progress bars or log lines, keeps its completed work in a RocksDB
// state directory so that an interrupted verify resumes, and formats the report (text, JSON).
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "common/status.h"
#include "mover/catalog.h"
#include "orchestrator/copy_job.h"
#include "verify/verifier.h"

namespace stampmover::orch {

struct VerifyJobOptions {
  std::string tenant;  // Default: none (required)
  Endpoint source;
  Endpoint destination;
  mover::TenantColumnPolicy tenant_columns;  // Default: tenant_id, no overrides
  std::string state_dir;                     // Default: "" = no resume state; else the worker's
  verify::VerifyOptions verify;              // jobs, chunk rows, live...; tenant/origin filled here
  std::string report_path;                   // Default: "" = no JSON report file
  bool progress_terminal = false;            // Default: false (log lines instead of bars)
  bool restart = false;                      // Default: false (resume an interrupted verify)
};

struct VerifyJobResult {
  verify::VerifyReport report;
  bool resumed = false;    // some tables' results came from an interrupted earlier run
  std::string state_path;  // where resume state lives ("" without a state dir)
};

// Runs the verification. Differences are in the result, not an error. Errors keep their class:
// kRefused (no tenant tables, a table/column/type differs, bad options, state dir unusable),
// kRetryable (a server unreachable or lost; live mode: the applier does not advance),
// kCancelled (`cancel` was set; a rerun resumes).
common::Result<VerifyJobResult> runVerifyJob(const VerifyJobOptions& options,
                                             const std::atomic<bool>* cancel);

// Human-readable report: one line per table, then every listed difference, then the verdict.
std::string formatVerifyReport(const VerifyJobResult& result, const VerifyJobOptions& options);

// The JSON report (--report): tenant, endpoints (labels, no secrets), per-table counts, and
// every listed row with table, kind, key (column -> value, null for NULL), columns, tenant.
std::string verifyReportJson(const VerifyJobResult& result, const VerifyJobOptions& options);

// Writes `text` to `path` atomically (temporary file + rename). Errors: kRefused naming the path.
common::Status writeReportFile(const std::string& path, const std::string& text);

}  // namespace stampmover::orch
