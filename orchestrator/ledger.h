// The ledger of a migration: every server-side object it creates (slots, publications, origins,
// fence references, staging tables, routing entries), written durably to the checkpoint store
// BEFORE the object is created and erased only once it is verifiably gone, mirrored to the
// control plane when there is one; and the one idempotent teardown that finalize, rollback,
// abort, cancel and `cleanup` all use (DESIGN.md, "State and scale-out").
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "mover/catalog.h"
#include "mover/checkpoint_store.h"
#include "routing/routing_directory.h"

namespace stampmover::orch {

enum class LedgerKind {
  kSlot,                // forward logical slot, on the source
  kPublication,         // forward publication, on the source
  kOrigin,              // forward stream's replication origin, on the destination
  kReverseSlot,         // reverse slot, on the destination
  kReversePublication,  // reverse publication, on the destination
  kReverseOrigin,       // reverse stream's replication origin, on the source
  kFenceRef,            // this migration's reference on a stamp's fence (stampmover.fence_users)
  kStagingTable,        // a regular (not TEMP) staging table; dropped if it exists
  kRoutingEntry,        // the tenant's routing entry this migration wrote (never deleted)
  kControlPlaneRow,     // a row of ours in the control plane (the ledger mirror itself)
  kKafkaState,          // a Kafka-sourced migration's rows in stampmover.kafka_offsets and
                        // stampmover.kafka_applied, on the destination (name: migration id)
};
enum class LedgerServer { kSource, kDestination, kControlPlane };

std::string_view ledgerKindName(LedgerKind kind);
std::string_view ledgerServerName(LedgerServer server);
std::optional<LedgerKind> parseLedgerKind(std::string_view text);
std::optional<LedgerServer> parseLedgerServer(std::string_view text);

struct LedgerEntry {
  LedgerKind kind = LedgerKind::kSlot;
  LedgerServer server = LedgerServer::kSource;
  std::string name;  // the object's name (a fence reference: the stamp's name)
  bool operator==(const LedgerEntry&) const = default;
};

// The store key of an entry ("<kind>/<server>/<name>": one entry per object) and its value
// (JSON). decodeLedgerEntry() takes the value. Errors: kInternal on a malformed value.
std::string ledgerKey(const LedgerEntry& entry);
std::string encodeLedgerEntry(const LedgerEntry& entry);
common::Result<LedgerEntry> decodeLedgerEntry(std::string_view value);
// "slot stampmover_42_ab12cd34 on source stamp 'stamp-a'" for status and logs.
std::string describeLedgerEntry(const LedgerEntry& entry, const std::string& source_label,
                                const std::string& destination_label);

// The entries a migration's forward setup creates, in creation order (publication, slot,
// origin); `name` is the record's slot name (publication and origin share it).
std::vector<LedgerEntry> forwardLedgerEntries(const std::string& slot_name);
// The entries prepared just before the first freeze: fence references on both stamps, the
// reverse publication and slot on the destination, the reverse origin on the source.
// What a Kafka-sourced migration's forward stream creates: the replication origin and the
// offsets/watermark rows at the destination (nothing on the source).
std::vector<LedgerEntry> kafkaForwardLedgerEntries(const std::string& origin_name,
                                                   const std::string& migration_id);
std::vector<LedgerEntry> freezeLedgerEntries(const std::string& reverse_name,
                                             const std::string& source_stamp,
                                             const std::string& destination_stamp);

// One migration's ledger. Not thread-safe (the migrate thread owns it).
class Ledger {
 public:
  // Binds the ledger of `migration_id` in `store` (not owned; must outlive the ledger). With a
  // control-plane DSN, the mirror table (stampmover_routing.migration_ledger) is created if
  // missing and brought in line with the store (rows added and removed).
  // Errors: the store's; kRetryable when the control plane cannot be reached.
  static common::Result<std::unique_ptr<Ledger>> open(mover::CheckpointStore& store,
                                                      std::string migration_id,
                                                      const std::string& control_plane_dsn = "");

  // Records the objects about to be created, durably (one synced batch, together with
  // `with` when given, e.g. the migration record), before the caller creates them.
  // Idempotent. The mirror is updated afterwards (best effort: a failure is logged and the
  // next open() brings it in line).
  common::Status intend(const std::vector<LedgerEntry>& entries,
                        const mover::CheckpointBatch* with = nullptr);
  // Forgets an object the caller verified is gone. Idempotent.
  common::Status erase(const LedgerEntry& entry);
  // The entries, in a fixed order (by key). Errors: the store's, kInternal on a bad value.
  common::Result<std::vector<LedgerEntry>> entries() const;
  bool contains(const LedgerEntry& entry) const;
  const std::string& migrationId() const { return id_; }

 private:
  Ledger(mover::CheckpointStore& store, std::string id) : store_(store), id_(std::move(id)) {}
  void mirror(const LedgerEntry& entry, bool present);

  mover::CheckpointStore& store_;
  std::string id_;
  common::PgConnection cp_;  // invalid without a control plane
};

// What the teardown acts on. Connections are borrowed; a null one keeps that server's
// entries (the report says so). Tables are those the fence triggers were installed on.
struct TeardownTargets {
  std::string tenant;                                   // canonical key
  std::string source_stamp;                             // stamp names (fence refs, routing)
  std::string destination_stamp;
  common::PgConnection* source = nullptr;               // Default: none
  common::PgConnection* destination = nullptr;          // Default: none
  routing::RoutingDirectory* routes = nullptr;          // Default: none
  std::vector<mover::TableInfo> source_tables;
  std::vector<mover::TableInfo> destination_tables;
  // The tenant's fence rows are lifted on a stamp only when allowed: the stamp that serves
  // the tenant must not fence it, but a stamp routers may still send cached writes to keeps
  // its fence (cleanup while the tenant is in dual_write).
  bool unfence_source = true;                           // Default: true
  bool unfence_destination = true;                      // Default: true
  // Old primary fenced no sooner than this (routers' cached routes; see migrate_job.cc).
  std::chrono::steady_clock::time_point unfence_after{};  // Default: none (now)
  // Finalize/rollback/abort: the routing entry ends `active` on whatever stamp it names.
  // Cleanup leaves it alone (it never moves or settles a tenant).
  bool settle_route = true;                             // Default: true
  // Reuse failpoint names "teardown.*" (finalize/rollback only, where crash tests kill).
  bool failpoints = true;                               // Default: true
};

struct TeardownReport {
  std::vector<LedgerEntry> removed;  // dropped (or found absent) and erased
  std::vector<LedgerEntry> kept;     // on a server without a connection in `targets`
};

// Drops every object of the ledger that still exists and erases its entry, in a fixed order:
// reverse slot and publication, forward slot and publication, origins, staging tables, the
// router-cache wait and the unfence (per `targets`), fence references, the routing entry.
// Idempotent: a rerun after a failure (or kill -9) finishes the job; objects already gone are
// simply erased. Errors: the first drop that failed (its class kept; kRefused when a slot is in
// use by a running process); entries not yet handled stay in the ledger.
common::Result<TeardownReport> teardown(Ledger& ledger, const TeardownTargets& targets);

// Drops one object if it exists (no ledger involved), then checks on its server that it is
// gone. Errors as teardown(); kRetryable when it is still there after the drop.
common::Status dropLedgerObject(const LedgerEntry& entry, const TeardownTargets& targets,
                                const std::string& migration_id);
// True while the object is on `conn` (its server): a slot, publication, origin or table by
// name; a fence reference while `migration_id` is among the stamp's fence users. Routing
// entries and control-plane rows: false. Read-only.
common::Result<bool> ledgerObjectExists(const LedgerEntry& entry, common::PgConnection& conn,
                                        const std::string& migration_id);

// The control plane's mirror rows of a migration, for `status` without the state directory.
common::Result<std::vector<LedgerEntry>> mirroredLedger(common::PgConnection& control_plane,
                                                        const std::string& migration_id);

}  // namespace stampmover::orch
