// Snapshot copy engine: see snapshot_copy.h.
#include "mover/snapshot_copy.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common/pg.h"

namespace stampmover::mover {

using common::PgConnection;
using common::PgResult;
using common::Result;
using common::Status;

uint32_t autoJobs() {
  // The work happens in the servers, not here (our process used 0.4 s of CPU for a 12 s copy),
  // and the source and destination backends of one stream wait on each other. Measured with
  // bench/copy on 2 cores, 3.0M rows, both servers local: jobs=1 12.2 s, jobs=2 6.3 s,
  // jobs=4 7.9 s. So one stream per core, at least 2.
  unsigned hw = std::thread::hardware_concurrency();
  return std::clamp<uint32_t>(hw, 2, 8);
}

std::vector<ChunkSpec> planChunks(const std::vector<TableInfo>& tables, uint64_t chunk_bytes) {
  std::vector<ChunkSpec> plan;
  for (const auto& t : tables) {
    uint64_t blocks = t.heap_bytes / std::max<uint64_t>(t.block_size, 1);
    uint64_t per = std::max<uint64_t>(chunk_bytes / std::max<uint64_t>(t.block_size, 1), 1);
    uint32_t n = static_cast<uint32_t>(std::max<uint64_t>(1, (blocks + per - 1) / per));
    for (uint32_t i = 0; i < n; ++i) {
      ChunkSpec c;
      c.table = t.key();
      c.index = i;
      c.start_block = i == 0 ? 0 : static_cast<uint64_t>(i) * per;
      c.end_block = i + 1 == n ? 0 : static_cast<uint64_t>(i + 1) * per;
      plan.push_back(c);
    }
  }
  return plan;
}

namespace {

struct Shared {
  std::map<std::string, std::atomic<uint32_t>> remaining;  // chunks left per table
  std::mutex mu;
  Status first_error;
  std::atomic<bool> failed{false};
  std::atomic<size_t> next{0};
};

// One source/destination connection pair; copies chunks until none is left.
class Worker {
 public:
  Worker(const CopyEndpoints& ep, const std::map<std::string, const TableInfo*>& tables,
         const MigrationRecord& rec, const std::string& tenant, bool upsert, CheckpointStore& store,
         const CopyOptions& options, Progress* progress,
         const std::map<std::string, size_t>& progress_index, const std::atomic<bool>* cancel)
      : ep_(ep), tables_(tables), rec_(rec), tenant_(tenant), upsert_(upsert), store_(store),
        options_(options), progress_(progress), progress_index_(progress_index), cancel_(cancel) {}

  Status open(const std::string& snapshot) {
    SM_ASSIGN_OR_RETURN(src_, PgConnection::connect(ep_.source_dsn, ep_.source_label));
    SM_ASSIGN_OR_RETURN(dst_, PgConnection::connect(ep_.dest_dsn, ep_.dest_label));
    SM_RETURN_IF_ERROR(src_.exec("SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; "
                                 "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
    SM_ASSIGN_OR_RETURN(std::string snap_lit, src_.escapeLiteral(snapshot));
    SM_RETURN_IF_ERROR(src_.exec("SET TRANSACTION SNAPSHOT " + snap_lit)
                           .withContext("import snapshot (was the exporting session closed?)"));
    SM_ASSIGN_OR_RETURN(tenant_lit_, src_.escapeLiteral(tenant_));
    SM_RETURN_IF_ERROR(dst_.exec("SET statement_timeout = 0; SET synchronous_commit = on"));
    // Skip FK and user triggers while loading, as native logical replication does; rows arrive
    // chunk by chunk in parallel, so parents are not always loaded before their children.
    Status replica = dst_.exec("SET session_replication_role = replica");
    if (!replica.isOk()) {
      spdlog::warn("{}: cannot set session_replication_role=replica ({}); FK checks stay on, "
                   "use --jobs 1 so parents load first",
                   ep_.dest_label, replica.message());
    }
    return Status::ok();
  }

  void run(const std::vector<ChunkSpec>& todo, Shared& shared, uint32_t jobs) {
    jobs_ = jobs;
    shared_ = &shared;
    started_ = std::chrono::steady_clock::now();
    while (!shared.failed.load()) {
      size_t i = shared.next.fetch_add(1);
      if (i >= todo.size()) break;
      Status st = copyChunk(todo[i]);
      if (!st.isOk()) {
        std::lock_guard lock(shared.mu);
        if (shared.first_error.isOk()) shared.first_error = st;
        shared.failed.store(true);
        break;
      }
    }
    // Ends the read-only snapshot transaction; the connection closes with the worker.
    src_.exec("COMMIT").ignore();  // read-only: nothing to lose if this fails
  }

  const std::map<std::string, std::pair<uint64_t, uint64_t>>& totals() const { return totals_; }

 private:
  std::string copyOutSql(const TableInfo& t, const ChunkSpec& c, bool binary) const {
    std::string sql = "COPY (SELECT " + columnList(t) + " FROM " + t.quoted() + " WHERE " +
                      common::quoteIdent(t.tenant_column) + " = " + tenant_lit_;
    if (c.start_block > 0) sql += " AND ctid >= '(" + std::to_string(c.start_block) + ",0)'::tid";
    if (c.end_block > 0) sql += " AND ctid < '(" + std::to_string(c.end_block) + ",0)'::tid";
    sql += ") TO STDOUT";
    if (binary) sql += " (FORMAT binary)";
    return sql;
  }

  // Sleeps as needed to keep this worker under its share of max_bytes_per_sec.
  void throttle(uint64_t chunk_bytes_so_far) {
    if (options_.max_bytes_per_sec <= 0) return;
    double share = options_.max_bytes_per_sec / std::max<uint32_t>(jobs_, 1);
    double due = static_cast<double>(done_bytes_ + chunk_bytes_so_far) / share;
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    if (due > elapsed) {
      std::this_thread::sleep_for(std::chrono::duration<double>(std::min(due - elapsed, 1.0)));
    }
  }

  Status ensureStaging(const TableInfo& t) {
    if (staged_.count(t.key())) return Status::ok();
    std::string stage = stageName(t);
    SM_RETURN_IF_ERROR(dst_.exec("CREATE TEMP TABLE IF NOT EXISTS " + stage + " (LIKE " +
                                 t.quoted() + " INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"));
    staged_.insert(t.key());
    return Status::ok();
  }

  static std::string stageName(const TableInfo& t) {
    return common::quoteIdent("stampmover_stage_" + std::to_string(t.oid));
  }

  std::string upsertSql(const TableInfo& t) const {
    std::string cols = columnList(t);
    std::string pk;
    for (const auto& k : t.primary_key) pk += (pk.empty() ? "" : ", ") + common::quoteIdent(k);
    std::string set;
    for (const ColumnInfo* c : t.copyColumns()) {
      if (std::find(t.primary_key.begin(), t.primary_key.end(), c->name) != t.primary_key.end()) {
        continue;
      }
      set += (set.empty() ? "" : ", ") + common::quoteIdent(c->name) + " = EXCLUDED." +
             common::quoteIdent(c->name);
    }
    std::string sql = "INSERT INTO " + t.quoted() + " AS x (" + cols + ") SELECT " + cols +
                      " FROM " + stageName(t) + " ON CONFLICT (" + pk + ") DO " +
                      (set.empty() ? std::string("NOTHING") : "UPDATE SET " + set);
    // A key without the tenant column may belong to another tenant at the destination: only
    // rows of this tenant are updated (collisions are refused before, see tenantCollisions).
    if (!tenantInKey(t) && !set.empty()) {
      sql += " WHERE x." + common::quoteIdent(t.tenant_column) + " = EXCLUDED." +
             common::quoteIdent(t.tenant_column);
    }
    return sql;
  }

  static bool tenantInKey(const TableInfo& t) {
    return std::find(t.primary_key.begin(), t.primary_key.end(), t.tenant_column) !=
           t.primary_key.end();
  }

  // Staged rows whose primary key is held by another tenant's row at the destination: a data
  // conflict (the upsert would otherwise overwrite that tenant's row). Errors: kDataLoss naming
  // up to five keys; nothing is written (the caller rolls back).
  Status tenantCollisions(const TableInfo& t) {
    if (tenantInKey(t)) return Status::ok();
    std::string join, keys;
    for (const auto& k : t.primary_key) {
      join += (join.empty() ? "" : " AND ") + std::string("d.") + common::quoteIdent(k) + " = s." +
              common::quoteIdent(k);
      keys += (keys.empty() ? "" : " || ', ' || ") + std::string("s.") + common::quoteIdent(k) +
              "::text";
    }
    const std::string tc = common::quoteIdent(t.tenant_column);
    SM_ASSIGN_OR_RETURN(auto r, dst_.query("SELECT '(' || " + keys + " || ') of tenant ' || d." +
                                               tc + "::text FROM " + stageName(t) + " s JOIN " +
                                               t.quoted() + " d ON " + join + " WHERE d." + tc +
                                               " IS DISTINCT FROM s." + tc + " LIMIT 5"));
    if (common::rowCount(r) == 0) return Status::ok();
    std::string rows;
    for (int i = 0; i < common::rowCount(r); ++i) rows += (i ? "; " : "") + common::cell(r, i, 0);
    return Status::dataLoss("data conflict: rows of tenant '" + tenant_ + "' copied into " +
                            t.key() + " have the primary key of rows of another tenant on the "
                            "destination (" + rows + "); nothing of the other tenant was changed. "
                            "The primary key does not contain the tenant column: resolve the "
                            "collision at the destination, then rerun");
  }

  // Aborts an in-flight COPY IN at the destination and rolls its transaction back.
  void abortDest(const char* why) {
    PQputCopyEnd(dst_.raw(), why);
    while (PgResult r{PQgetResult(dst_.raw())}) {
    }
    dst_.exec("ROLLBACK").ignore();  // the transaction is already failed; rollback just ends it
  }

  Status copyChunk(const ChunkSpec& c) {
    auto it = tables_.find(c.table);
    if (it == tables_.end()) return Status::internal("chunk for unknown table " + c.table);
    const TableInfo& t = *it->second;
    bool binary = options_.allow_binary && t.binaryCopyable();
    Progress::Item* item = progress_ ? &progress_->item(progress_index_.at(c.table)) : nullptr;
    if (item) {
      int expected = 0;
      item->state.compare_exchange_strong(expected, 1);
    }

    SM_RETURN_IF_ERROR(dst_.exec("BEGIN"));
    if (upsert_) SM_RETURN_IF_ERROR(ensureStaging(t));
    std::string target = upsert_ ? stageName(t) : t.quoted();
    std::string in_sql = "COPY " + target + " (" + columnList(t) + ") FROM STDIN";
    if (binary) in_sql += " (FORMAT binary)";
    {
      PgResult r{PQexec(dst_.raw(), in_sql.c_str())};
      if (PQresultStatus(r.get()) != PGRES_COPY_IN) {
        Status st = dst_.errorFrom(r.get(), "COPY into " + t.key());
        dst_.exec("ROLLBACK").ignore();  // reporting the COPY error, not the rollback's
        return st;
      }
    }
    {
      PgResult r{PQexec(src_.raw(), copyOutSql(t, c, binary).c_str())};
      if (PQresultStatus(r.get()) != PGRES_COPY_OUT) {
        Status st = src_.errorFrom(r.get(), "COPY out of " + t.key());
        abortDest("source COPY failed");
        return st;
      }
    }
    uint64_t messages = 0, bytes = 0, pending_rows = 0, pending_bytes = 0;
    for (;;) {
      char* buf = nullptr;
      int n = PQgetCopyData(src_.raw(), &buf, 0);
      if (n > 0) {
        int ok = PQputCopyData(dst_.raw(), buf, n);
        PQfreemem(buf);
        if (ok != 1) {
          Status st = dst_.errorFrom(nullptr, "sending rows of " + t.key());
          abortDest("send failed");
          return st;
        }
        ++messages;
        bytes += static_cast<uint64_t>(n);
        ++pending_rows;
        pending_bytes += static_cast<uint64_t>(n);
        if ((messages & 1023) == 0) {
          if (item) {
            item->rows.fetch_add(pending_rows, std::memory_order_relaxed);
            item->bytes.fetch_add(pending_bytes, std::memory_order_relaxed);
          }
          pending_rows = pending_bytes = 0;
          throttle(bytes);
          if (cancel_ && cancel_->load()) {
            abortDest("cancelled");
            return Status::cancelled("copy of " + t.key() + " cancelled");
          }
        }
        continue;
      }
      if (n == -1) break;
      Status st = src_.errorFrom(nullptr, "reading rows of " + t.key());
      abortDest("source read failed");
      return st;
    }
    {
      PgResult r{PQgetResult(src_.raw())};
      if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
        Status st = src_.errorFrom(r.get(), "COPY out of " + t.key());
        abortDest("source COPY failed");
        return st;
      }
      while (PgResult more{PQgetResult(src_.raw())}) {
      }
    }
    if (PQputCopyEnd(dst_.raw(), nullptr) != 1) {
      return dst_.errorFrom(nullptr, "finishing COPY into " + t.key());
    }
    uint64_t rows = 0;
    {
      PgResult r{PQgetResult(dst_.raw())};
      if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
        Status st = dst_.errorFrom(r.get(), "COPY into " + t.key());
        while (PgResult more{PQgetResult(dst_.raw())}) {
        }
        dst_.exec("ROLLBACK").ignore();  // reporting the COPY error
        return st;
      }
      rows = std::stoull(PQcmdTuples(r.get()));
      while (PgResult more{PQgetResult(dst_.raw())}) {
      }
    }
    if (upsert_) {
      Status st = tenantCollisions(t);
      if (st.isOk()) st = dst_.exec(upsertSql(t));
      if (!st.isOk()) {
        dst_.exec("ROLLBACK").ignore();  // reporting the conflict or the upsert's error
        return st;
      }
    }
    if (options_.commit_statements) {
      for (auto& s : options_.commit_statements()) {
        Status st = dst_.query(s.sql, s.params).status();
        if (!st.isOk()) {
          dst_.exec("ROLLBACK").ignore();  // reporting the statement's error (e.g. fenced owner)
          return st;
        }
      }
    }
    // The chunk is durable at the destination once COMMIT returns (synchronous_commit = on);
    // only then is it recorded as done.
    SM_RETURN_IF_ERROR(dst_.exec("COMMIT"));
    CheckpointBatch batch;
    batch.putChunkDone(rec_.id, ChunkDone{c.table, c.index, rows, bytes});
    SM_RETURN_IF_ERROR(store_.write(batch));
    if (item) {
      item->rows.fetch_add(pending_rows, std::memory_order_relaxed);
      item->bytes.fetch_add(pending_bytes, std::memory_order_relaxed);
    }
    done_bytes_ += bytes;
    if (item && shared_ && shared_->remaining.at(c.table).fetch_sub(1) == 1) item->state = 2;
    auto& tot = totals_[c.table];
    tot.first += rows;
    tot.second += bytes;
    spdlog::debug("chunk {}#{} done: {} rows, {} bytes", c.table, c.index, rows, bytes);
    return Status::ok();
  }

  const CopyEndpoints& ep_;
  const std::map<std::string, const TableInfo*>& tables_;
  const MigrationRecord& rec_;
  const std::string& tenant_;
  bool upsert_;
  CheckpointStore& store_;
  const CopyOptions& options_;
  Progress* progress_;
  const std::map<std::string, size_t>& progress_index_;
  const std::atomic<bool>* cancel_;
  PgConnection src_;
  PgConnection dst_;
  std::string tenant_lit_;
  std::set<std::string> staged_;
  uint32_t jobs_ = 1;
  Shared* shared_ = nullptr;
  uint64_t done_bytes_ = 0;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::map<std::string, std::pair<uint64_t, uint64_t>> totals_;  // table -> rows, bytes
};

}  // namespace

Result<CopyReport> copySnapshot(const CopyEndpoints& ep, const std::vector<TableInfo>& tables,
                                const MigrationRecord& rec, const std::string& tenant,
                                const std::string& snapshot, bool upsert, CheckpointStore& store,
                                const CopyOptions& options, Progress* progress,
                                const std::atomic<bool>* cancel) {
  auto t0 = std::chrono::steady_clock::now();
  CopyReport report;
  report.upsert = upsert;
  std::map<std::string, const TableInfo*> by_key;
  for (const auto& t : tables) by_key[t.key()] = &t;

  SM_ASSIGN_OR_RETURN(auto done_list, store.loadChunksDone(rec.id));
  std::set<std::pair<std::string, uint32_t>> done;
  std::map<std::string, TableCopyResult> per_table;
  for (const auto& t : tables) {
    per_table[t.key()].table = t.key();
    per_table[t.key()].binary = options.allow_binary && t.binaryCopyable();
  }
  for (const auto& d : done_list) {
    done.insert({d.table, d.index});
    auto& pt = per_table[d.table];
    pt.rows += d.rows;
    pt.bytes += d.bytes;
  }
  std::vector<ChunkSpec> todo;
  for (const auto& c : rec.plan) {
    if (!by_key.count(c.table)) {
      return Status::refused("the saved copy plan names table " + c.table +
                             ", which is no longer a tenant table on the source; "
                             "run `stampmover cleanup` and start over");
    }
    per_table[c.table].chunks++;
    if (done.count({c.table, c.index})) {
      per_table[c.table].chunks_skipped++;
      report.chunks_skipped++;
    } else {
      todo.push_back(c);
    }
  }
  report.chunks_total = static_cast<uint32_t>(rec.plan.size());
  report.chunks_copied = static_cast<uint32_t>(todo.size());

  std::map<std::string, size_t> progress_index;
  if (progress) {
    for (const auto& t : tables) {
      const auto& pt = per_table[t.key()];
      size_t i = progress->add(t.key(), static_cast<uint64_t>(t.est_tenant_rows), t.est_tenant_bytes);
      progress->item(i).rows = pt.rows;
      progress->item(i).bytes = pt.bytes;
      if (pt.chunks == pt.chunks_skipped) progress->item(i).state = 2;
      progress_index[t.key()] = i;
    }
    progress->start();
  }

  uint32_t jobs = options.jobs ? options.jobs : autoJobs();
  jobs = std::max<uint32_t>(1, std::min<uint32_t>(jobs, static_cast<uint32_t>(std::max<size_t>(todo.size(), 1))));
  report.jobs = jobs;
  std::vector<std::unique_ptr<Worker>> workers;
  // Every worker imports the snapshot before any starts copying: an exported snapshot is only
  // importable while its exporter is idle, which the caller guarantees for this whole call.
  for (uint32_t i = 0; i < jobs; ++i) {
    auto w = std::make_unique<Worker>(ep, by_key, rec, tenant, upsert, store, options, progress,
                                      progress_index, cancel);
    Status st = w->open(snapshot);
    if (!st.isOk()) {
      if (progress) progress->stop();
      return st;
    }
    workers.push_back(std::move(w));
  }
  Shared shared;
  for (const auto& c : todo) shared.remaining[c.table]++;
  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w, &todo, &shared, jobs] { w->run(todo, shared, jobs); });
  for (auto& th : threads) th.join();
  // Mark tables done for the final progress draw.
  if (progress) {
    if (shared.first_error.isOk()) {
      for (size_t i = 0; i < progress->size(); ++i) progress->item(i).state = 2;
    }
    progress->stop();
  }
  if (!shared.first_error.isOk()) return shared.first_error;

  for (const auto& w : workers) {
    for (const auto& [table, tot] : w->totals()) {
      per_table[table].rows += tot.first;
      per_table[table].bytes += tot.second;
    }
  }
  for (const auto& t : tables) {
    report.tables.push_back(per_table[t.key()]);
    report.rows += per_table[t.key()].rows;
    report.bytes += per_table[t.key()].bytes;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

}  // namespace stampmover::mover
