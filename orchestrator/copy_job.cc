// Copy job orchestration: see copy_job.h.
#include "orchestrator/copy_job.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "common/log.h"
#include "common/pg.h"
#include "mover/progress.h"
#include "mover/fence.h"
#include "mover/source_setup.h"
#include "common/failpoint.h"
#include "orchestrator/ledger.h"
#include "orchestrator/phase.h"
#include "routing/routing_directory.h"

namespace stampmover::orch {

using common::PgConnection;
using common::Result;
using common::Status;
using mover::MigrationRecord;

namespace {

constexpr const char* kPhaseStarting = "starting";  // record written, slot maybe created
constexpr const char* kPhaseCopying = "copying";    // slot + plan fixed, chunks in progress
constexpr const char* kPhaseCopied = "copied";      // snapshot copy complete

Result<std::unique_ptr<mover::CheckpointStore>> openStore(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Status::refused("cannot create state directory '" + dir + "': " + ec.message() +
                           " (set --state-dir)");
  }
  return mover::openRocksDbCheckpointStore({dir, true});
}

// Persists the copy's next phase; the step is checked against the phase machine (phase.h)
// first, so a record is never moved backwards or past a phase it has not reached.
Status saveRecord(mover::CheckpointStore& store, MigrationRecord& rec, const char* phase) {
  const auto from = parsePhase(rec.phase);
  const auto to = parsePhase(phase);
  if (from && to) SM_RETURN_IF_ERROR(checkTransition(*from, *to).withContext("migration " + rec.id));
  rec.phase = phase;
  rec.updated_unix_ms = common::nowUnixMs();
  mover::CheckpointBatch b;
  b.putMigration(rec);
  SM_RETURN_IF_ERROR(store.write(b));
  spdlog::info("migration {}: phase {}", rec.id, rec.phase);
  return common::failpoint("phase." + rec.phase);  // a phase boundary (see phase.h)
}

struct Conns {
  PgConnection src;
  PgConnection dst;
};

Result<Conns> connectBoth(const CopyJobOptions& o) {
  Conns c;
  SM_ASSIGN_OR_RETURN(c.src, PgConnection::connect(o.source.dsn, o.source.label));
  SM_ASSIGN_OR_RETURN(c.dst, PgConnection::connect(o.destination.dsn, o.destination.label));
  return c;
}

// A word for a shell command line: quoted when it holds anything a shell would interpret.
std::string shellWord(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789-_.:/@+=,") == std::string::npos) {
    return s;
  }
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

// The endpoint as the operator named it: a stamp name, or (given by DSN) where it is; the DSN
// itself may hold a secret and is never repeated.
std::string endpointArgs(const Endpoint& e, const char* stamp_flag, const char* dsn_flag) {
  if (e.name == common::dsnLocation(e.dsn)) {
    return std::string(" ") + dsn_flag + " '<the DSN of " + e.name + ">'";
  }
  return std::string(" ") + stamp_flag + " " + shellWord(e.name);
}

// The command that forgets a migration whose records cannot be trusted any more: cleanup drops
// the slot and publication by name (absent ones are fine) and removes the tenant's records from
// this state directory; with `purge` it also deletes the tenant's rows that the earlier copy
// left on the destination.
std::string startOverCommand(const CopyJobOptions& o, const std::string& tenant, bool purge) {
  std::string cmd = "stampmover cleanup --tenant " + shellWord(tenant) +
                    endpointArgs(o.source, "--from", "--source-dsn");
  if (purge) {
    cmd += endpointArgs(o.destination, "--to", "--dest-dsn") + " --purge-destination";
  }
  return cmd + " --state-dir " + shellWord(o.state_dir);
}

std::string describeChange(const mover::StampIdentity& then, const mover::StampIdentity& now) {
  if (then.system_identifier != now.system_identifier) {
    return "system identifier " + then.system_identifier + " when the migration began, " +
           now.system_identifier + " now (a different cluster at the same address: rebuilt, "
           "restored or replaced?)";
  }
  return "database oid " + std::to_string(then.database_oid) + " when the migration began, " +
         std::to_string(now.database_oid) + " now (the database was dropped and recreated?)";
}

// Phases in which the record says the forward slot exists on the source and the forward
// stream's origin on the destination (once a position was checkpointed). Later phases
// (dual_write, finalized, rolled_back) belong to teardown paths that drop them.
bool slotExpected(const std::string& phase) {
  return phase == kPhaseCopying || phase == kPhaseCopied || phase == "catching_up" ||
         phase == "freezing";
}

// Refuses to go on from `rec` unless the stamps are still the servers it was written about and
// the objects it recorded are still there (see runCopyJob in copy_job.h). Records without
// identities (older versions) adopt the current ones. Changes nothing on any server.
Status checkRecordDescribesStamps(mover::CheckpointStore& store, MigrationRecord& rec, Conns& c,
                                  const CopyJobOptions& o, const mover::StampIdentity& src_now,
                                  const mover::StampIdentity& dst_now) {
  const bool src_changed = rec.source_identity.known() && !(rec.source_identity == src_now);
  const bool dst_changed =
      rec.destination_identity.known() && !(rec.destination_identity == dst_now);
  if (src_changed || dst_changed) {
    const bool both = src_changed && dst_changed;
    std::string what = src_changed ? "the " + o.source.label + " has " +
                                         describeChange(rec.source_identity, src_now)
                                   : std::string();
    if (dst_changed) {
      what += std::string(both ? "; " : "") + "the " + o.destination.label + " has " +
              describeChange(rec.destination_identity, dst_now);
    }
    // With the destination unchanged, the earlier copy's rows are still there to remove.
    return Status::refused("migration " + rec.id + " in state directory " + o.state_dir +
                           " was recorded on other servers: " + what +
                           "; its checkpoints are not trusted. Start over: `" +
                           startOverCommand(o, rec.tenant, !dst_changed) +
                           "`, then run the migration again");
  }
  if (!rec.source_identity.known() || !rec.destination_identity.known()) {
    spdlog::info("migration {}: the record (written by an older stampmover) has no stamp "
                 "identity; adopting source {}/oid {} and destination {}/oid {}",
                 rec.id, src_now.system_identifier, src_now.database_oid,
                 dst_now.system_identifier, dst_now.database_oid);
    rec.source_identity = src_now;
    rec.destination_identity = dst_now;
    mover::CheckpointBatch b;
    b.putMigration(rec);
    SM_RETURN_IF_ERROR(store.write(b));
  }
  if (!slotExpected(rec.phase)) return Status::ok();
  SM_ASSIGN_OR_RETURN(bool slot_ok, mover::slotExists(c.src, rec.slot_name));
  if (!slot_ok) {
    return Status::refused("replication slot \"" + rec.slot_name + "\" of migration " + rec.id +
                           " (phase " + rec.phase + ") no longer exists on " + o.source.label +
                           " (dropped behind our back, or the stamp was replaced?); changes since "
                           "the copy began are lost to us. Start over: `" +
                           startOverCommand(o, rec.tenant, true) + "`, then run the migration again");
  }
  SM_ASSIGN_OR_RETURN(auto pos, store.loadStreamPosition(rec.id, "forward"));
  if (pos && rec.phase != kPhaseCopying) {
    // The forward stream's origin is named after the slot (orchestrator/migrate_job.cc) and
    // holds the applied position committed with the data: without it the destination does not
    // remember what it applied.
    SM_ASSIGN_OR_RETURN(auto origin,
                        c.dst.queryValue("SELECT count(*) FROM pg_replication_origin "
                                         "WHERE roname = $1",
                                         {rec.slot_name}));
    if (origin.value_or("0") == "0") {
      return Status::refused("replication origin \"" + rec.slot_name + "\" of migration " +
                             rec.id + " no longer exists on " + o.destination.label +
                             " although a stream position " + pos->lsn.toString() +
                             " was checkpointed (dropped, or the destination was restored or "
                             "replaced?). Start over: `" + startOverCommand(o, rec.tenant, true) +
                             "`, then run the migration again");
    }
  }
  return Status::ok();
}

// The canonical key for commands that may meet a source without tenant tables (cleanup after
// a stamp was rebuilt): the source's cast when it can tell, else the state directory's records.
Result<std::string> tenantTextForCleanup(PgConnection& src, const CopyJobOptions& o) {
  auto canon = mover::canonicalTenantKey(src, o.tenant_columns, o.tenant);
  if (canon) return canon->key.text();
  if (canon.status().errorClass() != common::ErrorClass::kRefused) return canon.status();
  SM_ASSIGN_OR_RETURN(auto keys, tenantKeysFromState(o.state_dir, o.tenant));
  if (keys.size() > 1) {
    std::string all;
    for (const auto& k : keys) all += (all.empty() ? "" : ", ") + k.text();
    return Status::refused("tenant key '" + o.tenant + "' matches several recorded migrations (" +
                           all + ") and " + o.source.label + " cannot tell which (" +
                           canon.status().message() + "); pass the key exactly as recorded");
  }
  if (keys.size() == 1) return keys.front().text();
  spdlog::warn("cleanup: {}; taking tenant key '{}' as typed", canon.status().message(), o.tenant);
  return o.tenant;
}

// Reports the copy's progress from the store's completed chunks (the store is thread-safe; the
// copy's own Progress object is not safe to read while the copy adds to it) every interval,
// and once more when stopped. Does nothing without a callback.
class CopyProgressPoller {
 public:
  CopyProgressPoller(const CopyJobOptions& o, mover::CheckpointStore& store, std::string id,
                     uint64_t est_rows, uint64_t est_bytes) {
    if (!o.on_copy_progress) return;
    auto fn = o.on_copy_progress;
    auto interval = std::max(o.progress_interval, std::chrono::milliseconds(50));
    thread_ = std::thread([this, fn, interval, &store, id = std::move(id), est_rows, est_bytes] {
      auto report = [&] {
        auto chunks = store.loadChunksDone(id);
        if (!chunks) return;  // informational: the next tick retries
        uint64_t rows = 0, bytes = 0;
        for (const auto& ch : *chunks) {
          rows += ch.rows;
          bytes += ch.bytes;
        }
        fn(rows, bytes, est_rows, est_bytes);
      };
      std::unique_lock lock(mu_);
      while (!stop_) {
        cv_.wait_for(lock, interval, [this] { return stop_; });
        lock.unlock();
        report();
        lock.lock();
      }
    });
  }
  ~CopyProgressPoller() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

bool recordNamesTenant(const MigrationRecord& rec, const std::string& raw) {
  if (rec.tenant == raw) return true;
  if (rec.tenant_types.empty()) return false;
  for (const auto& type : rec.tenant_types) {
    auto canon = common::canonicalTenantTextOffline(raw, common::tenantKeyKind(type));
    if (!canon || *canon != rec.tenant) return false;
  }
  return true;
}

Result<std::vector<common::TenantKey>> tenantKeysFromState(const std::string& state_dir,
                                                           const std::string& raw) {
  std::vector<common::TenantKey> out;
  if (state_dir.empty() || !std::filesystem::exists(state_dir + "/CURRENT")) return out;
  SM_ASSIGN_OR_RETURN(auto store, mover::openRocksDbCheckpointStore({state_dir, false, true}));
  SM_ASSIGN_OR_RETURN(auto recs, store->listMigrations());
  for (const auto& r : recs) {
    if (!recordNamesTenant(r, raw)) continue;
    auto key = common::TenantKey::fromStored(r.tenant);
    if (std::find(out.begin(), out.end(), key) == out.end()) out.push_back(std::move(key));
  }
  return out;
}

Result<mover::PreflightReport> runPreflightOnly(const CopyJobOptions& o) {
  SM_ASSIGN_OR_RETURN(Conns c, connectBoth(o));
  SM_ASSIGN_OR_RETURN(auto canon, mover::canonicalTenantKey(c.src, o.tenant_columns, o.tenant));
  mover::PreflightOptions po;
  po.tenant = canon.key;
  po.tenant_columns = o.tenant_columns;
  po.slot_name = mover::replicationNameForTenant(canon.key.text(), c.src.database());
  return mover::runPreflight(c.src, c.dst, po);
}

Result<CopyJobResult> runCopyJob(const CopyJobOptions& o, const std::atomic<bool>* cancel) {
  CopyJobResult result;
  SM_ASSIGN_OR_RETURN(Conns c, connectBoth(o));
  // The key first: ids, names and the record are all derived from its canonical form.
  SM_ASSIGN_OR_RETURN(const mover::CanonicalTenant canon,
                      mover::canonicalTenantKey(c.src, o.tenant_columns, o.tenant));
  const common::TenantKey& tenant = canon.key;
  if (tenant.text() != o.tenant) {
    spdlog::info("tenant key '{}' reads as '{}' on {} ({}); using that form", o.tenant,
                 tenant.text(), o.source.label, canon.types.front());
  }
  SM_ASSIGN_OR_RETURN(auto store, openStore(o.state_dir));
  const std::string id = mover::migrationId(tenant, o.source.name, o.destination.name);
  const std::string repl_name = mover::replicationNameForTenant(tenant.text(), c.src.database());
  SM_ASSIGN_OR_RETURN(auto existing, store->loadMigration(id));
  SM_ASSIGN_OR_RETURN(const mover::StampIdentity src_identity, mover::readStampIdentity(c.src));
  SM_ASSIGN_OR_RETURN(const mover::StampIdentity dst_identity, mover::readStampIdentity(c.dst));
  if (existing) {
    // Before anything acts on the record (even the restart below drops objects by its names).
    SM_RETURN_IF_ERROR(
        checkRecordDescribesStamps(*store, *existing, c, o, src_identity, dst_identity));
  }

  if (existing && existing->phase == kPhaseStarting) {
    // An earlier run died between writing its record and fixing the copy plan: nothing was
    // copied yet. Drop what it may have created and start afresh.
    spdlog::warn("migration {}: previous run stopped before copying; starting over", id);
    SM_ASSIGN_OR_RETURN(auto ledger, Ledger::open(*store, id));
    SM_RETURN_IF_ERROR(ledger->intend(forwardLedgerEntries(existing->slot_name)));
    TeardownTargets t;
    t.tenant = existing->tenant;
    t.source_stamp = o.source.name;
    t.destination_stamp = o.destination.name;
    t.source = &c.src;
    t.destination = &c.dst;
    t.unfence_source = t.unfence_destination = false;  // nothing was fenced yet
    t.settle_route = false;
    t.failpoints = false;
    SM_RETURN_IF_ERROR(teardown(*ledger, t).status());
    existing.reset();
  }
  const bool resuming = existing.has_value();

  mover::PreflightOptions po;
  po.tenant = tenant;
  po.tenant_columns = o.tenant_columns;
  po.resuming = resuming;
  po.slot_name = repl_name;
  SM_ASSIGN_OR_RETURN(result.preflight, mover::runPreflight(c.src, c.dst, po));
  for (const auto& w : result.preflight.warnings) spdlog::warn("preflight: {}", w);
  spdlog::info("preflight passed: {} tenant tables, ~{} rows, ~{}", result.preflight.tables.size(),
               mover::withCommas(result.preflight.est_rows),
               mover::humanBytes(static_cast<double>(result.preflight.est_bytes)));

  if (resuming && existing->phase != kPhaseCopying) {  // copied, or a later phase
    result.record = *existing;
    result.already_copied = true;
    result.resumed = true;
    SM_ASSIGN_OR_RETURN(auto chunks, store->loadChunksDone(id));
    for (const auto& ch : chunks) {
      result.copy.rows += ch.rows;
      result.copy.bytes += ch.bytes;
    }
    result.copy.chunks_total = result.copy.chunks_skipped = static_cast<uint32_t>(chunks.size());
    return result;
  }

  mover::CopyEndpoints ep{o.source.dsn, o.source.label, o.destination.dsn, o.destination.label};
  mover::ProgressOptions popts;
  popts.terminal = o.progress_terminal;
  mover::Progress progress(popts);

  if (resuming) {
    MigrationRecord rec = *existing;
    SM_ASSIGN_OR_RETURN(bool slot_ok, mover::slotExists(c.src, rec.slot_name));
    if (!slot_ok) {
      return Status::refused("replication slot \"" + rec.slot_name + "\" of migration " + id +
                             " no longer exists on " + o.source.label +
                             " (dropped behind our back?); changes since the copy began are "
                             "lost to us. Start over: `" + startOverCommand(o, tenant.text(), true) +
                             "`, then run the migration again");
    }
    SM_ASSIGN_OR_RETURN(bool pub_ok, mover::publicationExists(c.src, rec.publication_name));
    if (!pub_ok) {
      return Status::refused("publication \"" + rec.publication_name + "\" of migration " + id +
                             " no longer exists on " + o.source.label + ". Start over: `" +
                             startOverCommand(o, tenant.text(), true) +
                             "`, then run the migration again");
    }
    // The slot's exported snapshot died with the earlier run. Copy the remaining chunks under
    // a fresh snapshot: safe because catch-up from the slot's consistent point is idempotent,
    // and the staging upsert absorbs rows that moved into chunks already copied.
    SM_ASSIGN_OR_RETURN(PgConnection snap_conn, PgConnection::connect(o.source.dsn, o.source.label));
    SM_RETURN_IF_ERROR(snap_conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
    SM_ASSIGN_OR_RETURN(auto snap, snap_conn.queryValue("SELECT pg_export_snapshot()"));
    if (!snap) return Status::internal("pg_export_snapshot() returned NULL");
    // Every transaction this snapshot sees committed before this position; catch-up replays
    // them over rows that already hold their effect, so their inserts must be upserts.
    SM_ASSIGN_OR_RETURN(auto wal, snap_conn.queryValue("SELECT pg_current_wal_insert_lsn()"));
    auto through = common::Lsn::parse(wal.value_or(""));
    if (!through) return Status::internal("unparseable pg_current_wal_insert_lsn()");
    rec.upsert_through = std::max(rec.upsert_through, *through);
    SM_RETURN_IF_ERROR(saveRecord(*store, rec, kPhaseCopying));
    spdlog::info("migration {}: resuming the copy under a fresh snapshot", id);
    CopyProgressPoller poller(o, *store, id, result.preflight.est_rows, result.preflight.est_bytes);
    SM_ASSIGN_OR_RETURN(result.copy, mover::copySnapshot(ep, result.preflight.tables, rec,
                                                         tenant.text(), *snap, true, *store, o.copy, &progress,
                                                         cancel));
    snap_conn.exec("COMMIT").ignore();  // read-only transaction: nothing to keep
    result.resumed = true;
    result.record = rec;
  } else {
    MigrationRecord rec;
    rec.id = id;
    rec.tenant = tenant.text();
    rec.tenant_types = canon.types;
    rec.source_identity = src_identity;
    rec.destination_identity = dst_identity;
    rec.source = o.source.name;
    rec.destination = o.destination.name;
    rec.slot_name = repl_name;
    rec.publication_name = repl_name;
    rec.created_unix_ms = common::nowUnixMs();
    // The record and the ledger of the objects about to be created, in one synced batch.
    rec.phase = kPhaseStarting;
    rec.updated_unix_ms = common::nowUnixMs();
    {
      mover::CheckpointBatch with;
      with.putMigration(rec);
      SM_ASSIGN_OR_RETURN(auto ledger, Ledger::open(*store, id));
      SM_RETURN_IF_ERROR(ledger->intend(forwardLedgerEntries(rec.slot_name), &with));
      spdlog::info("migration {}: phase {}", rec.id, rec.phase);
    }
    SM_RETURN_IF_ERROR(common::failpoint("phase.starting"));
    Status st = mover::createTenantPublication(c.src, rec.publication_name, result.preflight.tables,
                                               tenant.text());
    if (!st.isOk()) {
      mover::CheckpointBatch b;
      b.deleteMigration(id);
      store->write(b).ignore();  // reporting the publication error; a stale record is redone
      return st;
    }
    auto slot = mover::createSlotWithSnapshot(o.source.dsn, o.source.label, rec.slot_name);
    if (!slot) {
      mover::dropSlotAndPublication(c.src, rec.slot_name, rec.publication_name)
          .ignore();  // best effort; the next run or cleanup drops leftovers by name
      return slot.status();
    }
    rec.consistent_point = slot->consistent_point;
    rec.plan = mover::planChunks(result.preflight.tables, o.copy.chunk_bytes);
    SM_RETURN_IF_ERROR(saveRecord(*store, rec, kPhaseCopying));
    spdlog::info("slot {} created at {}; copying {} chunks under snapshot {}", rec.slot_name,
                 rec.consistent_point.toString(), rec.plan.size(), slot->snapshot_name);
    CopyProgressPoller poller(o, *store, id, result.preflight.est_rows, result.preflight.est_bytes);
    SM_ASSIGN_OR_RETURN(result.copy,
                        mover::copySnapshot(ep, result.preflight.tables, rec, tenant.text(),
                                            slot->snapshot_name, false, *store, o.copy, &progress,
                                            cancel));
    result.record = rec;
  }
  // Freshly loaded tables have no planner statistics at the destination; catch-up lookups and
  // the cutover's re-check go by primary key and must not be planned as sequential scans.
  for (const auto& t : result.preflight.tables) {
    Status analyzed = c.dst.exec("ANALYZE " + t.quoted());
    if (!analyzed.isOk()) spdlog::warn("ANALYZE {} at the destination: {}", t.key(), analyzed.message());
  }
  SM_RETURN_IF_ERROR(saveRecord(*store, result.record, kPhaseCopied));
  return result;
}

Result<CleanupResult> runCleanup(const CopyJobOptions& o, bool purge_destination,
                                 const std::string& control_plane_dsn) {
  CleanupResult out;
  SM_ASSIGN_OR_RETURN(PgConnection src, PgConnection::connect(o.source.dsn, o.source.label));
  SM_ASSIGN_OR_RETURN(const std::string tenant, tenantTextForCleanup(src, o));
  out.tenant = tenant;
  const std::string name = mover::replicationNameForTenant(tenant, src.database());
  // Where the tenant is served decides what may be torn down: the stamp that serves it keeps
  // its rows, and a stamp that does not serve it keeps its fence (stale routers).
  std::optional<routing::RouteEntry> entry;
  if (!control_plane_dsn.empty()) {
    routing::PgRoutingDirectory routes(control_plane_dsn);
    SM_ASSIGN_OR_RETURN(entry, routes.get(tenant));
  }
  const bool served_by_dest = entry && entry->stamp == o.destination.name;
  if (purge_destination && served_by_dest) {
    return Status::refused("not purging: the routing entry of tenant " + tenant + " points at " +
                           o.destination.label + " (" + routing::routeStateName(entry->state) +
                           ", epoch " + std::to_string(entry->epoch) +
                           "): it serves the tenant. Roll the migration back first "
                           "(`stampmover rollback --tenant " + tenant + "`)");
  }
  SM_ASSIGN_OR_RETURN(auto store, openStore(o.state_dir));
  SM_ASSIGN_OR_RETURN(auto recs, store->listMigrations());
  std::vector<mover::MigrationRecord> mine;
  for (const auto& r : recs) {
    if (r.tenant == tenant) mine.push_back(r);
  }
  if (purge_destination) {
    for (const auto& r : mine) {
      // Any phase from a cutover attempt on may have flipped the tenant to the destination
      // (a worker killed right after the flip has not recorded dual_write yet).
      const auto phase = parsePhase(r.phase);
      const bool may_serve = phase && (*phase == Phase::kFreezing || *phase == Phase::kDualWrite ||
                                       *phase == Phase::kFinalizing || *phase == Phase::kFinalized);
      if (may_serve && control_plane_dsn.empty()) {
        return Status::refused("not purging: migration " + r.id + " of tenant " + tenant +
                               " reached phase " + r.phase + ", so the destination may serve the "
                               "tenant; pass --control-plane-dsn so the routing entry can be "
                               "checked");
      }
    }
    // A worker killed between the flip's compare-and-set and writing "dual_write" to its record
    // leaves a record that still says catching_up while the destination serves the tenant; so
    // does a lost state directory. The reverse stream, created just before the first freeze
    // and dropped by every teardown, says a flip may have happened.
    if (control_plane_dsn.empty() && !o.destination.dsn.empty()) {
      SM_ASSIGN_OR_RETURN(PgConnection dst,
                          PgConnection::connect(o.destination.dsn, o.destination.label));
      const std::string rname = name + "_r";  // the reverse stream's slot and publication
      SM_ASSIGN_OR_RETURN(const bool reverse_slot, mover::slotExists(dst, rname));
      SM_ASSIGN_OR_RETURN(const bool reverse_pub, mover::publicationExists(dst, rname));
      if (reverse_slot || reverse_pub) {
        return Status::refused("not purging: the reverse stream " + rname + " exists on " +
                               o.destination.label + ", so a cutover of tenant " + tenant +
                               " was prepared and the destination may serve it; pass "
                               "--control-plane-dsn so the routing entry can be checked");
      }
    }
  }
  SM_ASSIGN_OR_RETURN(out.dropped_slot, mover::slotExists(src, name));
  SM_ASSIGN_OR_RETURN(out.dropped_publication, mover::publicationExists(src, name));
  // One teardown per recorded migration, plus one for the migration these stamps would have
  // (its objects are found by name even when the state directory was lost). Each ledger gets
  // the objects a migration may have created recorded first: the teardown drops what exists.
  TeardownTargets t;
  t.tenant = tenant;
  t.source_stamp = o.source.name;
  t.destination_stamp = o.destination.name;
  t.source = &src;
  // Where the tenant is served decides the fences: a stamp that does not serve it keeps its
  // fence while routers may still send it writes (dual_write), and the serving stamp must not.
  t.unfence_source = !served_by_dest;
  t.unfence_destination = !entry || served_by_dest || entry->state != routing::RouteState::kDualWrite;
  t.settle_route = false;  // cleanup never moves or settles a tenant
  t.failpoints = false;
  SM_ASSIGN_OR_RETURN(t.source_tables, mover::discoverTenantTables(src, o.tenant_columns));
  PgConnection dst;
  if (!o.destination.dsn.empty()) {
    SM_ASSIGN_OR_RETURN(dst, PgConnection::connect(o.destination.dsn, o.destination.label));
    SM_ASSIGN_OR_RETURN(t.destination_tables, mover::discoverTenantTables(dst, o.tenant_columns));
    t.destination = &dst;
  }
  std::vector<std::pair<std::string, std::string>> ids;  // (migration id, slot name)
  for (const auto& r : mine) ids.emplace_back(r.id, r.slot_name);
  const std::string own_id = mover::migrationId(tenant, o.source.name, o.destination.name);
  if (std::none_of(ids.begin(), ids.end(), [&](const auto& p) { return p.first == own_id; })) {
    ids.emplace_back(own_id, name);
  }
  for (const auto& [id, slot] : ids) {
    SM_ASSIGN_OR_RETURN(auto ledger, Ledger::open(*store, id, control_plane_dsn));
    std::vector<LedgerEntry> all = forwardLedgerEntries(slot);
    for (auto& e : freezeLedgerEntries(slot + "_r", o.source.name, o.destination.name)) {
      all.push_back(std::move(e));
    }
    // A --cdc kafka migration's restart offsets at the destination (none for pgoutput).
    all.push_back({LedgerKind::kKafkaState, LedgerServer::kDestination, id});
    SM_RETURN_IF_ERROR(ledger->intend(all));
    SM_ASSIGN_OR_RETURN(auto rep, teardown(*ledger, t));
    for (const auto& e : rep.kept) {
      spdlog::warn("cleanup: {} not checked (pass the destination to drop it)",
                   describeLedgerEntry(e, o.source.label, o.destination.label));
    }
  }
  if (t.destination != nullptr && purge_destination) {
    const auto& tables = t.destination_tables;
    SM_RETURN_IF_ERROR(dst.exec("BEGIN; SET LOCAL session_replication_role = replica"));
    for (auto it = tables.rbegin(); it != tables.rend(); ++it) {
      SM_ASSIGN_OR_RETURN(auto res, dst.query("DELETE FROM " + it->quoted() + " WHERE " +
                                                  common::quoteIdent(it->tenant_column) + " = $1",
                                              {tenant}));
      out.destination_rows_deleted += std::stoull(PQcmdTuples(res.get()));
    }
    SM_RETURN_IF_ERROR(dst.exec("COMMIT"));
  }
  mover::CheckpointBatch b;
  for (const auto& [id, slot] : ids) {
    b.deleteMigration(id);  // its ledger is empty now, but for what could not be checked
    if (std::any_of(mine.begin(), mine.end(), [&](const auto& r) { return r.id == id; })) {
      out.records_removed++;
    }
  }
  SM_RETURN_IF_ERROR(store->write(b));
  return out;
}

std::string formatPreflight(const mover::PreflightReport& r, const CopyJobOptions& o) {
  std::string out = "preflight passed for tenant " + r.tenant.text() + " (" + o.source.label + " -> " +
                    o.destination.label + ")\n";
  char line[512];
  std::snprintf(line, sizeof line, "  %-32s %14s %12s  %s\n", "table", "est. rows", "est. size",
                "key");
  out += line;
  for (const auto& t : r.tables) {
    std::string key;
    for (const auto& k : t.primary_key) key += (key.empty() ? "" : ",") + k;
    std::snprintf(line, sizeof line, "  %-32s %14s %12s  (%s)\n", t.key().c_str(),
                  mover::withCommas(static_cast<uint64_t>(t.est_tenant_rows)).c_str(),
                  mover::humanBytes(static_cast<double>(t.est_tenant_bytes)).c_str(), key.c_str());
    out += line;
  }
  out += "  total ~" + mover::withCommas(r.est_rows) + " rows, ~" +
         mover::humanBytes(static_cast<double>(r.est_bytes)) + "; free replication slots: " +
         std::to_string(r.free_slots) + "\n";
  return out;
}

std::string formatCopyReport(const CopyJobResult& res) {
  const auto& c = res.copy;
  std::string out;
  char line[512];
  if (res.already_copied) {
    return "tenant " + res.record.tenant + " was already copied (migration " + res.record.id +
           ", " + mover::withCommas(c.rows) + " rows); nothing to do\n";
  }
  out += "copy report: tenant " + res.record.tenant + ", migration " + res.record.id +
         (res.resumed ? " (resumed)" : "") + "\n";
  std::snprintf(line, sizeof line, "  %-32s %14s %12s %8s %s\n", "table", "rows", "bytes", "chunks",
                "format");
  out += line;
  for (const auto& t : c.tables) {
    std::snprintf(line, sizeof line, "  %-32s %14s %12s %4u/%-3u %s\n", t.table.c_str(),
                  mover::withCommas(t.rows).c_str(),
                  mover::humanBytes(static_cast<double>(t.bytes)).c_str(),
                  t.chunks - t.chunks_skipped, t.chunks, t.binary ? "binary" : "text");
    out += line;
  }
  double secs = std::max(c.seconds, 1e-9);
  std::snprintf(line, sizeof line,
                "  total: %s rows, %s in %.2f s (%s rows/s, %s/s) with %u job(s)\n",
                mover::withCommas(c.rows).c_str(),
                mover::humanBytes(static_cast<double>(c.bytes)).c_str(), c.seconds,
                mover::withCommas(static_cast<uint64_t>(static_cast<double>(c.rows) / secs)).c_str(),
                mover::humanBytes(static_cast<double>(c.bytes) / secs).c_str(), c.jobs);
  out += line;
  std::snprintf(line, sizeof line,
                "  chunks: %u copied now, %u already done before this run%s\n", c.chunks_copied,
                c.chunks_skipped, c.upsert ? " (this run upserted through staging tables)" : "");
  out += line;
  out += "  slot " + res.record.slot_name + " (consistent point " +
         res.record.consistent_point.toString() + ") and publication " +
         res.record.publication_name + " are kept for the live catch-up\n";
  return out;
}

}  // namespace stampmover::orch
