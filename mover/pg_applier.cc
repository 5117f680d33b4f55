// PgApplier: see pg_applier.h. Statements go out in libpq pipeline mode and are synced every
// `pipeline_depth` statements and at each commit, so a batch costs a handful of round trips.
// An error anywhere aborts the destination transaction; the caller reconnects and resumes from
// the origin's recorded position, which is safe because every statement is idempotent.
#include "mover/pg_applier.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>

namespace stampmover::mover {

using common::ChangeEvent;
using common::ChangeOp;
using common::Datum;
using common::Lsn;
using common::PgParam;
using common::PgResult;
using common::quoteIdent;
using common::Result;
using common::Status;

namespace {
constexpr const char* kHeartbeatPrefix = "stampmover_heartbeat";
constexpr int64_t kPgEpochOffsetSec = 946684800;
}  // namespace

Result<std::unique_ptr<PgApplier>> PgApplier::open(const ApplierOptions& o) {
  std::unique_ptr<PgApplier> a(new PgApplier(o));
  SM_ASSIGN_OR_RETURN(a->dst_, common::PgConnection::connect(o.dest_dsn, o.dest_label));
  SM_RETURN_IF_ERROR(a->dst_.exec(std::string("SET statement_timeout = 0; SET synchronous_commit = ") +
                                  (o.synchronous_commit ? "on" : "off")));
  SM_RETURN_IF_ERROR(a->dst_.exec("SET session_replication_role = replica")
                         .withContext("apply sessions need session_replication_role = replica "
                                      "(connect to the destination as a superuser)"));
  SM_ASSIGN_OR_RETURN(auto exists, a->dst_.queryValue("SELECT pg_replication_origin_oid($1)",
                                                      {o.origin_name}));
  if (!exists) {
    SM_RETURN_IF_ERROR(
        a->dst_.query("SELECT pg_replication_origin_create($1)", {o.origin_name}).status());
  }
  SM_RETURN_IF_ERROR(
      a->dst_.query("SELECT pg_replication_origin_session_setup($1)", {o.origin_name})
          .status()
          .withContext("replication origin " + o.origin_name +
                       " (is another stampmover applying this migration?)"));
  SM_ASSIGN_OR_RETURN(a->durable_, a->originProgress());
  a->committed_ = a->durable_;
  if (PQenterPipelineMode(a->dst_.raw()) != 1) {
    return Status::internal(o.dest_label + ": cannot enter libpq pipeline mode");
  }
  return a;
}

PgApplier::~PgApplier() = default;

Result<std::optional<std::string>> PgApplier::queryOutsidePipeline(
    const std::string& sql, const std::vector<PgParam>& params) {
  bool in_pipeline = PQpipelineStatus(dst_.raw()) != PQ_PIPELINE_OFF;
  if (in_pipeline) {
    SM_RETURN_IF_ERROR(syncAndDrain());
    if (PQexitPipelineMode(dst_.raw()) != 1) return dst_.errorFrom(nullptr, "leave pipeline mode");
  }
  auto v = dst_.queryValue(sql, params);
  if (in_pipeline && PQenterPipelineMode(dst_.raw()) != 1) {
    return dst_.errorFrom(nullptr, "enter pipeline mode");
  }
  return v;
}

Result<Lsn> PgApplier::originProgress() {
  SM_ASSIGN_OR_RETURN(auto v, queryOutsidePipeline("SELECT pg_replication_origin_progress($1, true)",
                                                   {options_.origin_name}));
  if (!v) return Lsn();
  auto l = Lsn::parse(*v);
  if (!l) return Status::internal("unparseable origin progress '" + *v + "'");
  return *l;
}

Status PgApplier::prepare(const std::string& name, const std::string& sql) {
  if (prepared_.count(name)) return Status::ok();
  if (PQsendPrepare(dst_.raw(), name.c_str(), sql.c_str(), 0, nullptr) != 1) {
    return dst_.errorFrom(nullptr, "prepare " + name);
  }
  prepared_[name] = true;
  inflight_.push_back(Pending{Pending::Kind::kPrepare, nullptr, {}});
  return Status::ok();
}

Status PgApplier::send(const std::string& stmt, const std::vector<PgParam>& params,
                       Pending pending) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  int ok = prepared_.count(stmt)
               ? PQsendQueryPrepared(dst_.raw(), stmt.c_str(), static_cast<int>(values.size()),
                                     values.data(), nullptr, nullptr, 0)
               : PQsendQueryParams(dst_.raw(), stmt.c_str(), static_cast<int>(values.size()),
                                   nullptr, values.data(), nullptr, nullptr, 0);
  if (ok != 1) return dst_.errorFrom(nullptr, "send statement");
  inflight_.push_back(std::move(pending));
  if (++unsynced_ >= options_.pipeline_depth) return syncAndDrain();
  return Status::ok();
}

Status PgApplier::syncAndDrain() {
  if (PQpipelineSync(dst_.raw()) != 1) return dst_.errorFrom(nullptr, "pipeline sync");
  unsynced_ = 0;
  Status first_error;
  while (!inflight_.empty()) {
    Pending p = std::move(inflight_.front());
    inflight_.pop_front();
    PgResult r{PQgetResult(dst_.raw())};
    if (!r) return Status::retryable(options_.dest_label + ": connection lost in pipeline");
    ExecStatusType st = PQresultStatus(r.get());
    if (st == PGRES_PIPELINE_ABORTED) {
      // Skipped because an earlier statement failed; that one carries the error.
    } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      if (first_error.isOk()) first_error = dst_.errorFrom(r.get(), "apply");
    } else if (p.kind == Pending::Kind::kUpdateToast) {
      if (std::string(PQcmdTuples(r.get())) == "0") repairs_.emplace_back(p.rel, std::move(p.key));
    } else if (p.kind == Pending::Kind::kWalLsn && PQntuples(r.get()) == 1) {
      auto l = Lsn::parse(PQgetvalue(r.get(), 0, 0));
      if (l) unflushed_.back().first = *l;
    }
    PgResult end{PQgetResult(dst_.raw())};  // NULL terminates each statement's results
  }
  PgResult sync{PQgetResult(dst_.raw())};
  if (!sync || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC) {
    if (first_error.isOk()) first_error = dst_.errorFrom(sync.get(), "pipeline sync");
  }
  return first_error;
}

Status PgApplier::ensureDestTxn() {
  if (dest_txn_open_) return Status::ok();
  SM_RETURN_IF_ERROR(send("BEGIN", {}, {}));
  dest_txn_open_ = true;
  batch_changes_ = 0;
  batch_started_ = std::chrono::steady_clock::now();
  return Status::ok();
}

Status PgApplier::onRelation(const std::shared_ptr<const common::Relation>& rel) {
  auto state = std::make_unique<RelState>();
  state->rel = rel;
  const std::string key = rel->key();
  const std::string tenant_col = options_.tenant_columns.columnFor(key);
  // Catalog reads happen outside the pipeline: flush it first.
  SM_RETURN_IF_ERROR(syncAndDrain());
  if (PQexitPipelineMode(dst_.raw()) != 1) return dst_.errorFrom(nullptr, "leave pipeline mode");
  auto described = describeTable(dst_, rel->schema, rel->name, tenant_col);
  if (PQenterPipelineMode(dst_.raw()) != 1) return dst_.errorFrom(nullptr, "enter pipeline mode");
  if (!described) return described.status();
  if (!described->has_value()) {
    return Status::refused("schema drift: table " + key + " is replicated from the source but "
                           "does not exist on " + options_.dest_label + "; create it there, then rerun");
  }
  state->dest = std::move(**described);
  std::vector<std::string> missing;
  for (size_t i = 0; i < rel->columns.size(); ++i) {
    const auto& c = rel->columns[i];
    const ColumnInfo* dc = state->dest.column(c.name);
    if (dc == nullptr) {
      missing.push_back(quoteIdent(c.name));
      continue;
    }
    if (c.type_oid < 16384 && dc->type_oid != c.type_oid) {
      return Status::refused("schema drift: column " + key + "." + quoteIdent(c.name) +
                             " changed type on the source (type oid " + std::to_string(c.type_oid) +
                             ") but is " + dc->type + " on " + options_.dest_label +
                             "; apply the same ALTER there, then rerun");
    }
    if (c.name == tenant_col) state->tenant_idx = static_cast<int>(i);
    if (c.part_of_key) state->key_idx.push_back(static_cast<int>(i));
    state->column_list += (state->column_list.empty() ? "" : ", ") + quoteIdent(c.name);
  }
  if (!missing.empty()) {
    std::string cols;
    for (const auto& m : missing) cols += (cols.empty() ? "" : ", ") + m;
    return Status::refused("schema drift: table " + key + " has column(s) " + cols +
                           " on the source that " + options_.dest_label +
                           " lacks; add them there (same types), then rerun — migration paused");
  }
  if (state->tenant_idx < 0) {
    return Status::refused("schema drift: table " + key + " no longer has tenant column " +
                           quoteIdent(tenant_col) + " on the source");
  }
  if (state->dest.primary_key.empty()) {
    return Status::refused("table " + key + " has no primary key on " + options_.dest_label);
  }
  for (const auto& pk : state->dest.primary_key) {
    auto it = std::find_if(rel->columns.begin(), rel->columns.end(),
                           [&](const common::RelationColumn& c) { return c.name == pk; });
    if (it == rel->columns.end()) {
      return Status::refused("schema drift: primary key column " + key + "." + quoteIdent(pk) +
                             " is not replicated by the source");
    }
    state->pk_idx.push_back(static_cast<int>(it - rel->columns.begin()));
  }
  // Canonical text of the tenant key for this column's type ('042' -> '42' for bigint).
  auto canon = queryOutsidePipeline(
      "SELECT ($1::" + state->dest.column(tenant_col)->type + ")::text", {options_.tenant});
  if (!canon) return canon.status();
  state->tenant_text = canon->value_or(options_.tenant);

  static uint32_t generation = 0;
  state->prefix = "r" + std::to_string(rel->id) + "_" + std::to_string(++generation) + "_";
  const TableInfo& t = state->dest;
  std::string values, set, pk_where, key_where;
  for (size_t i = 0; i < rel->columns.size(); ++i) {
    values += (i ? ", $" : "$") + std::to_string(i + 1);
    const std::string& n = rel->columns[i].name;
    if (std::find(t.primary_key.begin(), t.primary_key.end(), n) == t.primary_key.end()) {
      set += (set.empty() ? "" : ", ") + quoteIdent(n) + " = EXCLUDED." + quoteIdent(n);
    }
  }
  std::string pk_cols;
  for (size_t k = 0; k < state->pk_idx.size(); ++k) {
    const std::string& n = rel->columns[static_cast<size_t>(state->pk_idx[k])].name;
    pk_cols += (k ? ", " : "") + quoteIdent(n);
    pk_where += (k ? " AND " : "") + quoteIdent(n) + " = $" + std::to_string(k + 1);
  }
  for (size_t k = 0; k < state->key_idx.size(); ++k) {
    const std::string& n = rel->columns[static_cast<size_t>(state->key_idx[k])].name;
    key_where += (k ? " AND " : "") + quoteIdent(n) + " = $" + std::to_string(k + 1);
  }
  SM_RETURN_IF_ERROR(prepare(state->prefix + "ins",
                             "INSERT INTO " + t.quoted() + " (" + state->column_list + ") VALUES (" +
                                 values + ") ON CONFLICT (" + pk_cols + ") DO " +
                                 (set.empty() ? std::string("NOTHING") : "UPDATE SET " + set)));
  SM_RETURN_IF_ERROR(prepare(state->prefix + "delpk", "DELETE FROM " + t.quoted() + " WHERE " + pk_where));
  if (!key_where.empty()) {
    SM_RETURN_IF_ERROR(
        prepare(state->prefix + "delkey", "DELETE FROM " + t.quoted() + " WHERE " + key_where));
  }
  SM_RETURN_IF_ERROR(prepare(state->prefix + "trunc", "DELETE FROM " + t.quoted() + " WHERE " +
                                                          quoteIdent(tenant_col) + " = $1"));
  auto& slot = rels_[rel->id];
  if (slot) retired_.push_back(std::move(slot));
  slot = std::move(state);
  return Status::ok();
}

Result<PgApplier::RelState*> PgApplier::relationFor(const common::Change& change) {
  if (!change.relation) return Status::internal("change without a relation");
  auto it = rels_.find(change.relation->id);
  if (it == rels_.end() || it->second->rel != change.relation) {
    SM_RETURN_IF_ERROR(onRelation(change.relation));
    it = rels_.find(change.relation->id);
  }
  return it->second.get();
}

Status PgApplier::checkTenant(const RelState& rel, const common::Tuple& tuple, const char* what) {
  if (rel.tenant_idx < 0 || static_cast<size_t>(rel.tenant_idx) >= tuple.size()) {
    return Status::internal("tuple shorter than relation " + rel.rel->key());
  }
  const Datum& d = tuple[static_cast<size_t>(rel.tenant_idx)];
  if (d.kind == Datum::Kind::kText && d.text == rel.tenant_text) return Status::ok();
  std::string got = d.kind == Datum::Kind::kText ? "'" + d.text + "'" : "NULL";
  return Status::dataLoss("refusing " + std::string(what) + " in " + rel.rel->key() +
                          " for tenant " + got + " while moving tenant '" + rel.tenant_text +
                          "'; the publication's row filter should make this impossible — "
                          "migration stopped, inspect the publication");
}

namespace {

std::vector<PgParam> pick(const common::Tuple& tuple, const std::vector<int>& idx, bool* ok) {
  std::vector<PgParam> out;
  out.reserve(idx.size());
  for (int i : idx) {
    const Datum& d = tuple[static_cast<size_t>(i)];
    if (d.kind == Datum::Kind::kUnchangedToast) *ok = false;
    out.push_back(d.kind == Datum::Kind::kText ? PgParam(d.text) : PgParam());
  }
  return out;
}

std::vector<PgParam> allValues(const common::Tuple& tuple) {
  std::vector<PgParam> out;
  out.reserve(tuple.size());
  for (const Datum& d : tuple) out.push_back(d.kind == Datum::Kind::kText ? PgParam(d.text) : PgParam());
  return out;
}

}  // namespace

Status PgApplier::onChange(const common::Change& c) {
  if (c.op == ChangeOp::kTruncate) {
    for (const auto& rel : c.truncated) {
      common::Change fake;
      fake.relation = rel;
      SM_ASSIGN_OR_RETURN(RelState * rs, relationFor(fake));
      // Other tenants share the table: a source TRUNCATE becomes a tenant-scoped DELETE.
      if (options_.track_touched) touched_.whole_table[rs->rel->key()] = true;
      SM_RETURN_IF_ERROR(send(rs->prefix + "trunc", {rs->tenant_text}, {}));
    }
    return Status::ok();
  }
  SM_ASSIGN_OR_RETURN(RelState * rs, relationFor(c));
  const size_t ncols = rs->rel->columns.size();
  if (!c.new_tuple.empty() && c.new_tuple.size() != ncols) {
    return Status::internal("tuple with " + std::to_string(c.new_tuple.size()) + " columns for " +
                            rs->rel->key() + " (" + std::to_string(ncols) + " described)");
  }
  if (c.old_tuple && c.old_tuple->size() != ncols) {
    return Status::internal("old tuple with wrong column count for " + rs->rel->key());
  }
  // Old-row lookup: the PK from a full old row, else the replica identity columns.
  bool ok = true;
  std::vector<PgParam> old_key;
  std::string old_stmt;
  if (c.old_tuple) {
    SM_RETURN_IF_ERROR(checkTenant(*rs, *c.old_tuple, "an old row"));
    if (c.old_is_full) {
      old_key = pick(*c.old_tuple, rs->pk_idx, &ok);
      old_stmt = rs->prefix + "delpk";
    } else {
      old_key = pick(*c.old_tuple, rs->key_idx, &ok);
      old_stmt = rs->prefix + "delkey";
    }
    if (!ok) return Status::internal("unchanged-TOAST value in the old key of " + rs->rel->key());
  }
  switch (c.op) {
    case ChangeOp::kInsert: {
      SM_RETURN_IF_ERROR(checkTenant(*rs, c.new_tuple, "an insert"));
      bool pk_ok = true;
      touch(*rs, pick(c.new_tuple, rs->pk_idx, &pk_ok));
      return send(rs->prefix + "ins", allValues(c.new_tuple), {});
    }
    case ChangeOp::kDelete:
      if (!c.old_tuple) return Status::internal("delete without old key in " + rs->rel->key());
      if (c.old_is_full || rs->key_idx == rs->pk_idx) {
        touch(*rs, old_key);
      } else {
        touched_.whole_table[rs->rel->key()] = true;  // key is not the PK: check the table
      }
      return send(old_stmt, old_key, {});
    case ChangeOp::kUpdate: {
      SM_RETURN_IF_ERROR(checkTenant(*rs, c.new_tuple, "an update"));
      bool key_ok = true;
      std::vector<PgParam> new_pk = pick(c.new_tuple, rs->pk_idx, &key_ok);
      if (!key_ok) return Status::internal("unchanged-TOAST primary key value in " + rs->rel->key());
      bool key_changed = false;
      if (c.old_tuple) {
        bool same_cols = c.old_is_full || rs->key_idx == rs->pk_idx;
        key_changed = !same_cols || old_key != new_pk;
      }
      bool has_toast = std::any_of(c.new_tuple.begin(), c.new_tuple.end(), [](const Datum& d) {
        return d.kind == Datum::Kind::kUnchangedToast;
      });
      touch(*rs, new_pk);
      if (key_changed) {
        if (c.old_is_full || rs->key_idx == rs->pk_idx) {
          touch(*rs, old_key);
        } else {
          touched_.whole_table[rs->rel->key()] = true;
        }
        SM_RETURN_IF_ERROR(send(old_stmt, old_key, {}));
      }
      if (!has_toast) return send(rs->prefix + "ins", allValues(c.new_tuple), {});
      if (key_changed) {
        // The unchanged TOAST values lived under the old key: read the row from the source.
        repairs_.emplace_back(rs, std::move(new_pk));
        return Status::ok();
      }
      // Update only what was sent; a missing row is repaired from the source after the sync.
      std::string mask;
      std::string set;
      std::vector<PgParam> params = new_pk;
      for (size_t i = 0; i < ncols; ++i) {
        const Datum& d = c.new_tuple[i];
        bool is_pk = std::find(rs->pk_idx.begin(), rs->pk_idx.end(), static_cast<int>(i)) != rs->pk_idx.end();
        mask += d.kind == Datum::Kind::kUnchangedToast ? 'u' : '.';
        if (d.kind == Datum::Kind::kUnchangedToast || is_pk) continue;
        params.push_back(d.kind == Datum::Kind::kText ? PgParam(d.text) : PgParam());
        set += (set.empty() ? "" : ", ") + quoteIdent(rs->rel->columns[i].name) + " = $" +
               std::to_string(params.size());
      }
      if (set.empty()) {
        repairs_.emplace_back(rs, std::move(new_pk));  // nothing to set: make sure the row exists
        return Status::ok();
      }
      std::string where;
      for (size_t k = 0; k < rs->pk_idx.size(); ++k) {
        where += (k ? " AND " : "") +
                 quoteIdent(rs->rel->columns[static_cast<size_t>(rs->pk_idx[k])].name) + " = $" +
                 std::to_string(k + 1);
      }
      std::string name = rs->prefix + "upd_" + mask;
      SM_RETURN_IF_ERROR(prepare(name, "UPDATE " + rs->dest.quoted() + " SET " + set + " WHERE " + where));
      Pending p{Pending::Kind::kUpdateToast, rs, new_pk};
      return send(name, params, std::move(p));
    }
    case ChangeOp::kTruncate:
      break;
  }
  return Status::ok();
}

void PgApplier::touch(const RelState& rs, const std::vector<PgParam>& pk) {
  if (!options_.track_touched || touched_.overflowed) return;
  if (touched_.count >= options_.touched_cap) {
    touched_.overflowed = true;
    touched_.keys.clear();
    return;
  }
  touched_.keys[rs.rel->key()].push_back(pk);
  touched_.count++;
}

const TableInfo* PgApplier::destTable(const std::string& key) const {
  for (const auto& [id, rs] : rels_) {
    if (rs->rel->key() == key) return &rs->dest;
  }
  return nullptr;
}

Status PgApplier::repairFromSource(RelState& rs, const std::vector<PgParam>& key) {
  if (!src_.valid()) {
    SM_ASSIGN_OR_RETURN(src_, common::PgConnection::connect(options_.source_dsn,
                                                            options_.source_label + " (repair)"));
  }
  std::string where;
  for (size_t k = 0; k < rs.pk_idx.size(); ++k) {
    where += (k ? " AND " : "") +
             quoteIdent(rs.rel->columns[static_cast<size_t>(rs.pk_idx[k])].name) + " = $" +
             std::to_string(k + 1);
  }
  SM_ASSIGN_OR_RETURN(auto res, src_.query("SELECT " + rs.column_list + " FROM " +
                                               common::qualifiedName(rs.rel->schema, rs.rel->name) +
                                               " WHERE " + where,
                                           key));
  stats_.toast_repairs++;
  if (common::rowCount(res) == 0) return Status::ok();  // deleted since: a later delete follows
  std::vector<PgParam> row;
  for (int i = 0; i < PQnfields(res.get()); ++i) {
    row.push_back(common::cellIsNull(res, 0, i) ? PgParam() : PgParam(common::cell(res, 0, i)));
  }
  return send(rs.prefix + "ins", row, {});
}

Status PgApplier::commitBatch() {
  if (!dest_txn_open_) return Status::ok();
  SM_RETURN_IF_ERROR(syncAndDrain());
  while (!repairs_.empty()) {
    auto todo = std::move(repairs_);
    repairs_.clear();
    for (auto& [rs, key] : todo) SM_RETURN_IF_ERROR(repairFromSource(*rs, key));
    SM_RETURN_IF_ERROR(syncAndDrain());
  }
  if (batch_end_lsn_ > committed_) {
    char ts[64];
    std::snprintf(ts, sizeof ts, "%.6f",
                  static_cast<double>(batch_commit_time_us_) / 1e6 + kPgEpochOffsetSec);
    // pg_current_xact_id() assigns an xid: a batch that changed nothing (heartbeats, filtered
    // transactions) still writes a commit record, and the origin position travels in it.
    SM_RETURN_IF_ERROR(send("SELECT pg_replication_origin_xact_setup($1::pg_lsn, to_timestamp($2::float8)), "
                            "pg_current_xact_id()",
                            {batch_end_lsn_.toString(), std::string(ts)}, {}));
  }
  SM_RETURN_IF_ERROR(send("COMMIT", {}, {}));
  unflushed_.emplace_back(Lsn(UINT64_MAX), batch_end_lsn_);
  SM_RETURN_IF_ERROR(send("SELECT pg_current_wal_insert_lsn()", {}, Pending{Pending::Kind::kWalLsn, nullptr, {}}));
  SM_RETURN_IF_ERROR(syncAndDrain());
  dest_txn_open_ = false;
  retired_.clear();
  committed_ = std::max(committed_, batch_end_lsn_);
  stats_.batches++;
  if (pending_heartbeat_us_ != 0) {
    auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count() -
                  kPgEpochOffsetSec * 1000000LL;
    last_heartbeat_lag_us_ = std::max<int64_t>(0, now_us - pending_heartbeat_us_);
    last_heartbeat_us_ = pending_heartbeat_us_;
    pending_heartbeat_us_ = 0;
  }
  if (options_.synchronous_commit) {
    durable_ = committed_;
    unflushed_.clear();
  }
  return Status::ok();
}

Status PgApplier::commitPending() {
  if (in_source_txn_ || !dest_txn_open_) return Status::ok();
  return commitBatch();
}

Result<Lsn> PgApplier::durableLsn() {
  if (unflushed_.empty()) return durable_;
  SM_ASSIGN_OR_RETURN(auto v, queryOutsidePipeline("SELECT pg_current_wal_flush_lsn()", {}));
  auto flush = Lsn::parse(v.value_or(""));
  if (!flush) return Status::internal("unparseable pg_current_wal_flush_lsn()");
  while (!unflushed_.empty() && unflushed_.front().first <= *flush) {
    durable_ = std::max(durable_, unflushed_.front().second);
    unflushed_.pop_front();
  }
  return durable_;
}

Status PgApplier::forceFlush() {
  if (dest_txn_open_) return Status::internal("forceFlush with an open batch");
  if (unflushed_.empty()) return Status::ok();
  SM_RETURN_IF_ERROR(syncAndDrain());
  if (PQexitPipelineMode(dst_.raw()) != 1) return dst_.errorFrom(nullptr, "leave pipeline mode");
  // The transaction must write WAL of its own, or its commit is not flushed synchronously.
  Status st = dst_.exec("BEGIN; SET LOCAL synchronous_commit = on; "
                        "SELECT pg_logical_emit_message(true, 'stampmover_flush', ''); COMMIT");
  if (PQenterPipelineMode(dst_.raw()) != 1) return dst_.errorFrom(nullptr, "enter pipeline mode");
  return st;
}

Status PgApplier::apply(const ChangeEvent& e) {
  switch (e.kind) {
    case ChangeEvent::Kind::kRelation:
      return onRelation(e.relation);
    case ChangeEvent::Kind::kBegin:
      in_source_txn_ = true;
      skipping_txn_ = false;
      return ensureDestTxn();
    case ChangeEvent::Kind::kChange:
      if (!in_source_txn_) return Status::internal("change outside a transaction");
      if (skipping_txn_) return Status::ok();  // applied by our other direction: no echo
      batch_changes_++;
      stats_.changes++;
      return onChange(e.change);
    case ChangeEvent::Kind::kMessage:
      if (e.message.prefix == kHeartbeatPrefix) {
        stats_.heartbeats++;
        try {
          pending_heartbeat_us_ = std::stoll(e.message.content);
        } catch (const std::exception&) {
          // Someone else's message with our prefix: ignore it, it carries no data.
        }
      }
      return Status::ok();
    case ChangeEvent::Kind::kCommit: {
      if (!in_source_txn_) return Status::internal("commit without begin");
      in_source_txn_ = false;
      skipping_txn_ = false;
      batch_end_lsn_ = e.txn.end_lsn;
      batch_commit_time_us_ = e.txn.commit_time_us;
      stats_.transactions++;
      auto age = std::chrono::steady_clock::now() - batch_started_;
      if (batch_changes_ >= options_.max_batch_changes || age >= options_.max_batch_age) {
        return commitBatch();
      }
      return Status::ok();
    }
    case ChangeEvent::Kind::kOrigin:
      if (!options_.skip_origin.empty() && e.txn.origin == options_.skip_origin) skipping_txn_ = true;
      return Status::ok();
    case ChangeEvent::Kind::kType:
      return Status::ok();
  }
  return Status::ok();
}

}  // namespace stampmover::mover
