// Verify job orchestration: catalog discovery, resumable state on RocksDB, progress, and the
// reports. See verify_job.h.
#include "orchestrator/verify_job.h"

#include <spdlog/spdlog.h>

#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "mover/checkpoint_store.h"
#include "mover/progress.h"
#include "mover/source_setup.h"
#include "verify/canonical.h"
#include "verify/row_equality.h"

namespace stampmover::orch {

using common::PgConnection;
using common::Result;
using common::Status;

namespace {

constexpr const char* kRunNote = "run";

// VerifyCheckpoint on the worker's RocksDB store: reads go straight to the store; writes are
// batched by a background thread every 250 ms (one fsync per batch instead of per chunk), and
// flushed on close. A crash loses at most the last batch, which the rerun redoes.
class StoreCheckpoint : public verify::VerifyCheckpoint {
 public:
  StoreCheckpoint(mover::CheckpointStore& store, std::string id)
      : store_(store), id_(std::move(id)) {
    thread_ = std::thread([this] { loop(); });
  }
  ~StoreCheckpoint() override { close().ignore(); }

  Result<std::optional<std::string>> load(const std::string& name) override {
    return store_.loadNote(id_, name);
  }
  void save(const std::string& name, std::string value) override {
    std::lock_guard lock(mu_);
    pending_.emplace_back(name, std::move(value));
  }
  // Flushes what is pending and stops the writer. Returns the first write error, if any.
  Status close() {
    {
      std::lock_guard lock(mu_);
      if (closed_) return error_;
      closed_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    flush();
    std::lock_guard lock(mu_);
    return error_;
  }

 private:
  void loop() {
    std::unique_lock lock(mu_);
    while (!closed_) {
      cv_.wait_for(lock, std::chrono::milliseconds(250));
      lock.unlock();
      flush();
      lock.lock();
    }
  }
  void flush() {
    std::vector<std::pair<std::string, std::string>> todo;
    {
      std::lock_guard lock(mu_);
      todo.swap(pending_);
    }
    if (todo.empty()) return;
    mover::CheckpointBatch b;
    for (auto& [n, v] : todo) b.putNote(id_, n, v);
    Status st = store_.write(b);
    if (!st.isOk()) {
      std::lock_guard lock(mu_);
      if (error_.isOk()) error_ = st;
    }
  }

  mover::CheckpointStore& store_;
  std::string id_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::string, std::string>> pending_;
  bool closed_ = false;
  Status error_;
  std::thread thread_;
};

class ProgressObserver : public verify::VerifyObserver {
 public:
  explicit ProgressObserver(mover::Progress& p) : p_(p) {}
  void tableStarted(size_t t) override { p_.item(t).state.store(1); }
  void rowsVerified(size_t t, uint64_t rows, uint64_t bytes) override {
    p_.item(t).rows.fetch_add(rows, std::memory_order_relaxed);
    p_.item(t).bytes.fetch_add(bytes, std::memory_order_relaxed);
  }
  void tableDone(size_t t, const verify::TableVerifyResult& r) override {
    p_.item(t).state.store(2);
    if (r.differences() > 0 || r.unsettled > 0) {
      spdlog::warn("verify {}: {} missing, {} extra, {} different, {} unsettled", r.table,
                   r.missing, r.extra, r.different, r.unsettled);
    }
    if (r.other_tenant_rows > 0) {
      spdlog::info("verify {}: {} rows of other tenants present on both stamps", r.table,
                   r.other_tenant_rows);
    }
  }

 private:
  mover::Progress& p_;
};

// A directory name for one (tenant, source, destination): readable prefix + FNV-1a hash, so
// any tenant text is a safe path component and verifies of different tenants do not share a
// RocksDB lock.
std::string stateName(const std::string& id) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : id) h = (h ^ c) * 1099511628211ull;
  std::string prefix;
  for (char c : id) {
    if (prefix.size() >= 40) break;
    prefix += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "-%016llx", static_cast<unsigned long long>(h));
  return prefix + buf;
}

// What must be equal for a stored verify to be resumed.
std::string fingerprint(const VerifyJobOptions& o, const std::vector<verify::VerifyTable>& tables) {
  nlohmann::json t = nlohmann::json::array();
  for (const auto& vt : tables) {
    nlohmann::json cols = nlohmann::json::array();
    for (const auto& c : vt.columns) cols.push_back({c.name, c.type});
    t.push_back({{"table", vt.key()},
                 {"tenant_column", vt.tenant_column},
                 {"pk", vt.primary_key},
                 {"columns", cols}});
  }
  return nlohmann::json{{"tenant", o.tenant},
                        {"chunk_rows", o.verify.chunk_rows},
                        {"live", o.verify.live},
                        {"other_tenants", o.verify.other_tenants_check},
                        {"tables", t}}
      .dump();
}

std::string keyText(const std::vector<std::pair<std::string, std::optional<std::string>>>& key) {
  std::string out = "(";
  for (size_t i = 0; i < key.size(); ++i) {
    out += (i ? ", " : "") + key[i].first + "=" + verify::displayValue(key[i].second);
  }
  return out + ")";
}

nlohmann::ordered_json keyJson(
    const std::vector<std::pair<std::string, std::optional<std::string>>>& key) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& [c, v] : key) out[c] = v ? nlohmann::ordered_json(*v) : nullptr;
  return out;
}

struct DeadLetterCounts {
  uint64_t differing = 0, equal = 0, unidentified = 0, other_tenant = 0;
};

DeadLetterCounts countDeadLetters(const VerifyJobResult& res) {
  DeadLetterCounts c;
  for (const auto& d : res.dead_letters) {
    switch (d.verdict) {
      case DeadLetterRow::Verdict::kRow:
        (d.differs() ? c.differing : c.equal)++;
        break;
      case DeadLetterRow::Verdict::kOtherTenant:
        c.other_tenant++;
        break;
      case DeadLetterRow::Verdict::kUnidentified:
        c.unidentified++;
        break;
    }
  }
  return c;
}

// "topic T partition P offset O" of a dead-lettered event.
std::string eventText(const DeadLetterRow& d) {
  return "topic " + d.topic + " partition " + std::to_string(d.partition) + " offset " +
         std::to_string(d.offset);
}

// The dead-letter files the migration of `migration_id` recorded in the worker's store at
// `state_dir` (read-only: migrate may be running). None when there is no store, no such
// migration or no note.
Result<std::vector<std::string>> recordedDeadLetterFiles(const std::string& state_dir,
                                                         const std::string& migration_id) {
  std::vector<std::string> out;
  std::error_code ec;
  if (state_dir.empty() ||
      !std::filesystem::exists(std::filesystem::path(state_dir) / "CURRENT", ec)) {
    return out;
  }
  auto store = mover::openRocksDbCheckpointStore({state_dir, false, true});
  if (!store) {
    // The dead-letter listing is an aid on top of the full comparison, which still runs.
    spdlog::warn(
        "cannot read the migration's state in {} for its dead-letter files ({}); pass "
        "--dead-letter FILE to check them",
        state_dir, store.status().message());
    return out;
  }
  SM_ASSIGN_OR_RETURN(auto note, (*store)->loadNote(migration_id, kDeadLetterFilesNote));
  if (!note) return out;
  auto j = nlohmann::json::parse(*note, nullptr, false);
  if (j.is_string()) j = nlohmann::json::array({j});
  if (!j.is_array()) {
    return Status::internal("migration " + migration_id + ": unreadable note " +
                            kDeadLetterFilesNote + " in " + state_dir + ": " + *note);
  }
  for (const auto& f : j) {
    if (f.is_string()) out.push_back(f.get<std::string>());
  }
  return out;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out;
}

constexpr const char* kOtherTenantsWhat =
    "rows of other tenants present on both stamps (an earlier move not purged, or a leak)";

}  // namespace

Result<VerifyJobResult> runVerifyJob(const VerifyJobOptions& typed, const std::atomic<bool>* cancel) {
  VerifyJobResult result;
  SM_ASSIGN_OR_RETURN(PgConnection src, PgConnection::connect(typed.source.dsn, typed.source.label));
  SM_ASSIGN_OR_RETURN(auto infos, mover::discoverTenantTables(src, typed.tenant_columns));
  // The tenant key as the source canonicalizes it (`042` -> `42`): the origin, state and
  // report names are those the migration used.
  VerifyJobOptions o = typed;
  if (!infos.empty()) {
    SM_ASSIGN_OR_RETURN(auto canon, mover::canonicalTenantKey(src, infos, typed.tenant));
    o.tenant = canon.key.text();
  }
  result.tenant = o.tenant;
  if (infos.empty()) {
    return Status::refused("no table on " + o.source.label + " has the tenant column \"" +
                           o.tenant_columns.default_column +
                           "\"; pass --tenant-column (or per-table overrides) naming it");
  }
  std::vector<verify::VerifyTable> tables;
  for (auto& ti : infos) {
    mover::estimateTenantSize(src, ti, o.tenant).ignore();  // only feeds the ETA
    tables.push_back(verifyTableFor(ti));
  }

  // A tenant with no row on either side is most likely a typo (or the wrong tenant column):
  // "identical" would be true and useless.
  bool any_rows = false;
  for (const auto& ti : infos) {
    SM_ASSIGN_OR_RETURN(bool has, mover::tenantHasRows(src, ti, o.tenant));
    if (has) {
      any_rows = true;
      break;
    }
  }
  if (!any_rows) {
    SM_ASSIGN_OR_RETURN(PgConnection dst,
                        PgConnection::connect(o.destination.dsn, o.destination.label));
    for (const auto& ti : infos) {
      auto has = mover::tenantHasRows(dst, ti, o.tenant);
      if (has && *has) {
        any_rows = true;
        break;
      }
    }
  }
  if (!any_rows) {
    return Status::refused("tenant " + o.tenant + " has no rows on " + o.source.label + " nor on " +
                           o.destination.label + " in any of " + std::to_string(infos.size()) +
                           " tenant tables; check --tenant and --tenant-column");
  }

  verify::VerifyOptions vo = o.verify;
  vo.tenant = o.tenant;
  if (vo.live) vo.origin_name = mover::replicationNameForTenant(o.tenant, src.database());

  // Resume state: its own RocksDB under <state_dir>/verify/, so that verify runs beside a
  // `migrate` that holds the main store's lock.
  std::unique_ptr<mover::CheckpointStore> store;
  std::unique_ptr<StoreCheckpoint> ckpt;
  const std::string id =
      mover::migrationId(o.tenant, o.source.name, o.destination.name) + "#verify";
  const std::string fp = fingerprint(o, tables);
  if (!o.state_dir.empty()) {
    result.state_path = (std::filesystem::path(o.state_dir) / "verify" / stateName(id)).string();
    std::error_code ec;
    std::filesystem::create_directories(result.state_path, ec);
    if (ec) {
      return Status::refused("cannot create verify state directory '" + result.state_path +
                             "': " + ec.message() + " (set --state-dir)");
    }
    SM_ASSIGN_OR_RETURN(store, mover::openRocksDbCheckpointStore({result.state_path, true, false}));
    SM_ASSIGN_OR_RETURN(auto run, store->loadNote(id, kRunNote));
    bool resume = false;
    if (run && !o.restart) {
      try {
        auto j = nlohmann::json::parse(*run);
        resume = j.at("state").get<std::string>() == "running" &&
                 j.at("fingerprint").get<std::string>() == fp;
      } catch (const nlohmann::json::exception&) {
        resume = false;  // unreadable state: start afresh
      }
    }
    if (!resume) {
      mover::CheckpointBatch b;
      b.deleteMigration(id);  // forget an earlier, finished or different verify
      b.putNote(id, kRunNote, nlohmann::json{{"state", "running"}, {"fingerprint", fp}}.dump());
      SM_RETURN_IF_ERROR(store->write(b));
    } else {
      result.resumed = true;
      spdlog::info(
          "resuming an interrupted verify of tenant {} (state in {}; --restart starts over)",
          o.tenant, result.state_path);
    }
    ckpt = std::make_unique<StoreCheckpoint>(*store, id);
  }

  mover::ProgressOptions popts;
  popts.terminal = o.progress_terminal;
  popts.what = "verify";
  mover::Progress progress(popts);
  for (const auto& t : tables) progress.add(t.key(), t.est_rows, 0);
  ProgressObserver observer(progress);
  progress.start();
  auto report =
      verify::runVerify({o.source.dsn, o.source.label}, {o.destination.dsn, o.destination.label},
                        tables, vo, &observer, ckpt.get(), cancel);
  progress.stop();
  if (ckpt) {
    Status st = ckpt->close();
    if (!st.isOk()) spdlog::warn("verify resume state not saved: {}", st.message());
  }
  SM_RETURN_IF_ERROR(report.status());
  result.report = std::move(*report);
  if (store) {
    mover::CheckpointBatch b;
    b.putNote(id, kRunNote, nlohmann::json{{"state", "done"}, {"fingerprint", fp}}.dump());
    Status st = store->write(b);
    if (!st.isOk()) spdlog::warn("verify state not marked done: {}", st.message());
  }
  if (!o.dead_letter_path.empty()) {
    result.dead_letter_files = {o.dead_letter_path};
  } else {
    SM_ASSIGN_OR_RETURN(
        result.dead_letter_files,
        recordedDeadLetterFiles(o.state_dir,
                                mover::migrationId(o.tenant, o.source.name, o.destination.name)));
    for (const auto& f : result.dead_letter_files) {
      spdlog::info(
          "checking the rows of the events migrate dead-lettered to {} (recorded in the "
          "migration's state)",
          f);
    }
  }
  if (!result.dead_letter_files.empty()) {
    SM_ASSIGN_OR_RETURN(PgConnection dst,
                        PgConnection::connect(o.destination.dsn, o.destination.label));
    for (const auto& f : result.dead_letter_files) {
      SM_ASSIGN_OR_RETURN(auto rows, checkDeadLetters(f, src, dst, infos, o.tenant));
      for (auto& r : rows) result.dead_letters.push_back(std::move(r));
    }
    result.dead_letters_checked = true;
  }
  if (!o.report_path.empty()) {
    SM_RETURN_IF_ERROR(writeReportFile(o.report_path, verifyReportJson(result, o)));
  }
  return result;
}

std::string formatVerifyReport(const VerifyJobResult& res, const VerifyJobOptions& o) {
  const auto& r = res.report;
  const std::string& tenant = res.tenant.empty() ? o.tenant : res.tenant;
  std::string out = "verify report: tenant " + tenant + ", " + o.source.label + " -> " +
                    o.destination.label + (r.live ? " (live)" : "") +
                    (res.resumed ? " (resumed)" : "") + "\n";
  char line[512];
  std::snprintf(line, sizeof line, "  %-36s %14s %14s %9s  %s\n", "table", "source rows",
                "dest rows", "chunks", "result");
  out += line;
  for (const auto& t : r.tables) {
    std::string verdict;
    if (t.differences() == 0 && t.unsettled == 0) {
      verdict = "identical";
    } else {
      auto part = [&](uint64_t n, const char* what) {
        if (n) verdict += (verdict.empty() ? "" : ", ") + mover::withCommas(n) + " " + what;
      };
      part(t.missing, "missing");
      part(t.extra, "extra");
      part(t.different, "different");
      part(t.unsettled, "unsettled");
    }
    std::string chunks = std::to_string(t.chunks);
    if (t.chunks_differing) chunks = std::to_string(t.chunks_differing) + "/" + chunks + " diff";
    std::snprintf(line, sizeof line, "  %-36s %14s %14s %9s  %s%s\n", t.table.c_str(),
                  mover::withCommas(t.source_rows).c_str(), mover::withCommas(t.dest_rows).c_str(),
                  chunks.c_str(), verdict.c_str(), t.resumed ? " (earlier run)" : "");
    out += line;
  }
  const uint64_t rows = r.sourceRows();
  std::snprintf(
      line, sizeof line,
      "  total: %s source rows compared in %.2f s (%s rows/s) with %u job(s) per server\n",
      mover::withCommas(rows).c_str(), r.seconds,
      mover::withCommas(r.seconds > 0 ? static_cast<uint64_t>(static_cast<double>(rows) / r.seconds)
                                      : 0)
          .c_str(),
      o.verify.jobs);
  out += line;
  size_t listed = 0;
  for (const auto& t : r.tables) listed += t.listed.size();
  if (listed > 0) {
    out += "differences (" + mover::withCommas(listed) + " listed):\n";
    for (const auto& t : r.tables) {
      for (const auto& d : t.listed) {
        std::string what = "  " + std::string(verify::diffKindName(d.kind));
        what.resize(std::max<size_t>(what.size(), 12), ' ');
        what += " " + t.table + " " + keyText(d.key);
        switch (d.kind) {
          case verify::DiffKind::kMissing:
            what += ": on the source, not on the destination";
            break;
          case verify::DiffKind::kExtra:
            what += ": on the destination, not on the source";
            break;
          case verify::DiffKind::kDifferent: {
            what += ": columns ";
            for (size_t i = 0; i < d.columns.size(); ++i) what += (i ? ", " : "") + d.columns[i];
            break;
          }
          case verify::DiffKind::kUnsettled:
            what += ": kept changing on the source; not settled";
            break;
        }
        out += what + "\n";
      }
    }
  }
  const uint64_t others = r.otherTenantRows();
  if (r.other_tenants_checked) {
    // Apart from the tenant's differences, and never counted with them: the verifier cannot
    // tell a leftover of an earlier move from a leak.
    out += "other tenants: " + mover::withCommas(others) + " " + kOtherTenantsWhat +
           "; not differences of tenant " + tenant + "\n";
    for (const auto& t : r.tables) {
      if (t.other_tenant_rows == 0) continue;
      out += "  " + t.table + ": " + mover::withCommas(t.other_tenant_rows) + " row(s)\n";
      // A few keys show which tenants; a whole earlier move would drown the tenant's report.
      constexpr size_t kShown = 10;
      for (size_t i = 0; i < t.other_tenants_listed.size() && i < kShown; ++i) {
        const auto& row = t.other_tenants_listed[i];
        out += "    tenant " + row.tenant + " " + t.table + " " + keyText(row.key) + "\n";
      }
      if (t.other_tenant_rows > kShown) {
        out += "    ... " + mover::withCommas(t.other_tenant_rows - kShown) + " more" +
               (o.report_path.empty() ? "" : " (see the JSON report)") + "\n";
      }
    }
  }
  if (res.dead_letters_checked) {
    const DeadLetterCounts dl = countDeadLetters(res);
    out += "dead-lettered events (" + joined(res.dead_letter_files) +
           "): " + mover::withCommas(res.dead_letters.size()) + "; of tenant " + tenant + ": " +
           mover::withCommas(dl.differing) + " row(s) differ now, " + mover::withCommas(dl.equal) +
           " equal, " + mover::withCommas(dl.unidentified) + " not identified; " +
           mover::withCommas(dl.other_tenant) + " of other tenants\n";
    for (const auto& d : res.dead_letters) {
      if (d.verdict == DeadLetterRow::Verdict::kOtherTenant) continue;
      if (d.verdict == DeadLetterRow::Verdict::kUnidentified) {
        out += "  UNKNOWN   line " + std::to_string(d.line) +
               (res.dead_letter_files.size() > 1 ? " of " + d.file : std::string()) + ", " +
               eventText(d) + ": " + d.why + "; check this event by hand (" + d.reason + ")\n";
        continue;
      }
      std::string what = d.differs() ? "  DIFFERENT " : "  equal     ";
      what += d.table + " " + keyText(d.key) + ": ";
      switch (d.state) {
        case KeyedRowState::kMissing:
          what += "on the source, not on the destination";
          break;
        case KeyedRowState::kExtra:
          what += "on the destination, not on the source";
          break;
        case KeyedRowState::kDifferent:
          what += "the rows differ";
          break;
        case KeyedRowState::kEqual:
          what += "the rows are equal now";
          break;
        case KeyedRowState::kAbsent:
          what += "on neither side (deleted on both)";
          break;
      }
      out += what + "; dead-lettered " + eventText(d) + ": " + d.reason + "\n";
    }
    if (dl.differing > 0 || dl.unidentified > 0) {
      out += "dead letters: FAILED: " + mover::withCommas(dl.differing) +
             " row(s) affected by dead-lettered events differ, " +
             mover::withCommas(dl.unidentified) +
             " event(s) not identified; repair those rows (or start the migration over) before "
             "the cutover\n";
    }
  }
  const uint64_t diffs = r.differences();
  if (diffs > 0) {
    out +=
        "result: DIFFERENT: " + mover::withCommas(diffs) + " row(s) differ for tenant " + tenant;
    if (r.unsettled()) out += ", " + mover::withCommas(r.unsettled()) + " unsettled";
    out += "\n";
  } else if (r.unsettled() > 0) {
    out += "result: NOT SETTLED: " + mover::withCommas(r.unsettled()) +
           " row(s) kept changing while being verified; rerun (or verify in the final pass)\n";
  } else {
    out += "result: IDENTICAL: the destination holds exactly the source's rows of tenant " +
           tenant + "\n";
  }
  if (o.fail_on_other_tenants && others > 0) {
    out += "other-tenants check: FAILED: " + mover::withCommas(others) + " " + kOtherTenantsWhat +
           " (--other-tenants fail)\n";
  }
  return out;
}

bool verifyFailed(const VerifyJobResult& res, const VerifyJobOptions& o) {
  const DeadLetterCounts dl = countDeadLetters(res);
  return res.report.differences() > 0 ||
         (o.fail_on_other_tenants && res.report.otherTenantRows() > 0) || dl.differing > 0 ||
         dl.unidentified > 0;
}

std::string verifyReportJson(const VerifyJobResult& res, const VerifyJobOptions& o) {
  using ojson = nlohmann::ordered_json;
  const auto& r = res.report;
  ojson j;
  j["tenant"] = res.tenant.empty() ? o.tenant : res.tenant;
  j["source"] = o.source.label;
  j["destination"] = o.destination.label;
  j["live"] = r.live;
  j["identical"] = r.differences() == 0 && r.unsettled() == 0;
  j["differences"] = r.differences();
  j["unsettled"] = r.unsettled();
  j["other_tenants_checked"] = r.other_tenants_checked;
  j["other_tenant_rows"] = r.otherTenantRows();
  j["source_rows"] = r.sourceRows();
  j["seconds"] = r.seconds;
  j["resumed"] = res.resumed;
  ojson tables = ojson::array();
  ojson rows = ojson::array();
  ojson other_rows = ojson::array();
  for (const auto& t : r.tables) {
    tables.push_back({{"table", t.table},
                      {"source_rows", t.source_rows},
                      {"dest_rows", t.dest_rows},
                      {"chunks", t.chunks},
                      {"chunks_differing", t.chunks_differing},
                      {"missing", t.missing},
                      {"extra", t.extra},
                      {"different", t.different},
                      {"unsettled", t.unsettled},
                      {"other_tenant_rows", t.other_tenant_rows},
                      {"listed", t.listed.size()},
                      {"resumed", t.resumed}});
    for (const auto& d : t.listed) {
      ojson row = {
          {"table", t.table}, {"kind", verify::diffKindName(d.kind)}, {"key", keyJson(d.key)}};
      if (d.kind == verify::DiffKind::kDifferent) row["columns"] = d.columns;
      rows.push_back(std::move(row));
    }
    for (const auto& other : t.other_tenants_listed) {
      other_rows.push_back(
          {{"table", t.table}, {"tenant", other.tenant}, {"key", keyJson(other.key)}});
    }
  }
  j["tables"] = std::move(tables);
  j["rows"] = std::move(rows);
  j["other_tenants"] = std::move(other_rows);
  if (res.dead_letters_checked) {
    const DeadLetterCounts dl = countDeadLetters(res);
    ojson events = ojson::array();
    for (const auto& d : res.dead_letters) {
      ojson e = {{"file", d.file},           {"line", d.line},     {"topic", d.topic},
                 {"partition", d.partition}, {"offset", d.offset}, {"reason", d.reason}};
      switch (d.verdict) {
        case DeadLetterRow::Verdict::kRow:
          e["verdict"] = "row";
          e["table"] = d.table;
          e["key"] = keyJson(d.key);
          e["state"] = keyedRowStateName(d.state);
          e["differs"] = d.differs();
          break;
        case DeadLetterRow::Verdict::kOtherTenant:
          e["verdict"] = "other_tenant";
          e["table"] = d.table;
          e["key"] = keyJson(d.key);
          break;
        case DeadLetterRow::Verdict::kUnidentified:
          e["verdict"] = "unidentified";
          e["why"] = d.why;
          break;
      }
      events.push_back(std::move(e));
    }
    j["dead_letters"] = {{"files", res.dead_letter_files},  {"events", res.dead_letters.size()},
                         {"differing", dl.differing},       {"equal", dl.equal},
                         {"unidentified", dl.unidentified}, {"other_tenants", dl.other_tenant},
                         {"rows", std::move(events)}};
  }
  j["failed"] = verifyFailed(res, o);
  return j.dump(2) + "\n";
}

verify::VerifyTable verifyTableFor(const mover::TableInfo& ti) {
  verify::VerifyTable vt;
  vt.schema = ti.schema;
  vt.name = ti.name;
  vt.tenant_column = ti.tenant_column;
  vt.primary_key = ti.primary_key;
  vt.est_rows = static_cast<uint64_t>(ti.est_tenant_rows);
  for (const auto& c : ti.columns) vt.columns.push_back({c.name, c.type});
  return vt;
}

Result<std::vector<verify::PreparedTable>> rowEncodingsFor(
    PgConnection& conn, const std::vector<mover::TableInfo>& tables) {
  std::vector<uint32_t> oids;
  for (const auto& t : tables) {
    for (const auto& c : t.columns) oids.push_back(c.type_oid);
  }
  SM_ASSIGN_OR_RETURN(auto base, verify::baseTypes(conn, oids));
  std::vector<verify::PreparedTable> out;
  out.reserve(tables.size());
  for (const auto& t : tables) {
    std::vector<uint32_t> types;
    for (const auto& c : t.columns) types.push_back(base[c.type_oid]);
    SM_ASSIGN_OR_RETURN(auto p, verify::prepareTable(verifyTableFor(t), types));
    out.push_back(std::move(p));
  }
  return out;
}

Status writeReportFile(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc | std::ios::binary);
    if (!out)
      return Status::refused("cannot write report file '" + path + "' (check the directory)");
    out << text;
    out.flush();
    if (!out) return Status::refused("cannot write report file '" + path + "' (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::refused("cannot write report file '" + path + "': " + ec.message());
  return Status::ok();
}

}  // namespace stampmover::orch
