// The migrate job: the copy job (or its resumption), then live catch-up — the slot streamed
// from the destination's recorded position, changes applied by PgApplier, checkpoints written
// to RocksDB after the destination flush, then acknowledged to the source — with reconnects,
// heartbeats, lag and status reporting. Stops cleanly on cancel, or once caught up if asked.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "common/status.h"
#include "mover/pg_applier.h"
#include "orchestrator/copy_job.h"
#include "orchestrator/cutover.h"

namespace stampmover::orch {

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

// Runs copy + catch-up. Errors keep their class; kCancelled when `cancel` was set (after a
// clean stop at a checkpoint).
common::Result<MigrateReport> runMigrate(const MigrateOptions& options,
                                         const std::atomic<bool>* cancel);

std::string formatMigrateReport(const MigrateReport& report);

// The last status a running (or stopped) migrate wrote, read without disturbing it.
common::Result<std::string> readStatus(const std::string& state_dir, const std::string& tenant);

}  // namespace stampmover::orch
