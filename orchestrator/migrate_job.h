// The migrate job: the copy job (or its resumption), then live catch-up — the slot streamed
// from the destination's recorded position, changes applied by PgApplier, checkpoints written
// to RocksDB after the destination flush, then acknowledged to the source — with reconnects,
// heartbeats, lag and status reporting. Stops cleanly on cancel, or once caught up if asked.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "common/status.h"
#include "mover/pg_applier.h"
#include "mover/txn_statements.h"
#include "orchestrator/copy_job.h"
#include "orchestrator/cutover.h"

namespace stampmover::orch {

// A snapshot of a running migration for whoever embeds runMigrate (the service exports it as
// metrics and in `move show`). Counters are this run's; estimates come from preflight.
struct MigrateProgress {
  std::string phase;              // the persisted phase name ("copying", "catching_up", ...)
  uint64_t rows_copied = 0;       // snapshot copy: rows in completed chunks
  uint64_t rows_estimated = 0;    // preflight's estimate of the tenant's rows (0 unknown)
  uint64_t bytes_copied = 0;      // snapshot copy: bytes in completed chunks
  uint64_t apply_lag_bytes = 0;   // source WAL not yet applied by the stream being followed
  double apply_lag_seconds = -1;  // last heartbeat's round trip (-1 unknown)
  uint64_t changes_applied = 0;   // forward + reverse changes applied in this run
  double eta_seconds = -1;        // to the end of the copy, or of the catch-up (-1 unknown)
  std::string last_error;         // last retried error (reconnects), "" when none
};

struct MigrateOptions {
  CopyJobOptions copy;                                   // tenant, endpoints, state, copy tuning
  bool until_caught_up = false;                          // Default: false (follow until stopped)
  std::chrono::milliseconds caught_up_lag{1000};         // Default: 1 s heartbeat round trip
  std::chrono::milliseconds heartbeat_interval{1000};    // Default: 1 s
  std::chrono::milliseconds checkpoint_interval{500};    // Default: 0.5 s between acks
  std::chrono::milliseconds status_interval{5000};       // Default: 5 s between status lines
  uint64_t retention_warn_bytes = 10ull << 30;           // Default: 10 GiB retained by the slot
  // With a cutover ahead, rows changed during catch-up are re-checked outside the window
  // whenever this many keys have piled up, and only those still different are kept.
  size_t touched_prune_keys = 20'000;                    // Default: 20000 keys
  uint32_t max_batch_changes = 5000;                     // Default: 5000
  std::chrono::milliseconds max_batch_age{200};          // Default: 200 ms
  std::chrono::milliseconds max_backoff{30000};          // Default: 30 s between reconnects
  std::chrono::milliseconds give_up_after{0};            // Default: 0 = retry forever
  // Cutover (needs control_plane_dsn): after catching up, freeze/drain/verify/flip, then the
  // dual-write soak with the reverse stream, then finalize (or roll back when asked).
  bool cutover_auto = false;                             // Default: false (follow only)
  bool cutover_manual = false;                           // Default: false; true: wait for
                                                         // `stampmover cutover|rollback|finalize`
  std::string control_plane_dsn;                         // Default: none; holds a secret
  CutoverOptions cutover;
  uint32_t cutover_attempts = 5;                         // Default: 5 attempts before giving up
  std::chrono::milliseconds soak{10000};                 // Default: 10 s of dual-write soak
  bool rollback_after_soak = false;                      // Default: false (finalize); true: go back
  bool finalize = true;                                  // Default: true after the soak
  bool purge_source = false;                             // Default: false; delete the source's
                                                         // rows after finalize (small batches)
  // Statements sent inside every destination transaction that writes the tenant's rows: each
  // copy chunk and each forward applier transaction (see mover/txn_statements.h); e.g. the
  // queue's owner check, which lives at the destination. When set it replaces
  // copy.copy.commit_statements. Called from the copy's workers concurrently: thread-safe.
  mover::TxnStatementsFn commit_statements;              // Default: none
  // The same for the reverse stream's applier, which writes the SOURCE during the dual-write
  // soak. Kept apart on purpose: statements written for the destination (a table that exists
  // only there) would fail every reverse transaction at the source.
  mover::TxnStatementsFn reverse_commit_statements;      // Default: none
  // Called with the migration's progress at every status tick (status_interval; during the
  // copy, the same interval) and at every phase change. Called from the migrate thread or the
  // copy's progress thread, never two at once; must not block for long.
  std::function<void(const MigrateProgress&)> on_progress;  // Default: none
};

struct MigrateReport {
  CopyJobResult copy;
  common::Lsn applied;        // durable, checkpointed and acknowledged position
  uint64_t changes = 0;       // applied in this run
  uint64_t transactions = 0;
  uint64_t reconnects = 0;
  uint64_t toast_repairs = 0;
  double catchup_seconds = 0;
  double last_lag_seconds = -1;
  bool caught_up = false;
  uint64_t verified_rows = 0;   // the full comparison before the first freeze (0: not run)
  double verify_seconds = 0;
  std::vector<CutoverReport> cutovers;    // every attempt, in order
  bool flipped = false;
  bool finalized = false;
  bool rolled_back = false;
  bool aborted = false;                   // rolled back before the flip (operator request)
  uint64_t purged_rows = 0;
  uint64_t reverse_changes = 0;
  std::vector<CutoverReport> rollbacks;   // the reverse cutover, when rolled back
};

// Runs copy + catch-up (and, with a cutover, the rest). The migration is a persisted phase
// machine (orchestrator/phase.h): runMigrate resumes at the phase its record holds (and what
// the routing entry says happened since), takes one step per phase until a terminal one or
// until a run that only follows ends, and refuses an illegal step. Every server-side object
// is in the migration's ledger (orchestrator/ledger.h) before it is created; finalize,
// rollback and abort end with its one teardown. Errors keep their class; kCancelled when
// `cancel` was set (after a clean stop at a checkpoint); the phase stays where a rerun resumes.
common::Result<MigrateReport> runMigrate(const MigrateOptions& options,
                                         const std::atomic<bool>* cancel);

std::string formatMigrateReport(const MigrateReport& report);

// The last status a running (or stopped) migrate wrote, read without disturbing it.
common::Result<std::string> readStatus(const std::string& state_dir, const std::string& tenant);

}  // namespace stampmover::orch
