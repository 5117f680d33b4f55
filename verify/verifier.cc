// The verify engine: per-server worker pools running the bulk pass, narrowing and the
// other-tenants check, with per-table bookkeeping, resumable state and the report. See verifier.h.
#include "verify/verifier.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/pg.h"
#include "verify/narrow.h"
#include "verify/row_digest.h"
#include "verify/table_plan.h"

namespace stampmover::verify {

using common::PgConnection;
using common::Result;
using common::Status;
using nlohmann::json;

const char* diffKindName(DiffKind k) {
  switch (k) {
    case DiffKind::kMissing:
      return "missing";
    case DiffKind::kExtra:
      return "extra";
    case DiffKind::kDifferent:
      return "different";
    case DiffKind::kUnsettled:
      return "unsettled";
  }
  return "unknown";
}

uint64_t VerifyReport::differences() const {
  uint64_t n = 0;
  for (const auto& t : tables) n += t.differences();
  return n;
}
uint64_t VerifyReport::otherTenantRows() const {
  uint64_t n = 0;
  for (const auto& t : tables) n += t.other_tenant_rows;
  return n;
}
uint64_t VerifyReport::unsettled() const {
  uint64_t n = 0;
  for (const auto& t : tables) n += t.unsettled;
  return n;
}
uint64_t VerifyReport::sourceRows() const {
  uint64_t n = 0;
  for (const auto& t : tables) n += t.source_rows;
  return n;
}

namespace {

Result<PgConnection> connectPinned(const VerifyEndpoint& ep) {
  SM_ASSIGN_OR_RETURN(PgConnection c, PgConnection::connect(ep.dsn, ep.label));
  SM_RETURN_IF_ERROR(c.exec(pinnedSessionSql()));
  return c;
}

json planToJson(const ChunkPlan& p) {
  return {{"prefix", p.prefix},
          {"bounds", p.bounds},
          {"blocks", {p.blocks[0], p.blocks[1]}},
          {"pieces", {p.scan_tasks[0], p.scan_tasks[1]}},
          {"key_pieces", {p.key_pieces[0], p.key_pieces[1]}}};
}

std::optional<ChunkPlan> planFromJson(const std::string& text) {
  try {
    json j = json::parse(text);
    ChunkPlan p;
    p.prefix = j.at("prefix").get<bool>();
    p.bounds = j.at("bounds").get<std::vector<std::vector<std::string>>>();
    for (int s = 0; s < 2; ++s) {
      p.blocks[s] = j.at("blocks").at(static_cast<size_t>(s)).get<uint64_t>();
      p.scan_tasks[s] = j.at("pieces").at(static_cast<size_t>(s)).get<uint32_t>();
      p.key_pieces[s] = j.at("key_pieces").at(static_cast<size_t>(s)).get<bool>();
    }
    return p;
  } catch (const json::exception&) {
    return std::nullopt;  // unreadable state: plan afresh
  }
}

using KeyValues = std::vector<std::pair<std::string, std::optional<std::string>>>;

json keyToJson(const KeyValues& k) {
  json key = json::array();
  for (const auto& [c, v] : k) key.push_back({c, v ? json(*v) : json(nullptr)});
  return key;
}

KeyValues keyFromJson(const json& j) {
  KeyValues out;
  for (const auto& kv : j) {
    out.emplace_back(kv.at(0).get<std::string>(),
                     kv.at(1).is_null() ? std::nullopt
                                        : std::optional<std::string>(kv.at(1).get<std::string>()));
  }
  return out;
}

json diffToJson(const RowDiff& d) {
  json j = {{"kind", diffKindName(d.kind)}, {"key", keyToJson(d.key)}};
  if (!d.columns.empty()) j["columns"] = d.columns;
  return j;
}

std::optional<DiffKind> kindFromName(const std::string& n) {
  for (DiffKind k :
       {DiffKind::kMissing, DiffKind::kExtra, DiffKind::kDifferent, DiffKind::kUnsettled}) {
    if (n == diffKindName(k)) return k;
  }
  return std::nullopt;
}

json resultToJson(const TableVerifyResult& r) {
  json listed = json::array();
  for (const auto& d : r.listed) listed.push_back(diffToJson(d));
  json others = json::array();
  for (const auto& o : r.other_tenants_listed)
    others.push_back({{"tenant", o.tenant}, {"key", keyToJson(o.key)}});
  return {{"table", r.table},
          {"source_rows", r.source_rows},
          {"dest_rows", r.dest_rows},
          {"chunks", r.chunks},
          {"chunks_differing", r.chunks_differing},
          {"missing", r.missing},
          {"extra", r.extra},
          {"different", r.different},
          {"unsettled", r.unsettled},
          {"other_tenant_rows", r.other_tenant_rows},
          {"seconds", r.seconds},
          {"listed", listed},
          {"other_tenants_listed", others}};
}

std::optional<TableVerifyResult> resultFromJson(const std::string& text) {
  try {
    json j = json::parse(text);
    TableVerifyResult r;
    r.table = j.at("table").get<std::string>();
    r.source_rows = j.at("source_rows").get<uint64_t>();
    r.dest_rows = j.at("dest_rows").get<uint64_t>();
    r.chunks = j.at("chunks").get<uint32_t>();
    r.chunks_differing = j.at("chunks_differing").get<uint32_t>();
    r.missing = j.at("missing").get<uint64_t>();
    r.extra = j.at("extra").get<uint64_t>();
    r.different = j.at("different").get<uint64_t>();
    r.unsettled = j.at("unsettled").get<uint64_t>();
    r.other_tenant_rows = j.at("other_tenant_rows").get<uint64_t>();
    r.seconds = j.at("seconds").get<double>();
    for (const auto& jd : j.at("listed")) {
      RowDiff d;
      auto k = kindFromName(jd.at("kind").get<std::string>());
      if (!k) return std::nullopt;
      d.kind = *k;
      d.key = keyFromJson(jd.at("key"));
      if (jd.contains("columns")) d.columns = jd.at("columns").get<std::vector<std::string>>();
      r.listed.push_back(std::move(d));
    }
    for (const auto& jo : j.at("other_tenants_listed")) {
      r.other_tenants_listed.push_back(
          {jo.at("tenant").get<std::string>(), keyFromJson(jo.at("key"))});
    }
    return r;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

struct Partial {
  std::vector<MultisetDigest> acc;
  uint64_t bytes = 0;
};

std::string partialToString(const Partial& p) {
  json j = {{"bytes", p.bytes}, {"acc", json::array()}};
  for (const auto& a : p.acc) j["acc"].push_back(a.toString());
  return j.dump();
}

std::optional<Partial> partialFromString(const std::string& text, size_t chunks) {
  try {
    json j = json::parse(text);
    Partial p;
    p.bytes = j.at("bytes").get<uint64_t>();
    for (const auto& s : j.at("acc")) {
      auto m = MultisetDigest::parse(s.get<std::string>());
      if (!m) return std::nullopt;
      p.acc.push_back(*m);
    }
    if (p.acc.size() != chunks) return std::nullopt;
    return p;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

struct TableState {
  size_t index = 0;
  PreparedTable table;
  ChunkPlan plan;
  std::vector<MultisetDigest> acc[2];
  uint64_t bytes[2] = {0, 0};
  uint32_t scans_pending = 0;
  uint32_t others_pending = 0;  // narrowing and other-tenants tasks
  bool started = false;
  bool done = false;
  std::vector<KeyedDelta> deltas;  // for listing and cross-chunk reconciliation
  uint64_t counts[5] = {0, 0, 0, 0, 0};
  OtherTenantRows other_tenants;
  TableVerifyResult result;
  std::chrono::steady_clock::time_point t0;
};

struct Task {
  enum class Kind { kScan, kNarrow, kOtherTenants } kind = Kind::kScan;
  TableState* table = nullptr;
  int side = 0;
  uint32_t piece = 0;
  size_t chunk = 0;
};

class Engine {
 public:
  Engine(const VerifyEndpoint& src, const VerifyEndpoint& dst, const VerifyOptions& o,
         VerifyObserver* obs, VerifyCheckpoint* ckpt, const std::atomic<bool>* cancel,
         std::string salt)
      : ep_{src, dst}, o_(o), obs_(obs), ckpt_(ckpt), cancel_(cancel), salt_(std::move(salt)) {}

  ~Engine() { stopWorkers(); }

  void startWorkers() {
    for (int side = 0; side < 2; ++side) {
      for (uint32_t j = 0; j < o_.jobs; ++j)
        workers_.emplace_back([this, side] { workerLoop(side); });
    }
  }

  void stopWorkers() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) {
      if (w.joinable()) w.join();
    }
    workers_.clear();
  }

  // Queues a planned table's work. The table's accumulators may already hold resumed pieces.
  void submit(TableState* ts, const std::vector<Task>& scans) {
    std::lock_guard lock(mu_);
    ts->scans_pending = static_cast<uint32_t>(scans.size());
    if (scans.empty()) {
      onScansDone(ts);
    } else {
      for (const auto& t : scans) scan_q_[t.side].push_back(t);
    }
    cv_.notify_all();
  }

  // Blocks until every submitted table is done, an error occurs or `cancel` is set.
  Status wait(size_t tables) {
    std::unique_lock lock(mu_);
    while (done_tables_ < tables && error_.isOk()) {
      if (cancel_ && cancel_->load()) {
        error_ = Status::cancelled("verify interrupted; rerun to resume");
        break;
      }
      cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
    stopping_ = true;
    cv_.notify_all();
    return error_;
  }

  Status error() {
    std::lock_guard lock(mu_);
    return error_;
  }

  // Records the first error and stops the workers. Thread-safe.
  void fail(const Status& st) {
    std::lock_guard lock(mu_);
    if (error_.isOk()) error_ = st;
    stopping_ = true;
    cv_.notify_all();
  }

 private:
  void workerLoop(int side) {
    PgConnection conns[2];
    auto hasher = RowHasher::create(salt_);
    if (!hasher) {
      fail(hasher.status());
      return;
    }
    for (;;) {
      Task task;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !scan_q_[side].empty() || !other_q_.empty(); });
        if (stopping_) return;
        if (!other_q_.empty()) {  // narrowing first: it finishes tables and frees their state
          task = other_q_.front();
          other_q_.pop_front();
        } else {
          task = scan_q_[side].front();
          scan_q_[side].pop_front();
        }
        if (!task.table->started) {
          task.table->started = true;
          task.table->t0 = std::chrono::steady_clock::now();
          if (obs_) obs_->tableStarted(task.table->index);
        }
      }
      if (cancel_ && cancel_->load()) {
        fail(Status::cancelled("verify interrupted; rerun to resume"));
        return;
      }
      const bool need_src = task.kind != Task::Kind::kScan || task.side == 0;
      const bool need_dst = task.kind != Task::Kind::kScan || task.side == 1;
      for (int s = 0; s < 2; ++s) {
        if ((s == 0 ? need_src : need_dst) && !conns[s].valid()) {
          auto c = connectPinned(ep_[s]);
          if (!c) {
            fail(c.status());
            return;
          }
          conns[s] = std::move(*c);
        }
      }
      Status st;
      switch (task.kind) {
        case Task::Kind::kScan:
          st = runScan(task, conns[task.side], *hasher);
          break;
        case Task::Kind::kNarrow:
          st = runNarrow(task, conns[0], conns[1]);
          break;
        case Task::Kind::kOtherTenants:
          st = runOtherTenants(task, conns[0], conns[1]);
          break;
      }
      if (!st.isOk()) {
        fail(st.withContext(task.table->table.spec.key()));
        return;
      }
    }
  }

  Status runScan(const Task& task, PgConnection& conn, RowHasher& hasher) {
    TableState* ts = task.table;
    const size_t chunks = ts->plan.chunks();
    Partial part;
    part.acc.resize(chunks);
    uint64_t pending_rows = 0, pending_bytes = 0;
    bool bad = false;
    Digest d{};
    std::string sql = scanCopySql(ts->table, ts->plan, task.side, task.piece, o_.tenant);
    Status st = copyOut(conn, sql, [&](std::string_view row) {
      size_t tab = row.find('\t');
      if (tab == std::string_view::npos || tab == 0) {
        bad = true;
        return;
      }
      uint64_t b = 0;
      for (size_t i = 0; i < tab; ++i) {
        char c = row[i];
        if (c < '0' || c > '9') {
          bad = true;
          return;
        }
        b = b * 10 + static_cast<uint64_t>(c - '0');
      }
      std::string_view canonical = row.substr(tab + 1);
      if (!canonical.empty() && canonical.back() == '\n') canonical.remove_suffix(1);
      if (b >= chunks || !hasher.digest(canonical, &d)) {
        bad = true;
        return;
      }
      part.acc[b].add(d);
      part.bytes += canonical.size();
      if (task.side == 0 && obs_) {
        ++pending_rows;
        pending_bytes += canonical.size();
        if (pending_rows >= 8192) {
          obs_->rowsVerified(ts->index, pending_rows, pending_bytes);
          pending_rows = pending_bytes = 0;
        }
      }
    });
    SM_RETURN_IF_ERROR(st);
    if (bad) return Status::internal(conn.label() + ": unexpected bulk-pass row");
    if (task.side == 0 && obs_ && pending_rows)
      obs_->rowsVerified(ts->index, pending_rows, pending_bytes);
    if (ckpt_) {
      ckpt_->save("scan/" + ts->table.spec.key() + "/" + std::to_string(task.side) + "/" +
                      std::to_string(task.piece),
                  partialToString(part));
    }
    std::lock_guard lock(mu_);
    for (size_t b = 0; b < chunks; ++b) ts->acc[task.side][b].merge(part.acc[b]);
    ts->bytes[task.side] += part.bytes;
    if (--ts->scans_pending == 0) onScansDone(ts);
    return Status::ok();
  }

  // Called with mu_ held once both sides' bulk pass of a table is complete.
  void onScansDone(TableState* ts) {
    TableVerifyResult& r = ts->result;
    r.table = ts->table.spec.key();
    r.chunks = static_cast<uint32_t>(ts->plan.chunks());
    std::vector<size_t> differing;
    for (size_t b = 0; b < ts->plan.chunks(); ++b) {
      r.source_rows += ts->acc[0][b].rows;
      r.dest_rows += ts->acc[1][b].rows;
      if (!(ts->acc[0][b] == ts->acc[1][b])) differing.push_back(b);
    }
    r.chunks_differing = static_cast<uint32_t>(differing.size());
    if (!differing.empty()) {
      spdlog::info("verify {}: {} of {} chunks differ in the bulk pass; narrowing to rows", r.table,
                   differing.size(), ts->plan.chunks());
    }
    for (auto it = differing.rbegin(); it != differing.rend(); ++it) {
      Task t;
      t.kind = Task::Kind::kNarrow;
      t.table = ts;
      t.chunk = *it;
      other_q_.push_front(t);
    }
    ts->others_pending = static_cast<uint32_t>(differing.size());
    if (o_.other_tenants_check) {
      Task t;
      t.kind = Task::Kind::kOtherTenants;
      t.table = ts;
      other_q_.push_back(t);
      ts->others_pending++;
    }
    ts->acc[0].clear();
    ts->acc[1].clear();
    if (ts->others_pending == 0) finish(ts);
    cv_.notify_all();
  }

  Status runNarrow(const Task& task, PgConnection& src, PgConnection& dst) {
    TableState* ts = task.table;
    NarrowContext ctx;
    ctx.source = &src;
    ctx.dest = &dst;
    ctx.table = &ts->table;
    ctx.plan = &ts->plan;
    ctx.options = &o_;
    ctx.cancel = cancel_;
    SM_ASSIGN_OR_RETURN(NarrowResult nr, narrowChunk(ctx, task.chunk));
    std::lock_guard lock(mu_);
    for (size_t k = 0; k < 5; ++k) ts->counts[k] += nr.counts[k];
    for (auto& d : nr.deltas) {
      if (ts->deltas.size() < 2 * static_cast<size_t>(o_.max_listed))
        ts->deltas.push_back(std::move(d));
    }
    if (--ts->others_pending == 0) finish(ts);
    return Status::ok();
  }

  Status runOtherTenants(const Task& task, PgConnection& src, PgConnection& dst) {
    TableState* ts = task.table;
    SM_ASSIGN_OR_RETURN(OtherTenantRows fr,
                        findOtherTenantRows(src, dst, ts->table, o_.tenant, o_.max_listed));
    std::lock_guard lock(mu_);
    ts->other_tenants = std::move(fr);
    if (--ts->others_pending == 0) finish(ts);
    return Status::ok();
  }

  // Called with mu_ held: reconciles, lists, checkpoints and reports a finished table.
  void finish(TableState* ts) {
    TableVerifyResult& r = ts->result;
    // A row can land in different chunks on the two sides when their collations order text keys
    // differently: the same key and content then shows as missing in one chunk and extra in
    // another. Such pairs are equal rows, not differences.
    std::map<std::pair<std::string, Digest>, size_t> missing;
    for (size_t i = 0; i < ts->deltas.size(); ++i) {
      if (ts->deltas[i].kind == DiffKind::kMissing)
        missing[{ts->deltas[i].key, ts->deltas[i].digest}] = i;
    }
    std::vector<bool> drop(ts->deltas.size(), false);
    for (size_t i = 0; i < ts->deltas.size(); ++i) {
      if (ts->deltas[i].kind != DiffKind::kExtra) continue;
      auto it = missing.find({ts->deltas[i].key, ts->deltas[i].digest});
      if (it == missing.end() || drop[it->second]) continue;
      drop[i] = drop[it->second] = true;
      ts->counts[static_cast<size_t>(DiffKind::kMissing)]--;
      ts->counts[static_cast<size_t>(DiffKind::kExtra)]--;
    }
    r.missing = ts->counts[static_cast<size_t>(DiffKind::kMissing)];
    r.extra = ts->counts[static_cast<size_t>(DiffKind::kExtra)];
    r.different = ts->counts[static_cast<size_t>(DiffKind::kDifferent)];
    r.unsettled = ts->counts[static_cast<size_t>(DiffKind::kUnsettled)];
    r.other_tenant_rows = ts->other_tenants.count;
    const PreparedTable& t = ts->table;
    for (size_t i = 0; i < ts->deltas.size() && r.listed.size() < o_.max_listed; ++i) {
      if (drop[i]) continue;
      const KeyedDelta& d = ts->deltas[i];
      RowDiff rd;
      rd.kind = d.kind;
      auto values = keyValues(d.key);
      for (size_t k = 0; k < t.pk_positions.size() && k < values.size(); ++k) {
        rd.key.emplace_back(t.columns[t.pk_positions[k]].name, values[k]);
      }
      for (size_t c : d.columns) rd.columns.push_back(t.columns[c].name);
      r.listed.push_back(std::move(rd));
    }
    for (const auto& [tenant, values] : ts->other_tenants.rows) {
      if (r.other_tenants_listed.size() >= o_.max_listed) break;
      OtherTenantRow row;
      row.tenant = tenant;
      for (size_t k = 0; k < t.pk_positions.size() && k < values.size(); ++k) {
        row.key.emplace_back(t.columns[t.pk_positions[k]].name, values[k]);
      }
      r.other_tenants_listed.push_back(std::move(row));
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts->t0).count();
    spdlog::debug("verify {}: done in {:.3f} s ({} rows, {} chunks differed)", r.table, r.seconds,
                  r.source_rows, r.chunks_differing);
    ts->deltas.clear();
    ts->done = true;
    if (ckpt_) ckpt_->save("table/" + r.table, resultToJson(r).dump());
    if (obs_) obs_->tableDone(ts->index, r);
    ++done_tables_;
    cv_.notify_all();
  }

  VerifyEndpoint ep_[2];
  const VerifyOptions& o_;
  VerifyObserver* obs_;
  VerifyCheckpoint* ckpt_;
  const std::atomic<bool>* cancel_;
  std::string salt_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> scan_q_[2];
  std::deque<Task> other_q_;
  bool stopping_ = false;
  size_t done_tables_ = 0;
  Status error_;
  std::vector<std::thread> workers_;
};

// Plans one table (or loads its plan and finished pieces from the checkpoint) and hands its
// bulk pass to the engine.
Status prepareTable(TableState& ts, PgConnection& src, PgConnection& dst, const VerifyOptions& o,
                    VerifyCheckpoint* checkpoint, VerifyObserver* observer, Engine& engine) {
  const std::string key = ts.table.spec.key();
  std::optional<ChunkPlan> plan;
  if (checkpoint) {
    SM_ASSIGN_OR_RETURN(auto saved, checkpoint->load("plan/" + key));
    if (saved) plan = planFromJson(*saved);
  }
  if (!plan) {
    const auto p0 = std::chrono::steady_clock::now();
    SM_ASSIGN_OR_RETURN(ChunkPlan p,
                        planChunks(src, dst, ts.table, o.tenant, o.chunk_rows, o.rows_per_piece));
    spdlog::debug(
        "verify {}: planned {} chunks ({}), pieces: source {} ({}), destination {} ({}), "
        "in {:.3f} s",
        key, p.chunks(), p.prefix ? "first key column" : "whole key", p.scan_tasks[0],
        p.key_pieces[0] ? "key ranges" : "block ranges", p.scan_tasks[1],
        p.key_pieces[1] ? "key ranges" : "block ranges",
        std::chrono::duration<double>(std::chrono::steady_clock::now() - p0).count());
    plan = std::move(p);
    if (checkpoint) checkpoint->save("plan/" + key, planToJson(*plan).dump());
  }
  ts.plan = std::move(*plan);
  std::vector<Task> scans;
  for (int side = 0; side < 2; ++side) {
    ts.acc[side].assign(ts.plan.chunks(), MultisetDigest{});
    for (uint32_t piece = 0; piece < ts.plan.scan_tasks[side]; ++piece) {
      if (checkpoint) {
        SM_ASSIGN_OR_RETURN(auto saved,
                            checkpoint->load("scan/" + key + "/" + std::to_string(side) + "/" +
                                             std::to_string(piece)));
        if (saved) {
          if (auto part = partialFromString(*saved, ts.plan.chunks())) {
            for (size_t b = 0; b < part->acc.size(); ++b) ts.acc[side][b].merge(part->acc[b]);
            ts.bytes[side] += part->bytes;
            if (side == 0 && observer) {
              uint64_t rows = 0;
              for (const auto& a : part->acc) rows += a.rows;
              observer->rowsVerified(ts.index, rows, part->bytes);
            }
            continue;
          }
        }
      }
      Task t;
      t.kind = Task::Kind::kScan;
      t.table = &ts;
      t.side = side;
      t.piece = piece;
      scans.push_back(t);
    }
  }
  engine.submit(&ts, scans);
  return Status::ok();
}

}  // namespace

Result<VerifyReport> runVerify(const VerifyEndpoint& source, const VerifyEndpoint& dest,
                               const std::vector<VerifyTable>& tables, const VerifyOptions& options,
                               VerifyObserver* observer, VerifyCheckpoint* checkpoint,
                               const std::atomic<bool>* cancel) {
  const auto t0 = std::chrono::steady_clock::now();
  VerifyOptions o = options;
  if (o.tenant.empty()) return Status::refused("verify: no tenant given (--tenant)");
  if (o.jobs == 0) return Status::refused("verify: --jobs must be at least 1");
  if (o.chunk_rows == 0) return Status::refused("verify: --chunk-rows must be at least 1");
  if (o.live && o.origin_name.empty()) {
    return Status::refused("verify --live needs the replication origin of the tenant's migration");
  }
  if (tables.empty()) {
    return Status::refused("verify: no tenant tables to compare (is the tenant column right?)");
  }
  SM_ASSIGN_OR_RETURN(PgConnection src, connectPinned(source));
  SM_ASSIGN_OR_RETURN(PgConnection dst, connectPinned(dest));
  if (o.live) SM_RETURN_IF_ERROR(appliedPosition(src, dst, o.origin_name).status());

  std::string salt;
  if (checkpoint) {
    SM_ASSIGN_OR_RETURN(auto saved, checkpoint->load("salt"));
    if (saved) salt = *saved;
  }
  if (salt.empty()) {
    SM_ASSIGN_OR_RETURN(salt, randomSalt());
    if (checkpoint) checkpoint->save("salt", salt);
  }

  // Describe everything first: a table that cannot be compared is refused before any work.
  std::vector<std::unique_ptr<TableState>> states;
  for (size_t i = 0; i < tables.size(); ++i) {
    auto ts = std::make_unique<TableState>();
    ts->index = i;
    SM_ASSIGN_OR_RETURN(ts->table, describeTable(src, tables[i]));
    SM_ASSIGN_OR_RETURN(PreparedTable dshape, describeTable(dst, tables[i]));
    SM_RETURN_IF_ERROR(checkSameShape(ts->table, dshape, source.label, dest.label));
    states.push_back(std::move(ts));
  }

  // Tables finished by an interrupted earlier run are reported from the checkpoint.
  std::vector<TableState*> todo;
  for (auto& ts : states) {
    if (checkpoint) {
      SM_ASSIGN_OR_RETURN(auto done, checkpoint->load("table/" + ts->table.spec.key()));
      if (done) {
        if (auto r = resultFromJson(*done)) {
          ts->result = std::move(*r);
          ts->result.resumed = true;
          ts->done = true;
          if (observer) {
            observer->tableStarted(ts->index);
            observer->rowsVerified(ts->index, ts->result.source_rows, 0);
            observer->tableDone(ts->index, ts->result);
          }
          continue;
        }
      }
    }
    todo.push_back(ts.get());
  }
  // Largest first, so that small tables fill the gaps at the end instead of a big one
  // finishing alone.
  std::stable_sort(todo.begin(), todo.end(), [](const TableState* a, const TableState* b) {
    return a->table.spec.est_rows > b->table.spec.est_rows;
  });

  Engine engine(source, dest, o, observer, checkpoint, cancel, salt);
  engine.startWorkers();
  // Planners: the bulk pass of a table starts as soon as its plan is ready; two planners keep
  // the first big tables from waiting on each other's key walks.
  std::atomic<size_t> next{0};
  auto plan_loop = [&](PgConnection& s, PgConnection& d) {
    for (;;) {
      size_t i = next++;
      if (i >= todo.size() || (cancel && cancel->load()) || !engine.error().isOk()) return;
      Status st = prepareTable(*todo[i], s, d, o, checkpoint, observer, engine);
      if (!st.isOk()) {
        engine.fail(st.withContext(todo[i]->table.spec.key()));
        return;
      }
    }
  };
  std::thread second;
  if (todo.size() > 1) {
    second = std::thread([&] {
      auto s2 = connectPinned(source);
      auto d2 = s2 ? connectPinned(dest) : Result<PgConnection>(s2.status());
      if (!s2 || !d2) {
        engine.fail(s2 ? d2.status() : s2.status());
        return;
      }
      plan_loop(*s2, *d2);
    });
  }
  plan_loop(src, dst);
  if (second.joinable()) second.join();
  Status st = engine.wait(todo.size());
  engine.stopWorkers();
  SM_RETURN_IF_ERROR(st);

  VerifyReport report;
  report.live = o.live;
  report.other_tenants_checked = o.other_tenants_check;
  for (auto& ts : states) report.tables.push_back(std::move(ts->result));
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

}  // namespace stampmover::verify
