// The copy job: preflight, then publication + slot + snapshot copy of one tenant (or the
// resumption of an interrupted copy), with the migration record kept in the checkpoint store.
// Also the read-only preflight command and cleanup of what a tenant's migration created.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
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
  // The tenant key as the operator typed it. The job canonicalizes it on the source first
  // (mover::canonicalTenantKey) and uses only the canonical form afterwards: ids, names, the
  // record, and everything runMigrate derives from the record.
  std::string tenant;                     // Default: none (required)
  Endpoint source;
  Endpoint destination;
  mover::TenantColumnPolicy tenant_columns;
  std::string state_dir;                  // Default: none (required)
  mover::CopyOptions copy;
  bool progress_terminal = false;         // Default: false (log lines instead of bars)
  // Called every progress_interval while chunks are copied (from a thread of the job's own)
  // with the rows and bytes of completed chunks and preflight's estimates.
  std::function<void(uint64_t rows, uint64_t bytes, uint64_t est_rows, uint64_t est_bytes)>
      on_copy_progress;                                    // Default: none
  std::chrono::milliseconds progress_interval{5000};     // Default: 5 s
};

struct CopyJobResult {
  mover::PreflightReport preflight;
  mover::CopyReport copy;
  mover::MigrationRecord record;
  bool resumed = false;
  bool already_copied = false;
};

// Runs preflight and copies (or resumes copying) the tenant. A migration record found in the
// state directory is trusted only while it still describes the stamps: their system
// identifiers and database oids must equal the recorded ones (records without them, from older
// versions, adopt the current ones with a log line), and the slot (while the record says it
// exists) and the destination's replication origin (once a stream position was checkpointed)
// must exist. Errors keep their class: kRefused (preflight, bad state, a stamp that changed:
// nothing is changed anywhere and the message names the command that starts over),
// kRetryable (connection), kCancelled (`cancel` was set).
common::Result<CopyJobResult> runCopyJob(const CopyJobOptions& options,
                                         const std::atomic<bool>* cancel);

// Preflight only: connects, checks, estimates; changes nothing anywhere.
common::Result<mover::PreflightReport> runPreflightOnly(const CopyJobOptions& options);

struct CleanupResult {
  std::string tenant;  // the key the names were derived from (canonical when it could be told)
  bool dropped_slot = false;
  bool dropped_publication = false;
  uint64_t destination_rows_deleted = 0;
  uint32_t records_removed = 0;
};

// Tears down what the tenant's migrations created, idempotently: the forward slot and
// publication on the source, the reverse slot, publication and origins, the fence's user
// records (the triggers go with the last user) and the tenant's fence rows on a stamp that is
// not fenced for a reason, then forgets the local state. The destination side needs
// options.destination. With `purge_destination` also deletes the tenant's rows from the
// destination — refused (kRefused) when the routing entry (`control_plane_dsn`) points at the
// destination, or when a local record reached dual_write and no control plane was given.
// Errors: kRefused when the slot is in use.
common::Result<CleanupResult> runCleanup(const CopyJobOptions& options, bool purge_destination,
                                         const std::string& control_plane_dsn = "");

// The canonical keys of the migrations recorded in `state_dir` that `raw` names, exactly: a
// record matches when `raw` equals its key verbatim, or when every tenant column type it
// recorded canonicalizes `raw` to its key without a server (integers, uuids, text: see
// common::canonicalTenantTextOffline). Distinct keys, in record order; empty when none (or no
// state directory). Read-only; safe beside a running migrate. Errors: kInternal on a corrupt
// store.
common::Result<std::vector<common::TenantKey>> tenantKeysFromState(const std::string& state_dir,
                                                                   const std::string& raw);
// True when `raw` names the tenant of `record` by the rule above.
bool recordNamesTenant(const mover::MigrationRecord& record, const std::string& raw);

// Human-readable reports.
std::string formatPreflight(const mover::PreflightReport& report, const CopyJobOptions& options);
std::string formatCopyReport(const CopyJobResult& result);

}  // namespace stampmover::orch
