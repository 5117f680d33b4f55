// The migration ledger and its teardown: see ledger.h. Entries are JSON values under
// "l/<migration>/<kind>/<server>/<name>" in the checkpoint store; the control plane mirrors
// them in stampmover_routing.migration_ledger for `status` and other workers.
#include "orchestrator/ledger.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/failpoint.h"
#include "mover/fence.h"
#include "mover/kafka_offsets.h"
#include "mover/source_setup.h"

namespace stampmover::orch {

using common::PgConnection;
using common::Result;
using common::Status;

namespace {

constexpr std::pair<LedgerKind, std::string_view> kKindNames[] = {
    {LedgerKind::kSlot, "slot"},
    {LedgerKind::kPublication, "publication"},
    {LedgerKind::kOrigin, "origin"},
    {LedgerKind::kReverseSlot, "reverse_slot"},
    {LedgerKind::kReversePublication, "reverse_publication"},
    {LedgerKind::kReverseOrigin, "reverse_origin"},
    {LedgerKind::kFenceRef, "fence_ref"},
    {LedgerKind::kStagingTable, "staging_table"},
    {LedgerKind::kRoutingEntry, "routing_entry"},
    {LedgerKind::kControlPlaneRow, "control_plane_row"},
    {LedgerKind::kKafkaState, "kafka_state"},
};
constexpr std::pair<LedgerServer, std::string_view> kServerNames[] = {
    {LedgerServer::kSource, "source"},
    {LedgerServer::kDestination, "destination"},
    {LedgerServer::kControlPlane, "control_plane"},
};

constexpr const char* kMirrorDdl =
    "CREATE SCHEMA IF NOT EXISTS stampmover_routing; "
    "CREATE TABLE IF NOT EXISTS stampmover_routing.migration_ledger ("
    " migration_id text NOT NULL, kind text NOT NULL, server text NOT NULL, name text NOT NULL,"
    " recorded_at timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (migration_id, kind, server, name))";

// The origin's apply session has just disconnected; its backend releases the origin when it
// exits, a moment later (55006 object_in_use until then).
Status dropOrigin(PgConnection& c, const std::string& name) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    auto r = c.query(
        "SELECT pg_replication_origin_drop($1) WHERE pg_replication_origin_oid($1) IS NOT NULL",
        {name});
    if (r || r.status().sqlState() != "55006" || std::chrono::steady_clock::now() >= deadline) {
      return r.status();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

PgConnection* connFor(LedgerServer s, const TeardownTargets& t) {
  switch (s) {
    case LedgerServer::kSource: return t.source;
    case LedgerServer::kDestination: return t.destination;
    case LedgerServer::kControlPlane: return nullptr;
  }
  return nullptr;
}

Status fp(const TeardownTargets& t, std::string_view name) {
  return t.failpoints ? common::failpoint(name) : Status::ok();
}

}  // namespace

std::string_view ledgerKindName(LedgerKind k) {
  for (const auto& [kind, name] : kKindNames) {
    if (kind == k) return name;
  }
  return "unknown";
}

std::string_view ledgerServerName(LedgerServer s) {
  for (const auto& [server, name] : kServerNames) {
    if (server == s) return name;
  }
  return "unknown";
}

std::optional<LedgerKind> parseLedgerKind(std::string_view text) {
  for (const auto& [kind, name] : kKindNames) {
    if (name == text) return kind;
  }
  return std::nullopt;
}

std::optional<LedgerServer> parseLedgerServer(std::string_view text) {
  for (const auto& [server, name] : kServerNames) {
    if (name == text) return server;
  }
  return std::nullopt;
}

std::string ledgerKey(const LedgerEntry& e) {
  return std::string(ledgerKindName(e.kind)) + "/" + std::string(ledgerServerName(e.server)) +
         "/" + e.name;
}

std::string encodeLedgerEntry(const LedgerEntry& e) {
  return nlohmann::json{{"kind", ledgerKindName(e.kind)},
                        {"server", ledgerServerName(e.server)},
                        {"name", e.name}}
      .dump();
}

Result<LedgerEntry> decodeLedgerEntry(std::string_view value) {
  try {
    auto j = nlohmann::json::parse(value);
    auto kind = parseLedgerKind(j.at("kind").get<std::string>());
    auto server = parseLedgerServer(j.at("server").get<std::string>());
    if (!kind || !server) {
      return Status::internal("ledger entry with an unknown kind or server: " + std::string(value));
    }
    return LedgerEntry{*kind, *server, j.at("name").get<std::string>()};
  } catch (const std::exception& e) {
    return Status::internal(std::string("malformed ledger entry: ") + e.what());
  }
}

std::string describeLedgerEntry(const LedgerEntry& e, const std::string& source_label,
                                const std::string& destination_label) {
  std::string what;
  switch (e.kind) {
    case LedgerKind::kSlot: what = "replication slot " + e.name; break;
    case LedgerKind::kPublication: what = "publication " + e.name; break;
    case LedgerKind::kOrigin: what = "replication origin " + e.name; break;
    case LedgerKind::kReverseSlot: what = "reverse replication slot " + e.name; break;
    case LedgerKind::kReversePublication: what = "reverse publication " + e.name; break;
    case LedgerKind::kReverseOrigin: what = "reverse replication origin " + e.name; break;
    case LedgerKind::kFenceRef: what = "fence reference (stamp " + e.name + ")"; break;
    case LedgerKind::kStagingTable: what = "staging table " + e.name; break;
    case LedgerKind::kRoutingEntry: what = "routing entry of tenant " + e.name; break;
    case LedgerKind::kControlPlaneRow: what = "control-plane row " + e.name; break;
    case LedgerKind::kKafkaState: what = "Kafka offsets and watermark of migration " + e.name; break;
  }
  const std::string where = e.server == LedgerServer::kSource        ? source_label
                            : e.server == LedgerServer::kDestination ? destination_label
                                                                     : "control plane";
  return what + " on " + where;
}

std::vector<LedgerEntry> forwardLedgerEntries(const std::string& slot_name) {
  return {{LedgerKind::kPublication, LedgerServer::kSource, slot_name},
          {LedgerKind::kSlot, LedgerServer::kSource, slot_name},
          {LedgerKind::kOrigin, LedgerServer::kDestination, slot_name}};
}

std::vector<LedgerEntry> kafkaForwardLedgerEntries(const std::string& origin_name,
                                                   const std::string& migration_id) {
  return {{LedgerKind::kOrigin, LedgerServer::kDestination, origin_name},
          {LedgerKind::kKafkaState, LedgerServer::kDestination, migration_id}};
}

std::vector<LedgerEntry> freezeLedgerEntries(const std::string& reverse_name,
                                             const std::string& source_stamp,
                                             const std::string& destination_stamp) {
  return {{LedgerKind::kFenceRef, LedgerServer::kSource, source_stamp},
          {LedgerKind::kFenceRef, LedgerServer::kDestination, destination_stamp},
          {LedgerKind::kReversePublication, LedgerServer::kDestination, reverse_name},
          {LedgerKind::kReverseSlot, LedgerServer::kDestination, reverse_name},
          {LedgerKind::kReverseOrigin, LedgerServer::kSource, reverse_name}};
}

Result<std::unique_ptr<Ledger>> Ledger::open(mover::CheckpointStore& store,
                                             std::string migration_id,
                                             const std::string& control_plane_dsn) {
  std::unique_ptr<Ledger> l(new Ledger(store, std::move(migration_id)));
  if (control_plane_dsn.empty()) return l;
  SM_ASSIGN_OR_RETURN(l->cp_, PgConnection::connect(control_plane_dsn, "control plane"));
  Status ddl = l->cp_.exec(kMirrorDdl);
  // Two workers creating the table at once: one loses on the catalog's unique index.
  if (!ddl.isOk() && ddl.sqlState() == "23505") ddl = l->cp_.exec(kMirrorDdl);
  SM_RETURN_IF_ERROR(ddl);
  SM_ASSIGN_OR_RETURN(auto all, l->entries());
  SM_RETURN_IF_ERROR(l->cp_.exec("BEGIN"));
  Status st = l->cp_.query("DELETE FROM stampmover_routing.migration_ledger WHERE migration_id = $1",
                           {l->id_})
                  .status();
  for (const auto& e : all) {
    if (!st.isOk()) break;
    st = l->cp_.query("INSERT INTO stampmover_routing.migration_ledger (migration_id, kind, "
                      "server, name) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                      {l->id_, std::string(ledgerKindName(e.kind)),
                       std::string(ledgerServerName(e.server)), e.name})
             .status();
  }
  if (!st.isOk()) {
    l->cp_.exec("ROLLBACK").ignore();  // reporting `st`
    return st;
  }
  SM_RETURN_IF_ERROR(l->cp_.exec("COMMIT"));
  return l;
}

Status Ledger::intend(const std::vector<LedgerEntry>& entries, const mover::CheckpointBatch* with) {
  mover::CheckpointBatch b;
  if (with != nullptr) b = *with;
  for (const auto& e : entries) b.putLedgerEntry(id_, ledgerKey(e), encodeLedgerEntry(e));
  SM_RETURN_IF_ERROR(store_.write(b));
  for (const auto& e : entries) mirror(e, true);
  return Status::ok();
}

Status Ledger::erase(const LedgerEntry& e) {
  mover::CheckpointBatch b;
  b.deleteLedgerEntry(id_, ledgerKey(e));
  SM_RETURN_IF_ERROR(store_.write(b));
  mirror(e, false);
  return Status::ok();
}

void Ledger::mirror(const LedgerEntry& e, bool present) {
  if (!cp_.valid()) return;
  const std::vector<common::PgParam> params = {id_, std::string(ledgerKindName(e.kind)),
                                               std::string(ledgerServerName(e.server)), e.name};
  auto r = present ? cp_.query("INSERT INTO stampmover_routing.migration_ledger (migration_id, "
                               "kind, server, name) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                               params)
                   : cp_.query("DELETE FROM stampmover_routing.migration_ledger WHERE "
                               "migration_id = $1 AND kind = $2 AND server = $3 AND name = $4",
                               params);
  if (!r) {
    // The store is the truth; the next open() rewrites the mirror from it.
    spdlog::warn("ledger mirror in the control plane: {}", r.status().message());
  }
}

Result<std::vector<LedgerEntry>> Ledger::entries() const {
  SM_ASSIGN_OR_RETURN(auto rows, store_.loadLedger(id_));
  std::vector<LedgerEntry> out;
  for (const auto& [key, value] : rows) {
    SM_ASSIGN_OR_RETURN(auto e, decodeLedgerEntry(value));
    out.push_back(std::move(e));
  }
  return out;
}

bool Ledger::contains(const LedgerEntry& entry) const {
  auto all = entries();
  return all && std::find(all->begin(), all->end(), entry) != all->end();
}

Result<bool> ledgerObjectExists(const LedgerEntry& e, PgConnection& c,
                                const std::string& migration_id) {
  auto isTrue = [&](const std::string& sql) -> Result<bool> {
    SM_ASSIGN_OR_RETURN(auto v, c.queryValue(sql, {e.name}));
    return v.value_or("f") == "t";
  };
  switch (e.kind) {
    case LedgerKind::kSlot:
    case LedgerKind::kReverseSlot:
      return mover::slotExists(c, e.name);
    case LedgerKind::kPublication:
    case LedgerKind::kReversePublication:
      return mover::publicationExists(c, e.name);
    case LedgerKind::kOrigin:
    case LedgerKind::kReverseOrigin:
      return isTrue("SELECT pg_replication_origin_oid($1) IS NOT NULL");
    case LedgerKind::kStagingTable:
      return isTrue("SELECT to_regclass($1) IS NOT NULL");
    case LedgerKind::kKafkaState:
      return mover::kafkaStateExists(c, e.name);
    case LedgerKind::kFenceRef: {
      SM_ASSIGN_OR_RETURN(auto users, mover::fenceUsers(c));
      return std::find(users.begin(), users.end(), migration_id) != users.end();
    }
    default:
      return false;
  }
}

namespace {

// Drops the object (idempotent: absent is success); dropLedgerObject() verifies afterwards.
Status dropOnly(const LedgerEntry& e, const TeardownTargets& t, const std::string& migration_id,
                PgConnection* c) {
  switch (e.kind) {
    case LedgerKind::kSlot:
    case LedgerKind::kReverseSlot:
      return mover::dropSlotIfExists(*c, e.name);
    case LedgerKind::kPublication:
    case LedgerKind::kReversePublication:
      return mover::dropPublicationIfExists(*c, e.name);
    case LedgerKind::kOrigin:
    case LedgerKind::kReverseOrigin:
      return dropOrigin(*c, e.name);
    case LedgerKind::kStagingTable:
      return c->exec("DROP TABLE IF EXISTS " + e.name);  // stored quoted ("schema"."table")
    case LedgerKind::kKafkaState:
      return mover::dropKafkaState(*c, e.name);
    case LedgerKind::kFenceRef:
      return mover::releaseFence(*c, migration_id,
                                 e.server == LedgerServer::kSource ? t.source_tables
                                                                   : t.destination_tables,
                                 {});
    default:
      return Status::ok();
  }
}

}  // namespace

Status dropLedgerObject(const LedgerEntry& e, const TeardownTargets& t,
                        const std::string& migration_id) {
  if (e.kind == LedgerKind::kRoutingEntry || e.kind == LedgerKind::kControlPlaneRow) {
    return Status::ok();  // settled by teardown(), never deleted
  }
  PgConnection* c = connFor(e.server, t);
  if (c == nullptr) return Status::refused("no connection to the " + std::string(ledgerServerName(e.server)));
  SM_RETURN_IF_ERROR(dropOnly(e, t, migration_id, c));
  // Verifiably gone before the caller erases the entry.
  SM_ASSIGN_OR_RETURN(bool still, ledgerObjectExists(e, *c, migration_id));
  if (still) {
    return Status::retryable(describeLedgerEntry(e, "source", "destination") +
                             " still exists after it was dropped; rerun to finish the teardown");
  }
  return Status::ok();
}

Result<TeardownReport> teardown(Ledger& ledger, const TeardownTargets& t) {
  TeardownReport rep;
  SM_ASSIGN_OR_RETURN(auto all, ledger.entries());
  auto step = [&](std::initializer_list<LedgerKind> kinds) -> Status {
    for (LedgerKind k : kinds) {
      for (const auto& e : all) {
        if (e.kind != k) continue;
        if (e.kind != LedgerKind::kRoutingEntry && connFor(e.server, t) == nullptr) {
          rep.kept.push_back(e);
          continue;
        }
        SM_RETURN_IF_ERROR(dropLedgerObject(e, t, ledger.migrationId())
                               .withContext("teardown of " + describeLedgerEntry(
                                                                 e, "source", "destination")));
        SM_RETURN_IF_ERROR(ledger.erase(e));
        rep.removed.push_back(e);
      }
    }
    return Status::ok();
  };
  SM_RETURN_IF_ERROR(fp(t, "teardown.begin"));
  SM_RETURN_IF_ERROR(step({LedgerKind::kReverseSlot, LedgerKind::kReversePublication}));
  SM_RETURN_IF_ERROR(fp(t, "teardown.after_reverse_slot"));
  SM_RETURN_IF_ERROR(step({LedgerKind::kSlot, LedgerKind::kPublication}));
  SM_RETURN_IF_ERROR(step({LedgerKind::kOrigin, LedgerKind::kReverseOrigin, LedgerKind::kKafkaState}));
  SM_RETURN_IF_ERROR(fp(t, "teardown.after_origins"));
  SM_RETURN_IF_ERROR(step({LedgerKind::kStagingTable}));
  if (const auto now = std::chrono::steady_clock::now(); now < t.unfence_after) {
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(t.unfence_after - now);
    spdlog::info("keeping the old primary fenced {} ms more, until routers' cached routes to it "
                 "have expired", wait.count());
    std::this_thread::sleep_for(wait);
  }
  if (t.unfence_source && t.source != nullptr) {
    SM_RETURN_IF_ERROR(mover::unfenceTenant(*t.source, t.tenant));
  }
  if (t.unfence_destination && t.destination != nullptr) {
    SM_RETURN_IF_ERROR(mover::unfenceTenant(*t.destination, t.tenant));
  }
  SM_RETURN_IF_ERROR(fp(t, "teardown.after_unfence"));
  SM_RETURN_IF_ERROR(step({LedgerKind::kFenceRef}));
  if (t.settle_route && t.routes != nullptr) {
    SM_ASSIGN_OR_RETURN(auto entry, t.routes->get(t.tenant));
    if (entry && entry->state != routing::RouteState::kActive) {
      SM_RETURN_IF_ERROR(fp(t, "teardown.before_active"));
      SM_RETURN_IF_ERROR(t.routes
                             ->compareAndSet(t.tenant, entry->epoch,
                                             {entry->stamp, routing::RouteState::kActive,
                                              std::nullopt, "finalize"})
                             .status());
    }
  }
  // The routing entry is the tenant's address and is never deleted; once settled (or, for
  // cleanup, once nothing of the migration is left that could move it) it leaves the ledger.
  for (const auto& e : all) {
    if (e.kind != LedgerKind::kRoutingEntry && e.kind != LedgerKind::kControlPlaneRow) continue;
    SM_RETURN_IF_ERROR(ledger.erase(e));
    rep.removed.push_back(e);
  }
  return rep;
}

Result<std::vector<LedgerEntry>> mirroredLedger(PgConnection& cp, const std::string& id) {
  SM_ASSIGN_OR_RETURN(auto exists,
                      cp.queryValue("SELECT to_regclass('stampmover_routing.migration_ledger') "
                                    "IS NOT NULL"));
  std::vector<LedgerEntry> out;
  if (exists.value_or("f") != "t") return out;
  SM_ASSIGN_OR_RETURN(auto r, cp.query("SELECT kind, server, name FROM "
                                       "stampmover_routing.migration_ledger WHERE migration_id = "
                                       "$1 ORDER BY kind, server, name",
                                       {id}));
  for (int i = 0; i < common::rowCount(r); ++i) {
    auto kind = parseLedgerKind(common::cell(r, i, 0));
    auto server = parseLedgerServer(common::cell(r, i, 1));
    if (!kind || !server) continue;  // written by a newer version: not ours to show
    out.push_back({*kind, *server, common::cell(r, i, 2)});
  }
  return out;
}

}  // namespace stampmover::orch
