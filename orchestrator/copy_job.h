// The copy job: preflight, then publication + slot + snapshot copy of one tenant (or the
// resumption of an interrupted copy), with the migration record kept in the checkpoint store.
// Also the read-only preflight command and cleanup of what a tenant's migration created.
#pragma once

#include <atomic>
#include <string>

#include "common/status.h"
#include "mover/catalog.h"
#include "mover/checkpoint_store.h"
#include "mover/preflight.h"
#include "mover/snapshot_copy.h"

namespace stampmover::orch {

struct Endpoint {
  std::string name;   // stamp name, or "dsn" when given directly
  std::string dsn;    // holds a secret: never logged (use common::redactDsn)
  std::string label;  // "source stamp 'stamp-a'"
};

struct CopyJobOptions {
  std::string tenant;                     // Default: none (required)
  Endpoint source;
  Endpoint destination;
  mover::TenantColumnPolicy tenant_columns;
  std::string state_dir;                  // Default: none (required)
  mover::CopyOptions copy;
  bool progress_terminal = false;         // Default: false (log lines instead of bars)
};

struct CopyJobResult {
  mover::PreflightReport preflight;
  mover::CopyReport copy;
  mover::MigrationRecord record;
  bool resumed = false;
  bool already_copied = false;
};

// Runs preflight and copies (or resumes copying) the tenant. Errors keep their class:
// kRefused (preflight, bad state), kRetryable (connection), kCancelled (`cancel` was set).
common::Result<CopyJobResult> runCopyJob(const CopyJobOptions& options,
                                         const std::atomic<bool>* cancel);

// Preflight only: connects, checks, estimates; changes nothing anywhere.
common::Result<mover::PreflightReport> runPreflightOnly(const CopyJobOptions& options);

struct CleanupResult {
  bool dropped_slot = false;
  bool dropped_publication = false;
  uint64_t destination_rows_deleted = 0;
  uint32_t records_removed = 0;
};

// Drops the tenant's slot and publication on the source and forgets its local state; with
// `purge_destination` also deletes the tenant's rows from the destination's tenant tables
// (for an abandoned copy). Errors: kRefused when the slot is in use.
common::Result<CleanupResult> runCleanup(const CopyJobOptions& options, bool purge_destination);

// Human-readable reports.
std::string formatPreflight(const mover::PreflightReport& report, const CopyJobOptions& options);
std::string formatCopyReport(const CopyJobResult& result);

}  // namespace stampmover::orch
