// PgApplier: applies pgoutput change events to the destination stamp idempotently
// (insert = upsert, update of a missing row = upsert of the full new row or a repair from the
// source when the update carries unchanged-TOAST markers, delete of a missing row = no-op,
// TRUNCATE = tenant-scoped DELETE), in libpq pipeline mode with prepared statements per
// relation, batching source transactions into destination transactions. The applied source
// position is recorded in the same destination transaction through a replication origin.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/pg.h"
#include "mover/catalog.h"
#include "mover/change_sink.h"

namespace stampmover::mover {

struct ApplierOptions {
  std::string dest_dsn;                   // Default: none (required)
  std::string dest_label = "destination";  // Default: "destination"
  std::string source_dsn;                 // Default: none; for TOAST repair reads (required)
  std::string source_label = "source";    // Default: "source"
  std::string origin_name;                // Default: none (required): replication origin
  std::string tenant;                     // Default: none (required): canonical tenant text
  TenantColumnPolicy tenant_columns;      // Default: tenant_id everywhere
  uint32_t max_batch_changes = 5000;      // Default: 5000 changes per destination transaction
  std::chrono::milliseconds max_batch_age{200};  // Default: 200 ms from first change to commit
  uint32_t pipeline_depth = 256;          // Default: 256 statements between pipeline syncs
  bool synchronous_commit = false;        // Default: false (flush tracked before acknowledging)
  std::string skip_origin;                // Default: "" ; skip source txns carrying this origin
                                          // (the reverse stream skips the forward applier's)
  bool track_touched = false;             // Default: false; remember keys changed (cutover check)
  size_t touched_cap = 200'000;           // Default: 200000 keys, then only "overflowed"
};

// Keys changed since the last resetTouched(), per table ("schema.table"), as PK text values.
struct TouchedKeys {
  std::map<std::string, std::vector<std::vector<common::PgParam>>> keys;
  std::map<std::string, bool> whole_table;  // a TRUNCATE: compare the tenant's whole table
  bool overflowed = false;                  // more than touched_cap keys: do a full pass
  size_t count = 0;
};

struct ApplierStats {
  uint64_t changes = 0;
  uint64_t transactions = 0;
  uint64_t batches = 0;
  uint64_t toast_repairs = 0;
  uint64_t heartbeats = 0;
};

// Not thread-safe.
class PgApplier final : public ChangeSink {
 public:
  // Connects to the destination (and source, for repairs), sets up the session
  // (session_replication_role = replica) and the replication origin. Errors: kRetryable
  // (unreachable), kRefused (missing privileges).
  static common::Result<std::unique_ptr<PgApplier>> open(const ApplierOptions& options);
  ~PgApplier() override;

  // The destination's record of the applied position (pg_replication_origin_progress): the
  // truth on restart, committed with the data. 0 when nothing was applied yet.
  common::Result<common::Lsn> originProgress();

  common::Status apply(const common::ChangeEvent& event) override;
  common::Status commitPending() override;
  common::Result<common::Lsn> durableLsn() override;
  // Makes every commit so far durable now (one synchronous commit flushes the WAL before it)
  // instead of waiting for the WAL writer (up to wal_writer_delay): used inside the cutover
  // window. Requires no open batch (call commitPending() first).
  common::Status forceFlush();
  common::Lsn committedLsn() const override { return committed_; }
  bool inTransaction() const override { return in_source_txn_; }
  const ApplierStats& stats() const { return stats_; }
  // Keys changed since the last resetTouched() (when options.track_touched).
  const TouchedKeys& touched() const { return touched_; }
  void resetTouched() { touched_ = TouchedKeys(); }
  // Destination description of a replicated table, once its Relation message was seen.
  const TableInfo* destTable(const std::string& key) const;
  // Last heartbeat content (emission time, µs since the PostgreSQL epoch) committed.
  int64_t lastHeartbeatMicros() const { return last_heartbeat_us_; }
  // Emission-to-commit delay of that heartbeat (µs): the stream's end-to-end lag. -1 if none.
  int64_t lastHeartbeatLagMicros() const { return last_heartbeat_lag_us_; }

 private:
  struct RelState {
    std::shared_ptr<const common::Relation> rel;
    TableInfo dest;
    std::string tenant_text;           // canonical text of the tenant for this column's type
    int tenant_idx = -1;               // source column index of the tenant column
    std::vector<int> pk_idx;           // source column indices of the destination's PK
    std::vector<int> key_idx;          // source column indices flagged as replica identity
    std::string prefix;                // prepared statement name prefix
    std::string column_list;           // quoted source columns, source order
  };

  struct Pending {
    enum class Kind { kPlain, kPrepare, kUpdateToast, kWalLsn } kind = Kind::kPlain;
    RelState* rel = nullptr;
    std::vector<common::PgParam> key;  // kUpdateToast: PK values for a repair
  };
  explicit PgApplier(ApplierOptions options) : options_(std::move(options)) {}
  common::Status onRelation(const std::shared_ptr<const common::Relation>& rel);
  common::Status onChange(const common::Change& change);
  common::Status ensureDestTxn();
  common::Status send(const std::string& stmt, const std::vector<common::PgParam>& params,
                      Pending pending);
  common::Status prepare(const std::string& name, const std::string& sql);
  // Runs a synchronous query on the destination outside pipeline mode (draining it first).
  common::Result<std::optional<std::string>> queryOutsidePipeline(
      const std::string& sql, const std::vector<common::PgParam>& params);
  common::Status syncAndDrain();
  common::Status commitBatch();
  common::Status repairFromSource(RelState& rel, const std::vector<common::PgParam>& key);
  common::Status checkTenant(const RelState& rel, const common::Tuple& tuple, const char* what);
  common::Result<RelState*> relationFor(const common::Change& change);

  ApplierOptions options_;
  common::PgConnection dst_;
  common::PgConnection src_;  // opened lazily for TOAST repairs
  std::map<uint32_t, std::unique_ptr<RelState>> rels_;
  std::vector<std::unique_ptr<RelState>> retired_;  // replaced states still referenced by a batch
  std::map<std::string, bool> prepared_;
  std::deque<Pending> inflight_;
  std::vector<std::pair<RelState*, std::vector<common::PgParam>>> repairs_;
  bool dest_txn_open_ = false;
  bool in_source_txn_ = false;
  uint32_t batch_changes_ = 0;
  uint32_t unsynced_ = 0;
  std::chrono::steady_clock::time_point batch_started_{};
  common::Lsn batch_end_lsn_;         // end LSN of the last complete source txn in the batch
  int64_t batch_commit_time_us_ = 0;
  common::Lsn committed_;
  // Commits not yet known flushed: (destination WAL insert LSN after COMMIT, source end LSN).
  std::deque<std::pair<common::Lsn, common::Lsn>> unflushed_;
  common::Lsn durable_;
  int64_t pending_heartbeat_us_ = 0;
  int64_t last_heartbeat_us_ = 0;
  int64_t last_heartbeat_lag_us_ = -1;
  ApplierStats stats_;
  bool skipping_txn_ = false;
  TouchedKeys touched_;
  void touch(const RelState& rel, const std::vector<common::PgParam>& pk);
};

}  // namespace stampmover::mover
