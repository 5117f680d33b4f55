// The worker pool of `stampmover serve`: up to N moves at once per process, claimed from the
// shared MoveQueue within its limits, each lease renewed by a background thread, each move run
// by orchestrator::runMigrate with a cancel flag set when the lease is lost, the operator pauses
// or cancels, or the process drains (SIGTERM: stop claiming, stop every move at a checkpoint,
// release the leases). The destination is fenced with the claim's epoch before any write.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "queue/move_queue.h"

namespace stampmover::orch {
struct MigrateOptions;
}

namespace stampmover::queue {

// Builds the runMigrate options of a claimed move (endpoints from the config's stamps, state
// directory, cutover mode, control plane...). The pool then adds its own pieces: cancel flag,
// commit_statements (the destination owner check), on_progress. Errors: kRefused (e.g. a stamp
// missing from the config) -> the move fails permanently. Called on the move's thread.
using MigrateOptionsFn =
    std::function<common::Result<orch::MigrateOptions>(const Move& move)>;

// How a move is run; the default runs orchestrator::runMigrate. Tests may substitute a fake to
// exercise the pool alone. `cancel` is set when the move must stop at a checkpoint; `progress`
// may be called (thread-safe) at any rate, the pool throttles writes to the queue.
struct MoveRunResult {
  common::Status status;  // OK: the move reached its end (finalized / rolled back)
  bool flipped = false;
  bool rolled_back = false;
  std::vector<double> cutover_windows_ms;  // freeze -> flip (or -> rollback) of every attempt
};
using MoveRunnerFn = std::function<MoveRunResult(
    const Move& move, const Lease& lease, const std::atomic<bool>* cancel,
    const std::function<void(const MoveProgress&)>& progress)>;

struct WorkerPoolOptions {
  std::string owner;                                  // Default: none (required; "host:pid")
  uint32_t concurrency = 4;                           // Default: 4 moves at once in this process
  ClaimLimits limits;                                 // Default: see ClaimLimits
  std::chrono::milliseconds poll_interval{1000};      // Default: 1 s between claims when idle
  std::chrono::milliseconds renew_interval{0};        // Default: 0 = lease_ttl / 3
  std::chrono::milliseconds progress_interval{2000};  // Default: 2 s between progress writes
  // Throttle. Every throttle_check_interval a thread samples each held move's source stamp;
  // while a signal passes its threshold, every destination transaction of the move (copy chunk,
  // apply batch) waits throttle_delay first, and the move's progress says since when and why
  // (`move show`: "throttled: since ...: source replication lag 1.2 GB > 1 GB").
  //  - replication lag: bytes of WAL the source's physical standbys have not replayed
  //    (pg_stat_replication, the move's own logical walsenders excluded): the copy's reads and
  //    the WAL it makes the standbys apply are what hurts them;
  //  - load signal: `throttle_load_query`, run on the source, returns one number (e.g. active
  //    sessions, or a value an operator's monitoring writes into a table).
  uint64_t throttle_source_lag_bytes = 0;             // Default: 0 (off)
  std::string throttle_load_query;                    // Default: "" (off)
  double throttle_load_threshold = 0;                 // Default: 0 (throttle above this value)
  // Wait per destination transaction while throttled. It is spent inside the transaction (just
  // before its commit, where the owner check runs), so keep it well under the destination fence's
  // 3 s lock_timeout: a takeover waits for it. Capped at 1 s.
  std::chrono::milliseconds throttle_delay{200};      // Default: 200 ms
  std::chrono::milliseconds throttle_check_interval{2000};  // Default: 2 s
  MigrateOptionsFn migrate_options;                   // required unless `runner` is set
  MoveRunnerFn runner;                                // Default: runMigrate
  // Re-checks a claimed move that belongs to a plan (spec.plan_id) and has not started yet
  // (no phase recorded), before anything runs: "" runs it; a reason ends it as cancelled with
  // last_error "skipped: <reason>" (shown by `move show` and `rebalance show`). An error gives
  // the move back to the queue with backoff (failAttempt, retryable).
  std::function<common::Result<std::string>(const Move& move)> skip_check;  // Default: none
  // Observers (serve feeds its metrics from them). Called on the pool's threads, possibly
  // several at once: thread-safe and quick. on_progress gets every progress report of a held
  // move (unthrottled); on_finished each run's result once the run ended, whatever its outcome.
  std::function<void(int64_t move_id, const MoveProgress&)> on_progress;     // Default: none
  std::function<void(int64_t move_id, const MoveRunResult&)> on_finished;    // Default: none
};

struct WorkerPoolStats {
  uint32_t running = 0;       // moves held now
  uint64_t started = 0;       // moves claimed by this pool
  uint64_t succeeded = 0;
  uint64_t failed_attempts = 0;
  uint64_t leases_lost = 0;   // a move stopped because its lease was taken
  bool draining = false;
};

// Thread-safety: start(), drain() and stats() may be called from any thread. The MoveQueue must
// outlive the pool.
class WorkerPool {
 public:
  WorkerPool(MoveQueue& queue, WorkerPoolOptions options);
  ~WorkerPool();  // drains (bounded by drain()'s default timeout) if still running
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Starts the claim loop and the renewal thread. Errors: kRefused on bad options.
  common::Status start();
  // Stops claiming, sets every running move's cancel flag, waits for them to stop at a
  // checkpoint and releases their leases (queued again, claimable at once). Idempotent.
  // Errors: kInternal when moves were still running at `timeout` (their leases then lapse).
  common::Status drain(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  WorkerPoolStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stampmover::queue
