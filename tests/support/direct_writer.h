// A writer straight at one stamp (no router), for the chaos suite: it models an application
// server that writes tenant 42 on the stamp the tenant lived on when it started, including
// REPEATABLE READ transactions that read first and write later — the ones a fence that only
// waits on xids misses (issue 11, item 1). Every transaction either commits (acknowledged: it
// must be found on the stamp that serves the tenant at the end) or fails; a failure with the
// fence's SQLSTATE is counted apart.
//
// The writer stops for good once the routing entry no longer says "the tenant is on my stamp"
// (dual_write or another stamp): from then on the stamp is fenced until finalize removes the
// fence, and a write after finalize would be a stale writer's, which no fence promises to stop.
// To keep that exact, a commit is only counted as acknowledged when it ends within
// kMaxRouteAge of the routing read before its BEGIN (the soak between flip and finalize is
// longer than that, so such a commit cannot have landed after finalize).
//
// Kinds of transactions, in turn:
//   0: autocommit INSERT of a new scratch row;
//   1: REPEATABLE READ: SELECT (snapshot taken), pause, INSERT of a new scratch row, COMMIT;
//   2: REPEATABLE READ: SELECT of the writer's ledger row, pause, UPDATE appending a token to
//      it, COMMIT (an update, not only inserts; every acknowledged token must be in the row).
// Header-only (the test support library's sources are fixed by tests/CMakeLists.txt).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/pg.h"
#include "mover/fence.h"
#include "routing/routing_directory.h"

namespace stampmover::testing {

struct DirectWriterOptions {
  std::string dsn;                    // Default: none (required): the stamp written
  std::string stamp;                  // Default: none (required): its routing name
  std::string control_plane_dsn;      // Default: none (required)
  std::string tenant = "42";          // Default: "42"
  int64_t first_id = 700'000'000;     // Default: new scratch ids from 700000000
  int64_t ledger_id = 699'999'999;    // Default: the ledger row's scratch id (created here)
  std::chrono::milliseconds max_pause{40};  // Default: up to 40 ms between read and write
};

class DirectWriter {
 public:
  static constexpr std::chrono::milliseconds kMaxRouteAge{500};

  explicit DirectWriter(DirectWriterOptions o) : o_(std::move(o)) {
    thread_ = std::thread([this] { run(); });
  }
  ~DirectWriter() { stop(); }
  DirectWriter(const DirectWriter&) = delete;
  DirectWriter& operator=(const DirectWriter&) = delete;

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  bool stoppedByRoute() const { return route_stop_.load(); }
  uint64_t fenced() const { return fenced_.load(); }
  uint64_t otherErrors() const { return other_errors_.load(); }
  uint64_t acknowledged() const {
    std::lock_guard lock(mu_);
    return acked_ids_.size() + acked_tokens_.size();
  }
  uint64_t acknowledgedRepeatableRead() const { return acked_rr_.load(); }
  std::string lastError() const {
    std::lock_guard lock(mu_);
    return last_error_;
  }

  // Describes every acknowledged write missing on `conn` ("" when none is).
  std::string missingOn(common::PgConnection& conn) const {
    std::vector<int64_t> ids;
    std::set<int64_t> tokens;
    {
      std::lock_guard lock(mu_);
      ids = acked_ids_;
      tokens = acked_tokens_;
    }
    std::ostringstream out;
    std::string arr = "{";
    for (size_t i = 0; i < ids.size(); ++i) arr += (i ? "," : "") + std::to_string(ids[i]);
    arr += "}";
    auto r = conn.query("SELECT a.id FROM unnest($1::bigint[]) AS a(id) WHERE NOT EXISTS "
                        "(SELECT 1 FROM scratch s WHERE s.tenant_id = $2 AND s.id = a.id)",
                        {arr, o_.tenant});
    if (!r) return "query failed: " + r.status().message();
    for (int i = 0; i < common::rowCount(*r); ++i) out << "row " << common::cell(*r, i, 0) << " missing; ";
    auto v = conn.queryValue("SELECT v FROM scratch WHERE tenant_id = $1 AND id = $2",
                             {o_.tenant, std::to_string(o_.ledger_id)});
    if (!v) return "query failed: " + v.status().message();
    std::set<int64_t> present;
    std::stringstream ss(v->value_or(""));
    for (std::string item; std::getline(ss, item, ',');) {
      if (!item.empty() && item != "ledger") present.insert(std::stoll(item));
    }
    for (int64_t t : tokens) {
      if (!present.count(t)) out << "ledger token " << t << " missing; ";
    }
    return out.str();
  }

 private:
  using Clock = std::chrono::steady_clock;

  // True while the entry says the tenant is served (or frozen) on our stamp.
  bool routeIsOurs(routing::PgRoutingDirectory& routes) {
    auto e = routes.get(o_.tenant);
    if (!e || !e->has_value()) return true;  // not yet created: the tenant is where it was
    const auto& entry = **e;
    return entry.stamp == o_.stamp && entry.state != routing::RouteState::kDualWrite;
  }

  void noteError(const common::Status& st, common::PgConnection& conn, bool in_block) {
    if (st.sqlState() == mover::kFenceSqlState) {
      ++fenced_;
    } else {
      ++other_errors_;
      std::lock_guard lock(mu_);
      last_error_ = st.message();
    }
    if (in_block) conn.exec("ROLLBACK").ignore();  // a failed transaction block: leave it
    if (st.errorClass() == common::ErrorClass::kRetryable && st.sqlState().empty()) {
      conn = common::PgConnection();  // the connection is gone
    }
  }

  void run() {
    routing::PgRoutingDirectory routes(o_.control_plane_dsn);
    common::PgConnection conn;
    int64_t id = o_.first_id;
    for (uint64_t n = 0; !stop_.load(); ++n) {
      const auto route_read = Clock::now();
      if (!routeIsOurs(routes)) {
        route_stop_ = true;
        return;
      }
      if (!conn.valid()) {
        auto c = common::PgConnection::connect(o_.dsn, "direct writer");
        if (!c) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          continue;
        }
        conn = std::move(*c);
        // The ledger row (idempotent; written before the migration starts, so not fenced).
        conn.query("INSERT INTO scratch VALUES ($1, $2, 'ledger') ON CONFLICT DO NOTHING",
                   {o_.tenant, std::to_string(o_.ledger_id)})
            .status()
            .ignore();  // a failure shows up as missing tokens
      }
      const int kind = static_cast<int>(n % 3);
      const int64_t my_id = id++;
      common::Status st;
      if (kind == 0) {
        st = conn.query("INSERT INTO scratch VALUES ($1, $2, 'direct')", {o_.tenant, std::to_string(my_id)})
                 .status();
      } else {
        st = conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ");
        if (st.isOk()) {
          st = conn.query("SELECT count(*) FROM scratch WHERE tenant_id = $1", {o_.tenant}).status();
        }
        // Between 0 and max_pause: the longer ones are still reading when a fence commits.
        if (st.isOk()) std::this_thread::sleep_for(o_.max_pause * static_cast<int>((n * 7) % 11) / 10);
        if (st.isOk() && kind == 1) {
          st = conn.query("INSERT INTO scratch VALUES ($1, $2, 'direct rr')", {o_.tenant, std::to_string(my_id)})
                   .status();
        } else if (st.isOk()) {
          st = conn.query("UPDATE scratch SET v = v || ',' || $3 WHERE tenant_id = $1 AND id = $2",
                          {o_.tenant, std::to_string(o_.ledger_id), std::to_string(my_id)})
                   .status();
        }
        if (st.isOk()) st = conn.exec("COMMIT");
      }
      if (!st.isOk()) {
        noteError(st, conn, kind != 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      if (Clock::now() - route_read > kMaxRouteAge) continue;  // see the file comment
      std::lock_guard lock(mu_);
      if (kind == 2) {
        acked_tokens_.insert(my_id);
      } else {
        acked_ids_.push_back(my_id);
      }
      if (kind != 0) ++acked_rr_;
    }
  }

  DirectWriterOptions o_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> route_stop_{false};
  std::atomic<uint64_t> fenced_{0}, other_errors_{0}, acked_rr_{0};
  mutable std::mutex mu_;
  std::vector<int64_t> acked_ids_;  // guarded by mu_
  std::set<int64_t> acked_tokens_;  // guarded by mu_
  std::string last_error_;          // guarded by mu_
  std::thread thread_;
};

}  // namespace stampmover::testing
