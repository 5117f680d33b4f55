// Migrate job: see migrate_job.h. Order of durability on every checkpoint, never reversed:
// destination commit (with the origin position inside it) -> destination WAL flush ->
// RocksDB synced write -> standby status update to the source.
#include "orchestrator/migrate_job.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "cdc/pgoutput_source.h"
#include "common/log.h"
#include "mover/progress.h"

namespace stampmover::orch {

using common::Lsn;
using common::PgConnection;
using common::Result;
using common::Status;

namespace {

constexpr const char* kHeartbeatPrefix = "stampmover_heartbeat";

bool cancelled(const std::atomic<bool>* c) { return c != nullptr && c->load(); }

// Sleeps up to `d`, waking early on cancel.
void sleepFor(std::chrono::milliseconds d, const std::atomic<bool>* cancel) {
  auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until && !cancelled(cancel)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

struct Streamer {
  const MigrateOptions& o;
  const mover::MigrationRecord& rec;
  mover::CheckpointStore& store;
  const std::atomic<bool>* cancel;
  MigrateReport& report;
  Lsn acked;
  PgConnection hb;  // source session for heartbeats and lag readings
  std::chrono::steady_clock::time_point last_hb{}, last_ckpt{}, last_status{};
  uint64_t last_changes = 0;
  std::chrono::steady_clock::time_point rate_t0 = std::chrono::steady_clock::now();
  int64_t since_us = 0;  // heartbeats emitted before this run started do not prove catch-up

  Status heartbeat() {
    if (!hb.valid()) {
      SM_ASSIGN_OR_RETURN(hb, PgConnection::connect(o.copy.source.dsn, o.copy.source.label + " (heartbeat)"));
    }
    auto r = hb.query("SELECT pg_logical_emit_message(true, $1, $2)",
                      {std::string(kHeartbeatPrefix), std::to_string(cdc::pgEpochMicrosNow())});
    if (!r) {
      hb = PgConnection();
      return r.status();
    }
    return Status::ok();
  }

  // Durable position -> RocksDB -> source, in that order.
  Status checkpoint(mover::PgApplier& applier, cdc::PgoutputSource& source) {
    SM_ASSIGN_OR_RETURN(Lsn durable, applier.durableLsn());
    if (durable > acked) {
      mover::CheckpointBatch b;
      b.putStreamPosition(rec.id, {"forward", durable, 0, rec.slot_name});
      SM_RETURN_IF_ERROR(store.write(b));
      SM_RETURN_IF_ERROR(source.acknowledge(durable));
      acked = durable;
    }
    return Status::ok();
  }

  void status(mover::PgApplier& applier, cdc::PgoutputSource& source) {
    auto now = std::chrono::steady_clock::now();
    double dt = std::chrono::duration<double>(now - rate_t0).count();
    uint64_t changes = applier.stats().changes;
    double rate = dt > 0 ? static_cast<double>(changes - last_changes) / dt : 0;
    last_changes = changes;
    rate_t0 = now;
    uint64_t lag_bytes = 0, retained = 0;
    if (hb.valid()) {
      auto r = hb.query("SELECT pg_current_wal_lsn()::text, (SELECT restart_lsn::text FROM "
                        "pg_replication_slots WHERE slot_name = $1)",
                        {rec.slot_name});
      if (r && common::rowCount(*r) == 1) {
        auto cur = Lsn::parse(common::cell(*r, 0, 0));
        auto restart = Lsn::parse(common::cell(*r, 0, 1));
        if (cur && cur->value() > std::max(applier.committedLsn(), acked).value()) {
          lag_bytes = cur->value() - std::max(applier.committedLsn(), acked).value();
        }
        if (cur && restart && cur->value() > restart->value()) retained = cur->value() - restart->value();
      }
    }
    int64_t hb_lag = applier.lastHeartbeatLagMicros();
    double lag_s = hb_lag >= 0 ? static_cast<double>(hb_lag) / 1e6 : -1;
    report.last_lag_seconds = lag_s;
    const Lsn applied = std::max(applier.committedLsn(), acked);
    spdlog::info("catch-up: applied {} (acked {}), lag {} / {}, {:.0f} changes/s, "
                 "{} changes, {} txns, slot retains {}",
                 applied.toString(), acked.toString(),
                 mover::humanBytes(static_cast<double>(lag_bytes)),
                 lag_s >= 0 ? fmt::format("{:.3f} s", lag_s) : std::string("? s"), rate,
                 mover::withCommas(changes), mover::withCommas(applier.stats().transactions),
                 mover::humanBytes(static_cast<double>(retained)));
    if (retained > o.retention_warn_bytes) {
      spdlog::warn("slot {} retains {} of WAL on {} (threshold {}); the source's disk fills if "
                   "catch-up stalls", rec.slot_name, mover::humanBytes(static_cast<double>(retained)),
                   o.copy.source.label, mover::humanBytes(static_cast<double>(o.retention_warn_bytes)));
    }
    nlohmann::json j = {{"phase", "catching_up"},
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
    b.putNote(rec.id, "status", j.dump());
    store.write(b).ignore();  // status is informational; the next write retries
    (void)source;
  }

  // One connected session: returns when cancelled, caught up, or on error.
  Status session(mover::PgApplier& applier, cdc::PgoutputSource& source) {
    for (;;) {
      auto now = std::chrono::steady_clock::now();
      if (now - last_hb >= o.heartbeat_interval) {
        Status st = heartbeat();
        if (!st.isOk()) spdlog::warn("heartbeat: {}", st.message());
        last_hb = now;
      }
      if (cancelled(cancel)) {
        if (!applier.inTransaction()) SM_RETURN_IF_ERROR(applier.commitPending());
        SM_RETURN_IF_ERROR(checkpoint(applier, source));
        return Status::cancelled("stopped at " + acked.toString() + "; rerun to resume");
      }
      SM_ASSIGN_OR_RETURN(auto ev, source.next(std::chrono::milliseconds(50)));
      if (ev) {
        SM_RETURN_IF_ERROR(applier.apply(*ev));
      } else {
        SM_RETURN_IF_ERROR(applier.commitPending());
      }
      now = std::chrono::steady_clock::now();
      if (now - last_ckpt >= o.checkpoint_interval) {
        SM_RETURN_IF_ERROR(checkpoint(applier, source));
        last_ckpt = now;
      }
      if (now - last_status >= o.status_interval) {
        status(applier, source);
        last_status = now;
      }
      int64_t hb_us = applier.lastHeartbeatMicros();
      if (o.until_caught_up && hb_us > since_us && !applier.inTransaction()) {
        double lag_ms = static_cast<double>(applier.lastHeartbeatLagMicros()) / 1e3;
        if (lag_ms < static_cast<double>(o.caught_up_lag.count())) {
          SM_RETURN_IF_ERROR(applier.commitPending());
          // Wait for the destination flush so the reported position is durable.
          for (int i = 0; i < 200 && applier.durableLsn().isOk() &&
                          *applier.durableLsn() < applier.committedLsn();
               ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
          SM_RETURN_IF_ERROR(checkpoint(applier, source));
          report.caught_up = true;
          report.last_lag_seconds = lag_ms / 1e3;
          return Status::ok();
        }
      }
    }
  }
};

}  // namespace

Result<MigrateReport> runMigrate(const MigrateOptions& o, const std::atomic<bool>* cancel) {
  MigrateReport report;
  SM_ASSIGN_OR_RETURN(report.copy, runCopyJob(o.copy, cancel));
  const mover::MigrationRecord rec = report.copy.record;
  std::error_code ec;
  SM_ASSIGN_OR_RETURN(auto store, mover::openRocksDbCheckpointStore({o.copy.state_dir, true}));
  {
    mover::MigrationRecord r = rec;
    r.phase = "catching_up";
    r.updated_unix_ms = common::nowUnixMs();
    mover::CheckpointBatch b;
    b.putMigration(r);
    SM_RETURN_IF_ERROR(store->write(b));
  }
  auto t0 = std::chrono::steady_clock::now();
  Streamer s{o, rec, *store, cancel, report, Lsn(), PgConnection()};
  s.since_us = cdc::pgEpochMicrosNow();
  std::mt19937_64 rng(std::random_device{}());
  auto backoff = std::chrono::milliseconds(100);
  auto failing_since = std::chrono::steady_clock::time_point{};
  for (;;) {
    mover::ApplierOptions ao;
    ao.dest_dsn = o.copy.destination.dsn;
    ao.dest_label = o.copy.destination.label;
    ao.source_dsn = o.copy.source.dsn;
    ao.source_label = o.copy.source.label;
    ao.origin_name = rec.slot_name;
    ao.tenant = rec.tenant;
    ao.tenant_columns = o.copy.tenant_columns;
    ao.max_batch_changes = o.max_batch_changes;
    ao.max_batch_age = o.max_batch_age;
    Status st;
    auto applier = mover::PgApplier::open(ao);
    std::unique_ptr<cdc::PgoutputSource> source;
    if (!applier) {
      st = applier.status();
    } else {
      auto origin = (*applier)->originProgress();
      if (!origin) {
        st = origin.status();
      } else {
        auto saved = store->loadStreamPosition(rec.id, "forward");
        if (saved && saved->has_value() && (*saved)->lsn > *origin) {
          spdlog::warn("checkpoint store position {} is ahead of the destination's replication "
                       "origin {} (destination restored from a backup?); the origin wins",
                       (*saved)->lsn.toString(), origin->toString());
        }
        Lsn start = origin->isZero() ? rec.consistent_point : *origin;
        s.acked = start;
        cdc::PgoutputSourceOptions so;
        so.dsn = o.copy.source.dsn;
        so.label = o.copy.source.label;
        so.slot = rec.slot_name;
        so.publication = rec.publication_name;
        so.start = start;
        auto src = cdc::PgoutputSource::start(so);
        if (!src) {
          st = src.status();
          if (st.errorClass() == common::ErrorClass::kRefused &&
              st.message().find("does not exist") != std::string::npos) {
            st = Status::refused(
                "replication slot \"" + rec.slot_name + "\" of migration " + rec.id +
                " no longer exists on " + o.copy.source.label +
                " (dropped behind our back?); changes since it was created cannot be recovered: "
                "run `stampmover cleanup --tenant " + rec.tenant +
                " --purge-destination` and migrate again");
          }
        } else {
          source = std::move(*src);
          spdlog::info("streaming slot {} from {}", rec.slot_name, start.toString());
          failing_since = {};
          backoff = std::chrono::milliseconds(100);
          st = s.session(**applier, *source);
          report.changes += (*applier)->stats().changes;
          report.transactions += (*applier)->stats().transactions;
          report.toast_repairs += (*applier)->stats().toast_repairs;
        }
      }
    }
    if (st.isOk() || st.errorClass() == common::ErrorClass::kCancelled) {
      report.applied = s.acked;
      report.catchup_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!st.isOk()) {
        spdlog::info("{}", st.message());
        return st;
      }
      return report;
    }
    if (st.errorClass() != common::ErrorClass::kRetryable) return st;
    auto now = std::chrono::steady_clock::now();
    if (failing_since == std::chrono::steady_clock::time_point{}) failing_since = now;
    if (o.give_up_after.count() > 0 && now - failing_since > o.give_up_after) {
      return st.withContext("giving up after " + std::to_string(o.give_up_after.count() / 1000) + " s of retries");
    }
    report.reconnects++;
    auto jitter = std::chrono::milliseconds(rng() % (static_cast<uint64_t>(backoff.count()) + 1));
    spdlog::warn("{}; reconnecting in {} ms", st.message(), (backoff + jitter).count() / 2);
    sleepFor((backoff + jitter) / 2, cancel);
    backoff = std::min(backoff * 2, o.max_backoff);
    if (cancelled(cancel)) return Status::cancelled("stopped while reconnecting; rerun to resume");
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
    SM_ASSIGN_OR_RETURN(auto pos, store->loadStreamPosition(r.id, "forward"));
    if (pos) out += "  checkpoint: " + pos->lsn.toString() + "\n";
    SM_ASSIGN_OR_RETURN(auto note, store->loadNote(r.id, "status"));
    if (note) {
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
      } catch (const std::exception& e) {
        out += std::string("  status unreadable: ") + e.what() + "\n";
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
