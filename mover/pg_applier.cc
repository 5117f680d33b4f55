// PgApplier: see pg_applier.h. Statements go out in libpq pipeline mode without waiting for
// their answers, which are read as they arrive; all of them are awaited only where something
// depends on them (a TOAST repair, a catalog read, the commit of an idle stream). An error
// anywhere aborts the destination transaction and fails the applier; the caller reconnects and
// resumes from the origin's recorded position, which is safe because every statement is
// idempotent.
#include "mover/pg_applier.h"

#include "mover/heartbeat.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

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
constexpr int64_t kPgEpochOffsetSec = 946684800;
constexpr uint32_t kPollEvery = 64;  // statements sent between reads of the answers so far

// First statement of a batch sent while an earlier batch's COMMIT is unanswered: fails (and so
// aborts this batch and, the transaction staying aborted, every later one) unless the origin
// reached the earlier batch's position, i.e. unless it committed. The CASE depends on a
// volatile function, so the failing cast is never folded at plan time.
constexpr const char* kGuardSql =
    "SELECT (CASE WHEN coalesce(pg_replication_origin_session_progress(false), '0/0') >= "
    "$1::pg_lsn THEN '0' ELSE 'stampmover: the batch ending at ' || $1::pg_lsn::text || "
    "' did not commit; the origin is at ' || "
    "coalesce(pg_replication_origin_session_progress(false)::text, 'none') END)::int";

// Appends one element of an array literal: NULL unquoted, any value double-quoted with quotes
// and backslashes escaped (so "NULL", "", braces, commas and blanks stay plain values).
void appendArrayElement(std::string& out, const PgParam& v) {
  if (!v) {
    out += "NULL";
    return;
  }
  out += '"';
  const char* p = v->data();
  const char* end = p + v->size();
  while (p < end) {
    const char* q = p;
    while (q < end && *q != '"' && *q != '\\') ++q;
    out.append(p, static_cast<size_t>(q - p));
    if (q == end) break;
    out += '\\';
    out += *q;
    p = q + 1;
  }
  out += '"';
}

std::string encodeKey(const std::vector<PgParam>& pk) { return encodePrimaryKey(pk); }

// The same key, straight from a tuple's primary-key columns.
std::string encodeKey(const common::Tuple& tuple, const std::vector<int>& pk_idx) {
  std::string k;
  for (int i : pk_idx) {
    const Datum& d = tuple[static_cast<size_t>(i)];
    appendPrimaryKeyPart(k, d.kind == Datum::Kind::kText ? &d.text : nullptr);
  }
  return k;
}

size_t rowBytes(const std::vector<PgParam>& values) {
  size_t n = 0;
  for (const auto& v : values) n += (v ? v->size() : 0) + 8;
  return n;
}

// Built-in types whose equal values always print the same text (numeric '1.0' = '1.00',
// float -0 = 0, bpchar padding, intervals do not qualify).
bool canonicalKeyType(uint32_t oid) {
  switch (oid) {
    case 16:    // bool
    case 17:    // bytea
    case 18:    // "char"
    case 19:    // name
    case 20:    // int8
    case 21:    // int2
    case 23:    // int4
    case 25:    // text
    case 26:    // oid
    case 1043:  // varchar
    case 1082:  // date
    case 1083:  // time
    case 1114:  // timestamp
    case 1184:  // timestamptz
    case 2950:  // uuid
      return true;
    default:
      return false;
  }
}

}  // namespace

Result<std::unique_ptr<PgApplier>> PgApplier::open(const ApplierOptions& o) {
  std::unique_ptr<PgApplier> a(new PgApplier(o));
  SM_ASSIGN_OR_RETURN(a->dst_, common::PgConnection::connect(o.dest_dsn, o.dest_label));
  // Generic plans for our prepared statements: planned with the arrays' real sizes, a multi-row
  // DELETE may hash a whole table instead of probing its primary key once per row.
  SM_RETURN_IF_ERROR(a->dst_.exec(std::string("SET statement_timeout = 0; SET plan_cache_mode = "
                                              "force_generic_plan; SET synchronous_commit = ") +
                                  (o.synchronous_commit ? "on" : "off")));
  SM_RETURN_IF_ERROR(a->dst_.exec("SET session_replication_role = replica")
                         .withContext("apply sessions need session_replication_role = replica "
                                      "(connect to the destination as a superuser)"));
  SM_ASSIGN_OR_RETURN(auto exists,
                      a->dst_.queryValue("SELECT pg_replication_origin_oid($1)", {o.origin_name}));
  if (!exists) {
    SM_RETURN_IF_ERROR(
        a->dst_.query("SELECT pg_replication_origin_create($1)", {o.origin_name}).status());
  }
  // A session of ours that just disconnected (a reconnect, a restarted step) holds the origin
  // until its backend has exited, which happens after the client's disconnect returns: give it
  // a few seconds before blaming another worker.
  Status setup;
  for (int attempt = 0;; ++attempt) {
    setup = a->dst_.query("SELECT pg_replication_origin_session_setup($1)", {o.origin_name})
                .status();
    if (setup.isOk() || attempt >= 100 ||
        setup.message().find("is already active for PID") == std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  SM_RETURN_IF_ERROR(setup.withContext("replication origin " + o.origin_name +
                                       " (is another stampmover applying this migration?)"));
  SM_ASSIGN_OR_RETURN(a->durable_, a->originProgress());
  a->committed_ = a->durable_;
  a->confirmed_ = a->durable_;
  if (PQenterPipelineMode(a->dst_.raw()) != 1) {
    return Status::internal(o.dest_label + ": cannot enter libpq pipeline mode");
  }
  return a;
}

PgApplier::~PgApplier() = default;

Status PgApplier::fail(Status st) {
  if (failed_.isOk() && !st.isOk()) failed_ = std::move(st);
  return failed_;
}

template <typename Query>
auto PgApplier::outsidePipeline(Query&& query) -> decltype(query()) {
  if (!failed_.isOk()) return failed_;
  bool in_pipeline = PQpipelineStatus(dst_.raw()) != PQ_PIPELINE_OFF;
  if (in_pipeline) {
    SM_RETURN_IF_ERROR(waitAll());
    if (PQexitPipelineMode(dst_.raw()) != 1) {
      return fail(dst_.errorFrom(nullptr, "leave pipeline mode"));
    }
  }
  auto v = query();
  if (in_pipeline && PQenterPipelineMode(dst_.raw()) != 1) {
    return fail(dst_.errorFrom(nullptr, "enter pipeline mode"));
  }
  return v;
}

Result<std::optional<std::string>> PgApplier::queryOutsidePipeline(
    const std::string& sql, const std::vector<PgParam>& params) {
  return outsidePipeline([&] { return dst_.queryValue(sql, params); });
}

Result<Lsn> PgApplier::originProgress() {
  SM_ASSIGN_OR_RETURN(auto v,
                      queryOutsidePipeline("SELECT pg_replication_origin_progress($1, true)",
                                           {options_.origin_name}));
  if (!v) return Lsn();
  auto l = Lsn::parse(*v);
  if (!l) return Status::internal("unparseable origin progress '" + *v + "'");
  return *l;
}

Status PgApplier::prepare(const std::string& name, const std::string& sql) {
  if (prepared_.count(name)) return Status::ok();
  if (PQsendPrepare(dst_.raw(), name.c_str(), sql.c_str(), 0, nullptr) != 1) {
    return fail(dst_.errorFrom(nullptr, "prepare " + name));
  }
  prepared_[name] = true;
  inflight_.push_back(Pending{Pending::Kind::kPrepare});
  return Status::ok();
}

Status PgApplier::send(const std::string& stmt, const std::vector<PgParam>& params,
                       Pending pending) {
  if (!failed_.isOk()) return failed_;
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  // Blocking mode: when the destination is busy and the socket full, this waits (reading its
  // answers meanwhile, so neither side can block the other), which bounds what is in flight.
  int ok = prepared_.count(stmt)
               ? PQsendQueryPrepared(dst_.raw(), stmt.c_str(), static_cast<int>(values.size()),
                                     values.data(), nullptr, nullptr, 0)
               : PQsendQueryParams(dst_.raw(), stmt.c_str(), static_cast<int>(values.size()),
                                   nullptr, values.data(), nullptr, nullptr, 0);
  if (ok != 1) return fail(dst_.errorFrom(nullptr, "send statement"));
  inflight_.push_back(std::move(pending));
  if (inflight_.size() >= std::max<uint32_t>(options_.max_inflight, 2)) {
    // Too many unanswered statements: have the server send what it holds, and read half.
    if (PQsendFlushRequest(dst_.raw()) != 1 || PQflush(dst_.raw()) != 0) {
      return fail(dst_.errorFrom(nullptr, "flush request"));
    }
    while (inflight_.size() > options_.max_inflight / 2) {
      SM_ASSIGN_OR_RETURN(bool got, takeResult(true));
      (void)got;
    }
    sends_since_poll_ = 0;
  } else if (++sends_since_poll_ >= kPollEvery) {
    sends_since_poll_ = 0;
    return pollResults();
  }
  return Status::ok();
}

Result<bool> PgApplier::takeResult(bool block) {
  if (!failed_.isOk()) return failed_;
  if (inflight_.empty()) return false;
  if (!block && PQisBusy(dst_.raw())) return false;
  PgResult r{PQgetResult(dst_.raw())};
  if (awaiting_end_) {
    // Each statement's answer ends with a NULL; a sync's does not.
    awaiting_end_ = false;
    if (r) return fail(Status::internal(options_.dest_label + ": pipeline out of step"));
    inflight_.pop_front();
    return true;
  }
  if (!r) {
    if (PQstatus(dst_.raw()) != CONNECTION_OK) {
      return fail(Status::retryable(options_.dest_label + ": connection lost in pipeline: " +
                                    std::string(PQerrorMessage(dst_.raw()))));
    }
    if (block) return fail(Status::internal(options_.dest_label + ": pipeline answer missing"));
    return false;
  }
  Pending& p = inflight_.front();
  const ExecStatusType st = PQresultStatus(r.get());
  if (p.kind == Pending::Kind::kSync) {
    if (st != PGRES_PIPELINE_SYNC) return fail(dst_.errorFrom(r.get(), "pipeline sync"));
    inflight_.pop_front();
    return true;
  }
  if (st == PGRES_PIPELINE_SYNC) {
    return fail(Status::internal(options_.dest_label + ": pipeline out of step (early sync)"));
  }
  if (st == PGRES_PIPELINE_ABORTED) {
    // Only after an error whose own answer came first: defensive.
    return fail(Status::retryable(options_.dest_label + ": pipeline aborted by an earlier error"));
  }
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    if (p.kind == Pending::Kind::kPlainInsert && state != nullptr &&
        std::strcmp(state, "23505") == 0) {
      // The destination held a row the source had just inserted: it does not mirror the
      // source here (a copy resumed under a later snapshot, or a write behind our back). The
      // batch rolls back; the retry upserts through every transaction begun so far.
      conflict_through_ = seen_through_;
      const char* msg = PQresultErrorField(r.get(), PG_DIAG_MESSAGE_PRIMARY);
      return fail(Status::retryable(options_.dest_label + ": an inserted row already exists (" +
                                    std::string(msg != nullptr ? msg : "unique violation") +
                                    "); retrying with upserts through " +
                                    seen_through_.toString()));
    }
    if (p.kind == Pending::Kind::kUpsert && state != nullptr &&
        std::strcmp(state, kCollisionSqlState) == 0) {
      Status original = dst_.errorFrom(r.get(), "apply");
      return fail(collision(*p.rel, p.keys, p.expected, original));
    }
    return fail(dst_.errorFrom(r.get(), "apply"));
  }
  switch (p.kind) {
    case Pending::Kind::kUpdateToast:
      if (std::strcmp(PQcmdTuples(r.get()), "0") == 0)
        repairs_.emplace_back(p.rel, std::move(p.key));
      break;
    case Pending::Kind::kCommit: {
      if (std::strcmp(PQcmdStatus(r.get()), "COMMIT") != 0) {
        return fail(Status::retryable(options_.dest_label + ": the batch ending at " +
                                      p.lsn.toString() + " was rolled back (" +
                                      PQcmdStatus(r.get()) + ")"));
      }
      confirmed_ = std::max(confirmed_, p.lsn);
      stats_.batches++;
      if (options_.synchronous_commit) durable_ = std::max(durable_, p.lsn);
      if (p.heartbeat_us != 0) {
        auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count() -
                      kPgEpochOffsetSec * 1000000LL;
        last_heartbeat_lag_us_ = std::max<int64_t>(0, now_us - p.heartbeat_us);
        last_heartbeat_us_ = std::max(last_heartbeat_us_, p.heartbeat_us);
        last_heartbeat_seq_ = std::max(last_heartbeat_seq_, p.heartbeat_seq);
      }
      break;
    }
    case Pending::Kind::kWalLsn: {
      auto l = PQntuples(r.get()) == 1 ? Lsn::parse(PQgetvalue(r.get(), 0, 0)) : std::nullopt;
      if (!l) return fail(Status::internal("unparseable pg_current_wal_insert_lsn()"));
      if (!options_.synchronous_commit) unflushed_.emplace_back(*l, p.lsn);
      break;
    }
    case Pending::Kind::kFlushLsn: {
      flush_lsn_asked_ = false;
      auto flush = PQntuples(r.get()) == 1 ? Lsn::parse(PQgetvalue(r.get(), 0, 0)) : std::nullopt;
      if (!flush) return fail(Status::internal("unparseable pg_current_wal_flush_lsn()"));
      while (!unflushed_.empty() && unflushed_.front().first <= *flush) {
        durable_ = std::max(durable_, unflushed_.front().second);
        unflushed_.pop_front();
      }
      break;
    }
    case Pending::Kind::kPlain:
    case Pending::Kind::kUpsert:
    case Pending::Kind::kPlainInsert:
    case Pending::Kind::kPrepare:
    case Pending::Kind::kSync:
      break;
  }
  awaiting_end_ = true;
  if (block || !PQisBusy(dst_.raw())) {
    PgResult end{PQgetResult(dst_.raw())};
    awaiting_end_ = false;
    if (end) return fail(Status::internal(options_.dest_label + ": pipeline out of step"));
    inflight_.pop_front();
  }
  return true;
}

Status PgApplier::pollResults() {
  if (!failed_.isOk()) return failed_;
  if (inflight_.empty()) return Status::ok();
  if (PQconsumeInput(dst_.raw()) != 1) {
    return fail(Status::retryable(options_.dest_label +
                                  ": connection lost: " + std::string(PQerrorMessage(dst_.raw()))));
  }
  for (;;) {
    SM_ASSIGN_OR_RETURN(bool got, takeResult(false));
    if (!got) break;
  }
  return Status::ok();
}

Status PgApplier::waitAll() {
  if (!failed_.isOk()) return failed_;
  if (!inflight_.empty()) {
    // The server sends answers at a sync (or when its buffer fills): ask for them.
    if (inflight_.back().kind != Pending::Kind::kSync) {
      if (PQpipelineSync(dst_.raw()) != 1) return fail(dst_.errorFrom(nullptr, "pipeline sync"));
      inflight_.push_back(Pending{Pending::Kind::kSync});
    }
    while (!inflight_.empty()) {
      SM_ASSIGN_OR_RETURN(bool got, takeResult(true));
      (void)got;
    }
  }
  sends_since_poll_ = 0;
  if (!dest_txn_open_ && repairs_.empty()) retired_.clear();
  return Status::ok();
}

Status PgApplier::ensureDestTxn() {
  if (dest_txn_open_) return Status::ok();
  SM_RETURN_IF_ERROR(send("BEGIN", {}, {}));
  if (confirmed_ < origin_sent_) {
    SM_RETURN_IF_ERROR(send(kGuardSql, {origin_sent_.toString()}, {}));
  }
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
  // Merged rows were built for the previous description; catalog reads happen outside the
  // pipeline: send and drain everything first.
  SM_RETURN_IF_ERROR(flushAllGroups());
  SM_RETURN_IF_ERROR(waitAll());
  if (PQexitPipelineMode(dst_.raw()) != 1)
    return fail(dst_.errorFrom(nullptr, "leave pipeline mode"));
  auto described = describeTable(dst_, rel->schema, rel->name, tenant_col);
  if (PQenterPipelineMode(dst_.raw()) != 1)
    return fail(dst_.errorFrom(nullptr, "enter pipeline mode"));
  if (!described) return described.status();
  if (!described->has_value()) {
    return Status::refused("schema drift: table " + key +
                           " is replicated from the source but "
                           "does not exist on " +
                           options_.dest_label + "; create it there, then rerun");
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
  {
    auto a = state->key_idx;
    auto b = state->pk_idx;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    state->key_is_pk = a == b;
  }
  // Canonical text of the tenant key for this column's type ('042' -> '42' for bigint).
  auto canon = queryOutsidePipeline(
      "SELECT ($1::" + state->dest.column(tenant_col)->type + ")::text", {options_.tenant});
  if (!canon) return canon.status();
  state->tenant_text = canon->value_or(options_.tenant);
  SM_RETURN_IF_ERROR(describeGrouping(*state));

  static uint32_t generation = 0;
  state->prefix = "r" + std::to_string(rel->id) + "_" + std::to_string(++generation) + "_";
  ApplyShape& shape = state->shape;
  shape.table = state->dest.quoted();
  for (const auto& c : rel->columns) shape.columns.push_back(c.name);
  for (int i : state->pk_idx) shape.pk.push_back(static_cast<size_t>(i));
  for (int i : state->key_idx) shape.key.push_back(static_cast<size_t>(i));
  shape.tenant = static_cast<size_t>(state->tenant_idx);
  if (state->grouped) shape.casts = state->casts;
  state->tenant_in_pk = shape.tenantInKey();
  const ApplyStatements sql = buildApplyStatements(shape);
  SM_RETURN_IF_ERROR(prepare(state->prefix + "ins", sql.upsert));
  SM_RETURN_IF_ERROR(prepare(state->prefix + "delpk", sql.delete_pk));
  if (!sql.delete_key.empty()) SM_RETURN_IF_ERROR(prepare(state->prefix + "delkey", sql.delete_key));
  SM_RETURN_IF_ERROR(prepare(state->prefix + "trunc", sql.delete_tenant));
  if (state->grouped) {
    SM_RETURN_IF_ERROR(prepare(state->prefix + "insmany", sql.upsert_many));
    SM_RETURN_IF_ERROR(prepare(state->prefix + "insplainmany", sql.insert_plain_many));
    SM_RETURN_IF_ERROR(prepare(state->prefix + "insplain", sql.insert_plain));
    SM_RETURN_IF_ERROR(prepare(state->prefix + "delmany", sql.delete_many));
  }
  auto& slot = rels_[rel->id];
  if (slot) retired_.push_back(std::move(slot));
  slot = std::move(state);
  return Status::ok();
}

Status PgApplier::describeGrouping(RelState& state) {
  state.grouped = false;
  state.barrier = false;
  const std::string oid = std::to_string(state.dest.oid);
  // Anything that makes the order of rows matter besides the primary key: another unique
  // index, an exclusion constraint (then the table goes row by row); a trigger or rule that
  // fires in replica sessions (may read other tables: everything before goes out first).
  auto hazards = outsidePipeline([&] {
    return dst_.query(
        "SELECT (SELECT count(*) FROM pg_index WHERE indrelid = $1::oid AND indisunique AND NOT "
        "indisprimary) + (SELECT count(*) FROM pg_constraint WHERE conrelid = $1::oid AND "
        "contype = 'x'), (SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::oid AND NOT "
        "tgisinternal AND tgenabled IN ('A', 'R')) + (SELECT count(*) FROM pg_rewrite WHERE "
        "ev_class = $1::oid AND rulename <> '_RETURN' AND ev_enabled IN ('A', 'R'))",
        {oid});
  });
  if (!hazards) return hazards.status();
  state.barrier = common::cell(*hazards, 0, 1) != "0";
  if (common::cell(*hazards, 0, 0) != "0" || state.barrier) {
    // Slower (one statement per change): worth a line for whoever wonders why.
    spdlog::info("{}: applied row by row, not in multi-row statements: it has {}",
                 state.dest.quoted(),
                 state.barrier ? "a trigger or rule that fires in replica sessions"
                               : "a unique index besides the primary key, or an exclusion "
                                 "constraint");
    return Status::ok();
  }
  if (options_.max_group_rows <= 1) return Status::ok();
  // Per column: typed arrays for built-in scalar types whose array delimiter is a comma; any
  // other type (arrays, enums, composites, domains, ranges) travels as text[] and each element
  // is cast, which runs the type's input function exactly as a text parameter would. Type names
  // without typmod: an explicit cast to varchar(n) would truncate where an insert fails.
  auto cols = outsidePipeline([&] {
    return dst_.query(
        "SELECT a.attname, format_type(a.atttypid, -1), (t.oid < 16384 AND t.typtype = 'b' AND "
        "t.typcategory <> 'A' AND t.typdelim = ','), a.atttypid, "
        "coalesce(co.collisdeterministic, true) FROM pg_attribute a JOIN pg_type t ON t.oid = "
        "a.atttypid LEFT JOIN pg_collation co ON co.oid = a.attcollation WHERE a.attrelid = "
        "$1::oid AND a.attnum > 0 AND NOT a.attisdropped",
        {oid});
  });
  if (!cols) return cols.status();
  struct DestCol {
    std::string type;
    bool typed = false;
    uint32_t oid = 0;
    bool deterministic = true;
  };
  std::map<std::string, DestCol> by_name;
  for (int r = 0; r < common::rowCount(*cols); ++r) {
    by_name[common::cell(*cols, r, 0)] =
        DestCol{common::cell(*cols, r, 1), common::cell(*cols, r, 2) == "t",
                static_cast<uint32_t>(std::stoul(common::cell(*cols, r, 3))),
                common::cell(*cols, r, 4) == "t"};
  }
  state.casts.clear();
  for (const auto& c : state.rel->columns) {
    auto it = by_name.find(c.name);
    if (it == by_name.end()) return Status::ok();  // dropped meanwhile: stay row by row
    if (it->second.typed) {
      state.casts.push_back(ColumnCast{it->second.type + "[]", ""});
    } else {
      state.casts.push_back(ColumnCast{"text[]", "::" + it->second.type});
    }
  }
  state.pk_canonical = true;
  for (int i : state.pk_idx) {
    const DestCol& d = by_name[state.rel->columns[static_cast<size_t>(i)].name];
    if (!canonicalKeyType(d.oid) || !d.deterministic) state.pk_canonical = false;
  }
  state.grouped = true;
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
  for (const Datum& d : tuple)
    out.push_back(d.kind == Datum::Kind::kText ? PgParam(d.text) : PgParam());
  return out;
}

// allValues(), moving the text out of the tuple (its kinds stay).
std::vector<PgParam> takeValues(common::Tuple& tuple) {
  std::vector<PgParam> out;
  out.reserve(tuple.size());
  for (Datum& d : tuple) {
    out.push_back(d.kind == Datum::Kind::kText ? PgParam(std::move(d.text)) : PgParam());
  }
  return out;
}

bool hasUnchangedToast(const common::Tuple& tuple) {
  return std::any_of(tuple.begin(), tuple.end(),
                     [](const Datum& d) { return d.kind == Datum::Kind::kUnchangedToast; });
}

}  // namespace

Status PgApplier::putRow(RelState& rs, std::string key, bool del, std::vector<PgParam> values,
                         bool insert) {
  Group& g = rs.group;
  const size_t bytes = rowBytes(values);
  auto [it, inserted] = g.index.try_emplace(std::move(key), g.rows.size());
  bool fresh = insert && txn_plain_;
  if (inserted) {
    g.rows.push_back(Group::Row{del, fresh, std::move(values), bytes});
  } else {
    // A later change of the same row: it alone decides the row's state after the batch, and
    // the first one whether the row existed before it.
    Group::Row& row = g.rows[it->second];
    g.bytes -= row.bytes;
    group_bytes_ -= row.bytes;
    if (row.del) g.deletes--;
    if (row.fresh && !row.del) g.fresh--;
    fresh = row.fresh;
    row = Group::Row{del, fresh, std::move(values), bytes};
  }
  if (del) g.deletes++;
  if (fresh && !del) g.fresh++;
  g.bytes += bytes;
  group_bytes_ += bytes;
  if (!rs.dirty) {
    rs.dirty = true;
    dirty_.push_back(&rs);
  }
  if (g.rows.size() >= options_.max_group_rows || g.bytes >= options_.max_group_bytes) {
    return flushGroup(rs);
  }
  if (group_bytes_ >= options_.max_group_bytes) return flushAllGroups();
  return Status::ok();
}

Status PgApplier::flushGroup(RelState& rs) {
  Group& g = rs.group;
  if (g.rows.empty()) return Status::ok();
  // Every key appears once and the table has no other unique constraint, so the statements may
  // go in any order; deletes first, so that a key deleted under one spelling and upserted under
  // another equal one (numeric 1.0 / 1.00) ends up present, as the upsert came last.
  // Rows by statement: 0 = delete, 1 = plain insert (fresh), 2 = upsert.
  auto kind = [](const Group::Row& r) { return r.del ? 0 : r.fresh ? 1 : 2; };
  auto arrays = [&](int want, size_t ncols) {
    size_t n = 0;
    size_t bytes = 0;
    for (const auto& row : g.rows) {
      if (kind(row) != want) continue;
      n++;
      bytes += row.bytes;
    }
    std::vector<PgParam> params(ncols, std::string());
    for (auto& p : params) {
      p->reserve(bytes / ncols + bytes / (8 * ncols) + n * 4 + 2);
      *p += '{';
    }
    bool first = true;
    for (const auto& row : g.rows) {
      if (kind(row) != want) continue;
      for (size_t k = 0; k < ncols; ++k) {
        std::string& s = *params[k];
        if (!first) s += ',';
        appendArrayElement(s, row.values[k]);
      }
      first = false;
    }
    for (auto& p : params) *p += '}';
    return params;
  };
  const size_t ndel = g.deletes;
  const size_t nfresh = g.fresh;
  const size_t nups = g.rows.size() - g.deletes - g.fresh;
  auto single = [&](int want) -> const Group::Row& {
    return *std::find_if(g.rows.begin(), g.rows.end(),
                         [&](const Group::Row& r) { return kind(r) == want; });
  };
  if (ndel == 1) {
    SM_RETURN_IF_ERROR(send(rs.prefix + "delpk", scoped(rs, single(0).values), {}));
  } else if (ndel > 1) {
    SM_RETURN_IF_ERROR(send(rs.prefix + "delmany", scoped(rs, arrays(0, rs.pk_idx.size())), {}));
  }
  // Plain inserts after the deletes: a key deleted under one spelling may come back under an
  // equal one (numeric 1.0 / 1.00).
  if (nfresh == 1) {
    SM_RETURN_IF_ERROR(send(rs.prefix + "insplain", single(1).values,
                            Pending{Pending::Kind::kPlainInsert}));
  } else if (nfresh > 1) {
    SM_RETURN_IF_ERROR(send(rs.prefix + "insplainmany", arrays(1, rs.rel->columns.size()),
                            Pending{Pending::Kind::kPlainInsert}));
  }
  if (nups == 1) {
    SM_RETURN_IF_ERROR(sendUpsert(rs, rs.prefix + "ins", single(2).values, 1, {}));
  } else if (nups > 1) {
    std::vector<PgParam> cols = arrays(2, rs.rel->columns.size());
    std::vector<PgParam> pk_arrays;
    if (!rs.tenant_in_pk) {
      for (int i : rs.pk_idx) pk_arrays.push_back(cols[static_cast<size_t>(i)]);
    }
    SM_RETURN_IF_ERROR(sendUpsert(rs, rs.prefix + "insmany", cols, nups, std::move(pk_arrays)));
  }
  stats_.statements += (ndel ? 1 : 0) + (nfresh ? 1 : 0) + (nups ? 1 : 0);
  stats_.merged_rows += g.rows.size();
  group_bytes_ -= g.bytes;
  g.rows.clear();
  g.index.clear();
  g.bytes = 0;
  g.deletes = 0;
  g.fresh = 0;
  return Status::ok();
}

Status PgApplier::flushAllGroups() {
  std::vector<RelState*> list;
  list.swap(dirty_);
  for (RelState* rs : list) {
    rs->dirty = false;
    SM_RETURN_IF_ERROR(flushGroup(*rs));
  }
  return Status::ok();
}

Status PgApplier::sendToastUpdate(RelState& rs, const common::Tuple& tuple,
                                  std::vector<PgParam> new_pk) {
  // Update only what was sent; a missing row is repaired from the source before the commit.
  std::string mask;
  bool any_set = false;
  std::vector<PgParam> params = new_pk;
  for (size_t i = 0; i < tuple.size(); ++i) {
    const Datum& d = tuple[i];
    bool is_pk =
        std::find(rs.pk_idx.begin(), rs.pk_idx.end(), static_cast<int>(i)) != rs.pk_idx.end();
    mask += d.kind == Datum::Kind::kUnchangedToast ? 'u' : '.';
    if (d.kind == Datum::Kind::kUnchangedToast || is_pk) continue;
    params.push_back(d.kind == Datum::Kind::kText ? PgParam(d.text) : PgParam());
    any_set = true;
  }
  if (!any_set) {
    repairs_.emplace_back(&rs, std::move(new_pk));  // nothing to set: make sure the row exists
    return Status::ok();
  }
  if (!rs.tenant_in_pk) params.push_back(rs.tenant_text);
  std::string name = rs.prefix + "upd_" + mask;
  SM_RETURN_IF_ERROR(prepare(name, toastUpdateSql(rs.shape, mask)));
  toast_checks_++;
  stats_.statements++;
  Pending p{Pending::Kind::kUpdateToast, &rs, new_pk};
  return send(name, params, std::move(p));
}

std::vector<PgParam> PgApplier::scoped(const RelState& rs, std::vector<PgParam> key) const {
  if (!rs.tenant_in_pk) key.push_back(rs.tenant_text);
  return key;
}

Status PgApplier::sendUpsert(RelState& rs, const std::string& stmt,
                             const std::vector<PgParam>& params, uint64_t rows,
                             std::vector<PgParam> pk_arrays) {
  if (rs.tenant_in_pk) return send(stmt, params, {});
  Pending p{Pending::Kind::kUpsert, &rs};
  if (!pk_arrays.empty()) {
    // Multi-row: the statement checks the number of rows it wrote (see apply_sql.h).
    std::vector<PgParam> with_count = params;
    with_count.push_back(std::to_string(rows));
    p.expected = rows;
    p.keys = std::move(pk_arrays);
    return send(stmt, with_count, std::move(p));
  }
  p.expected = rows;
  if (pk_arrays.empty()) {
    // One row: its PK values, each as a one-element array.
    for (int i : rs.pk_idx) {
      std::string a = "{";
      appendArrayElement(a, params[static_cast<size_t>(i)]);
      pk_arrays.push_back(a + "}");
    }
  }
  p.keys = std::move(pk_arrays);
  return send(stmt, params, std::move(p));
}

Status PgApplier::collision(const RelState& rs, const std::vector<PgParam>& pk_arrays,
                            uint64_t sent, const Status& original) {
  std::string what = "of " + std::to_string(sent) + " row(s) of tenant '" + rs.tenant_text +
                     "' sent to " + rs.dest.key() + ", some have the primary key of a row of "
                     "another tenant on " + options_.dest_label;
  // Name the rows, read on a separate session: this one's transaction is about to fail.
  std::string rows;
  auto conn = common::PgConnection::connect(options_.dest_dsn, options_.dest_label + " (report)");
  if (conn) {
    std::string pk_text, unnest, cols, match;
    for (size_t k = 0; k < rs.pk_idx.size(); ++k) {
      const std::string& name = rs.rel->columns[static_cast<size_t>(rs.pk_idx[k])].name;
      const ColumnInfo* ci = rs.dest.column(name);
      pk_text += (k ? " || ', ' || " : "") + std::string("t.") + quoteIdent(name) + "::text";
      unnest += (k ? ", $" : "$") + std::to_string(k + 1) + "::" + (ci ? ci->type : "text") + "[]";
      cols += (k ? ", c" : "c") + std::to_string(k);
      match += (k ? " AND t." : "t.") + quoteIdent(name) + " = k.c" + std::to_string(k);
    }
    std::vector<PgParam> params = pk_arrays;
    params.push_back(rs.tenant_text);
    const std::string tc = quoteIdent(rs.rel->columns[static_cast<size_t>(rs.tenant_idx)].name);
    auto r = conn->query("SELECT '(' || " + pk_text + " || ') of tenant ' || t." + tc +
                             "::text FROM " + rs.dest.quoted() + " t JOIN unnest(" + unnest +
                             ") AS k(" + cols + ") ON " + match + " WHERE t." + tc +
                             " IS DISTINCT FROM $" + std::to_string(params.size()) + " LIMIT 5",
                         params);
    if (r) {
      for (int i = 0; i < common::rowCount(*r); ++i) {
        rows += (i ? "; " : "") + common::cell(*r, i, 0);
      }
    }
  }
  // Division by zero from something else (a generated column): not a collision we can name.
  if (rows.empty()) return original;
  return Status::dataLoss("data conflict: " + what + " (" + rows + ")" +
                          "; nothing of the other tenant was changed. The table's primary key "
                          "does not contain the tenant column and both tenants use this key: "
                          "resolve the collision at the destination, then rerun");
}

Status PgApplier::onChangeGrouped(RelState& rs, common::Change& c) {
  bool ok = true;
  std::optional<std::vector<PgParam>> old_pk;  // the old row, identified by its primary key
  std::vector<PgParam> old_key;                // or by a replica identity that is not the PK
  if (c.old_tuple) {
    SM_RETURN_IF_ERROR(checkTenant(rs, *c.old_tuple, "an old row"));
    if (c.old_is_full || rs.key_is_pk) {
      old_pk = pick(*c.old_tuple, rs.pk_idx, &ok);
    } else {
      old_key = pick(*c.old_tuple, rs.key_idx, &ok);
    }
    if (!ok) return Status::internal("unchanged-TOAST value in the old key of " + rs.rel->key());
  }
  // (A replica identity other than the PK is a unique index, which makes a table ungrouped;
  // kept for safety.) The row is found by that key: in order, after what came before.
  auto deleteByIdentity = [&]() -> Status {
    touched_.touchTable(rs.rel->key());
    SM_RETURN_IF_ERROR(flushGroup(rs));
    stats_.statements++;
    return send(rs.prefix + "delkey", scoped(rs, old_key), {});
  };
  auto pkIsToast = [&](const common::Tuple& t) {
    return std::any_of(rs.pk_idx.begin(), rs.pk_idx.end(), [&](int i) {
      return t[static_cast<size_t>(i)].kind == Datum::Kind::kUnchangedToast;
    });
  };
  switch (c.op) {
    case ChangeOp::kInsert: {
      SM_RETURN_IF_ERROR(checkTenant(rs, c.new_tuple, "an insert"));
      if (pkIsToast(c.new_tuple)) {
        return Status::internal("unchanged-TOAST primary key value in " + rs.rel->key());
      }
      if (options_.track_touched) touch(rs, pick(c.new_tuple, rs.pk_idx, &ok));
      if (hasUnchangedToast(c.new_tuple)) {
        // A row moved into the tenant (UPDATE ... SET tenant = T) is published as an insert
        // whose unchanged out-of-line values are markers: read the row from the source.
        repairs_.emplace_back(&rs, pick(c.new_tuple, rs.pk_idx, &ok));
        return Status::ok();
      }
      std::string key = encodeKey(c.new_tuple, rs.pk_idx);  // before the values are taken
      return putRow(rs, std::move(key), false, takeValues(c.new_tuple), true);
    }
    case ChangeOp::kDelete:
      if (!c.old_tuple) return Status::internal("delete without old key in " + rs.rel->key());
      if (!old_pk) return deleteByIdentity();
      touch(rs, *old_pk);
      return putRow(rs, encodeKey(*old_pk), true, *old_pk);
    case ChangeOp::kUpdate: {
      SM_RETURN_IF_ERROR(checkTenant(rs, c.new_tuple, "an update"));
      if (pkIsToast(c.new_tuple)) {
        return Status::internal("unchanged-TOAST primary key value in " + rs.rel->key());
      }
      bool key_changed = false;
      if (c.old_tuple) {
        key_changed = !old_pk;
        for (size_t k = 0; !key_changed && k < rs.pk_idx.size(); ++k) {
          const Datum& d = c.new_tuple[static_cast<size_t>(rs.pk_idx[k])];
          const PgParam& o = (*old_pk)[k];
          key_changed = d.kind == Datum::Kind::kText ? (!o || *o != d.text) : o.has_value();
        }
      }
      if (options_.track_touched) touch(rs, pick(c.new_tuple, rs.pk_idx, &ok));
      if (key_changed) {
        if (old_pk) {
          touch(rs, *old_pk);
          SM_RETURN_IF_ERROR(putRow(rs, encodeKey(*old_pk), true, *old_pk));
        } else {
          SM_RETURN_IF_ERROR(deleteByIdentity());
        }
      }
      std::string key = encodeKey(c.new_tuple, rs.pk_idx);
      if (!hasUnchangedToast(c.new_tuple)) {
        return putRow(rs, std::move(key), false, takeValues(c.new_tuple));
      }
      std::vector<PgParam> new_pk = pick(c.new_tuple, rs.pk_idx, &ok);
      if (key_changed) {
        // The unchanged TOAST values lived under the old key: read the row from the source.
        repairs_.emplace_back(&rs, std::move(new_pk));
        return Status::ok();
      }
      auto it = rs.group.index.find(key);
      if (it != rs.group.index.end() && !rs.group.rows[it->second].del) {
        // The row's full earlier state is here: take the unchanged values from it.
        std::vector<PgParam> merged = allValues(c.new_tuple);
        const auto& prev = rs.group.rows[it->second].values;
        for (size_t i = 0; i < merged.size(); ++i) {
          if (c.new_tuple[i].kind == Datum::Kind::kUnchangedToast) merged[i] = prev[i];
        }
        return putRow(rs, std::move(key), false, std::move(merged));
      }
      // The update needs the row as the destination holds it. Rows of other keys may wait,
      // unless a pending delete of this key, or an equal key spelled differently, must go first.
      if (it != rs.group.index.end() || !rs.pk_canonical) SM_RETURN_IF_ERROR(flushGroup(rs));
      return sendToastUpdate(rs, c.new_tuple, std::move(new_pk));
    }
    case ChangeOp::kTruncate:
      break;
  }
  return Status::ok();
}

Status PgApplier::onChange(common::Change& c) {
  if (c.op == ChangeOp::kTruncate) {
    for (const auto& rel : c.truncated) {
      common::Change fake;
      fake.relation = rel;
      SM_ASSIGN_OR_RETURN(RelState * rs, relationFor(fake));
      // Other tenants share the table: a source TRUNCATE becomes a tenant-scoped DELETE.
      touched_.touchTable(rs->rel->key());
      SM_RETURN_IF_ERROR(rs->barrier ? flushAllGroups() : flushGroup(*rs));
      stats_.statements++;
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
  if (rs->grouped) return onChangeGrouped(*rs, c);
  // Row by row, in source order. Merged rows of other tables may still wait (with
  // session_replication_role = replica nothing checks across tables), unless a trigger or rule
  // of this table runs and might look at them.
  if (rs->barrier) SM_RETURN_IF_ERROR(flushAllGroups());
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
      if (hasUnchangedToast(c.new_tuple)) {
        // A row moved into the tenant: see onChangeGrouped().
        if (!pk_ok) return Status::internal("unchanged-TOAST primary key value in " + rs->rel->key());
        repairs_.emplace_back(rs, pick(c.new_tuple, rs->pk_idx, &pk_ok));
        return Status::ok();
      }
      stats_.statements++;
      return sendUpsert(*rs, rs->prefix + "ins", allValues(c.new_tuple), 1, {});
    }
    case ChangeOp::kDelete:
      if (!c.old_tuple) return Status::internal("delete without old key in " + rs->rel->key());
      if (c.old_is_full || rs->key_idx == rs->pk_idx) {
        touch(*rs, old_key);
      } else {
        touched_.touchTable(rs->rel->key());  // key is not the PK: check the table
      }
      stats_.statements++;
      return send(old_stmt, scoped(*rs, old_key), {});
    case ChangeOp::kUpdate: {
      SM_RETURN_IF_ERROR(checkTenant(*rs, c.new_tuple, "an update"));
      bool key_ok = true;
      std::vector<PgParam> new_pk = pick(c.new_tuple, rs->pk_idx, &key_ok);
      if (!key_ok)
        return Status::internal("unchanged-TOAST primary key value in " + rs->rel->key());
      bool key_changed = false;
      if (c.old_tuple) {
        bool same_cols = c.old_is_full || rs->key_idx == rs->pk_idx;
        key_changed = !same_cols || old_key != new_pk;
      }
      touch(*rs, new_pk);
      if (key_changed) {
        if (c.old_is_full || rs->key_idx == rs->pk_idx) {
          touch(*rs, old_key);
        } else {
          touched_.touchTable(rs->rel->key());
        }
        stats_.statements++;
        SM_RETURN_IF_ERROR(send(old_stmt, scoped(*rs, old_key), {}));
      }
      if (!hasUnchangedToast(c.new_tuple)) {
        stats_.statements++;
        return sendUpsert(*rs, rs->prefix + "ins", allValues(c.new_tuple), 1, {});
      }
      if (key_changed) {
        // The unchanged TOAST values lived under the old key: read the row from the source.
        repairs_.emplace_back(rs, std::move(new_pk));
        return Status::ok();
      }
      return sendToastUpdate(*rs, c.new_tuple, std::move(new_pk));
    }
    case ChangeOp::kTruncate:
      break;
  }
  return Status::ok();
}

void PgApplier::touch(const RelState& rs, const std::vector<PgParam>& pk) {
  touched_.touch(rs.rel->key(), pk);
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
  // Only a row of this tenant: the row may have moved to another tenant since (that move
  // reaches us as a delete), and another tenant's row with this key is none of ours.
  std::vector<PgParam> params = key;
  params.push_back(rs.tenant_text);
  where += " AND " + quoteIdent(rs.rel->columns[static_cast<size_t>(rs.tenant_idx)].name) + " = $" +
           std::to_string(params.size());
  SM_ASSIGN_OR_RETURN(auto res, src_.query("SELECT " + rs.column_list + " FROM " +
                                               common::qualifiedName(rs.rel->schema, rs.rel->name) +
                                               " WHERE " + where,
                                           params));
  stats_.toast_repairs++;
  if (common::rowCount(res) == 0) return Status::ok();  // deleted since: a later delete follows
  std::vector<PgParam> row;
  for (int i = 0; i < PQnfields(res.get()); ++i) {
    row.push_back(common::cellIsNull(res, 0, i) ? PgParam() : PgParam(common::cell(res, 0, i)));
  }
  stats_.statements++;
  return sendUpsert(rs, rs.prefix + "ins", row, 1, {});
}

Status PgApplier::commitBatch(bool wait) {
  if (!dest_txn_open_) return wait ? waitAll() : pollResults();
  SM_RETURN_IF_ERROR(flushAllGroups());
  if (!repairs_.empty() || toast_checks_ > 0) {
    // Unchanged-TOAST updates report missing rows in their answers: wait for them.
    SM_RETURN_IF_ERROR(waitAll());
    while (!repairs_.empty()) {
      auto todo = std::move(repairs_);
      repairs_.clear();
      for (auto& [rs, key] : todo) SM_RETURN_IF_ERROR(repairFromSource(*rs, key));
      SM_RETURN_IF_ERROR(waitAll());
    }
  }
  toast_checks_ = 0;
  if (batch_end_lsn_ > committed_) {
    char ts[64];
    std::snprintf(ts, sizeof ts, "%.6f",
                  static_cast<double>(batch_commit_time_us_) / 1e6 + kPgEpochOffsetSec);
    // pg_current_xact_id() assigns an xid: a batch that changed nothing (heartbeats, filtered
    // transactions) still writes a commit record, and the origin position travels in it.
    SM_RETURN_IF_ERROR(
        send("SELECT pg_replication_origin_xact_setup($1::pg_lsn, to_timestamp($2::float8)), "
             "pg_current_xact_id()",
             {batch_end_lsn_.toString(), std::string(ts)}, {}));
    origin_sent_ = batch_end_lsn_;
  }
  if (options_.commit_statements) {
    for (auto& s : options_.commit_statements()) SM_RETURN_IF_ERROR(send(s.sql, s.params, {}));
  }
  Pending commit{Pending::Kind::kCommit};
  commit.lsn = batch_end_lsn_;
  commit.heartbeat_us = pending_heartbeat_us_;
  commit.heartbeat_seq = pending_heartbeat_seq_;
  pending_heartbeat_us_ = 0;
  pending_heartbeat_seq_ = 0;
  SM_RETURN_IF_ERROR(send("COMMIT", {}, std::move(commit)));
  Pending wal{Pending::Kind::kWalLsn};
  wal.lsn = batch_end_lsn_;
  SM_RETURN_IF_ERROR(send("SELECT pg_current_wal_insert_lsn()", {}, std::move(wal)));
  // The sync ends the batch's segment of the pipeline and makes the server send its answers.
  if (PQpipelineSync(dst_.raw()) != 1) return fail(dst_.errorFrom(nullptr, "pipeline sync"));
  inflight_.push_back(Pending{Pending::Kind::kSync});
  dest_txn_open_ = false;
  committed_ = std::max(committed_, batch_end_lsn_);
  return wait ? waitAll() : pollResults();
}

Status PgApplier::commitPending() {
  if (!failed_.isOk()) return failed_;
  if (in_source_txn_) return pollResults();
  // Idle: commit, and wait for every answer, so that committedLsn() and durableLsn() describe
  // everything sent (the caller may acknowledge the source's keepalive position after this).
  return commitBatch(true);
}

Result<Lsn> PgApplier::durableLsn() {
  if (!failed_.isOk()) return failed_;
  if (dest_txn_open_) {
    // Busy: do not stall the pipeline; ask for the flush position, use the answer later.
    SM_RETURN_IF_ERROR(pollResults());
    if (!flush_lsn_asked_ && !unflushed_.empty()) {
      SM_RETURN_IF_ERROR(
          send("SELECT pg_current_wal_flush_lsn()", {}, Pending{Pending::Kind::kFlushLsn}));
      flush_lsn_asked_ = true;
    }
    return durable_;
  }
  SM_RETURN_IF_ERROR(waitAll());
  if (unflushed_.empty()) return durable_;
  SM_ASSIGN_OR_RETURN(auto v, queryOutsidePipeline("SELECT pg_current_wal_flush_lsn()", {}));
  auto flush = Lsn::parse(v.value_or(""));
  if (!flush) return Status::internal("unparseable pg_current_wal_flush_lsn()");
  while (!unflushed_.empty() && unflushed_.front().first <= *flush) {
    durable_ = std::max(durable_, unflushed_.front().second);
    unflushed_.pop_front();
  }
  if (!unflushed_.empty()) {
    // Idle, and the WAL writer has not flushed our last commits yet (it may take up to
    // wal_writer_delay): flush them now rather than hold back the acknowledgement.
    SM_RETURN_IF_ERROR(forceFlush());
  }
  return durable_;
}

Status PgApplier::forceFlush() {
  if (!failed_.isOk()) return failed_;
  if (dest_txn_open_) return Status::internal("forceFlush with an open batch");
  SM_RETURN_IF_ERROR(waitAll());
  if (unflushed_.empty()) return Status::ok();
  if (PQexitPipelineMode(dst_.raw()) != 1)
    return fail(dst_.errorFrom(nullptr, "leave pipeline mode"));
  // The transaction must write WAL of its own, or its commit is not flushed synchronously.
  Status st = dst_.exec(
      "BEGIN; SET LOCAL synchronous_commit = on; "
      "SELECT pg_logical_emit_message(true, 'stampmover_flush', ''); COMMIT");
  if (PQenterPipelineMode(dst_.raw()) != 1)
    return fail(dst_.errorFrom(nullptr, "enter pipeline mode"));
  if (!st.isOk()) return st;
  // Flushed up to this commit record, which follows every commit of ours.
  for (const auto& [wal, end] : unflushed_) durable_ = std::max(durable_, end);
  unflushed_.clear();
  return st;
}

Status PgApplier::advanceOrigin(Lsn lsn) {
  if (!failed_.isOk()) return failed_;
  if (dest_txn_open_ || in_source_txn_) return Status::internal("advanceOrigin with an open batch");
  SM_RETURN_IF_ERROR(waitAll());
  if (lsn <= committed_) return Status::ok();
  if (PQexitPipelineMode(dst_.raw()) != 1)
    return fail(dst_.errorFrom(nullptr, "leave pipeline mode"));
  // An empty transaction that carries the position (pg_current_xact_id() makes it write a
  // commit record), committed synchronously: it also flushes every earlier commit of ours.
  Status st = dst_.exec("BEGIN; SET LOCAL synchronous_commit = on");
  if (st.isOk()) {
    st = dst_.query("SELECT pg_replication_origin_xact_setup($1::pg_lsn, now()), "
                    "pg_current_xact_id()",
                    {lsn.toString()})
             .status();
  }
  if (st.isOk() && options_.commit_statements) {
    for (auto& s : options_.commit_statements()) {
      st = dst_.query(s.sql, s.params).status();
      if (!st.isOk()) break;
    }
  }
  if (st.isOk()) st = dst_.exec("COMMIT");
  if (!st.isOk()) dst_.exec("ROLLBACK").ignore();  // reporting the first error
  if (PQenterPipelineMode(dst_.raw()) != 1)
    return fail(dst_.errorFrom(nullptr, "enter pipeline mode"));
  if (!st.isOk()) return fail(st);
  for (const auto& [wal, end] : unflushed_) durable_ = std::max(durable_, end);
  unflushed_.clear();
  committed_ = confirmed_ = origin_sent_ = lsn;
  durable_ = std::max(durable_, lsn);
  return Status::ok();
}

Status PgApplier::apply(const ChangeEvent& e) {
  if (!failed_.isOk()) return failed_;
  ChangeEvent copy = e;
  return apply(std::move(copy));
}

Status PgApplier::apply(ChangeEvent&& e) {
  if (!failed_.isOk()) return failed_;
  if (++events_since_poll_ >= kPollEvery * 2) {
    // Read answers now and then, so that commits are seen (heartbeat lag) and none pile up.
    events_since_poll_ = 0;
    SM_RETURN_IF_ERROR(pollResults());
  }
  Status st = applyEvent(e);
  // A change that failed halfway leaves the batch unusable: the caller starts over.
  if (!st.isOk()) return fail(std::move(st));
  return st;
}

Status PgApplier::applyEvent(ChangeEvent& e) {
  switch (e.kind) {
    case ChangeEvent::Kind::kRelation:
      return onRelation(e.relation);
    case ChangeEvent::Kind::kBegin:
      in_source_txn_ = true;
      skipping_txn_ = false;
      seen_through_ = std::max(seen_through_, e.txn.final_lsn);
      txn_plain_ = options_.plain_inserts && e.txn.final_lsn > options_.upsert_through;
      return ensureDestTxn();
    case ChangeEvent::Kind::kChange:
      if (!in_source_txn_) return Status::internal("change outside a transaction");
      if (skipping_txn_) return Status::ok();  // applied by our other direction: no echo
      batch_changes_++;
      stats_.changes++;
      return onChange(e.change);
    case ChangeEvent::Kind::kMessage:
      if (e.message.prefix == kHeartbeatPrefix) {
        // Only this stream's own heartbeats: every slot of the database sees every migration's.
        auto hb = parseHeartbeat(e.message.content);
        if (hb && !options_.heartbeat_identity.empty() && hb->identity == options_.heartbeat_identity) {
          stats_.heartbeats++;
          pending_heartbeat_seq_ = std::max(pending_heartbeat_seq_, hb->seq);
          // The lag needs a time; 0 would mean "no heartbeat" below.
          pending_heartbeat_us_ = std::max<int64_t>(hb->emitted_us, 1);
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
      if (pending_heartbeat_us_ != 0) {
        // A heartbeat (once a second) is committed at once and its answer awaited: its lag is
        // then measured when it lands, and catching up is seen without waiting for idleness.
        return commitBatch(true);
      }
      auto age = std::chrono::steady_clock::now() - batch_started_;
      if (batch_changes_ >= options_.max_batch_changes || age >= options_.max_batch_age) {
        return commitBatch(false);
      }
      return Status::ok();
    }
    case ChangeEvent::Kind::kOrigin:
      if (!options_.skip_origin.empty() && e.txn.origin == options_.skip_origin)
        skipping_txn_ = true;
      return Status::ok();
    case ChangeEvent::Kind::kType:
      return Status::ok();
  }
  return Status::ok();
}

}  // namespace stampmover::mover
