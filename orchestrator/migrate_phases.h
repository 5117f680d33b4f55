// The part of the migrate job that does not depend on where the forward changes come from: the
// persisted phase machine from catching_up on (the pre-cutover comparison, freeze attempts,
// dual-write soak with the reverse slot, rollback, finalize, abort). The forward stream is a
// ForwardStream: the pgoutput slot (migrate_job.cc) or the Debezium topics (kafka_migrate.cc).
// Internal to the orchestrator: included by those two files only.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "common/lsn.h"
#include "common/status.h"
#include "mover/checkpoint_store.h"
#include "mover/pg_applier.h"
#include "orchestrator/ledger.h"
#include "orchestrator/migrate_job.h"

namespace stampmover::orch {

// Keeps the latest MigrateProgress and hands it to MigrateOptions::on_progress, one call at a
// time (the copy's progress thread and the migrate thread both report).
class ProgressSink {
 public:
  explicit ProgressSink(const std::function<void(const MigrateProgress&)>& fn) : fn_(fn) {}
  void update(const std::function<void(MigrateProgress&)>& edit) {
    if (!fn_) return;
    std::lock_guard lock(mu_);
    edit(p_);
    fn_(p_);
  }

 private:
  const std::function<void(const MigrateProgress&)>& fn_;
  std::mutex mu_;
  MigrateProgress p_;
};

// Persists `rec` with `phase` (and a fresh update time) in one synced write, logs it, and tells
// `progress` (when given). The phase machine's persist step; the Kafka copy's phases too.
common::Status saveRecordPhase(mover::CheckpointStore& store, const mover::MigrationRecord& rec,
                               const std::string& phase, ProgressSink* progress = nullptr);

// What a stream does once it is caught up: keep following, end (committed, flushed and
// checkpointed), or hand control back to the phase machine with the session still open (a
// cutover runs outside the stream loop, then the stream resumes or finishes).
enum class CaughtUp { kContinue, kStop, kYield };
using CaughtUpHook = std::function<common::Result<CaughtUp>(mover::PgApplier&)>;

// The forward stream (source -> destination) as the phase machine drives it.
class ForwardStream {
 public:
  virtual ~ForwardStream() = default;
  // Asked at every caught-up point (set by the phase machine before run()).
  CaughtUpHook on_caught_up;
  // Re-checks the applier's touched keys outside the window and keeps those still different.
  std::function<common::Status(mover::PgApplier&)> prune_touched;

  // Connects (reconnecting with backoff on retryable errors) and applies until the hook stops
  // the stream (OK, session closed), yields (OK, yielded(), session left open), or an error.
  // After a yield the next run() resumes the open session.
  virtual common::Status run() = 0;
  virtual bool yielded() const = 0;
  // After a yield: the open session's applier (the cutover re-checks its touched keys).
  virtual mover::PgApplier& liveApplier() = 0;
  // After a yield, inside the cutover window (the source fenced): applies until everything
  // committed on the source before this call is committed and flushed at the destination, or
  // the deadline passes (kRetryable). Returns how long it took.
  virtual common::Result<std::chrono::microseconds> drain(
      std::chrono::steady_clock::time_point deadline) = 0;
  // After a yield: ends the stream (committed, flushed, checkpointed) and closes the session.
  virtual common::Status finishLive() = 0;
  // After a yield: closes the session (the flip did not happen and a non-retryable error ends
  // the run).
  virtual void closeLive() = 0;
  // After a yield: the caller's step failed with `st`; the next run() treats it as a failure
  // of the session (a retryable one reconnects with backoff).
  virtual void failLive(common::Status st) = 0;
  // Applied in this run over all sessions, and the durable position checkpointed.
  virtual mover::ApplierStats totals() const = 0;
  virtual common::Lsn acked() const = 0;
};

// What the factory of the forward stream is given.
struct ForwardContext {
  const mover::MigrationRecord& rec;
  mover::CheckpointStore& store;
  MigrateReport& report;
  ProgressSink& sink;
  bool cutover;  // a cutover may follow: track touched keys
};
using MakeForwardStream = std::function<std::unique_ptr<ForwardStream>(const ForwardContext&)>;

// Runs the phase machine from report.copy.record's phase (copied, or any later one) to a
// terminal phase, or to the end of a run that only follows. `forward_entries` are the server
// objects the forward stream created (recorded in the ledger; the soak drops those on the
// source). Errors as runMigrate.
common::Result<MigrateReport> runMigrationPhases(const MigrateOptions& o, MigrateReport report,
                                                 mover::CheckpointStore& store, ProgressSink& sink,
                                                 std::vector<LedgerEntry> forward_entries,
                                                 const MakeForwardStream& make_forward,
                                                 const std::atomic<bool>* cancel);

}  // namespace stampmover::orch
