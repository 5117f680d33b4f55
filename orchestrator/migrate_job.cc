// Migrate job: see migrate_job.h. Order of durability on every checkpoint, never reversed:
// destination commit (with the origin position inside it) -> destination WAL flush ->
// RocksDB synced write -> standby status update to the source.
#include "orchestrator/migrate_job.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "cdc/pgoutput_source.h"
#include "mover/fence.h"
#include "mover/heartbeat.h"
#include "orchestrator/cancel_wait.h"
#include "orchestrator/control_plane.h"
#include "orchestrator/ledger.h"
#include "orchestrator/migrate_phases.h"
#include "orchestrator/phase.h"
#include "orchestrator/purge.h"
#include "orchestrator/verify_job.h"
#include "routing/routing_client.h"
#include "mover/source_setup.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "mover/progress.h"

namespace stampmover::orch {

using common::Lsn;
using common::PgConnection;
using common::Result;
using common::Status;

namespace {

// One direction of replication: a slot on `from`, applied to `to`.
struct StreamSpec {
  std::string name;  // "forward" or "reverse": checkpoint and status names
  Endpoint from;
  Endpoint to;
  std::string slot;
  std::string publication;
  std::string origin;       // replication origin at `to`
  std::string skip_origin;  // transactions carrying it are not applied (no echo)
  Lsn initial;              // where to start when `to` has no recorded progress (0 = slot's)
  bool track_touched = false;
  // Sent inside every transaction the applier commits at `to` (see MigrateOptions).
  mover::TxnStatementsFn commit_statements{};
};

struct Streamer {
  const MigrateOptions& o;
  const StreamSpec spec;
  const mover::MigrationRecord& rec;
  mover::CheckpointStore& store;
  const std::atomic<bool>* cancel;
  MigrateReport& report;
  Lsn acked{};
  PgConnection hb{};  // session on `from` for heartbeats and lag readings
  std::chrono::steady_clock::time_point last_hb{}, last_ckpt{}, last_status{};
  uint64_t last_changes = 0;
  std::chrono::steady_clock::time_point rate_t0 = std::chrono::steady_clock::now();
  // This stream's heartbeats (see mover/heartbeat.h): only they prove catch-up or end a drain.
  std::string hb_identity = mover::newHeartbeatIdentity(rec.id, spec.name);
  uint64_t hb_seq = 0;     // last emitted
  uint64_t since_seq = 0;  // the next caught-up check needs a heartbeat newer than this
  // Keys the applier changed, carried from one applier to the next across reconnects, so the
  // cutover's re-check still covers everything changed since tracking began.
  mover::TouchedKeys carried_touched{};
  Lsn tracking_from{};  // stream position where touched-key tracking began (this process)
  CaughtUpHook on_caught_up{};
  // Re-checks the applier's touched keys and keeps those still different (cutover runs only).
  std::function<Status(mover::PgApplier&)> prune_touched{};
  size_t prune_floor = 0;  // keys still different after the last prune
  mover::ApplierStats totals{};
  Lsn upsert_through{};  // plain inserts only after this source position (see ApplierOptions)
  ProgressSink* progress = nullptr;
  uint64_t changes_before = 0;  // applied by earlier streams of this run (progress only)
  uint64_t prev_lag_bytes = 0;  // for the catch-up ETA
  std::chrono::steady_clock::time_point prev_lag_at{};

  // Emits the next heartbeat; returns its sequence number.
  Result<uint64_t> heartbeat() {
    if (!hb.valid()) {
      SM_ASSIGN_OR_RETURN(hb, PgConnection::connect(spec.from.dsn, spec.from.label + " (heartbeat)"));
    }
    mover::Heartbeat beat{hb_identity, hb_seq + 1, cdc::pgEpochMicrosNow()};
    auto r = hb.query("SELECT pg_logical_emit_message(true, $1, $2)",
                      {std::string(mover::kHeartbeatPrefix), mover::heartbeatContent(beat)});
    if (!r) {
      hb = PgConnection();
      return r.status();
    }
    hb_seq = beat.seq;
    return beat.seq;
  }

  // Durable position -> RocksDB -> source, in that order. When `idle` (nothing open, nothing
  // unapplied) and everything committed is flushed, the source's keepalive position is
  // acknowledged too: it only skips WAL holding no change of ours.
  Status checkpoint(mover::PgApplier& applier, cdc::PgoutputSource& source, bool idle = false) {
    SM_ASSIGN_OR_RETURN(Lsn durable, applier.durableLsn());
    if (durable > acked) {
      mover::CheckpointBatch b;
      b.putStreamPosition(rec.id, {spec.name, durable, 0, spec.slot});
      SM_RETURN_IF_ERROR(store.write(b));
      SM_RETURN_IF_ERROR(source.acknowledge(durable));
      acked = durable;
    }
    if (idle && !applier.inTransaction() && durable >= applier.committedLsn() &&
        source.keepaliveWalEnd() > acked) {
      // Nothing of ours up to the keepalive position: record it at the destination first (the
      // origin must never lag what the slot was told, or a destination that went back in time
      // could not be told from one that did not), then RocksDB, then the source.
      const Lsn pos = source.keepaliveWalEnd();
      SM_RETURN_IF_ERROR(applier.advanceOrigin(pos));
      mover::CheckpointBatch b;
      b.putStreamPosition(rec.id, {spec.name, pos, 0, spec.slot});
      SM_RETURN_IF_ERROR(store.write(b));
      SM_RETURN_IF_ERROR(source.acknowledge(pos));
      acked = pos;
    }
    return Status::ok();
  }

  void status(mover::PgApplier& applier) {
    auto now = std::chrono::steady_clock::now();
    double dt = std::chrono::duration<double>(now - rate_t0).count();
    uint64_t changes = applier.stats().changes;
    double rate = dt > 0 ? static_cast<double>(changes - last_changes) / dt : 0;
    last_changes = changes;
    rate_t0 = now;
    const Lsn applied = std::max(applier.committedLsn(), acked);
    uint64_t lag_bytes = 0, retained = 0;
    if (hb.valid()) {
      auto r = hb.query("SELECT pg_current_wal_lsn()::text, (SELECT restart_lsn::text FROM "
                        "pg_replication_slots WHERE slot_name = $1)",
                        {spec.slot});
      if (r && common::rowCount(*r) == 1) {
        auto cur = Lsn::parse(common::cell(*r, 0, 0));
        auto restart = Lsn::parse(common::cell(*r, 0, 1));
        if (cur && *cur > applied) lag_bytes = cur->value() - applied.value();
        if (cur && restart && *cur > *restart) retained = cur->value() - restart->value();
      }
    }
    int64_t hb_lag = applier.lastHeartbeatLagMicros();
    double lag_s = hb_lag >= 0 ? static_cast<double>(hb_lag) / 1e6 : -1;
    report.last_lag_seconds = lag_s;
    spdlog::info("{}: applied {} (acked {}), lag {} / {}, {:.0f} changes/s, {} changes, {} txns, "
                 "slot retains {}",
                 spec.name == "forward" ? "catch-up" : "reverse (dual-write soak)", applied.toString(),
                 acked.toString(), mover::humanBytes(static_cast<double>(lag_bytes)),
                 lag_s >= 0 ? fmt::format("{:.3f} s", lag_s) : std::string("? s"), rate,
                 mover::withCommas(changes), mover::withCommas(applier.stats().transactions),
                 mover::humanBytes(static_cast<double>(retained)));
    if (retained > o.retention_warn_bytes) {
      spdlog::warn("slot {} retains {} of WAL on {} (threshold {}); the disk fills if the "
                   "stream stalls", spec.slot, mover::humanBytes(static_cast<double>(retained)),
                   spec.from.label, mover::humanBytes(static_cast<double>(o.retention_warn_bytes)));
    }
    nlohmann::json j = {{"phase", spec.name == "forward" ? "catching_up" : "dual_write"},
                        {"stream", spec.name},
                        {"tenant", rec.tenant},
                        {"migration", rec.id},
                        {"applied_lsn", applied.toString()},
                        {"acked_lsn", acked.toString()},
                        {"lag_bytes", lag_bytes},
                        {"lag_seconds", lag_s},
                        {"apply_rate", rate},
                        {"changes", changes},
                        {"slot_retained_bytes", retained},
                        {"retention_warning", retained > o.retention_warn_bytes},
                        {"updated_unix_ms", common::nowUnixMs()}};
    mover::CheckpointBatch b;
    b.putNote(rec.id, spec.name == "forward" ? "status" : "status_reverse", j.dump());
    store.write(b).ignore();  // status is informational; the next write retries
    if (progress != nullptr) {
      // ETA from how fast the lag shrinks between ticks; unknown while it grows.
      double eta = -1;
      if (lag_bytes == 0) {
        eta = 0;
      } else if (prev_lag_at != std::chrono::steady_clock::time_point{} &&
                 prev_lag_bytes > lag_bytes) {
        const double secs = std::chrono::duration<double>(now - prev_lag_at).count();
        const double per_sec = static_cast<double>(prev_lag_bytes - lag_bytes) / std::max(secs, 1e-3);
        eta = static_cast<double>(lag_bytes) / per_sec;
      }
      prev_lag_bytes = lag_bytes;
      prev_lag_at = now;
      const uint64_t applied_changes = changes_before + totals.changes + changes;
      progress->update([&](MigrateProgress& p) {
        p.apply_lag_bytes = lag_bytes;
        p.apply_lag_seconds = lag_s;
        p.changes_applied = applied_changes;
        p.eta_seconds = eta;
      });
    }
  }

  // Applies events until `done()` or the deadline; commits when the stream is idle.
  Status pump(mover::PgApplier& applier, cdc::PgoutputSource& source,
              const std::function<bool()>& done, std::chrono::steady_clock::time_point deadline) {
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        return Status::retryable("deadline passed while applying the " + spec.name + " stream");
      }
      SM_ASSIGN_OR_RETURN(auto ev, source.next(std::chrono::milliseconds(5)));
      if (ev) {
        if (ev->kind == common::ChangeEvent::Kind::kMessage) spdlog::debug("pump: message {}", ev->message.content);
        SM_RETURN_IF_ERROR(applier.apply(std::move(*ev)));
      } else {
        SM_RETURN_IF_ERROR(applier.commitPending());
      }
    }
    return Status::ok();
  }

  // Emits a heartbeat and applies until it is committed and flushed at `to`: everything
  // committed at `from` before the heartbeat is then durable at `to`. Returns the round trip.
  Result<std::chrono::microseconds> drain(mover::PgApplier& applier, cdc::PgoutputSource& source,
                                          std::chrono::steady_clock::time_point deadline) {
    auto t0 = std::chrono::steady_clock::now();
    SM_ASSIGN_OR_RETURN(uint64_t seq, heartbeat());
    auto us = [&] {
      return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
    };
    spdlog::debug("drain: heartbeat emitted at +{} us", us());
    SM_RETURN_IF_ERROR(pump(applier, source,
                            [&] { return applier.lastHeartbeatSeq() >= seq; }, deadline));
    spdlog::debug("drain: heartbeat applied at +{} us", us());
    SM_RETURN_IF_ERROR(applier.commitPending());
    SM_RETURN_IF_ERROR(applier.forceFlush());
    spdlog::debug("drain: flushed at +{} us", us());
    for (;;) {
      SM_ASSIGN_OR_RETURN(Lsn durable, applier.durableLsn());
      if (durable >= applier.committedLsn()) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        return Status::retryable("destination flush did not reach the drained position in time");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    SM_RETURN_IF_ERROR(checkpoint(applier, source));
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  }

  // One connected session: returns when cancelled, when the hook ends it, or on error.
  Status session(mover::PgApplier& applier, cdc::PgoutputSource& source) {
    for (;;) {
      if (cancelled(cancel)) {
        if (!applier.inTransaction()) SM_RETURN_IF_ERROR(applier.commitPending());
        SM_RETURN_IF_ERROR(checkpoint(applier, source));
        return Status::cancelled("stopped at " + acked.toString() + "; rerun to resume");
      }
      SM_ASSIGN_OR_RETURN(auto ev, source.next(std::chrono::milliseconds(50)));
      bool idle = false;
      if (ev) {
        SM_RETURN_IF_ERROR(applier.apply(std::move(*ev)));
      } else {
        SM_RETURN_IF_ERROR(applier.commitPending());
        idle = !applier.inTransaction();
      }
      const auto now = std::chrono::steady_clock::now();  // once per event
      if (now - last_hb >= o.heartbeat_interval) {
        auto hbv = heartbeat();
        if (!hbv) spdlog::warn("heartbeat: {}", hbv.status().message());
        last_hb = now;
      }
      if (now - last_ckpt >= o.checkpoint_interval) {
        SM_RETURN_IF_ERROR(checkpoint(applier, source, idle));
        last_ckpt = now;
      }
      if (now - last_status >= o.status_interval) {
        status(applier);
        last_status = now;
      }
      if (prune_touched && !applier.inTransaction() && !applier.touched().overflowed &&
          applier.touched().count >= o.touched_prune_keys + prune_floor) {
        // Between source transactions, with everything applied committed first.
        SM_RETURN_IF_ERROR(applier.commitPending());
        Status pruned = prune_touched(applier);
        if (!pruned.isOk()) spdlog::warn("re-check of changed rows: {}", pruned.message());
        prune_floor = applier.touched().count;
      }
      const uint64_t hb_seen = applier.lastHeartbeatSeq();
      if (on_caught_up && hb_seen > since_seq && !applier.inTransaction()) {
        double lag_ms = static_cast<double>(applier.lastHeartbeatLagMicros()) / 1e3;
        if (lag_ms < static_cast<double>(o.caught_up_lag.count())) {
          report.caught_up = true;
          report.last_lag_seconds = lag_ms / 1e3;
          since_seq = hb_seen;  // the next check needs a newer heartbeat
          SM_ASSIGN_OR_RETURN(CaughtUp next, on_caught_up(applier));
          if (next == CaughtUp::kYield) {
            yielded = true;
            return Status::ok();
          }
          if (next == CaughtUp::kStop) return finish(applier, source);
        }
      }
    }
  }

  // The end of a stream: everything applied committed and flushed, then checkpointed.
  Status finish(mover::PgApplier& applier, cdc::PgoutputSource& source) {
    SM_RETURN_IF_ERROR(applier.commitPending());
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      SM_ASSIGN_OR_RETURN(Lsn durable, applier.durableLsn());
      if (durable >= applier.committedLsn()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return checkpoint(applier, source);
  }

  // The open session after run() yielded (null otherwise): the caller's step (a cutover) drains
  // through them.
  mover::PgApplier* liveApplier() { return live_applier_.get(); }
  cdc::PgoutputSource* liveSource() { return live_src_.get(); }
  // After a yield: ends the stream as kStop would have (see finish()) and closes the session.
  Status finishLive() {
    Status st = live_applier_ && live_src_ ? finish(*live_applier_, *live_src_) : Status::ok();
    closeLive();
    return st;
  }
  // After a yield: the caller's step failed with `st`; the next run() handles it as a failure
  // of the session (a retryable one reconnects with backoff, as if it happened inside).
  void failLive(Status st) { pending_ = std::move(st); }
  // Closes the session, keeping what the next applier carries on.
  void closeLive() {
    live_src_.reset();
    if (live_applier_) {
      // Kept for the next applier (more keys than committed is only more re-checking).
      carried_touched = live_applier_->takeTouched();
      const auto& s = live_applier_->stats();
      totals.changes += s.changes;
      totals.transactions += s.transactions;
      totals.toast_repairs += s.toast_repairs;
      upsert_through = std::max(upsert_through, live_applier_->conflictThrough());
      live_applier_.reset();
    }
  }

  // Connects and runs sessions until the stream ends (OK, session closed), the hook yields
  // (OK, `yielded`, session left open for the caller, resumed by the next run()), or a
  // non-retryable error; retryable failures reconnect with jittered exponential backoff.
  Status run() {
    yielded = false;
    std::mt19937_64 rng(std::random_device{}());
    auto backoff = std::chrono::milliseconds(100);
    auto failing_since = std::chrono::steady_clock::time_point{};
    for (;;) {
      Status st;
      if (live_applier_ && live_src_) {
        // Resuming after a yield.
        st = pending_.isOk() ? session(*live_applier_, *live_src_) : pending_;
        pending_ = Status::ok();
        if (st.isOk() && yielded) return st;
        closeLive();
        if (st.isOk() || st.errorClass() != common::ErrorClass::kRetryable) return st;
      } else {
        closeLive();
        st = connectOnce();
        if (st.isOk() && yielded) return st;
        closeLive();
        if (st.isOk() || st.errorClass() != common::ErrorClass::kRetryable) return st;
      }
      auto now = std::chrono::steady_clock::now();
      if (failing_since == std::chrono::steady_clock::time_point{}) failing_since = now;
      if (o.give_up_after.count() > 0 && now - failing_since > o.give_up_after) {
        return st.withContext("giving up after " + std::to_string(o.give_up_after.count() / 1000) +
                              " s of retries");
      }
      report.reconnects++;
      if (progress != nullptr) {
        progress->update([&](MigrateProgress& p) { p.last_error = st.message(); });
      }
      auto wait = (backoff + std::chrono::milliseconds(rng() % (static_cast<uint64_t>(backoff.count()) + 1))) / 2;
      spdlog::warn("{} stream: {}; reconnecting in {} ms", spec.name, st.message(), wait.count());
      sleepFor(wait, cancel);
      backoff = std::min(backoff * 2, o.max_backoff);
      if (cancelled(cancel)) return Status::cancelled("stopped while reconnecting; rerun to resume");
      if (connected_once_) {
        failing_since = {};
        backoff = std::chrono::milliseconds(100);
        connected_once_ = false;
      }
    }
  }

  // Opens an applier and a session and runs it (see run()).
  Status connectOnce() {
    mover::ApplierOptions ao;
    ao.dest_dsn = spec.to.dsn;
    ao.dest_label = spec.to.label;
    ao.source_dsn = spec.from.dsn;
    ao.source_label = spec.from.label;
    ao.origin_name = spec.origin;
    ao.skip_origin = spec.skip_origin;
    ao.tenant = rec.tenant;
    ao.tenant_columns = o.copy.tenant_columns;
    ao.max_batch_changes = o.max_batch_changes;
    ao.max_batch_age = o.max_batch_age;
    ao.track_touched = spec.track_touched;
    ao.heartbeat_identity = hb_identity;
    ao.upsert_through = upsert_through;
    ao.commit_statements = spec.commit_statements;
    auto applier = mover::PgApplier::open(ao);
    if (!applier) return applier.status();
    live_applier_ = std::move(*applier);
    live_applier_->restoreTouched(std::move(carried_touched));
    carried_touched = mover::TouchedKeys();
    return connectAndRun(*live_applier_);
  }

  // The slot's confirmed position is what we acknowledged, which never passes what the
  // destination's origin recorded (committed with the data, and advanced before an idle
  // keepalive is acknowledged). An origin behind it means the destination lost commits it had
  // (restored from a backup, failed over to a lagging standby): the slot no longer holds those
  // changes, so streaming on would silently skip them. Errors: kRefused naming the positions.
  Status checkNotBackInTime(Lsn origin, Lsn start, const std::optional<mover::StreamPosition>& saved) {
    if (!hb.valid()) {
      SM_ASSIGN_OR_RETURN(hb, PgConnection::connect(spec.from.dsn, spec.from.label + " (heartbeat)"));
    }
    SM_ASSIGN_OR_RETURN(auto confirmed_text,
                        hb.queryValue("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                      "WHERE slot_name = $1",
                                      {spec.slot}));
    if (!confirmed_text) return Status::ok();  // no slot: start() says so, with the fix
    // Nothing applied and no recorded starting point: nothing to compare with.
    if (start.isZero()) return Status::ok();
    auto confirmed = Lsn::parse(*confirmed_text);
    if (!confirmed) return Status::internal("unparseable confirmed_flush_lsn '" + *confirmed_text + "'");
    if (*confirmed <= start) return Status::ok();
    return Status::refused(
        "the " + spec.to.label + " went back in time: its replication origin " + spec.origin +
        " records " + (origin.isZero() ? std::string("nothing applied") : origin.toString()) +
        " but slot " + spec.slot + " on " + spec.from.label + " was acknowledged up to " +
        confirmed->toString() + " (checkpoint store: " +
        (saved ? saved->lsn.toString() : std::string("none")) +
        "); the changes in between are no longer in the slot (was the destination restored from "
        "a backup or failed over to a lagging standby?). Start over: `stampmover cleanup --tenant " +
        rec.tenant + " --purge-destination` with the same --from/--to, then migrate again");
  }

  bool connected_once_ = false;
  bool yielded = false;  // the last run() returned at a kYield, session open
  std::unique_ptr<mover::PgApplier> live_applier_;
  std::unique_ptr<cdc::PgoutputSource> live_src_;
  Status pending_ = Status::ok();  // failLive()

  Status connectAndRun(mover::PgApplier& applier) {
    SM_ASSIGN_OR_RETURN(Lsn origin, applier.originProgress());
    auto saved = store.loadStreamPosition(rec.id, spec.name);
    if (saved && saved->has_value() && (*saved)->lsn > origin) {
      spdlog::warn("checkpoint store position {} of the {} stream is ahead of the replication "
                   "origin {} at {} (restored from a backup?); the origin wins",
                   (*saved)->lsn.toString(), spec.name, origin.toString(), spec.to.label);
    }
    Lsn start = origin.isZero() ? spec.initial : origin;
    SM_RETURN_IF_ERROR(checkNotBackInTime(origin, start, saved ? *saved : std::nullopt));
    acked = start;
    if (tracking_from.isZero()) tracking_from = start;
    cdc::PgoutputSourceOptions so;
    so.dsn = spec.from.dsn;
    so.label = spec.from.label;
    so.slot = spec.slot;
    so.publication = spec.publication;
    so.start = start;
    auto src = cdc::PgoutputSource::start(so);
    if (!src) {
      Status st = src.status();
      if (st.errorClass() == common::ErrorClass::kRefused &&
          st.sqlState() == "42704") {  // undefined_object: the slot is gone
        return Status::refused("replication slot \"" + spec.slot + "\" of migration " + rec.id +
                               " no longer exists on " + spec.from.label +
                               " (dropped behind our back?); changes since it was created cannot "
                               "be recovered: run `stampmover cleanup --tenant " + rec.tenant +
                               " --purge-destination` and migrate again");
      }
      return st;
    }
    connected_once_ = true;
    spdlog::info("{} stream: slot {} from {}", spec.name, spec.slot, start.toString());
    live_src_ = std::move(*src);
    return session(applier, *live_src_);
  }
};

// The pgoutput forward stream (the migration's slot on the source) as the phase machine
// drives it.
class PgoutputForward final : public ForwardStream {
 public:
  PgoutputForward(const MigrateOptions& o, StreamSpec spec, const ForwardContext& fc,
                  const std::atomic<bool>* cancel)
      : s_{o, std::move(spec), fc.rec, fc.store, cancel, fc.report} {
    s_.progress = &fc.sink;
    s_.upsert_through = fc.rec.upsert_through;
  }
  Status run() override {
    s_.on_caught_up = on_caught_up;
    s_.prune_touched = prune_touched;
    return s_.run();
  }
  bool yielded() const override { return s_.yielded; }
  mover::PgApplier& liveApplier() override { return *s_.liveApplier(); }
  Result<std::chrono::microseconds> drain(std::chrono::steady_clock::time_point deadline) override {
    return s_.drain(*s_.liveApplier(), *s_.liveSource(), deadline);
  }
  Status finishLive() override { return s_.finishLive(); }
  void closeLive() override { s_.closeLive(); }
  void failLive(Status st) override { s_.failLive(std::move(st)); }
  mover::ApplierStats totals() const override { return s_.totals; }
  Lsn acked() const override { return s_.acked; }

 private:
  Streamer s_;
};

std::string reverseName(const std::string& forward) { return forward + "_r"; }

// The full comparison of the tenant that must pass before the first freeze: the window's
// re-check only covers keys changed since tracking began, so everything else is proven here.
// It runs live (the verifier re-reads a differing chunk once the applier has passed the source
// position it was read at) in a background thread while the stream keeps being applied.
class PreCutoverVerify {
 public:
  // True once a comparison passed. Otherwise starts one when none runs (or a failed one may be
  // retried) and returns false. Errors: kDataLoss when the tenant differs; the verifier's
  // non-retryable errors.
  Result<bool> poll(const MigrateOptions& o, const mover::MigrationRecord& rec,
                    const std::atomic<bool>* cancel, MigrateReport& report) {
    if (passed_) return true;
    const auto now = std::chrono::steady_clock::now();
    if (!running_.valid()) {
      if (now < retry_after_) return false;
      VerifyJobOptions vo;
      vo.tenant = rec.tenant;
      vo.source = o.copy.source;
      vo.destination = o.copy.destination;
      vo.tenant_columns = o.copy.tenant_columns;
      vo.verify.live = true;
      vo.verify.jobs = 2;
      started_ = now;
      spdlog::info("full comparison of tenant {} before the first freeze (live, while catch-up "
                   "continues)", rec.tenant);
      running_ = std::async(std::launch::async, [vo, cancel] { return runVerifyJob(vo, cancel); });
      return false;
    }
    if (running_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
    Result<VerifyJobResult> r = running_.get();
    const double secs = std::chrono::duration<double>(now - started_).count();
    if (!r) {
      if (r.status().errorClass() != common::ErrorClass::kRetryable) {
        return r.status().withContext("comparison before the cutover");
      }
      spdlog::warn("comparison before the cutover: {}; retrying in 5 s", r.status().message());
      retry_after_ = now + std::chrono::seconds(5);
      return false;
    }
    const auto& rep = r->report;
    if (rep.differences() > 0) {
      return Status::dataLoss("comparison before the cutover: tenant " + rec.tenant + " has " +
                              std::to_string(rep.differences()) +
                              " row difference(s) between the stamps (run `stampmover verify "
                              "--live` for the list); not cutting over, migration stopped");
    }
    if (rep.unsettled() > 0) {
      spdlog::warn("comparison before the cutover: {} row(s) kept changing; comparing again in 5 s",
                   rep.unsettled());
      retry_after_ = now + std::chrono::seconds(5);
      return false;
    }
    passed_ = true;
    report.verified_rows = rep.sourceRows();
    report.verify_seconds = secs;
    spdlog::info("comparison before the cutover: {} rows of tenant {} identical on both stamps "
                 "({:.1f} s)", mover::withCommas(rep.sourceRows()), rec.tenant, secs);
    return true;
  }

 private:
  std::future<Result<VerifyJobResult>> running_;
  std::chrono::steady_clock::time_point started_{}, retry_after_{};
  bool passed_ = false;
};

// Everything the cutover, soak and finalize steps need besides the streams.
struct CutoverSetup {
  std::unique_ptr<Ledger> ledger;  // every object below is recorded here before it is created
  std::unique_ptr<routing::PgRoutingDirectory> routes;
  PgConnection src;
  PgConnection dst;
  std::vector<mover::TableInfo> src_tables;
  std::vector<mover::TableInfo> dst_tables;
  std::vector<LedgerEntry> forward_entries;  // what the forward stream created (ForwardStream)
};

// When cutover is asked for: the routing entry, and healing of what an interrupted worker may
// have left (a tenant frozen by a window it did not finish; a tenant active on a stamp that
// still fences it). Nothing is installed on the stamps yet: the fence triggers and the reverse
// slot come just before the first freeze (prepareFreeze), so a long catch-up taxes no other
// tenant's writes and retains no destination WAL.
Status prepareCutover(const MigrateOptions& o, const mover::MigrationRecord& rec,
                      CutoverSetup& cs) {
  cs.routes = std::make_unique<routing::PgRoutingDirectory>(o.control_plane_dsn);
  SM_RETURN_IF_ERROR(cs.routes->ensureSchema());
  // The entry is written by the freeze and the flips: recorded before any of them, so every
  // teardown settles it.
  SM_RETURN_IF_ERROR(cs.ledger->intend(
      {{LedgerKind::kRoutingEntry, LedgerServer::kControlPlane, rec.tenant}}));
  SM_ASSIGN_OR_RETURN(auto entry, cs.routes->get(rec.tenant));
  if (!entry) SM_RETURN_IF_ERROR(cs.routes->put(rec.tenant, o.copy.source.name).status());
  SM_ASSIGN_OR_RETURN(cs.src, PgConnection::connect(o.copy.source.dsn, o.copy.source.label));
  SM_ASSIGN_OR_RETURN(cs.dst, PgConnection::connect(o.copy.destination.dsn, o.copy.destination.label));
  if (entry && entry->state == routing::RouteState::kFrozen) {
    // A worker died inside a window: never leave the tenant frozen. Roll back to what the
    // entry was before the freeze (the flip had not happened, or the stamp would differ).
    const bool forward_window = entry->stamp == o.copy.source.name;
    spdlog::warn("tenant {} was left frozen on {} by an interrupted cutover; rolling it back",
                 rec.tenant, entry->stamp);
    mover::unfenceTenant(forward_window ? cs.src : cs.dst, rec.tenant)
        .ignore();  // the fence may not exist yet; expiry covers it otherwise
    SM_ASSIGN_OR_RETURN(
        auto back,
        cs.routes->compareAndSet(rec.tenant, entry->epoch,
                                 {entry->stamp,
                                  forward_window ? routing::RouteState::kActive : routing::RouteState::kDualWrite,
                                  forward_window ? std::nullopt : std::optional<std::string>(o.copy.source.name),
                                  "worker restart: roll back an interrupted cutover"}));
    entry = back;
  }
  if (entry && entry->state != routing::RouteState::kFrozen) {
    // The stamp that serves the tenant must not fence it (a worker killed between a flip and
    // the unfence of the new primary would leave every write failing).
    PgConnection* serving = entry->stamp == o.copy.source.name        ? &cs.src
                            : entry->stamp == o.copy.destination.name ? &cs.dst
                                                                      : nullptr;
    if (serving != nullptr) SM_RETURN_IF_ERROR(mover::unfenceTenant(*serving, rec.tenant));
  }
  SM_ASSIGN_OR_RETURN(cs.src_tables, mover::discoverTenantTables(cs.src, o.copy.tenant_columns));
  SM_ASSIGN_OR_RETURN(cs.dst_tables, mover::discoverTenantTables(cs.dst, o.copy.tenant_columns));
  return Status::ok();
}

// Just before the first freeze attempt, outside the window: the fence on both stamps (the
// reverse cutover fences the destination), and the reverse publication and slot on the
// destination (creating a slot waits for every running transaction there: never inside the
// window). Returns the reverse slot's consistent point (kept in the checkpoint store, so a
// restarted worker streams from it). Idempotent.
Result<Lsn> prepareFreeze(const MigrateOptions& o, const mover::MigrationRecord& rec,
                          CutoverSetup& cs, mover::CheckpointStore& store) {
  const std::string rname = reverseName(rec.slot_name);
  SM_RETURN_IF_ERROR(cs.ledger->intend(
      freezeLedgerEntries(rname, o.copy.source.name, o.copy.destination.name)));
  SM_RETURN_IF_ERROR(mover::acquireFence(cs.src, cs.src_tables, rec.id, {}));
  SM_RETURN_IF_ERROR(mover::acquireFence(cs.dst, cs.dst_tables, rec.id, {}));
  SM_ASSIGN_OR_RETURN(bool pub, mover::publicationExists(cs.dst, rname));
  if (!pub) SM_RETURN_IF_ERROR(mover::createTenantPublication(cs.dst, rname, cs.dst_tables, rec.tenant));
  SM_ASSIGN_OR_RETURN(bool slot, mover::slotExists(cs.dst, rname));
  if (!slot) {
    SM_ASSIGN_OR_RETURN(auto created, mover::createSlotWithSnapshot(o.copy.destination.dsn,
                                                                    o.copy.destination.label, rname));
    mover::CheckpointBatch b;
    b.putNote(rec.id, "reverse_start", created.consistent_point.toString());
    SM_RETURN_IF_ERROR(store.write(b));
    return created.consistent_point;
  }
  SM_ASSIGN_OR_RETURN(auto note, store.loadNote(rec.id, "reverse_start"));
  return Lsn::parse(note.value_or("")).value_or(Lsn());
}

// The cutover's context, one builder for both directions: forward (source -> destination,
// active -> dual_write with the source as shadow) and the rollback during the soak, the same
// steps backwards (destination -> source, dual_write -> active). `applier` and `drain` belong to
// the stream that runs the cutover.
enum class CutoverDirection { kForward, kReverse };
CutoverContext buildCutoverContext(CutoverDirection dir, const MigrateOptions& o,
                                   const mover::MigrationRecord& rec, CutoverSetup& cs,
                                   mover::PgApplier& applier,
                                   decltype(CutoverContext::drain) drain) {
  const bool fwd = dir == CutoverDirection::kForward;
  CutoverContext ctx;
  ctx.tenant = rec.tenant;
  ctx.source_stamp = fwd ? o.copy.source.name : o.copy.destination.name;
  ctx.dest_stamp = fwd ? o.copy.destination.name : o.copy.source.name;
  ctx.source = fwd ? &cs.src : &cs.dst;
  ctx.destination = fwd ? &cs.dst : &cs.src;
  ctx.routes = cs.routes.get();
  ctx.applier = &applier;
  ctx.tables = fwd ? cs.src_tables : cs.dst_tables;
  ctx.expected_state = fwd ? routing::RouteState::kActive : routing::RouteState::kDualWrite;
  ctx.flip_state = fwd ? routing::RouteState::kDualWrite : routing::RouteState::kActive;
  ctx.flip_shadow = fwd ? std::optional<std::string>(o.copy.source.name) : std::nullopt;
  ctx.drain = std::move(drain);
  return ctx;
}

// Routers cache a resolved entry for up to routing::RoutingClientOptions::cache_ttl: one that
// resolved the tenant just before a flip keeps sending its writes to the old primary until
// then, and only the old primary's fence turns them away (and makes the router resolve
// again). So the old primary is unfenced no sooner than that after the flip, with a margin.
using SteadyTime = std::chrono::steady_clock::time_point;
SteadyTime routerCachesExpiredAfter(SteadyTime flip) {
  return flip + routing::RoutingClientOptions{}.cache_ttl + std::chrono::milliseconds(250);
}

// The teardown's view of this migration: both stamps, the routing directory, the tables the
// fence was installed on.
TeardownTargets teardownTargets(const MigrateOptions& o, const mover::MigrationRecord& rec,
                                CutoverSetup& cs, SteadyTime unfence_after) {
  TeardownTargets t;
  t.tenant = rec.tenant;
  t.source_stamp = o.copy.source.name;
  t.destination_stamp = o.copy.destination.name;
  t.source = &cs.src;
  t.destination = &cs.dst;
  t.routes = cs.routes.get();
  t.source_tables = cs.src_tables;
  t.destination_tables = cs.dst_tables;
  t.unfence_after = unfence_after;
  return t;
}

// Finalize (and the teardown after a rollback's reverse flip): the reverse stream is stopped;
// the ledger's teardown drops slots, publications, origins and fence references on both
// sides, unfences the tenant no sooner than `unfence_after` (see routerCachesExpiredAfter) and
// leaves the routing entry active on the stamp it names. Objects the ledger may lack (records
// of older versions) are recorded first, so one teardown covers them too.
Status finalizeMigration(const MigrateOptions& o, const mover::MigrationRecord& rec, CutoverSetup& cs,
                         SteadyTime unfence_after) {
  std::vector<LedgerEntry> all = cs.forward_entries;
  for (auto& e : freezeLedgerEntries(reverseName(rec.slot_name), o.copy.source.name,
                                     o.copy.destination.name)) {
    all.push_back(std::move(e));
  }
  SM_RETURN_IF_ERROR(cs.ledger->intend(all));
  SM_ASSIGN_OR_RETURN(auto rep, teardown(*cs.ledger, teardownTargets(o, rec, cs, unfence_after)));
  spdlog::info("migration {}: teardown removed {} object(s)", rec.id, rep.removed.size());
  return Status::ok();
}

// Rollback before the flip: drop what the migration created and the partial copy; the
// tenant stays where it was.
Status abortMigration(const MigrateOptions& o, const mover::MigrationRecord& rec, CutoverSetup& cs) {
  // Slots, publications, origins, fences; no flip happened, so no router cache to wait out.
  SM_RETURN_IF_ERROR(finalizeMigration(o, rec, cs, SteadyTime{}));
  SM_RETURN_IF_ERROR(cs.dst.exec("BEGIN; SET LOCAL session_replication_role = replica"));
  for (auto it = cs.dst_tables.rbegin(); it != cs.dst_tables.rend(); ++it) {
    SM_RETURN_IF_ERROR(cs.dst.query("DELETE FROM " + it->quoted() + " WHERE " +
                                        common::quoteIdent(it->tenant_column) + " = $1",
                                    {rec.tenant})
                           .status());
  }
  return cs.dst.exec("COMMIT");
}

}  // namespace

Status saveRecordPhase(mover::CheckpointStore& store, const mover::MigrationRecord& rec,
                       const std::string& phase, ProgressSink* progress) {
  mover::MigrationRecord r = rec;
  r.phase = phase;
  r.updated_unix_ms = common::nowUnixMs();
  mover::CheckpointBatch b;
  b.putMigration(r);
  SM_RETURN_IF_ERROR(store.write(b));
  spdlog::info("migration {}: phase {}", rec.id, phase);
  if (progress != nullptr) {
    progress->update([&](MigrateProgress& p) {
      p.phase = phase;
      p.eta_seconds = -1;  // the next tick estimates the new phase
    });
  }
  return Status::ok();
}

Result<MigrateReport> runMigrate(const MigrateOptions& o, const std::atomic<bool>* cancel) {
  MigrateReport report;
  ProgressSink sink(o.on_progress);
  CopyJobOptions copy_options = o.copy;
  if (o.commit_statements) copy_options.copy.commit_statements = o.commit_statements;
  if (o.on_progress) {
    copy_options.progress_interval = o.status_interval;
    const auto copy_t0 = std::chrono::steady_clock::now();
    copy_options.on_copy_progress = [&sink, copy_t0](uint64_t rows, uint64_t bytes,
                                                     uint64_t est_rows, uint64_t) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - copy_t0).count();
      const double rate = secs > 0 ? static_cast<double>(rows) / secs : 0;
      sink.update([&](MigrateProgress& p) {
        p.phase = "copying";
        p.rows_copied = rows;
        p.bytes_copied = bytes;
        p.rows_estimated = est_rows;
        p.eta_seconds = rate > 0 && est_rows > rows ? static_cast<double>(est_rows - rows) / rate
                        : est_rows > 0 && rows >= est_rows ? 0 : -1;
      });
    };
  }
  SM_ASSIGN_OR_RETURN(report.copy, runCopyJob(copy_options, cancel));
  sink.update([&](MigrateProgress& p) {
    p.rows_copied = report.copy.copy.rows;
    p.bytes_copied = report.copy.copy.bytes;
    p.rows_estimated = report.copy.preflight.est_rows;
  });
  SM_ASSIGN_OR_RETURN(auto store, mover::openRocksDbCheckpointStore({o.copy.state_dir, true}));
  const mover::MigrationRecord& copied = report.copy.record;
  std::vector<LedgerEntry> forward_entries = forwardLedgerEntries(copied.slot_name);
  auto make_forward = [&o, cancel](const ForwardContext& fc) -> std::unique_ptr<ForwardStream> {
    StreamSpec spec{"forward", o.copy.source, o.copy.destination, fc.rec.slot_name,
                    fc.rec.publication_name, fc.rec.slot_name, reverseName(fc.rec.slot_name),
                    fc.rec.consistent_point, fc.cutover, o.commit_statements};
    return std::make_unique<PgoutputForward>(o, std::move(spec), fc, cancel);
  };
  return runMigrationPhases(o, std::move(report), *store, sink, std::move(forward_entries),
                            make_forward, cancel);
}

Result<MigrateReport> runMigrationPhases(const MigrateOptions& o, MigrateReport report,
                                         mover::CheckpointStore& store, ProgressSink& sink,
                                         std::vector<LedgerEntry> forward_entries,
                                         const MakeForwardStream& make_forward,
                                         const std::atomic<bool>* cancel) {
  const mover::MigrationRecord rec = report.copy.record;
  // Where the previous run stopped: a record past the flip never goes back to catching_up (the
  // forward slot is gone by then, and a rerun killed early would otherwise forget the flip).
  const auto prior = parsePhase(rec.phase);
  if (!prior) {
    return Status::refused("migration " + rec.id + " is in phase '" + rec.phase +
                           "', which this stampmover does not know (written by a newer "
                           "version?); run that version, or `stampmover cleanup` to start over");
  }
  const Phase prior_phase = *prior;
  const bool past_flip = isPastFlip(prior_phase);
  if (isTerminal(prior_phase)) {
    // Done. Its teardown is not run again: the tenant may be in another migration by now,
    // whose fence an unfence from here would lift.
    spdlog::info("migration {} is already {}; nothing to do", rec.id, rec.phase);
    report.flipped = prior_phase == Phase::kFinalized || prior_phase == Phase::kRolledBack;
    report.finalized = prior_phase == Phase::kFinalized;
    report.rolled_back = prior_phase == Phase::kRolledBack;
    report.aborted = prior_phase == Phase::kAborted;
    return report;
  }
  // The phase machine: each step is persisted in the record (and mirrored to the control
  // plane's migrations row once the board is open) before it is taken; illegal steps refuse.
  std::optional<MigrationBoard> board;
  PhaseMachine pm(prior_phase, [&](Phase, Phase to) -> Status {
    SM_RETURN_IF_ERROR(saveRecordPhase(store, rec, std::string(phaseName(to)), &sink));
    if (board) {
      board->report(rec.tenant, o.copy.source.name, o.copy.destination.name,
                    std::string(phaseName(to)))
          .ignore();  // visibility only; the record and the routing directory hold the truth
    }
    return common::failpoint("phase." + std::string(phaseName(to)));  // a phase boundary
  });
  const bool resume_abort = prior_phase == Phase::kAborting;
  if (!past_flip && !resume_abort) SM_RETURN_IF_ERROR(pm.advance(Phase::kCatchingUp));
  auto t0 = std::chrono::steady_clock::now();

  CutoverSetup cs;
  cs.forward_entries = forward_entries;
  SM_ASSIGN_OR_RETURN(cs.ledger, Ledger::open(store, rec.id,
                                              o.cutover_auto || o.cutover_manual
                                                  ? o.control_plane_dsn : std::string()));
  // Records written before the ledger existed: their forward objects are recorded now
  // (idempotent; the teardown drops only what exists).
  SM_RETURN_IF_ERROR(cs.ledger->intend(forward_entries));
  Lsn reverse_start;
  const bool cutover = o.cutover_auto || o.cutover_manual;
  if ((resume_abort || past_flip) && !cutover) {
    return Status::refused("migration " + rec.id + " is in phase " + rec.phase +
                           "; rerun it with --cutover and --control-plane-dsn to finish it, or "
                           "run `stampmover cleanup`");
  }
  if (cutover) {
    if (o.control_plane_dsn.empty()) {
      return Status::refused("--cutover needs the routing directory: pass --control-plane-dsn");
    }
    SM_RETURN_IF_ERROR(prepareCutover(o, rec, cs));
    SM_ASSIGN_OR_RETURN(auto b, MigrationBoard::open(o.control_plane_dsn));
    board = std::move(b);
    SM_RETURN_IF_ERROR(board->report(rec.tenant, o.copy.source.name, o.copy.destination.name,
                                     std::string(phaseName(pm.current()))));
  }
  // Liveness and operator requests, checked at every caught-up heartbeat.
  auto takeRequest = [&](const std::string& phase) -> Result<std::optional<std::string>> {
    if (!board) return std::optional<std::string>();
    SM_RETURN_IF_ERROR(board->report(rec.tenant, o.copy.source.name, o.copy.destination.name, phase));
    return board->takeRequest(rec.tenant);
  };
  auto recordWindow = [&](const CutoverReport& rep, const std::string& phase) {
    if (!board) return;
    board->report(rec.tenant, o.copy.source.name, o.copy.destination.name, phase, rep.window_ms,
                  rep.flipped ? "flipped" : rep.rollback_reason)
        .ignore();  // visibility only; the routing directory holds the truth
  };
  bool abort_requested = false;
  bool cutover_requested = false;
  bool freeze_ready = false;  // fence acquired and reverse slot created (prepareFreeze)
  // When this process saw the flips (the old primary stays fenced a while after them); a run
  // that resumes after a flip does not know when it happened and counts from its start.
  SteadyTime flipped_at = std::chrono::steady_clock::now();
  SteadyTime reverse_flipped_at = flipped_at;
  PreCutoverVerify pre_verify;

  const std::unique_ptr<ForwardStream> forward =
      make_forward(ForwardContext{rec, store, report, sink, cutover});
  auto pruner = [&](PgConnection& from, PgConnection& to,
                    const std::vector<mover::TableInfo>& tables, const char* stream) {
    return [&from, &to, &tables, stream, tenant = rec.tenant](mover::PgApplier& applier) {
      PruneStats ps;
      SM_RETURN_IF_ERROR(pruneApplierTouched(from, to, tables, applier, tenant, &ps));
      spdlog::info("{} stream: re-checked {} changed rows in {:.0f} ms; {} still different are "
                   "kept for the cutover's re-check", stream, mover::withCommas(ps.checked), ps.ms,
                   mover::withCommas(ps.kept));
      return Status::ok();
    };
  };
  if (cutover) forward->prune_touched = pruner(cs.src, cs.dst, cs.src_tables, "forward");
  if (o.until_caught_up || cutover) {
    // Only decides; the attempt itself is the freezing step below, outside the stream loop.
    forward->on_caught_up = [&](mover::PgApplier&) -> Result<CaughtUp> {
      if (!cutover) return CaughtUp::kStop;
      SM_ASSIGN_OR_RETURN(auto req, takeRequest("catching_up"));
      if (req && *req == "rollback") {
        abort_requested = true;
        return CaughtUp::kStop;
      }
      if (req && *req == "cutover") cutover_requested = true;  // kept while the comparison runs
      if (o.cutover_manual && !cutover_requested) return CaughtUp::kContinue;
      SM_ASSIGN_OR_RETURN(bool verified, pre_verify.poll(o, rec, cancel, report));
      if (!verified) return CaughtUp::kContinue;  // until the comparison has passed
      if (report.cutovers.size() >= o.cutover_attempts) {
        // Terminal for this run (not a connection problem to retry here): rerun to try again.
        return Status::refused("cutover did not succeed in " + std::to_string(o.cutover_attempts) +
                               " attempts (see the reasons above); the tenant stays on the source, "
                               "unfrozen; rerun migrate to try again");
      }
      return CaughtUp::kYield;
    };
  }
  // The freezing step: one forward cutover attempt through the forward stream's open session.
  // Returns whether it flipped; catching_up again when it rolled back.
  auto freezingStep = [&]() -> Result<bool> {
    if (!freeze_ready) {
      SM_RETURN_IF_ERROR(common::failpoint("migrate.before_prepare_freeze"));
      SM_ASSIGN_OR_RETURN(reverse_start, prepareFreeze(o, rec, cs, store));
      freeze_ready = true;
      SM_RETURN_IF_ERROR(common::failpoint("migrate.after_prepare_freeze"));
    }
    CutoverContext ctx = buildCutoverContext(
        CutoverDirection::kForward, o, rec, cs, forward->liveApplier(),
        [&](std::chrono::steady_clock::time_point deadline) { return forward->drain(deadline); });
    // Persisted before the freeze: from here until the record says otherwise the tenant may
    // be on the destination (a kill right after the flip), and cleanup treats it so.
    SM_RETURN_IF_ERROR(pm.advance(Phase::kFreezing));
    SM_ASSIGN_OR_RETURN(auto rep, runCutover(ctx, o.cutover));
    if (!rep.flipped) SM_RETURN_IF_ERROR(pm.advance(Phase::kCatchingUp));
    spdlog::info("{}", formatCutoverReport(rep));
    report.cutovers.push_back(rep);
    if (rep.flipped) flipped_at = std::chrono::steady_clock::now();
    recordWindow(rep, rep.flipped ? "dual_write" : "catching_up");
    return rep.flipped;
  };
  SM_ASSIGN_OR_RETURN(auto entry_now, cs.routes ? cs.routes->get(rec.tenant)
                                                : Result<std::optional<routing::RouteEntry>>(
                                                      std::optional<routing::RouteEntry>()));
  // The routing entry already points at the destination: the flip happened (perhaps in a run
  // killed before it recorded dual_write).
  const bool already_flipped = entry_now && entry_now->stamp == o.copy.destination.name;
  if (past_flip && prior_phase == Phase::kDualWrite) {
    // A finalize or rollback that began is finished, never resumed as a soak (its reverse slot
    // may already be dropped). A reverse flip that happened before the record said so shows in
    // the entry: the tenant is on the source again.
    const bool on_source = entry_now && entry_now->stamp == o.copy.source.name;
    if (on_source) {
      SM_RETURN_IF_ERROR(pm.advance(Phase::kRollingBack));
    } else if (already_flipped && entry_now->state == routing::RouteState::kActive) {
      SM_RETURN_IF_ERROR(pm.advance(Phase::kFinalizing));
    }
  }
  if (pm.current() == Phase::kRollingBack || pm.current() == Phase::kFinalizing ||
      pm.current() == Phase::kAborting) {
    spdlog::warn("migration {}: the previous run stopped during its {}; finishing it", rec.id,
                 phaseName(pm.current()));
    // When the flip happened is not known here (it may be a moment ago): wait routers out.
    flipped_at = reverse_flipped_at = std::chrono::steady_clock::now();
  }
  bool purge = o.purge_source;
  bool flipped_here = false;  // this process ran the forward flip (prepareFreeze ran here)

  // The dual-write soak: the destination serves; the reverse stream keeps the source exact
  // until finalize (a stop) or a rollback (the reverse cutover step, outside the stream loop).
  // Returns whether the tenant was flipped back to the source.
  auto runSoak = [&]() -> Result<bool> {
    StreamSpec rev{"reverse", o.copy.destination, o.copy.source, reverseName(rec.slot_name),
                   reverseName(rec.slot_name), reverseName(rec.slot_name), rec.slot_name,
                   reverse_start, true, o.reverse_commit_statements};
    Streamer reverse{o, rev, rec, store, cancel, report};
    reverse.progress = &sink;
    reverse.changes_before = report.changes;
    reverse.prune_touched = pruner(cs.dst, cs.src, cs.dst_tables, "reverse");
    const auto soak_end = std::chrono::steady_clock::now() + o.soak;
    // Only decides: finalize follows a stop; a rollback is the reverse cutover step below.
    reverse.on_caught_up = [&](mover::PgApplier&) -> Result<CaughtUp> {
      SM_ASSIGN_OR_RETURN(auto req, takeRequest("dual_write"));
      const bool soaked = !o.cutover_manual && std::chrono::steady_clock::now() >= soak_end;
      const bool want_rollback = (req && *req == "rollback") || (soaked && o.rollback_after_soak);
      if (req && *req == "finalize_purge") purge = true;
      if (want_rollback) return CaughtUp::kYield;
      return (req && req->rfind("finalize", 0) == 0) || soaked ? CaughtUp::kStop
                                                               : CaughtUp::kContinue;
    };
    // Rollback during the soak: the same cutover, backwards, through the reverse stream's open
    // session. Returns whether the stream is done (flipped back, or out of attempts).
    auto reverseCutoverStep = [&]() -> Result<bool> {
      mover::PgApplier& applier = *reverse.liveApplier();
      cdc::PgoutputSource& source = *reverse.liveSource();
      CutoverContext ctx = buildCutoverContext(
          CutoverDirection::kReverse, o, rec, cs, applier,
          [&](std::chrono::steady_clock::time_point deadline) {
            return reverse.drain(applier, source, deadline);
          });
      SM_ASSIGN_OR_RETURN(auto rep, runCutover(ctx, o.cutover));
      spdlog::info("rollback {}", formatCutoverReport(rep));
      report.rollbacks.push_back(rep);
      recordWindow(rep, rep.flipped ? "rolled_back" : "dual_write");
      if (rep.flipped) {
        report.rolled_back = true;
        reverse_flipped_at = std::chrono::steady_clock::now();
      }
      return rep.flipped || report.rollbacks.size() >= o.cutover_attempts;
    };
    Status st = Status::ok();
    for (;;) {
      st = reverse.run();
      if (!st.isOk() || !reverse.yielded) break;
      Result<bool> done = reverseCutoverStep();
      if (!done) {
        if (done.status().errorClass() != common::ErrorClass::kRetryable) {
          reverse.closeLive();
          st = done.status();
          break;
        }
        reverse.failLive(done.status());  // reconnects with backoff, as inside the stream
        continue;
      }
      if (*done) {
        st = reverse.finishLive();
        break;
      }
    }
    report.reverse_changes = reverse.totals.changes;
    SM_RETURN_IF_ERROR(st);
    return report.rolled_back;
  };

  // The phase machine's steps, from the persisted phase to a terminal one (or to the end of a
  // run that only follows, or an error: the phase stays where a rerun resumes).
  for (;;) {
    switch (pm.current()) {
      case Phase::kCatchingUp:
      case Phase::kFreezing: {
        if (already_flipped) {
          report.flipped = true;
          SM_RETURN_IF_ERROR(pm.advance(Phase::kDualWrite));
          break;
        }
        // Catching up, and freezing each time the stream yields for an attempt; the stream's
        // session stays open across an attempt that rolled back.
        Status st = Status::ok();
        bool flipped = false;
        for (;;) {
          st = forward->run();
          if (!st.isOk() || !forward->yielded()) break;
          Result<bool> attempt = freezingStep();
          if (!attempt) {
            if (attempt.status().errorClass() != common::ErrorClass::kRetryable) {
              forward->closeLive();
              st = attempt.status();
              break;
            }
            forward->failLive(attempt.status());  // reconnects with backoff, as inside the stream
            continue;
          }
          if (*attempt) {
            flipped = true;
            st = forward->finishLive();
            break;
          }
        }
        report.changes = forward->totals().changes;
        report.transactions = forward->totals().transactions;
        report.toast_repairs = forward->totals().toast_repairs;
        report.applied = forward->acked();
        report.catchup_seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!st.isOk()) {
          if (st.errorClass() == common::ErrorClass::kCancelled) spdlog::info("{}", st.message());
          return st;
        }
        if (!cutover) return report;  // followed until caught up
        if (abort_requested) {
          SM_RETURN_IF_ERROR(pm.advance(Phase::kAborting));
          break;
        }
        if (!flipped) {
          return Status::internal("the forward stream of migration " + rec.id +
                                  " ended without a flip or a request");
        }
        flipped_here = true;
        report.flipped = true;
        SM_RETURN_IF_ERROR(common::failpoint("migrate.before_dual_write_record"));
        SM_RETURN_IF_ERROR(pm.advance(Phase::kDualWrite));
        break;
      }

      case Phase::kDualWrite: {
        report.flipped = true;
        if (!flipped_here) {
          // Resuming the soak: the reverse slot must still be there. Recreating it would start
          // the reverse stream after the destination writes made since, and a later rollback
          // would flip to a source that lacks them.
          const std::string rname = reverseName(rec.slot_name);
          SM_ASSIGN_OR_RETURN(bool rslot, mover::slotExists(cs.dst, rname));
          if (!rslot) {
            return Status::refused(
                "tenant " + rec.tenant + " is in dual_write on " + o.copy.destination.label +
                " but the reverse slot " + rname + " is gone (dropped behind our back?): the "
                "source no longer follows the destination and is not a safe rollback target. "
                "Finalize (`stampmover finalize --tenant " + rec.tenant + "`) to keep the "
                "destination, or re-copy the tenant back before any rollback");
          }
          SM_ASSIGN_OR_RETURN(auto note, store.loadNote(rec.id, "reverse_start"));
          reverse_start = Lsn::parse(note.value_or("")).value_or(Lsn());
          if (board) {
            SM_RETURN_IF_ERROR(board->report(rec.tenant, o.copy.source.name,
                                             o.copy.destination.name, "dual_write"));
          }
        }
        // The forward slot is no longer needed: it would only retain WAL on the source.
        for (const auto& e : forward_entries) {
          if (e.server != LedgerServer::kSource) continue;  // the origin goes with the teardown
          Status dropped = dropLedgerObject(e, teardownTargets(o, rec, cs, {}), rec.id);
          if (dropped.isOk()) {
            cs.ledger->erase(e).ignore();  // best effort: the teardown erases it again
          } else {
            spdlog::warn("dropping the forward {}: {} (the teardown retries)",
                         ledgerKindName(e.kind), dropped.message());
          }
        }
        SM_ASSIGN_OR_RETURN(bool rolled_back, runSoak());
        if (rolled_back) {
          // Back on the source: drop everything the migration created; the source is
          // unfenced. Recorded first, so a rerun finishes this teardown.
          SM_RETURN_IF_ERROR(pm.advance(Phase::kRollingBack));
        } else if (o.finalize || o.cutover_manual) {
          SM_RETURN_IF_ERROR(pm.advance(Phase::kFinalizing));
        } else {
          return report;  // left in dual_write (--no-finalize)
        }
        break;
      }

      case Phase::kRollingBack:
        report.flipped = true;
        SM_RETURN_IF_ERROR(
            finalizeMigration(o, rec, cs, routerCachesExpiredAfter(reverse_flipped_at)));
        SM_RETURN_IF_ERROR(pm.advance(Phase::kRolledBack));
        report.rolled_back = true;
        break;

      case Phase::kFinalizing:
        report.flipped = true;
        SM_RETURN_IF_ERROR(finalizeMigration(o, rec, cs, routerCachesExpiredAfter(flipped_at)));
        SM_RETURN_IF_ERROR(pm.advance(Phase::kFinalized));
        report.finalized = true;
        if (purge) {
          SM_ASSIGN_OR_RETURN(report.purged_rows,
                              purgeTenant(cs.src, cs.dst, cs.src_tables, rec.tenant));
        }
        break;

      case Phase::kAborting:
        // Rollback before the flip: drop what was created and the partial copy.
        SM_RETURN_IF_ERROR(abortMigration(o, rec, cs));
        SM_RETURN_IF_ERROR(pm.advance(Phase::kAborted));
        report.aborted = true;
        break;

      case Phase::kFinalized:
      case Phase::kRolledBack:
      case Phase::kAborted:
        return report;

      default:
        return Status::refused("migration " + rec.id + " is in phase " +
                               std::string(phaseName(pm.current())) +
                               ", from which migrate cannot go on; roll it back "
                               "(`stampmover rollback`) or run `stampmover cleanup`");
    }
  }
}

std::string formatMigrateReport(const MigrateReport& r) {
  std::string out = formatCopyReport(r.copy);
  char line[512];
  std::snprintf(line, sizeof line,
                "catch-up: %s changes in %s transactions applied in %.1f s; position %s "
                "(durable, checkpointed, acknowledged); %llu reconnects, %llu TOAST repairs%s\n",
                mover::withCommas(r.changes).c_str(), mover::withCommas(r.transactions).c_str(),
                r.catchup_seconds, r.applied.toString().c_str(),
                static_cast<unsigned long long>(r.reconnects),
                static_cast<unsigned long long>(r.toast_repairs),
                r.caught_up ? "; caught up" : "");
  out += line;
  if (r.verified_rows > 0 || r.verify_seconds > 0) {
    std::snprintf(line, sizeof line,
                  "compared before the cutover: %s rows identical on both stamps (%.1f s, live)\n",
                  mover::withCommas(r.verified_rows).c_str(), r.verify_seconds);
    out += line;
  }
  for (const auto& c : r.cutovers) out += formatCutoverReport(c);
  for (const auto& c : r.rollbacks) out += "rollback " + formatCutoverReport(c);
  if (r.aborted) {
    out += "rolled back before the flip (operator request): slots, publications, origins, fences "
           "and the partial copy removed; the tenant stays on the source\n";
  }
  if (r.purged_rows > 0) {
    std::snprintf(line, sizeof line, "purged %s rows of the tenant from the old stamp\n",
                  mover::withCommas(r.purged_rows).c_str());
    out += line;
  }
  if (r.flipped) {
    std::snprintf(line, sizeof line, "dual-write soak: %s changes written at the destination "
                  "applied back to the source; %s\n",
                  mover::withCommas(r.reverse_changes).c_str(),
                  r.rolled_back ? "ROLLED BACK: the tenant is served by the source again"
                  : r.finalized ? "FINALIZED: the tenant is served by the destination; slots, "
                                  "publications, origins and fences removed"
                                : "still in dual_write");
    out += line;
  }
  if (r.last_lag_seconds >= 0) {
    std::snprintf(line, sizeof line, "  last heartbeat lag: %.3f s\n", r.last_lag_seconds);
    out += line;
  }
  return out;
}

Result<std::string> readStatus(const std::string& state_dir, const std::string& tenant) {
  SM_ASSIGN_OR_RETURN(auto store, mover::openRocksDbCheckpointStore({state_dir, false, true}));
  SM_ASSIGN_OR_RETURN(auto recs, store->listMigrations());
  std::string out;
  for (const auto& r : recs) {
    if (!tenant.empty() && r.tenant != tenant) continue;
    out += "migration " + r.id + ": phase " + r.phase + ", slot " + r.slot_name + "\n";
    // The ledger: every server-side object of the migration that is not verifiably gone.
    SM_ASSIGN_OR_RETURN(auto ledger_rows, store->loadLedger(r.id));
    out += "  ledger: " + (ledger_rows.empty() ? std::string("empty (nothing left on any server)")
                                               : std::to_string(ledger_rows.size()) + " object(s)") +
           "\n";
    for (const auto& [key, value] : ledger_rows) {
      auto e = decodeLedgerEntry(value);
      out += "    " + (e ? describeLedgerEntry(*e, "source stamp '" + r.source + "'",
                                               "destination stamp '" + r.destination + "'")
                         : "unreadable entry " + key + ": " + e.status().message()) +
             "\n";
    }
    SM_ASSIGN_OR_RETURN(auto pos, store->loadStreamPosition(r.id, "forward"));
    if (pos) out += "  checkpoint: " + pos->lsn.toString() + "\n";
    for (const char* stream : {"status", "status_reverse"}) {
    SM_ASSIGN_OR_RETURN(auto note, store->loadNote(r.id, stream));
    if (note) {
      out += std::string("  ") + (std::string(stream) == "status" ? "forward (source -> destination)"
                                                                : "reverse (destination -> source, dual-write soak)") + "\n";
      try {
        auto j = nlohmann::json::parse(*note);
        uint64_t age_ms = common::nowUnixMs() - j.value("updated_unix_ms", uint64_t{0});
        char line[512];
        std::snprintf(line, sizeof line,
                      "  lag: %s, %.1f s; apply rate %.0f changes/s; slot retains %s%s; "
                      "reported %.0f s ago\n",
                      mover::humanBytes(j.value("lag_bytes", 0.0)).c_str(),
                      j.value("lag_seconds", -1.0), j.value("apply_rate", 0.0),
                      mover::humanBytes(j.value("slot_retained_bytes", 0.0)).c_str(),
                      j.value("retention_warning", false) ? " (WARNING: over threshold)" : "",
                      static_cast<double>(age_ms) / 1e3);
        out += line;
        if (j.contains("kafka_lag_records")) {  // a --cdc kafka migration (kafka_migrate.cc)
          const std::string err = j.value("kafka_last_error", std::string());
          std::snprintf(line, sizeof line, "  kafka: %llu records behind; %llu broker errors%s%s\n",
                        static_cast<unsigned long long>(j.value("kafka_lag_records", uint64_t{0})),
                        static_cast<unsigned long long>(j.value("kafka_errors", uint64_t{0})),
                        j.value("kafka_failing", false) ? ", FAILING now: " : err.empty() ? "" : ", last: ",
                        err.c_str());
          out += line;
        }
      } catch (const std::exception& e) {
        out += std::string("  status unreadable: ") + e.what() + "\n";
      }
    }
    }
  }
  if (out.empty()) {
    return Status::refused("no migration" + (tenant.empty() ? std::string() : " of tenant " + tenant) +
                           " in state directory " + state_dir);
  }
  return out;
}

}  // namespace stampmover::orch
