// Durable local state of a worker: migration records (phase, slot, copy plan), copy-chunk
// completion and stream positions. The interface is the seam; RocksDbCheckpointStore is the
// implementation. Every write is a synced atomic batch: after a crash the store holds either
// all of a batch or none of it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/lsn.h"
#include "common/status.h"
#include "common/tenant_key.h"

namespace stampmover::mover {

// One unit of snapshot copy: a CTID block range of one table.
struct ChunkSpec {
  std::string table;        // "schema.table", unquoted
  uint32_t index = 0;       // position within the table's chunks
  uint64_t start_block = 0;  // inclusive
  uint64_t end_block = 0;    // exclusive; 0 = unbounded (the table's last chunk)
  bool operator==(const ChunkSpec&) const = default;
};

// Which server and database a stamp was when a migration first ran there: a stamp rebuilt or
// replaced at the same address has another system identifier (a new cluster) or database oid
// (a dropped and recreated database), and the records about it no longer describe it.
struct StampIdentity {
  std::string system_identifier;  // pg_control_system().system_identifier, as text ("" unknown)
  uint32_t database_oid = 0;      // pg_database.oid of the connected database (0 unknown)
  bool known() const { return !system_identifier.empty() && database_oid != 0; }
  bool operator==(const StampIdentity&) const = default;
};

struct MigrationRecord {
  std::string id;           // see migrationId()
  std::string tenant;       // the tenant key in canonical form (common::TenantKey::text())
  // Types of the tenant columns when the key was canonicalized: lets commands without a
  // server match an operator's `--tenant 042` to this record exactly (see tenant_key.h).
  // Empty in records written before they were kept.
  std::vector<std::string> tenant_types;
  std::string source;       // stamp name (or "dsn" when given directly)
  std::string destination;  // stamp name (or "dsn")
  std::string phase;        // "copying", "copied", ... (the orchestrator owns the vocabulary)
  std::string slot_name;
  std::string publication_name;
  common::Lsn consistent_point;  // the slot's consistent point; streaming starts here
  // A copy resumed under a later snapshot holds rows changed after the consistent point:
  // catch-up upserts inserts of transactions committed up to here (0/0: none).
  common::Lsn upsert_through;
  std::vector<ChunkSpec> plan;   // fixed at the first run so a resume copies the same ranges
  // The stamps this record is about, read at the first run and compared on every later one.
  // Unknown (not known()) in records written before they were kept.
  StampIdentity source_identity;
  StampIdentity destination_identity;
  uint64_t created_unix_ms = 0;
  uint64_t updated_unix_ms = 0;
  bool operator==(const MigrationRecord&) const = default;
};

struct ChunkDone {
  std::string table;
  uint32_t index = 0;
  uint64_t rows = 0;
  uint64_t bytes = 0;
  bool operator==(const ChunkDone&) const = default;
};

// Last source position whose changes are durably applied at the destination.
struct StreamPosition {
  std::string stream;          // e.g. "forward", "reverse", or a Kafka topic/partition
  common::Lsn lsn;             // pgoutput position
  uint64_t offset = 0;         // Kafka offset (0 for pgoutput)
  std::string identity;        // slot name or consumer group: a position is only valid for it
  bool operator==(const StreamPosition&) const = default;
};

// Identifier of a (tenant, source, destination) migration; safe as a key component.
std::string migrationId(const std::string& tenant, const std::string& source,
                        const std::string& destination);
inline std::string migrationId(const common::TenantKey& tenant, const std::string& source,
                               const std::string& destination) {
  return migrationId(tenant.text(), source, destination);
}

// A set of typed writes applied atomically by CheckpointStore::write().
class CheckpointBatch {
 public:
  void putMigration(const MigrationRecord& rec);
  void putChunkDone(const std::string& migration_id, const ChunkDone& chunk);
  void putStreamPosition(const std::string& migration_id, const StreamPosition& pos);
  // A named free-form value of a migration (e.g. the status the `status` command shows).
  void putNote(const std::string& migration_id, const std::string& name, const std::string& value);
  // One entry of a migration's ledger of server-side objects (orchestrator/ledger.h owns the
  // encoding): `key` identifies the object, `value` describes it.
  void putLedgerEntry(const std::string& migration_id, const std::string& key,
                      const std::string& value);
  void deleteLedgerEntry(const std::string& migration_id, const std::string& key);
  // And all its chunks, positions, notes and ledger entries: call it only once the ledger's
  // objects are gone (orchestrator::teardown).
  void deleteMigration(const std::string& migration_id);

  struct Op {
    enum class Kind { kPut, kDelete, kDeletePrefix } kind;
    std::string key;
    std::string value;
  };
  const std::vector<Op>& ops() const { return ops_; }

 private:
  std::vector<Op> ops_;
};

// Thread-safe: all methods may be called concurrently.
class CheckpointStore {
 public:
  virtual ~CheckpointStore() = default;
  // Applies every op of `batch` atomically and durably (fsync before returning).
  virtual common::Status write(const CheckpointBatch& batch) = 0;
  virtual common::Result<std::optional<MigrationRecord>> loadMigration(const std::string& id) = 0;
  virtual common::Result<std::vector<MigrationRecord>> listMigrations() = 0;
  virtual common::Result<std::vector<ChunkDone>> loadChunksDone(const std::string& id) = 0;
  virtual common::Result<std::optional<StreamPosition>> loadStreamPosition(
      const std::string& id, const std::string& stream) = 0;
  virtual common::Result<std::optional<std::string>> loadNote(const std::string& id,
                                                              const std::string& name) = 0;
  // The migration's ledger entries as (key, value), in key order; empty when none.
  virtual common::Result<std::vector<std::pair<std::string, std::string>>> loadLedger(
      const std::string& id) = 0;
};

struct RocksDbOptions {
  std::string path;             // Default: none (required): the state directory
  bool create_if_missing = true;  // Default: true
  bool read_only = false;         // Default: false; true opens beside a running writer (status)
};

// Opens (creating if asked) a RocksDB store. Errors: kRefused when the directory cannot be
// used (permissions, another process holds its lock: the message says which), kInternal on
// corruption.
common::Result<std::unique_ptr<CheckpointStore>> openRocksDbCheckpointStore(
    const RocksDbOptions& options);

}  // namespace stampmover::mover
