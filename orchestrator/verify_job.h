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
#include "orchestrator/dead_letters.h"
#include "verify/table_plan.h"
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
  // With verify.other_tenants_check: rows of other tenants on both stamps make the verdict a
  // failure (verifyFailed()). Default: false (they are reported, never judged).
  bool fail_on_other_tenants = false;
  // A Kafka migration's dead-letter file (migrate --on-bad-event dead-letter FILE): the row of
  // each event skipped there is compared now and listed; one that differs, or that cannot be
  // identified, makes the verdict a failure (verifyFailed()). Default: "" = the files the
  // migration recorded in its state (note kDeadLetterFilesNote of the migration in state_dir,
  // read-only beside a running migrate), if any.
  std::string dead_letter_path;
};

// The migration's note (in its checkpoint store) that lists the dead-letter files its runs
// appended to: a JSON array of absolute paths. Written by migrate --cdc kafka --on-bad-event
// dead-letter; read by verify.
inline constexpr const char* kDeadLetterFilesNote = "dead_letter_files";

struct VerifyJobResult {
  verify::VerifyReport report;
  bool resumed = false;    // some tables' results came from an interrupted earlier run
  std::string state_path;  // where resume state lives ("" without a state dir)
  std::string tenant;      // the tenant key as the source canonicalized it (reports use it)
  bool dead_letters_checked = false;           // dead-letter files were read (dead_letter_files)
  std::vector<std::string> dead_letter_files;  // the files read: given, or recorded
  std::vector<DeadLetterRow> dead_letters;     // one per event of the file, in file order
};

// Runs the verification. Differences are in the result, not an error. Errors keep their class:
// kRefused (no tenant tables, a table/column/type differs, bad options, state dir unusable),
// kRetryable (a server unreachable or lost; live mode: the applier does not advance),
// kCancelled (`cancel` was set; a rerun resumes).
common::Result<VerifyJobResult> runVerifyJob(const VerifyJobOptions& options,
                                             const std::atomic<bool>* cancel);

// True when the result is a failure: differences of the tenant, or, with
// fail_on_other_tenants, rows of other tenants present on both stamps, or (dead_letter_path) a
// dead-lettered event of the tenant whose row differs now or cannot be identified.
bool verifyFailed(const VerifyJobResult& result, const VerifyJobOptions& options);

// Human-readable report: one line per table, then every listed difference, then the verdict.
std::string formatVerifyReport(const VerifyJobResult& result, const VerifyJobOptions& options);

// The JSON report (--report): tenant, endpoints (labels, no secrets), per-table counts, every
// listed row of the tenant with table, kind, key (column -> value, null for NULL), columns, and
// (other-tenants check) the other tenants' rows apart, with table, tenant and key.
std::string verifyReportJson(const VerifyJobResult& result, const VerifyJobOptions& options);

// The verifier's description of a table found by the mover's catalog discovery: every column
// (generated ones too) in attnum order, its tenant column and primary key.
verify::VerifyTable verifyTableFor(const mover::TableInfo& table);

// The canonical row encoding (verify/row_equality.h) of `tables`, for comparing rows by key
// (the cutover's re-check) or by whole tenant (purge) with the verifier's definition of equal.
// Types come from the catalog description; domains are resolved on `conn` in one query, asked
// only when some column has a user-defined type. Errors: kRefused (a table without primary
// key), the server's (class kept).
common::Result<std::vector<verify::PreparedTable>> rowEncodingsFor(
    common::PgConnection& conn, const std::vector<mover::TableInfo>& tables);

// Writes `text` to `path` atomically (temporary file + rename). Errors: kRefused naming the path.
common::Status writeReportFile(const std::string& path, const std::string& text);

}  // namespace stampmover::orch
