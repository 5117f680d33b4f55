// PgApplier: applies pgoutput change events to the destination stamp so that every change
// takes effect exactly once: update of a missing row = upsert of the full new row or a repair
// from the source when the update carries unchanged-TOAST markers, delete of a missing row =
// no-op, TRUNCATE = tenant-scoped DELETE; an insert is an upsert where the destination may
// already hold the row (see ApplierOptions::upsert_through) and a plain INSERT elsewhere, with
// a unique violation turning into a retry with upserts. In libpq pipeline mode with prepared
// statements per relation, batching source transactions into destination transactions. The
// applied source position is recorded in the same destination transaction through a
// replication origin. Within a batch, the changes of a relation are merged per primary key
// (the last change of a row decides its state) and go out as multi-row statements over
// unnest() arrays; batches are committed without waiting for the destination, which keeps
// working while the stream is read.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/pg.h"
#include "mover/apply_sql.h"
#include "mover/catalog.h"
#include "mover/change_sink.h"
#include "mover/touched_keys.h"
#include "mover/txn_statements.h"

namespace stampmover::mover {

struct ApplierOptions {
  std::string dest_dsn;                    // Default: none (required)
  std::string dest_label = "destination";  // Default: "destination"
  std::string source_dsn;                  // Default: none; for TOAST repair reads (required)
  std::string source_label = "source";     // Default: "source"
  std::string origin_name;                 // Default: none (required): replication origin
  std::string tenant;                      // Default: none (required): canonical tenant text
  TenantColumnPolicy tenant_columns;       // Default: tenant_id everywhere
  uint32_t max_batch_changes = 5000;       // Default: 5000 changes per destination transaction
  std::chrono::milliseconds max_batch_age{200};  // Default: 200 ms from first change to commit
  uint32_t max_group_rows = 1000;                // Default: 1000 rows per multi-row statement
                                                 // (1 = one statement per row everywhere)
  size_t max_group_bytes = 8u << 20;             // Default: 8 MiB of merged, unsent row text
  uint32_t max_inflight = 20'000;                // Default: 20000 statements sent but unanswered
  bool synchronous_commit = false;  // Default: false (flush tracked before acknowledging)
  std::string skip_origin;          // Default: "" ; skip source txns carrying this origin
                                    // (the reverse stream skips the forward applier's)
  bool track_touched = false;       // Default: false; remember keys changed (cutover check)
  // Heartbeats counted: only those with this identity (see mover/heartbeat.h).
  std::string heartbeat_identity;   // Default: "" (no heartbeat counts)
  // Plain INSERT (no ON CONFLICT) for a row whose first change in a batch is an insert, in
  // source transactions committed after `upsert_through`: the destination mirrors the source
  // there, so the row cannot exist. A unique violation means it did: the batch rolls back and
  // the error (retryable) carries the position to upsert through on the retry.
  bool plain_inserts = true;        // Default: true
  common::Lsn upsert_through;       // Default: 0/0 (plain inserts from the start)
  size_t touched_cap = 200'000;     // Default: 200000 keys, then only "overflowed"
  // Sent inside every destination transaction (batches and origin advances) before COMMIT; see
  // mover/txn_statements.h.
  TxnStatementsFn commit_statements;  // Default: none
};

struct ApplierStats {
  uint64_t changes = 0;
  uint64_t transactions = 0;
  uint64_t batches = 0;
  uint64_t toast_repairs = 0;
  uint64_t heartbeats = 0;
  uint64_t statements = 0;   // row statements sent (a multi-row statement counts once)
  uint64_t merged_rows = 0;  // rows sent from per-key groups (grouped relations)
};

// Not thread-safe.
//
// Grouping: a relation whose destination table has no unique index besides the primary key, no
// exclusion constraint, and no trigger or rule that fires for replica sessions is "grouped":
// since apply sessions run with session_replication_role = replica (foreign keys unchecked),
// the final state of such a table after a batch depends only on the last change of each key,
// so changes are merged per key and flushed (deletes, then upserts) at the batch commit, at a
// size limit, or before anything that must see them in order (TRUNCATE, a Relation message, a
// delete through a non-primary-key replica identity, an unchanged-TOAST update that cannot be
// merged). Other relations keep one statement per row, in source order (after every merged
// row so far when a trigger or rule of theirs fires in replica sessions: it may read them).
//
// Pipelining: statements are queued without waiting; a batch's COMMIT is followed by a sync and
// its result is read later, while the next batch is built. Every batch after an unconfirmed one
// starts by checking that the replication origin reached that batch's position, so a batch that
// failed can never be followed by a committed one. A batch carrying a heartbeat is committed at
// once and awaited (its lag is measured when it lands). The first error makes the applier
// unusable: every later call returns it (reconnect with a new PgApplier; replay is idempotent).
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

  common::Status apply(const common::ChangeEvent& event) override;  // copies the event
  // The same, taking the event's values instead of copying them (the streaming path).
  common::Status apply(common::ChangeEvent&& event);
  // Commits the open batch (when no source transaction is open) and waits until the
  // destination has answered every statement sent so far: called when the stream is idle.
  common::Status commitPending() override;
  // With a batch open, answers from what is known without waiting (and asks the destination
  // for its flush position in the background); otherwise waits for every answer first, and
  // flushes the destination's WAL itself (forceFlush) when the WAL writer has not yet.
  common::Result<common::Lsn> durableLsn() override;
  // Makes every commit so far durable now (one synchronous commit flushes the WAL before it)
  // instead of waiting for the WAL writer (up to wal_writer_delay): used inside the cutover
  // window. Requires no open batch (call commitPending() first).
  common::Status forceFlush();
  // Records `lsn` as applied (the replication origin) in an empty, synchronously committed
  // destination transaction: used before acknowledging an idle source's keepalive position, so
  // the origin never lags what the slot was told (which makes "the destination went back in
  // time" exact to detect). Requires no open batch. Errors: as apply().
  common::Status advanceOrigin(common::Lsn lsn);
  // End of the last source transaction whose batch COMMIT was sent (its answer may be pending;
  // an error in it makes every later call fail).
  common::Lsn committedLsn() const override { return committed_; }
  bool inTransaction() const override { return in_source_txn_; }
  const ApplierStats& stats() const { return stats_; }
  // Keys changed since the last takeTouched() (when options.track_touched).
  const TouchedKeys& touched() const { return touched_.keys(); }
  // Hands the touched keys over and starts an empty set.
  TouchedKeys takeTouched() { return touched_.take(); }
  // Adds keys (and whole-table or overflow flags) back, e.g. those a re-check found different.
  void restoreTouched(TouchedKeys keys) { touched_.restore(std::move(keys)); }
  // Destination description of a replicated table, once its Relation message was seen.
  const TableInfo* destTable(const std::string& key) const;
  // Last heartbeat content (emission time, µs since the PostgreSQL epoch) committed.
  int64_t lastHeartbeatMicros() const { return last_heartbeat_us_; }
  // Emission-to-commit delay of that heartbeat (µs): the stream's end-to-end lag. -1 if none.
  int64_t lastHeartbeatLagMicros() const { return last_heartbeat_lag_us_; }
  // Sequence number of the last own heartbeat committed at the destination (0: none yet).
  uint64_t lastHeartbeatSeq() const { return last_heartbeat_seq_; }
  // After a failure caused by a plain insert meeting an existing row: the source position to
  // upsert through on the retry (0/0 otherwise).
  common::Lsn conflictThrough() const { return conflict_through_; }

 private:
  // Merged changes of one relation not sent yet: one row per primary key, in first-seen order.
  struct Group {
    struct Row {
      bool del = false;
      bool fresh = false;  // the key's first change in this group was an insert
      std::vector<common::PgParam> values;  // del: PK values (key order); else every column
      size_t bytes = 0;                     // accounted size of `values`
    };
    std::vector<Row> rows;
    std::unordered_map<std::string, size_t> index;  // encoded PK -> rows[i]
    size_t bytes = 0;
    size_t deletes = 0;
    size_t fresh = 0;  // rows with fresh && !del
  };

  struct RelState {
    std::shared_ptr<const common::Relation> rel;
    TableInfo dest;
    std::string tenant_text;        // canonical text of the tenant for this column's type
    int tenant_idx = -1;            // source column index of the tenant column
    std::vector<int> pk_idx;        // source column indices of the destination's PK
    std::vector<int> key_idx;       // source column indices flagged as replica identity
    bool key_is_pk = false;         // replica identity columns == PK columns (as sets)
    bool grouped = false;           // changes merged per key (see the class comment)
    bool pk_canonical = false;      // equal PK values always have equal text
    bool barrier = false;           // replica-firing triggers/rules: send all groups first
    std::string prefix;             // prepared statement name prefix
    std::string column_list;        // quoted source columns, source order
    std::vector<ColumnCast> casts;  // per source column (grouped relations)
    ApplyShape shape;               // what the statements are built from
    bool tenant_in_pk = true;       // false: every write carries the tenant predicate
    Group group;
    bool dirty = false;  // listed in dirty_
  };

  struct Pending {
    enum class Kind {
      kPlain,
      kPrepare,
      kUpdateToast,
      kWalLsn,
      kCommit,
      kFlushLsn,
      kSync,
      kPlainInsert,  // a unique violation here means the destination had the row
      kUpsert        // fails with kCollisionSqlState when a row met a key of another
                     // tenant (see apply_sql.h); relations whose PK lacks the tenant only
    };
    Kind kind = Kind::kPlain;
    RelState* rel = nullptr;
    std::vector<common::PgParam> key;  // kUpdateToast: PK values for a repair
    common::Lsn lsn;                   // kCommit, kWalLsn: source end LSN of the batch
    int64_t heartbeat_us = 0;          // kCommit: heartbeat carried by the batch
    uint64_t heartbeat_seq = 0;        // kCommit: its sequence number
    uint64_t expected = 0;             // kUpsert: rows sent
    std::vector<common::PgParam> keys;  // kUpsert: one array per PK column (for the report)
  };
  explicit PgApplier(ApplierOptions options) : options_(std::move(options)) {}
  common::Status applyEvent(common::ChangeEvent& event);
  common::Status onRelation(const std::shared_ptr<const common::Relation>& rel);
  common::Status describeGrouping(RelState& state);
  common::Status onChange(common::Change& change);  // may take the tuples' values
  common::Status onChangeGrouped(RelState& rs, common::Change& change);
  common::Status sendToastUpdate(RelState& rs, const common::Tuple& tuple,
                                 std::vector<common::PgParam> new_pk);
  common::Status ensureDestTxn();
  common::Status send(const std::string& stmt, const std::vector<common::PgParam>& params,
                      Pending pending);
  common::Status prepare(const std::string& name, const std::string& sql);
  // Runs `query` (a synchronous query on dst_) outside pipeline mode: drains the pipeline,
  // leaves it, and enters it again afterwards.
  template <typename Query>
  auto outsidePipeline(Query&& query) -> decltype(query());
  // Runs a synchronous query on the destination outside pipeline mode (draining it first).
  common::Result<std::optional<std::string>> queryOutsidePipeline(
      const std::string& sql, const std::vector<common::PgParam>& params);
  // Handles every answer that has arrived, without waiting.
  common::Status pollResults();
  // Handles one answer (blocking when `block`); false when none was ready.
  common::Result<bool> takeResult(bool block);
  // Sends a sync and waits for the answer to every statement sent.
  common::Status waitAll();
  common::Status commitBatch(bool wait);
  common::Status repairFromSource(RelState& rel, const std::vector<common::PgParam>& key);
  common::Status checkTenant(const RelState& rel, const common::Tuple& tuple, const char* what);
  common::Result<RelState*> relationFor(const common::Change& change);
  // Grouped relations: merge a change into the relation's group / send the group.
  common::Status putRow(RelState& rs, std::string key, bool del,
                        std::vector<common::PgParam> values, bool insert = false);
  common::Status flushGroup(RelState& rs);
  common::Status flushAllGroups();
  common::Status fail(common::Status st);
  // Appends the tenant parameter to a delete's key values when the relation needs it.
  std::vector<common::PgParam> scoped(const RelState& rs, std::vector<common::PgParam> key) const;
  // Sends an upsert (single or multi-row) whose affected-row count is checked when the PK lacks
  // the tenant column. `pk_arrays`: one array literal per PK column, for the conflict report.
  common::Status sendUpsert(RelState& rs, const std::string& stmt,
                            const std::vector<common::PgParam>& params, uint64_t rows,
                            std::vector<common::PgParam> pk_arrays);
  // The data-conflict error for an upsert that met rows of another tenant: names the rows,
  // read on a separate destination session (the apply transaction is failing).
  common::Status collision(const RelState& rs, const std::vector<common::PgParam>& pk_arrays,
                           uint64_t sent, const common::Status& original);

  ApplierOptions options_;
  common::PgConnection dst_;
  common::PgConnection src_;  // opened lazily for TOAST repairs
  std::map<uint32_t, std::unique_ptr<RelState>> rels_;
  std::vector<std::unique_ptr<RelState>> retired_;  // replaced states still referenced by a batch
  std::map<std::string, bool> prepared_;
  std::deque<Pending> inflight_;
  bool awaiting_end_ = false;  // the front statement's result was read; its NULL is next
  std::vector<std::pair<RelState*, std::vector<common::PgParam>>> repairs_;
  std::vector<RelState*> dirty_;  // relations with a non-empty group
  size_t group_bytes_ = 0;        // over every group
  uint32_t toast_checks_ = 0;     // unchanged-TOAST updates in the open batch
  uint32_t sends_since_poll_ = 0;
  uint32_t events_since_poll_ = 0;
  bool flush_lsn_asked_ = false;
  common::Status failed_;
  bool dest_txn_open_ = false;
  bool in_source_txn_ = false;
  uint32_t batch_changes_ = 0;
  std::chrono::steady_clock::time_point batch_started_{};
  common::Lsn batch_end_lsn_;  // end LSN of the last complete source txn in the batch
  int64_t batch_commit_time_us_ = 0;
  common::Lsn committed_;    // last batch whose COMMIT was sent
  common::Lsn confirmed_;    // last batch whose COMMIT was answered
  common::Lsn origin_sent_;  // last position sent with pg_replication_origin_xact_setup
  // Commits not yet known flushed: (destination WAL insert LSN after COMMIT, source end LSN).
  std::deque<std::pair<common::Lsn, common::Lsn>> unflushed_;
  common::Lsn durable_;
  int64_t pending_heartbeat_us_ = 0;
  int64_t last_heartbeat_us_ = 0;
  int64_t last_heartbeat_lag_us_ = -1;
  uint64_t pending_heartbeat_seq_ = 0;
  uint64_t last_heartbeat_seq_ = 0;
  ApplierStats stats_;
  bool skipping_txn_ = false;
  bool txn_plain_ = false;     // the open source txn may use plain inserts
  common::Lsn seen_through_;   // highest commit LSN of a source txn begun so far
  common::Lsn conflict_through_;
  TouchedKeyTracker touched_{options_.track_touched, options_.touched_cap};
  void touch(const RelState& rel, const std::vector<common::PgParam>& pk);
};

}  // namespace stampmover::mover
