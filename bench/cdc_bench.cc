// Catch-up benchmark: live catch-up of one tenant (`stampmover migrate`) against a native
// subscription with the same row filter, in one run on the same two throwaway clusters. (a) The
// same backlog, generated in both databases while nothing read either slot, is caught up by
// each, --repeat times in alternating order (the median run is the result); (b) our lag under
// a fixed-rate writer, measured by marker rows. Every figure is for a destination whose tenant
// rows were checked (counts and an md5 over every row) against the source's.
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "common/pg.h"
#include "common/status.h"
#include "harness/local_cluster.h"
#include "harness/seed.h"
#include "mover/progress.h"

#ifndef STAMPMOVER_BIN
#error "STAMPMOVER_BIN must name the stampmover binary (set by bench/CMakeLists.txt)"
#endif
#ifndef BENCH_KAFKA_BIN
#error "BENCH_KAFKA_BIN must name the Kafka source benchmark (set by bench/CMakeLists.txt)"
#endif

namespace {

using namespace stampmover::bench;  // NOLINT: shared benchmark helpers
using stampmover::common::cell;
using stampmover::common::PgConnection;

// Tenant tables of the demo schema with their primary keys (the order of the row checksums).
struct TableKey {
  const char* name;
  const char* pk;
};
constexpr TableKey kTables[] = {{"accounts", "tenant_id, account_id"},
                                {"orders", "tenant_id, order_id"},
                                {"order_items", "tenant_id, order_id, line"},
                                {"documents", "tenant_id, doc_key"},
                                {"events", "tenant_id, event_id"}};
constexpr const char* kTenant = "42";
constexpr const char* kOursDb = "app_ours";
constexpr const char* kNativeDb = "app_native";
constexpr uint64_t kChangesPerTxn = 5;  // the backlog procedure's mix averages exactly this
// Bounds on every load the benchmark starts.
constexpr auto kChildTimeout = std::chrono::minutes(30);    // one migrate run
constexpr auto kNativeTimeout = std::chrono::minutes(30);   // native sync, native catch-up
constexpr auto kBacklogTimeout = std::chrono::minutes(30);  // statement_timeout of the CALL
constexpr auto kSettleTimeout = std::chrono::seconds(60);   // markers after the load, restarts
// wal_retrieve_retry_interval (default 5 s) plus a margin: the launcher starts apply workers at
// most once per interval, so ENABLE waits (untimed) for it to pass since CREATE SUBSCRIPTION.
constexpr auto kLauncherInterval = std::chrono::milliseconds(5500);
constexpr auto kMarkerInterval = std::chrono::milliseconds(200);
constexpr auto kMarkerPoll = std::chrono::milliseconds(10);
constexpr auto kSampleInterval = std::chrono::milliseconds(100);
constexpr uint64_t kMaxChanges = 20'000'000;   // --changes upper bound
constexpr uint32_t kMaxRate = 20'000;          // --rate upper bound (tx/s)
constexpr uint32_t kMaxSteadySeconds = 600;    // --steady-seconds upper bound
constexpr uint64_t kMaxSeedItems = 5'000'000;  // --seed-items upper bound

struct Args {
  uint64_t changes = 500'000;    // Default: 500000 row changes of tenant 42 in the backlog
  uint32_t rate = 500;           // Default: 500 tx/s (half tenant 42, half other tenants)
  uint32_t steady_seconds = 20;  // Default: 20 s of fixed-rate load
  bool skip_native = false;      // Default: false (the native baseline runs)
  uint64_t seed_items = 20'000;  // Default: 20000 order_items of tenant 42 (~61k rows)
  uint32_t max_batch = 0;        // Default: 0 (stampmover's own --max-batch default)
  uint32_t repeat = 5;           // Default: 5 paired catch-up runs (medians reported)
  std::string stampmover = STAMPMOVER_BIN;  // Default: the binary built beside this benchmark
  std::string compare;           // Default: none (the native baseline); else a second stampmover
};

std::string fmtRate(double per_s) { return withCommas(static_cast<uint64_t>(std::llround(per_s))); }

// ---------------------------------------------------------------------------------------------
// Where the time goes: pg_stat_activity samples of the processes doing the work, their CPU from
// /proc, and the machine's CPU, while one method runs.

// user+system CPU seconds of a process so far, from /proc/<pid>/stat; nullopt once it is gone.
std::optional<double> processCpuSeconds(pid_t pid) {
  std::string text = readFile("/proc/" + std::to_string(pid) + "/stat");
  auto rp = text.rfind(')');
  if (rp == std::string::npos) return std::nullopt;
  std::istringstream in(text.substr(rp + 2));
  std::string field;
  // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
  unsigned long long utime = 0, stime = 0;
  for (int f = 3; f <= 15 && in >> field; ++f) {
    if (f == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (f == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// One group of server processes to watch: a cluster, and a pg_stat_activity filter.
struct Watch {
  std::string name;  // "source walsender"
  bool on_source = true;
  std::string filter;  // SQL condition on pg_stat_activity, with $1 = the database name
};

struct WatchResult {
  std::string name;
  uint64_t samples = 0;
  std::map<std::string, uint64_t> states;  // "CPU", "IO:WALWrite", "idle (Client:ClientRead)"
  double cpu_seconds = 0;                  // sum over the processes seen, as last sampled
};

struct SamplerResult {
  std::vector<WatchResult> watches;
  double machine_busy = 0;  // fraction of all cores busy during the run
};

// Samples, every 100 ms on its own connections, what the watched server processes are doing.
// Diagnostics only: a failed sample is skipped.
class ServerSampler {
 public:
  ServerSampler(std::string src_dsn, std::string dst_dsn, std::string db, std::vector<Watch> w)
      : src_dsn_(std::move(src_dsn)), dst_dsn_(std::move(dst_dsn)), db_(std::move(db)) {
    for (auto& x : w) {
      watches_.push_back(std::move(x));
      results_.push_back(WatchResult{watches_.back().name});
    }
    cpu_.resize(watches_.size());
    jiffies0_ = machineJiffies();
    thread_ = std::thread([this] { loop(); });
  }
  ~ServerSampler() { stop(); }

  SamplerResult stop() {
    if (thread_.joinable()) {
      {
        std::lock_guard lock(mu_);
        stop_ = true;
      }
      cv_.notify_all();
      thread_.join();
      auto j1 = machineJiffies();
      if (j1.second > jiffies0_.second) {
        busy_ = static_cast<double>(j1.first - jiffies0_.first) /
                static_cast<double>(j1.second - jiffies0_.second);
      }
      for (size_t i = 0; i < watches_.size(); ++i) {
        results_[i].cpu_seconds = 0;
        for (const auto& [pid, s] : cpu_[i]) results_[i].cpu_seconds += s;
      }
    }
    return SamplerResult{results_, busy_};
  }

 private:
  void loop() {
    auto src = PgConnection::connect(src_dsn_, "source (sampler)");
    auto dst = PgConnection::connect(dst_dsn_, "destination (sampler)");
    if (!src || !dst) return;  // diagnostics only; the table says "no samples"
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, kSampleInterval, [this] { return stop_; })) {
      lock.unlock();
      for (size_t i = 0; i < watches_.size(); ++i) sample(i, watches_[i].on_source ? *src : *dst);
      lock.lock();
    }
  }

  void sample(size_t i, PgConnection& conn) {
    auto r = conn.query(
        "SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity WHERE datname = "
        "$1 AND pid <> pg_backend_pid() AND (" +
            watches_[i].filter + ")",
        {db_});
    if (!r) return;  // diagnostics only
    for (int row = 0; row < stampmover::common::rowCount(*r); ++row) {
      std::string state = cell(*r, row, 1);
      std::string wait = stampmover::common::cellIsNull(*r, row, 2)
                             ? ""
                             : cell(*r, row, 2) + ":" + cell(*r, row, 3);
      std::string key;
      if (state == "active" || state.empty()) {
        key = wait.empty() ? "CPU" : wait;
      } else {
        key = state + (wait.empty() ? "" : " (" + wait + ")");
      }
      results_[i].states[key]++;
      results_[i].samples++;
      auto pid = parseU64(cell(*r, row, 0), "pid");
      if (!pid) continue;
      if (auto cpu = processCpuSeconds(static_cast<pid_t>(*pid))) {
        cpu_[i][static_cast<pid_t>(*pid)] = *cpu;
      }
    }
  }

  std::string src_dsn_, dst_dsn_, db_;
  std::vector<Watch> watches_;
  std::vector<WatchResult> results_;
  std::vector<std::map<pid_t, double>> cpu_;
  std::pair<uint64_t, uint64_t> jiffies0_;
  double busy_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
};

// "CPU 45%, IO:WALWrite 20%, idle (Client:ClientRead) 30%": the four most frequent states.
std::string topStates(const WatchResult& w) {
  if (w.samples == 0) return "no samples";
  std::vector<std::pair<uint64_t, std::string>> v;
  for (const auto& [k, n] : w.states) v.emplace_back(n, k);
  std::sort(v.rbegin(), v.rend());
  std::string out;
  for (size_t i = 0; i < v.size() && i < 4; ++i) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s%s %.0f%%", i ? ", " : "", v[i].second.c_str(),
                  100.0 * static_cast<double>(v[i].first) / static_cast<double>(w.samples));
    out += buf;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Server-side load: the backlog procedure, the steady writer's transaction, marker rows.

// bench_backlog(p_txns, tenant, others, base): p_txns transactions for the tenant and p_txns for the
// others (one other tenant per four), alternating, each committed on its own. Four kinds in turn,
// five row changes each: a new order with 3 items and an event; an update of 5 seeded orders; a
// multi-row insert of 5 events; deletion of the 3 items and the event of the order three
// transactions back, and an update of that order. Deterministic (no clock, no random): two
// databases seeded alike get the same backlog. Counts every row change (ROW_COUNT) per side.
// Repetitions use disjoint keys: transaction numbers start at `base` (a multiple of 4).
constexpr const char* kBacklogSql = R"SQL(
CREATE OR REPLACE PROCEDURE bench_backlog(p_txns bigint, p_tenant bigint, p_others bigint[],
    p_base bigint, INOUT tenant_changes bigint DEFAULT 0, INOUT tenant_txns bigint DEFAULT 0,
    INOUT other_changes bigint DEFAULT 0, INOUT other_txns bigint DEFAULT 0)
LANGUAGE plpgsql AS $proc$
DECLARE
  ts bigint[] := p_tenant || p_others;
  acc bigint[] := '{}';
  ord bigint[] := '{}';
  i bigint; s int; pos int; t bigint; k int; o bigint; x bigint; n bigint; rc bigint;
BEGIN
  FOR pos IN 1 .. array_length(ts, 1) LOOP
    acc := acc || (SELECT coalesce(max(account_id), 1) FROM accounts WHERE tenant_id = ts[pos]);
    ord := ord || (SELECT coalesce(max(order_id), 1) FROM orders
                   WHERE tenant_id = ts[pos] AND order_id < 10000000);
  END LOOP;
  FOR i IN p_base .. p_base + p_txns - 1 LOOP
    FOR s IN 0 .. 1 LOOP
      pos := CASE WHEN s = 0 THEN 1 ELSE 2 + ((i / 4) % array_length(p_others, 1))::int END;
      t := ts[pos];
      k := (i % 4)::int;
      o := 10000000 + i;
      n := 0;
      IF k = 0 THEN
        INSERT INTO orders VALUES (t, o, 1 + i % acc[pos], 'new', (i % 1000) * 1.5,
          timestamptz '2025-01-01 00:00:00+00' + i * interval '1 ms', 'backlog order ' || i,
          i / 7.0);
        GET DIAGNOSTICS rc = ROW_COUNT; n := n + rc;
        INSERT INTO order_items SELECT t, o, l, 'SKU-' || (i % 5000), l, l * 2.5,
          jsonb_build_object('line', l, 'i', i) FROM generate_series(1, 3) l;
        GET DIAGNOSTICS rc = ROW_COUNT; n := n + rc;
        INSERT INTO events VALUES (t, md5('bl/' || t || '/' || i)::uuid, 'purchase',
          timestamptz '2025-01-01 00:00:00+00' + i * interval '1 ms',
          jsonb_build_object('order', o), i * 0.01);
        GET DIAGNOSTICS rc = ROW_COUNT; n := n + rc;
      ELSIF k = 1 THEN
        x := 1 + ((i / 4) * 5) % greatest(ord[pos] - 4, 1);
        UPDATE orders SET status = (ARRAY['paid', 'shipped', 'cancelled'])[1 + (i % 3)::int],
          total = coalesce(total, 0) + 1, notes = 'updated by backlog ' || i
          WHERE tenant_id = t AND order_id BETWEEN x AND x + 4;
        GET DIAGNOSTICS rc = ROW_COUNT; n := n + rc;
      ELSIF k = 2 THEN
        INSERT INTO events SELECT t, md5('bl/' || t || '/' || i || '/' || e)::uuid, 'click',
          timestamptz '2025-01-01 00:00:00+00' + i * interval '1 ms',
          jsonb_build_object('i', i, 'e', e), NULL FROM generate_series(1, 5) e;
        GET DIAGNOSTICS rc = ROW_COUNT; n := n + rc;
      ELSE
        DELETE FROM order_items WHERE tenant_id = t AND order_id = o - 3;
        GET DIAGNOSTICS rc = ROW_COUNT; n := n + rc;
        DELETE FROM events
          WHERE tenant_id = t AND event_id = md5('bl/' || t || '/' || (i - 3))::uuid;
        GET DIAGNOSTICS rc = ROW_COUNT; n := n + rc;
        UPDATE orders SET status = 'cancelled', notes = NULL
          WHERE tenant_id = t AND order_id = o - 3;
        GET DIAGNOSTICS rc = ROW_COUNT; n := n + rc;
      END IF;
      COMMIT;
      IF s = 0 THEN
        tenant_changes := tenant_changes + n; tenant_txns := tenant_txns + 1;
      ELSE
        other_changes := other_changes + n; other_txns := other_txns + 1;
      END IF;
    END LOOP;
  END LOOP;
END $proc$;

-- One steady-writer transaction of 1-3 row changes (2 on average): kind p_j % 4 is an event, an
-- update of 2 seeded orders, a new order with 2 items, or deletion of the previous order's items.
-- Callers keep a tenant for four consecutive p_j. Returns the row changes made.
CREATE OR REPLACE FUNCTION bench_steady_tx(p_tenant bigint, p_j bigint) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
  k int := (p_j % 4)::int; o bigint := 20000000 + p_j; n bigint := 0; rc bigint; lim bigint;
  x bigint;
BEGIN
  IF k = 0 THEN
    INSERT INTO events VALUES (p_tenant, md5('st/' || p_tenant || '/' || p_j)::uuid, 'login',
      clock_timestamp(), jsonb_build_object('j', p_j), NULL);
    GET DIAGNOSTICS rc = ROW_COUNT; n := n + rc;
  ELSIF k = 1 THEN
    SELECT coalesce(max(order_id), 2) INTO lim FROM orders
      WHERE tenant_id = p_tenant AND order_id < 10000000;
    x := 1 + (p_j * 2) % greatest(lim - 1, 1);
    UPDATE orders SET total = coalesce(total, 0) + 1
      WHERE tenant_id = p_tenant AND order_id BETWEEN x AND x + 1;
    GET DIAGNOSTICS rc = ROW_COUNT; n := n + rc;
  ELSIF k = 2 THEN
    SELECT coalesce(max(account_id), 1) INTO lim FROM accounts WHERE tenant_id = p_tenant;
    INSERT INTO orders VALUES (p_tenant, o, 1 + p_j % lim, 'new', 1, clock_timestamp(), NULL, 0.5);
    GET DIAGNOSTICS rc = ROW_COUNT; n := n + rc;
    INSERT INTO order_items SELECT p_tenant, o, l, 'SKU-S', 1, 1.00, NULL
      FROM generate_series(1, 2) l;
    GET DIAGNOSTICS rc = ROW_COUNT; n := n + rc;
  ELSE
    DELETE FROM order_items WHERE tenant_id = p_tenant AND order_id = o - 1;
    GET DIAGNOSTICS rc = ROW_COUNT; n := n + rc;
  END IF;
  RETURN n;
END $fn$;
)SQL";

constexpr const char* kMarkerInsert =
    "INSERT INTO events VALUES (42, md5('bench-marker/' || $1)::uuid, 'bench_marker', "
    "clock_timestamp(), jsonb_build_object('seq', $1::bigint), NULL)";
constexpr const char* kMarkerProbe =
    "SELECT 1 FROM events WHERE tenant_id = 42 AND event_id = md5('bench-marker/' || $1)::uuid";

// ---------------------------------------------------------------------------------------------
// The benchmark.

// One source database and its destination database (same names on the two clusters).
struct Pair {
  std::string db;
  std::string src_dsn;  // as stampmover and the subscription get it
  std::string dst_dsn;
  PgConnection src;  // the benchmark's own sessions (application_name bench_cdc)
  PgConnection dst;
};

struct Backlog {
  uint64_t tenant_changes = 0;
  uint64_t tenant_txns = 0;
  uint64_t other_changes = 0;
  uint64_t other_txns = 0;
  double seconds = 0;
  uint64_t wal_bytes = 0;
  std::string end_lsn;  // pg_current_wal_lsn() right after the last commit
};

struct CatchupResult {
  double seconds = 0;
  std::optional<double> inner_seconds;       // ours: "applied in X s" from its report
  std::optional<uint64_t> reported_changes;  // ours: "catch-up: N changes" from its report
  std::optional<long> maxrss_kib;            // ours only
  std::optional<double> cpu_seconds;         // ours: client user+sys
  SamplerResult servers;
};

// One paired run: the same backlog for both, timed one after the other.
struct Rep {
  Backlog backlog;
  CatchupResult ours;
  std::optional<CatchupResult> native;
  double ratio() const { return native ? native->seconds / ours.seconds : 0; }
};

struct SteadyResult {
  double seconds = 0;
  uint64_t txns = 0;
  uint64_t tenant_txns = 0;
  uint64_t changes = 0;
  uint64_t tenant_changes = 0;
  std::vector<double> lag_ms;  // one per marker inserted under load
  uint64_t markers_missing = 0;
  double max_behind_ms = 0;  // how far the writers fell behind their schedule
  long maxrss_kib = 0;
  double cpu_seconds = 0;
  int exit_code = 0;
};

struct Bench {
  Args args;
  std::unique_ptr<harness::LocalCluster> src_cluster;
  std::unique_ptr<harness::LocalCluster> dst_cluster;
  Pair ours;
  Pair native;
  std::string work_dir;   // logs and state, removed at the end
  std::string state_dir;  // stampmover's --state-dir for the whole run
  std::optional<Clock::time_point> native_created;
};

// The benchmark's own sessions: named, and no statement runs longer than 10 min (the backlog
// CALL raises its own limit).
std::string benchDsn(const std::string& dsn) {
  return dsn + " application_name=bench_cdc options='-c statement_timeout=600000'";
}

Status openPair(Bench& b, Pair& p, const std::string& db) {
  p.db = db;
  SM_RETURN_IF_ERROR(b.src_cluster->createDatabase(db));
  SM_RETURN_IF_ERROR(b.dst_cluster->createDatabase(db));
  p.src_dsn = b.src_cluster->dsn(db);
  p.dst_dsn = b.dst_cluster->dsn(db);
  SM_ASSIGN_OR_RETURN(p.src, PgConnection::connect(benchDsn(p.src_dsn), "source " + db));
  SM_ASSIGN_OR_RETURN(p.dst, PgConnection::connect(benchDsn(p.dst_dsn), "destination " + db));
  // CREATE/DROP SUBSCRIPTION announce their slots with NOTICEs; keep the output to the table.
  for (auto* c : {&p.src, &p.dst}) {
    SM_RETURN_IF_ERROR(c->exec("SET client_min_messages = warning"));
    SM_RETURN_IF_ERROR(harness::createDemoSchema(*c));
  }
  harness::SeedOptions seed;
  seed.tenant = 42;
  seed.tenant_items = b.args.seed_items;
  seed.other_items = b.args.seed_items;
  seed.others = {1, 2, 3};
  SM_RETURN_IF_ERROR(harness::seedTenants(p.src, seed).withContext("seed " + db));
  SM_RETURN_IF_ERROR(p.src.exec("VACUUM (FREEZE, ANALYZE)"));
  return p.src.exec(kBacklogSql);
}

// The tenant's rows must be identical at the destination (per table: count and md5 over every
// row's text in primary-key order, computed on each server) and no other tenant's rows there.
Status checkPair(Pair& p, const std::string& what) {
  uint64_t total = 0;
  for (const auto& t : kTables) {
    std::string sql = std::string(
                          "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' "
                          "ORDER BY ") +
                      t.pk + "), '')) FROM " + t.name + " t WHERE tenant_id = " + kTenant;
    SM_ASSIGN_OR_RETURN(auto s, p.src.query(sql));
    SM_ASSIGN_OR_RETURN(auto d, p.dst.query(sql));
    SM_ASSIGN_OR_RETURN(auto others, p.dst.queryValue(std::string("SELECT count(*) FROM ") +
                                                      t.name + " WHERE tenant_id <> " + kTenant));
    if (cell(s, 0, 0) != cell(d, 0, 0) || cell(s, 0, 1) != cell(d, 0, 1)) {
      return Status::dataLoss(what + ": table " + t.name + " differs: source has " + cell(s, 0, 0) +
                              " rows of tenant 42 (md5 " + cell(s, 0, 1) + "), destination " +
                              cell(d, 0, 0) + " (md5 " + cell(d, 0, 1) + ")");
    }
    if (others.value_or("0") != "0") {
      return Status::dataLoss(what + ": destination table " + t.name + " has " + *others +
                              " rows of other tenants");
    }
    SM_ASSIGN_OR_RETURN(uint64_t n, parseU64(cell(s, 0, 0), "count"));
    total += n;
  }
  say("   %s: destination equals source for tenant 42 (%s rows in 5 tables, md5 per table), no "
      "other tenant's rows\n",
      what.c_str(), withCommas(total).c_str());
  return Status::ok();
}

Result<Backlog> generateBacklog(Pair& p, uint64_t txns, uint64_t base) {
  Backlog out;
  SM_RETURN_IF_ERROR(p.src.exec(
      "SET statement_timeout = '" +
      std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kBacklogTimeout).count()) +
      "s'"));
  SM_ASSIGN_OR_RETURN(auto lsn0, p.src.queryValue("SELECT pg_current_wal_lsn()::text"));
  auto t0 = Clock::now();
  SM_ASSIGN_OR_RETURN(auto r,
                      p.src.query("CALL bench_backlog($1, 42, '{1,2,3}', $2)",
                                  {std::to_string(txns), std::to_string(base)}));
  out.seconds = secondsSince(t0);
  SM_RETURN_IF_ERROR(p.src.exec("RESET statement_timeout"));
  SM_ASSIGN_OR_RETURN(auto lsn1, p.src.queryValue("SELECT pg_current_wal_lsn()::text"));
  out.end_lsn = lsn1.value_or("0/0");
  SM_ASSIGN_OR_RETURN(out.tenant_changes, parseU64(cell(r, 0, 0), "tenant changes"));
  SM_ASSIGN_OR_RETURN(out.tenant_txns, parseU64(cell(r, 0, 1), "tenant transactions"));
  SM_ASSIGN_OR_RETURN(out.other_changes, parseU64(cell(r, 0, 2), "other changes"));
  SM_ASSIGN_OR_RETURN(out.other_txns, parseU64(cell(r, 0, 3), "other transactions"));
  SM_ASSIGN_OR_RETURN(auto wal, p.src.queryValue("SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)",
                                                 {out.end_lsn, lsn0.value_or("0/0")}));
  SM_ASSIGN_OR_RETURN(out.wal_bytes, parseU64(wal.value_or("0"), "WAL bytes"));
  say("   backlog in %s: tenant 42: %s row changes in %s transactions; other tenants: %s in %s "
      "(dropped by the row filter); %s of WAL; generated in %.1f s\n",
      p.db.c_str(), withCommas(out.tenant_changes).c_str(), withCommas(out.tenant_txns).c_str(),
      withCommas(out.other_changes).c_str(), withCommas(out.other_txns).c_str(),
      humanBytes(static_cast<double>(out.wal_bytes)).c_str(), out.seconds);
  return out;
}

// No run pays for the previous step's dirty buffers.
Status checkpointBoth(Pair& p) {
  SM_RETURN_IF_ERROR(p.src.exec("CHECKPOINT"));
  return p.dst.exec("CHECKPOINT");
}

// Who migrates: ours is `--stampmover` on app_ours; with --compare, the second build migrates
// app_native (which then has no subscription) with its own state directory.
struct Side {
  std::string binary;
  Pair* pair = nullptr;
  std::string state_dir;
  std::string log_prefix;  // log file names in the work directory
};

Side oursSide(Bench& b) { return {b.args.stampmover, &b.ours, b.state_dir, "migrate"}; }
Side compareSide(Bench& b) {
  return {b.args.compare, &b.native, b.state_dir + "-compare", "compare"};
}

std::vector<std::string> migrateArgv(const Bench& b, bool until_caught_up, const Side& side) {
  std::vector<std::string> argv = {
      side.binary,    "--state-dir", side.state_dir, "migrate",    "--tenant",
      kTenant,        "--source-dsn", side.pair->src_dsn, "--dest-dsn", side.pair->dst_dsn,
      "--progress",   "log"};
  if (until_caught_up) argv.push_back("--until-caught-up");
  if (b.args.max_batch > 0) {
    argv.push_back("--max-batch");
    argv.push_back(std::to_string(b.args.max_batch));
  }
  return argv;
}

std::vector<Watch> oursWatches() {
  return {{"source walsender", true, "backend_type = 'walsender'"},
          {"destination applier backend", false,
           "backend_type = 'client backend' AND application_name = 'stampmover'"}};
}

std::vector<Watch> nativeWatches() {
  return {{"source walsender", true, "backend_type = 'walsender'"},
          {"destination apply worker", false, "backend_type = 'logical replication worker'"}};
}

// Best effort, at the end: the side's slot and publication, and its local state.
void cleanupSide(Bench& b, const Side& side) {
  std::string log = b.work_dir + "/" + side.log_prefix + "-cleanup.log";
  auto clean = runChild({side.binary, "--state-dir", side.state_dir, "cleanup", "--tenant",
                         kTenant, "--source-dsn", side.pair->src_dsn},
                        log, std::chrono::seconds(120), false);
  if (!clean || !childStatus(*clean, "stampmover cleanup", log).isOk()) {
    say("   (stampmover cleanup failed; the throwaway clusters are removed anyway)\n");
  }
}

// Copy and first catch-up: leaves the slot and the migration's state for the timed run.
Status initialOurs(Bench& b, const Side& side) {
  std::string log = b.work_dir + "/" + side.log_prefix + "-initial.log";
  auto t0 = Clock::now();
  SM_ASSIGN_OR_RETURN(ChildResult r,
                      runChild(migrateArgv(b, true, side), log, kChildTimeout, false));
  SM_RETURN_IF_ERROR(childStatus(r, "stampmover migrate (copy + first catch-up)", log));
  say("   copied and caught up in %.1f s (untimed)\n", secondsSince(t0));
  return checkPair(*side.pair, side.log_prefix + " after the copy");
}

Result<CatchupResult> timeOurs(Bench& b, const Side& side) {
  Pair& pair = *side.pair;
  SM_RETURN_IF_ERROR(checkpointBoth(pair));
  std::string log = b.work_dir + "/" + side.log_prefix + "-backlog.log";
  ServerSampler sampler(benchDsn(b.src_cluster->dsn()), benchDsn(b.dst_cluster->dsn()), pair.db,
                        oursWatches());
  auto r = runChild(migrateArgv(b, true, side), log, kChildTimeout, true);
  CatchupResult out;
  out.servers = sampler.stop();
  if (!r) return r.status();
  SM_RETURN_IF_ERROR(childStatus(*r, "stampmover migrate --until-caught-up", log));
  out.seconds = r->seconds;
  out.maxrss_kib = r->maxrss_kib;
  out.cpu_seconds = r->cpu_seconds;
  // The report line (stdout, no log prefix): "catch-up: N changes in M transactions applied in
  // X s; ...". Status lines also contain "catch-up: ", but after a timestamp.
  std::istringstream lines(readFile(log));
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("catch-up: ", 0) != 0 || line.find(" applied in ") == std::string::npos) {
      continue;
    }
    std::string digits;
    for (size_t i = 10; i < line.size() && (std::isdigit(line[i]) || line[i] == ','); ++i) {
      if (line[i] != ',') digits += line[i];
    }
    if (auto n = parseU64(digits, "changes")) out.reported_changes = *n;
    out.inner_seconds = std::strtod(line.c_str() + line.find(" applied in ") + 12, nullptr);
  }
  return out;
}

// Best effort: a failed native run must not leave a subscription, its slots or the publication.
void cleanupNative(Bench& b) {
  Pair& p = b.native;
  if (!p.dst.exec("DROP SUBSCRIPTION IF EXISTS bench_sub").isOk()) {
    // The source side may be unreachable: detach the slot and drop the subscription locally.
    p.dst.exec("ALTER SUBSCRIPTION bench_sub DISABLE").ignore();  // best effort, see above
    p.dst.exec("ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE)").ignore();  // idem
    p.dst.exec("DROP SUBSCRIPTION IF EXISTS bench_sub").ignore();                // idem
  }
  // Slots the subscription could not drop (main slot and tablesync slots): drop them here.
  p.src
      .exec(
          "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT "
          "active AND (slot_name = 'bench_sub' OR slot_name LIKE 'pg\\_%\\_sync\\_%')")
      .ignore();  // best effort: leftovers only cost WAL retention on a throwaway cluster
  p.src.exec("DROP PUBLICATION IF EXISTS bench_pub").ignore();  // best effort, as above
}

// Polls `sql` (one boolean cell) on `conn` every `every` until true or `timeout`.
Status waitFor(PgConnection& conn, const std::string& sql, std::chrono::milliseconds every,
               std::chrono::seconds timeout, const std::string& what) {
  auto t0 = Clock::now();
  for (;;) {
    SM_ASSIGN_OR_RETURN(auto v, conn.queryValue(sql));
    if (v.value_or("f") == "t") return Status::ok();
    if (Clock::now() - t0 > timeout) {
      return Status::internal(what + " did not happen within " + std::to_string(timeout.count()) +
                              " s");
    }
    std::this_thread::sleep_for(every);
  }
}

Status disableNative(Bench& b);

// Moves the database's (inactive) logical slot to the current end of WAL, untimed: it then
// never decodes the other database's backlog (each side reads only its own, as in production
// a slot reads its own database's tenants). Safe for ours: nothing of its database was written
// since its run ended; its destination's origin is advanced with it (stampmover refuses an
// origin behind the slot's confirmed position).
Status skipOtherWal(Pair& p, const std::string& like) {
  const std::string sel = "FROM pg_replication_slots WHERE database = current_database() AND "
                          "slot_type = 'logical' AND slot_name LIKE '" + like + "'";
  SM_RETURN_IF_ERROR(waitFor(p.src, "SELECT coalesce(bool_and(NOT active), true) " + sel,
                             std::chrono::milliseconds(50),
                             std::chrono::duration_cast<std::chrono::seconds>(kSettleTimeout),
                             "slot inactive before skipping the other database's WAL"));
  // The restart point follows only at a running-xacts record (logged by CHECKPOINT) that the
  // slot has decoded and confirmed: advance, log one, advance over it, twice, or the timed run
  // would still decode the other backlog from the old restart point.
  for (int i = 0; i < 3; ++i) {
    SM_RETURN_IF_ERROR(
        p.src.exec("SELECT pg_replication_slot_advance(slot_name, pg_current_wal_lsn()) " + sel)
            .withContext("advance the slot past the other database's backlog"));
    if (i < 2) SM_RETURN_IF_ERROR(p.src.exec("CHECKPOINT"));
  }
  // Our destination's origin must follow: stampmover refuses a slot confirmed past the origin
  // (that is what a destination restored from a backup looks like). The native subscriber's
  // origin is its own business.
  SM_ASSIGN_OR_RETURN(auto moved, p.src.query("SELECT slot_name::text, confirmed_flush_lsn::text " + sel));
  for (int i = 0; i < stampmover::common::rowCount(moved); ++i) {
    SM_RETURN_IF_ERROR(p.dst.query("SELECT pg_replication_origin_advance(roname, $2::pg_lsn) FROM "
                                   "pg_replication_origin WHERE roname = $1",
                                   {stampmover::common::cell(moved, i, 0), stampmover::common::cell(moved, i, 1)})
                           .status()
                           .withContext("advance the destination's origin with the slot"));
  }
  SM_ASSIGN_OR_RETURN(auto gap, p.src.queryValue("SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), "
                                                 "restart_lsn))::bigint " + sel));
  say("   (slot moved past the other database's WAL, untimed; restart point %s behind)\n",
      humanBytes(static_cast<double>(std::stoll(gap.value_or("0")))).c_str());
  return Status::ok();
}

// Publication with the same row filter as ours, subscription with its initial copy, synced, then
// disabled: its slot waits, as ours does, while the backlog is made.
Status setupNative(Bench& b) {
  Pair& p = b.native;
  std::string pub = "CREATE PUBLICATION bench_pub FOR TABLE ";
  for (size_t i = 0; i < std::size(kTables); ++i) {
    pub += std::string(i ? ", " : "") + kTables[i].name + " WHERE (tenant_id = " + kTenant + ")";
  }
  SM_RETURN_IF_ERROR(p.src.exec(pub));
  SM_ASSIGN_OR_RETURN(std::string conninfo, p.dst.escapeLiteral(p.src_dsn));
  auto t0 = Clock::now();
  b.native_created = t0;
  SM_RETURN_IF_ERROR(p.dst.exec("CREATE SUBSCRIPTION bench_sub CONNECTION " + conninfo +
                                " PUBLICATION bench_pub WITH (copy_data = true)"));
  SM_RETURN_IF_ERROR(waitFor(p.dst,
                             "SELECT count(*) > 0 AND bool_and(r.srsubstate = 'r') FROM "
                             "pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
                             "WHERE s.subname = 'bench_sub'",
                             std::chrono::milliseconds(100),
                             std::chrono::duration_cast<std::chrono::seconds>(kNativeTimeout),
                             "native initial sync (all tables 'r')"));
  say("   native subscription synced in %.1f s (untimed)\n", secondsSince(t0));
  SM_RETURN_IF_ERROR(checkPair(p, "native after the initial sync"));
  return disableNative(b);
}

// DISABLE, then wait until nothing reads the slot: its WAL waits, as ours does, for the backlog.
Status disableNative(Bench& b) {
  Pair& p = b.native;
  SM_RETURN_IF_ERROR(p.dst.exec("ALTER SUBSCRIPTION bench_sub DISABLE"));
  // The apply worker exits and the slot becomes inactive: nothing reads the WAL from here on.
  SM_RETURN_IF_ERROR(waitFor(p.dst,
                             "SELECT bool_and(pid IS NULL) FROM pg_stat_subscription WHERE "
                             "subname = 'bench_sub'",
                             std::chrono::milliseconds(100),
                             std::chrono::duration_cast<std::chrono::seconds>(kSettleTimeout),
                             "native apply worker exit after DISABLE"));
  return waitFor(p.src,
                 "SELECT bool_and(NOT active) FROM pg_replication_slots WHERE slot_name = "
                 "'bench_sub'",
                 std::chrono::milliseconds(100),
                 std::chrono::duration_cast<std::chrono::seconds>(kSettleTimeout),
                 "native slot inactive after DISABLE");
}

// ENABLE until the slot's confirmed_flush_lsn reaches the source's WAL position taken right
// after the backlog: everything is applied and flushed at the destination.
Result<CatchupResult> timeNative(Bench& b, const std::string& target_lsn) {
  Pair& p = b.native;
  SM_RETURN_IF_ERROR(checkpointBoth(p));
  if (b.native_created) {
    auto since = Clock::now() - *b.native_created;
    if (since < kLauncherInterval) {
      say("   (waiting %.1f s, untimed, for the replication launcher's retry interval)\n",
          std::chrono::duration<double>(kLauncherInterval - since).count());
      std::this_thread::sleep_for(kLauncherInterval - since);
    }
  }
  CatchupResult out;
  ServerSampler sampler(benchDsn(b.src_cluster->dsn()), benchDsn(b.dst_cluster->dsn()), p.db,
                        nativeWatches());
  auto t0 = Clock::now();
  b.native_created = t0;  // the launcher's retry interval counts from the last worker start
  SM_RETURN_IF_ERROR(p.dst.exec("ALTER SUBSCRIPTION bench_sub ENABLE"));
  auto last_report = Clock::now();
  for (;;) {
    SM_ASSIGN_OR_RETURN(
        auto r, p.src.query("SELECT confirmed_flush_lsn >= $1::pg_lsn, confirmed_flush_lsn::text, "
                            "pg_wal_lsn_diff($1::pg_lsn, confirmed_flush_lsn) FROM "
                            "pg_replication_slots WHERE slot_name = 'bench_sub'",
                            {target_lsn}));
    if (stampmover::common::rowCount(r) != 1) {
      return Status::internal("native slot bench_sub is gone");
    }
    if (cell(r, 0, 0) == "t") {
      out.seconds = secondsSince(t0);
      break;
    }
    if (Clock::now() - t0 > kNativeTimeout) {
      return Status::internal(
          "native catch-up did not finish within " +
          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kNativeTimeout).count()) +
          " s; confirmed_flush_lsn " + cell(r, 0, 1));
    }
    if (Clock::now() - last_report > std::chrono::seconds(5)) {
      last_report = Clock::now();
      auto behind = parseU64(cell(r, 0, 2), "bytes behind");
      say("      | %5.1f s: confirmed_flush_lsn %s, %s of WAL to go\n", secondsSince(t0),
          cell(r, 0, 1).c_str(),
          behind ? humanBytes(static_cast<double>(*behind)).c_str() : cell(r, 0, 2).c_str());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  out.servers = sampler.stop();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Steady lag.

// Fixed-rate writer: `per_s` transactions per second on its own connection, on schedule (a
// writer that falls behind catches up without sleeping), until `until`.
struct WriterStats {
  uint64_t txns = 0;
  uint64_t changes = 0;
  double max_behind_ms = 0;
  Status status;
};

WriterStats runWriter(const std::string& dsn, bool tenant42, double per_s, Clock::time_point t0,
                      Clock::time_point until) {
  WriterStats ws;
  auto conn = PgConnection::connect(benchDsn(dsn), tenant42 ? "writer 42" : "writer others");
  if (!conn) {
    ws.status = conn.status();
    return ws;
  }
  for (uint64_t j = 0;; ++j) {
    auto due = t0 + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(static_cast<double>(j) / per_s));
    if (due >= until) break;
    auto now = Clock::now();
    if (now < due) {
      std::this_thread::sleep_until(due);
    } else {
      ws.max_behind_ms =
          std::max(ws.max_behind_ms, std::chrono::duration<double, std::milli>(now - due).count());
    }
    std::string tenant = tenant42 ? kTenant : std::to_string(1 + (j / 4) % 3);
    auto r = conn->queryValue("SELECT bench_steady_tx($1, $2)", {tenant, std::to_string(j)});
    if (!r) {
      ws.status = r.status();
      return ws;
    }
    ws.txns++;
    auto n = parseU64(r->value_or("0"), "changes");
    if (n) ws.changes += *n;  // a malformed count only shortens the report's total
  }
  return ws;
}

// Markers: one tenant-42 row every 200 ms on the source; a poller on the destination notes
// when each becomes visible. Lag = commit acknowledged at the source -> visible at the
// destination (polled every 10 ms; both times from this process's steady clock).
class MarkerTracker {
 public:
  MarkerTracker(std::string src_dsn, std::string dst_dsn)
      : src_dsn_(std::move(src_dsn)), dst_dsn_(std::move(dst_dsn)) {}

  Status open() {
    SM_ASSIGN_OR_RETURN(src_, PgConnection::connect(benchDsn(src_dsn_), "source (markers)"));
    SM_ASSIGN_OR_RETURN(dst_, PgConnection::connect(benchDsn(dst_dsn_), "destination (markers)"));
    poller_ = std::thread([this] { poll(); });
    return Status::ok();
  }
  ~MarkerTracker() { stopPolling(); }

  // Inserts the next marker; returns its sequence number.
  Result<uint64_t> insert() {
    uint64_t seq = 0;
    {
      std::lock_guard lock(mu_);
      seq = committed_.size() + 1;
    }
    SM_ASSIGN_OR_RETURN(auto r, src_.query(kMarkerInsert, {std::to_string(seq)}));
    (void)r;
    auto at = Clock::now();
    std::lock_guard lock(mu_);
    committed_.push_back(at);
    return seq;
  }

  // Waits until every inserted marker was seen or `timeout` passed; true when all were seen.
  bool waitAllSeen(std::chrono::seconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [this] { return seen_.size() >= committed_.size(); });
  }

  void stopPolling() {
    if (!poller_.joinable()) return;
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    poller_.join();
  }

  // Lag in ms of markers [first, last] (1-based), and how many of them were never seen.
  std::pair<std::vector<double>, uint64_t> lags(uint64_t first, uint64_t last) {
    std::lock_guard lock(mu_);
    std::vector<double> out;
    uint64_t missing = 0;
    for (uint64_t s = first; s <= last && s <= committed_.size(); ++s) {
      if (s <= seen_.size()) {
        out.push_back(
            std::chrono::duration<double, std::milli>(seen_[s - 1] - committed_[s - 1]).count());
      } else {
        ++missing;
      }
    }
    return {out, missing};
  }
  Status pollStatus() {
    std::lock_guard lock(mu_);
    return poll_status_;
  }

 private:
  void poll() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      // Markers commit in order and are applied in commit order: probe the oldest unseen one.
      while (seen_.size() < committed_.size()) {
        uint64_t seq = seen_.size() + 1;
        lock.unlock();
        auto r = dst_.query(kMarkerProbe, {std::to_string(seq)});
        auto at = Clock::now();
        lock.lock();
        if (!r) {
          poll_status_ = r.status();
          break;
        }
        if (stampmover::common::rowCount(*r) == 0) break;
        seen_.push_back(at);
        cv_.notify_all();
      }
      cv_.wait_for(lock, kMarkerPoll, [this] { return stop_; });
    }
  }

  std::string src_dsn_, dst_dsn_;
  PgConnection src_;
  PgConnection dst_;  // used by the poller thread only
  std::thread poller_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Clock::time_point> committed_;
  std::vector<Clock::time_point> seen_;
  Status poll_status_;
  bool stop_ = false;
};

// Stops a running migrate with SIGTERM (by its pid) and reaps it.
ChildResult stopMigrate(Child& c) {
  if (c.pid > 0) kill(c.pid, SIGTERM);
  return waitChild(c, std::chrono::duration_cast<std::chrono::seconds>(kSettleTimeout));
}

Result<SteadyResult> runSteady(Bench& b) {
  SteadyResult out;
  std::string log = b.work_dir + "/migrate-steady.log";
  SM_ASSIGN_OR_RETURN(Child child, spawnChild(migrateArgv(b, false, oursSide(b)), log, true));
  // Every return path below stops the child by its pid.
  struct Stopper {
    Child& c;
    ~Stopper() {
      if (c.pid > 0) stopMigrate(c);
    }
  } stopper{child};

  // Following: its slot is active on the source and a warm-up marker reached the destination
  // (judged on the servers, not from log text). The load starts on a follower in steady state.
  auto t_start = Clock::now();
  for (;;) {
    auto active = b.ours.src.queryValue(
        "SELECT bool_or(active) FROM pg_replication_slots WHERE database = current_database() "
        "AND slot_type = 'logical'");
    if (!active) return active.status();
    if (active->value_or("f") == "t") break;
    if (childExited(child)) {
      ChildResult r = waitChild(child, std::chrono::seconds(1));
      return childStatus(r, "stampmover migrate (steady)", log, 130)
          .withContext("it exited before streaming");
    }
    if (Clock::now() - t_start > kSettleTimeout) {
      return Status::internal(
          "stampmover migrate's slot was not active within 60 s; last "
          "output:\n" +
          tailLines(readFile(log), 20));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  MarkerTracker markers(b.ours.src_dsn, b.ours.dst_dsn);
  SM_RETURN_IF_ERROR(markers.open());
  SM_ASSIGN_OR_RETURN(uint64_t warmup, markers.insert());
  if (!markers.waitAllSeen(std::chrono::duration_cast<std::chrono::seconds>(kSettleTimeout))) {
    return Status::internal(
        "a warm-up marker did not reach the destination within 60 s; last "
        "output:\n" +
        tailLines(readFile(log), 20));
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));

  const double per_writer = static_cast<double>(b.args.rate) / 2;
  auto t0 = Clock::now();
  auto until = t0 + std::chrono::seconds(b.args.steady_seconds);
  WriterStats w42, wothers;
  std::thread th42([&] { w42 = runWriter(b.ours.src_dsn, true, per_writer, t0, until); });
  std::thread thothers([&] { wothers = runWriter(b.ours.src_dsn, false, per_writer, t0, until); });
  Status marker_status;
  uint64_t last_under_load = 0;
  for (uint64_t k = 1;; ++k) {
    auto due = t0 + k * kMarkerInterval;
    if (due >= until) break;
    std::this_thread::sleep_until(due);
    auto seq = markers.insert();
    if (!seq) {
      marker_status = seq.status();
      break;
    }
    last_under_load = *seq;
  }
  th42.join();
  thothers.join();
  out.seconds = secondsSince(t0);
  SM_RETURN_IF_ERROR(w42.status.withContext("writer (tenant 42)"));
  SM_RETURN_IF_ERROR(wothers.status.withContext("writer (other tenants)"));
  SM_RETURN_IF_ERROR(marker_status.withContext("marker insert"));
  // A last marker after the load: once it is visible, every write before it is applied.
  SM_RETURN_IF_ERROR(markers.insert().status().withContext("final marker insert"));
  bool all_seen =
      markers.waitAllSeen(std::chrono::duration_cast<std::chrono::seconds>(kSettleTimeout));
  markers.stopPolling();
  SM_RETURN_IF_ERROR(markers.pollStatus().withContext("marker poll"));
  auto [lags, missing] = markers.lags(warmup + 1, last_under_load);
  out.lag_ms = std::move(lags);
  out.markers_missing = missing;
  out.txns = w42.txns + wothers.txns;
  out.tenant_txns = w42.txns;
  out.changes = w42.changes + wothers.changes;
  out.tenant_changes = w42.changes;
  out.max_behind_ms = std::max(w42.max_behind_ms, wothers.max_behind_ms);
  if (!all_seen) {
    return Status::internal(
        "markers still not visible at the destination 60 s after the load; "
        "migrate's last output:\n" +
        tailLines(readFile(log), 20));
  }
  Status check = checkPair(b.ours, "ours after the steady load");

  ChildResult r = stopMigrate(child);
  out.maxrss_kib = r.maxrss_kib;
  out.cpu_seconds = r.cpu_seconds;
  out.exit_code = r.exit_code;
  SM_RETURN_IF_ERROR(check);
  SM_RETURN_IF_ERROR(childStatus(r, "stampmover migrate stopped by SIGTERM", log, 130)
                         .withContext("expected exit code 130 (cancelled cleanly)"));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Report.

void printServers(const char* method, const CatchupResult& r) {
  for (const auto& w : r.servers.watches) {
    say("   %-7s %-28s CPU %6.1f s   samples: %s\n", method, w.name.c_str(), w.cpu_seconds,
        topStates(w).c_str());
  }
}

// --compare: both builds per run on the same backlog; the ratio is compare s / ours s (above 1:
// `--stampmover` is faster). The median run by ratio stands for all.
void printCompare(const Bench& b, const std::vector<Rep>& reps) {
  say("\n== (a) backlog catch-up, A/B: ours = %s, compare = %s (same backlog within a run, "
      "alternating order)\n",
      b.args.stampmover.c_str(), b.args.compare.c_str());
  say("   %-4s %8s %8s %8s   %-26s %-26s %-18s\n", "run", "ours s", "comp s", "comp/ours",
      "walsender CPU ours/comp", "dest CPU ours/comp", "client CPU ours/comp");
  std::vector<double> ratios;
  for (size_t i = 0; i < reps.size(); ++i) {
    const Rep& r = reps[i];
    if (!r.native) continue;
    auto cpu = [](const CatchupResult& c, size_t w) {
      return w < c.servers.watches.size() ? c.servers.watches[w].cpu_seconds : 0.0;
    };
    char ws[40], ds[40], cs[40];
    std::snprintf(ws, sizeof ws, "%.2f / %.2f", cpu(r.ours, 0), cpu(*r.native, 0));
    std::snprintf(ds, sizeof ds, "%.2f / %.2f", cpu(r.ours, 1), cpu(*r.native, 1));
    std::snprintf(cs, sizeof cs, "%.2f / %.2f", r.ours.cpu_seconds.value_or(0),
                  r.native->cpu_seconds.value_or(0));
    say("   %-4zu %8.2f %8.2f %8.2fx   %-26s %-26s %-18s %s\n", i + 1, r.ours.seconds,
        r.native->seconds, r.ratio(), ws, ds, cs, i % 2 == 0 ? "ours 1st" : "comp 1st");
    ratios.push_back(r.ratio());
  }
  if (ratios.empty()) {
    say("   no complete run\n");
    return;
  }
  std::sort(ratios.begin(), ratios.end());
  double sum = 0;
  for (double x : ratios) sum += x;
  say("   comp/ours: median %.3fx, mean %.3fx over %zu runs (above 1: ours is faster)\n",
      ratios[(ratios.size() - 1) / 2], sum / static_cast<double>(ratios.size()), ratios.size());
}

void printResults(const Bench& b, const std::vector<Rep>& reps,
                  const std::optional<Status>& native_failed, const SteadyResult* steady,
                  const std::optional<Status>& steady_failed) {
  // The run with the median ratio (or median time of ours, without native) stands for all.
  std::vector<size_t> order(reps.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    return reps[x].native && reps[y].native ? reps[x].ratio() < reps[y].ratio()
                                            : reps[x].ours.seconds > reps[y].ours.seconds;
  });
  const Rep& med = reps[order[(order.size() - 1) / 2]];  // the lower middle of an even count
  const Backlog& backlog = med.backlog;
  const CatchupResult& ours = med.ours;
  const std::optional<CatchupResult>& native = med.native;
  const double changes = static_cast<double>(backlog.tenant_changes);
  if (reps.size() > 1) {
    say("\n== (a) backlog catch-up, every run (same backlog for both within a run; the table "
        "below is the median run by ratio)\n");
    say("   %-5s %12s %12s %12s %8s\n", "run", "ours s", "native s", "ours/native", "order");
    for (size_t i = 0; i < reps.size(); ++i) {
      const Rep& r = reps[i];
      char nat[32] = "-", rat[32] = "-";
      if (r.native) {
        std::snprintf(nat, sizeof nat, "%.2f", r.native->seconds);
        std::snprintf(rat, sizeof rat, "%.2fx", r.ratio());
      }
      say("   %-5zu %12.2f %12s %12s %8s\n", i + 1, r.ours.seconds, nat, rat,
          i % 2 == 0 ? "ours 1st" : "native 1st");
    }
  }
  say("\n== (a) backlog catch-up: the same backlog for both, made while the applier was stopped\n");
  say("   backlog: tenant 42: %s row changes in %s transactions (+ %s changes in %s transactions "
      "of tenants 1-3, dropped by the row filter), %s of WAL\n",
      withCommas(backlog.tenant_changes).c_str(), withCommas(backlog.tenant_txns).c_str(),
      withCommas(backlog.other_changes).c_str(), withCommas(backlog.other_txns).c_str(),
      humanBytes(static_cast<double>(backlog.wal_bytes)).c_str());
  say("   seconds = wall clock: ours = the whole `stampmover migrate --until-caught-up` process "
      "(start-up to exit);\n   its catch-up phase = \"applied in X s\" from its own report line;\n "
      "  native = ALTER SUBSCRIPTION ENABLE until the slot's "
      "confirmed_flush_lsn >= the source's WAL position after the backlog.\n   changes/s = "
      "tenant 42's row changes / seconds. CPU = user+sys.\n\n");
  say("   %-34s %9s %12s %10s %10s %9s\n", "method", "seconds", "changes/s", "vs native",
      "peak RSS", "client CPU");
  char vs[32] = "-";
  if (native) std::snprintf(vs, sizeof vs, "%.2fx", native->seconds / ours.seconds);
  say("   %-34s %9.2f %12s %10s %10s %9.1f\n", "ours (stampmover migrate)", ours.seconds,
      fmtRate(changes / ours.seconds).c_str(), vs,
      (std::to_string(ours.maxrss_kib.value_or(0) / 1024) + " MiB").c_str(),
      ours.cpu_seconds.value_or(0));
  if (ours.inner_seconds && *ours.inner_seconds > 0) {
    char vs_inner[32] = "-";
    if (native)
      std::snprintf(vs_inner, sizeof vs_inner, "%.2fx", native->seconds / *ours.inner_seconds);
    say("   %-34s %9.2f %12s %10s %10s %9s\n", "  ours, catch-up phase only", *ours.inner_seconds,
        fmtRate(changes / *ours.inner_seconds).c_str(), vs_inner, "", "");
  }
  if (native) {
    say("   %-34s %9.2f %12s %10s %10s %9s\n", "native subscription", native->seconds,
        fmtRate(changes / native->seconds).c_str(), "1.00x", "-", "-");
  } else {
    say("   %-34s %9s   %s\n", "native subscription", "-",
        native_failed
            ? ("FAILED: " + native_failed->message().substr(0, native_failed->message().find('\n')))
                  .c_str()
            : "skipped (--skip-native)");
  }
  if (ours.reported_changes) {
    say("   (stampmover's own count: %s changes applied in the timed run; the benchmark counted "
        "%s tenant row changes)\n",
        withCommas(*ours.reported_changes).c_str(), withCommas(backlog.tenant_changes).c_str());
  }
  say("\n   where the time went (pg_stat_activity every 100 ms; server CPU from /proc; machine "
      "busy = all %ld cores):\n",
      sysconf(_SC_NPROCESSORS_ONLN));
  printServers("ours", ours);
  say("   %-7s %-28s %.0f%%\n", "ours", "machine busy", 100 * ours.servers.machine_busy);
  if (native) {
    printServers("native", *native);
    say("   %-7s %-28s %.0f%%\n", "native", "machine busy", 100 * native->servers.machine_busy);
  }

  if (steady) {
    say("\n== (b) steady lag: ours following a fixed-rate writer (`stampmover migrate`, no "
        "--until-caught-up)\n");
    say("   writer: %u tx/s target (half tenant 42, half tenants 1-3; 1-3 row changes each) for "
        "%u s: %s tx (%.0f tx/s), %s row changes (%s of tenant 42); writers at most %.0f ms "
        "behind schedule\n",
        b.args.rate, b.args.steady_seconds, withCommas(steady->txns).c_str(),
        static_cast<double>(steady->txns) / steady->seconds, withCommas(steady->changes).c_str(),
        withCommas(steady->tenant_changes).c_str(), steady->max_behind_ms);
    say("   lag = a tenant-42 marker row's source commit -> visible at the destination (one marker "
        "per 200 ms, polled every 10 ms)\n");
    say("   %-10s %8s %8s %8s %8s %8s %10s %9s\n", "markers", "missing", "p50 ms", "p99 ms",
        "max ms", "mean ms", "peak RSS", "exit");
    double mean = 0;
    for (double v : steady->lag_ms) mean += v;
    if (!steady->lag_ms.empty()) mean /= static_cast<double>(steady->lag_ms.size());
    say("   %-10zu %8llu %8.0f %8.0f %8.0f %8.0f %10s %9s\n", steady->lag_ms.size(),
        static_cast<unsigned long long>(steady->markers_missing), percentile(steady->lag_ms, 0.5),
        percentile(steady->lag_ms, 0.99), percentile(steady->lag_ms, 1.0), mean,
        (std::to_string(steady->maxrss_kib / 1024) + " MiB").c_str(),
        steady->exit_code == 130 ? "130 (ok)" : std::to_string(steady->exit_code).c_str());
  } else if (steady_failed) {
    say("\n== (b) steady lag: FAILED: %s\n", steady_failed->message().c_str());
  }

  say("\n== targets\n");
  if (native) {
    double ratio = native->seconds / ours.seconds;
    say("   ours/native changes/s: %.2f%s (target >= 1.5: %s)\n", ratio,
        reps.size() > 1 ? (", median of " + std::to_string(reps.size()) + " runs").c_str() : "",
        ratio >= 1.5 ? "met" : "MISSED");
  } else {
    say("   ours/native changes/s: n/a (native %s)\n", native_failed ? "failed" : "skipped");
  }
  if (steady) {
    double mx = percentile(steady->lag_ms, 1.0);
    bool met = steady->markers_missing == 0 && !steady->lag_ms.empty() && mx < 1000;
    say("   steady lag: max %.0f ms, p99 %.0f ms (target < 1000 ms: %s)\n", mx,
        percentile(steady->lag_ms, 0.99), met ? "met" : "MISSED");
  } else {
    say("   steady lag: n/a (failed)\n");
  }
  double rss = static_cast<double>(ours.maxrss_kib.value_or(0)) / 1024;
  say("   peak RSS of migrate during the backlog run: %.1f MiB (target < 256: %s)\n", rss,
      rss < 256 ? "met" : "MISSED");
}

int fail(const Status& st) { return reportError("bench_cdc", st.message()); }

int runBench(const Args& args) {
  if (Status st = checkRange("--changes", args.changes, 100, kMaxChanges); !st.isOk()) {
    return fail(st);
  }
  if (Status st = checkRange("--rate", args.rate, 2, kMaxRate); !st.isOk()) return fail(st);
  if (Status st = checkRange("--steady-seconds", args.steady_seconds, 1, kMaxSteadySeconds);
      !st.isOk()) {
    return fail(st);
  }
  if (Status st = checkRange("--seed-items", args.seed_items, 100, kMaxSeedItems); !st.isOk()) {
    return fail(st);
  }
  if (Status st = checkStampmoverBinary(args.stampmover); !st.isOk()) return fail(st);
  if (!args.compare.empty() && access(args.compare.c_str(), X_OK) != 0) {
    return fail(Status::refused("--compare binary '" + args.compare + "' is not executable"));
  }
  auto work = makeTempDir("stampmover-bench-cdc");
  if (!work) return fail(work.status());
  RemoveDir remove_dir{*work};

  Bench b;
  b.args = args;
  b.work_dir = *work;
  b.state_dir = *work + "/state";
  say("== starting two throwaway clusters (PostgreSQL 15, 127.0.0.1 only)\n");
  if (Status st = startCluster("bench-src", b.src_cluster); !st.isOk()) return fail(st);
  if (Status st = startCluster("bench-dst", b.dst_cluster); !st.isOk()) return fail(st);
  say("   bench-src: port %d   bench-dst: port %d\n", b.src_cluster->port(), b.dst_cluster->port());
  say("== seeding %s and %s alike: tenant 42 with %s order_items (~%s rows in 5 tables), "
      "tenants 1, 2, 3 with as many between them, interleaved\n",
      kOursDb, kNativeDb, withCommas(args.seed_items).c_str(),
      withCommas(harness::seededTenantRows(args.seed_items)).c_str());
  auto t_seed = Clock::now();
  const bool compare = !args.compare.empty();
  const bool second = !args.skip_native || compare;  // app_native is used
  if (Status st = openPair(b, b.ours, kOursDb); !st.isOk()) return fail(st);
  if (second) {
    if (Status st = openPair(b, b.native, kNativeDb); !st.isOk()) return fail(st);
  }
  say("   seeded in %.1f s\n", secondsSince(t_seed));

  const uint64_t txns = (args.changes + kChangesPerTxn - 1) / kChangesPerTxn;
  const uint64_t stride = (txns + 3) / 4 * 4;  // repetitions use disjoint transaction numbers
  if (stride * args.repeat >= 10'000'000) {
    return fail(Status::refused("--changes x --repeat is too large (keys would collide)"));
  }

  // Both set up first; before each side's backlog, its slot skips (untimed) the other's WAL.
  say("== ours: `stampmover migrate --until-caught-up` (copy + first catch-up, untimed)\n");
  if (Status st = initialOurs(b, oursSide(b)); !st.isOk()) return fail(st);
  if (compare) {
    say("== compare: `%s migrate --until-caught-up` on %s (copy + first catch-up, untimed)\n",
        args.compare.c_str(), kNativeDb);
    if (Status st = initialOurs(b, compareSide(b)); !st.isOk()) return fail(st);
  }
  std::optional<Status> native_failed;
  if (!args.skip_native && !compare) {
    say("== native: publication (same row filter), subscription (copy_data = true), synced, "
        "disabled\n");
    if (Status st = setupNative(b); !st.isOk()) {
      say("   native FAILED: %s\n", st.message().c_str());
      native_failed = st;
    }
  }

  std::vector<Rep> reps;
  for (uint32_t r = 0; r < args.repeat; ++r) {
    Rep rep;
    std::optional<Backlog> native_backlog;
    const uint64_t base = stride * r;
    auto runOurs = [&]() -> Status {
      if (second) SM_RETURN_IF_ERROR(skipOtherWal(b.ours, "stampmover%"));
      say("== run %u of %u, ours: backlog of %s transactions per side while stampmover is not "
          "running\n", r + 1, args.repeat, withCommas(txns).c_str());
      SM_ASSIGN_OR_RETURN(rep.backlog, generateBacklog(b.ours, txns, base));
      say("== run %u, ours: timing `stampmover migrate --until-caught-up` on the backlog\n", r + 1);
      auto ours = timeOurs(b, oursSide(b));
      if (!ours) return ours.status().withContext("ours");
      say("   %.2f s, %s tenant changes/s, peak RSS %ld MiB\n", ours->seconds,
          fmtRate(static_cast<double>(rep.backlog.tenant_changes) / ours->seconds).c_str(),
          ours->maxrss_kib.value_or(0) / 1024);
      rep.ours = *ours;
      return checkPair(b.ours, "ours after the backlog");
    };
    auto runNative = [&]() -> Status {
      SM_RETURN_IF_ERROR(skipOtherWal(b.native, "bench_sub"));
      say("== run %u of %u, native: the same backlog while the subscription is disabled\n", r + 1,
          args.repeat);
      SM_ASSIGN_OR_RETURN(Backlog nb, generateBacklog(b.native, txns, base));
      say("== run %u, native: timing ALTER SUBSCRIPTION ENABLE until caught up\n", r + 1);
      SM_ASSIGN_OR_RETURN(CatchupResult n, timeNative(b, nb.end_lsn));
      say("   %.2f s, %s tenant changes/s\n", n.seconds,
          fmtRate(static_cast<double>(nb.tenant_changes) / n.seconds).c_str());
      SM_RETURN_IF_ERROR(checkPair(b.native, "native after the backlog"));
      native_backlog = nb;
      rep.native = n;
      return disableNative(b);
    };
    auto runCompare = [&]() -> Status {
      SM_RETURN_IF_ERROR(skipOtherWal(b.native, "stampmover%"));
      say("== run %u of %u, compare: the same backlog in %s\n", r + 1, args.repeat, kNativeDb);
      SM_ASSIGN_OR_RETURN(Backlog nb, generateBacklog(b.native, txns, base));
      say("== run %u, compare: timing `%s migrate --until-caught-up`\n", r + 1,
          args.compare.c_str());
      SM_ASSIGN_OR_RETURN(CatchupResult n, timeOurs(b, compareSide(b)));
      say("   %.2f s\n", n.seconds);
      SM_RETURN_IF_ERROR(checkPair(b.native, "compare after the backlog"));
      native_backlog = nb;
      rep.native = n;
      return Status::ok();
    };
    auto native = [&] {
      if (native_failed || (args.skip_native && !compare)) return;
      if (Status st = compare ? runCompare() : runNative(); !st.isOk()) {
        say("   native FAILED: %s\n", st.message().c_str());
        native_failed = st;
        rep.native.reset();
      }
    };
    // Alternating order, so that a drift of the machine's speed does not favour one side.
    if (r % 2 == 1) native();
    if (Status st = runOurs(); !st.isOk()) return fail(st);
    if (r % 2 == 0) native();
    if (native_backlog && (native_backlog->tenant_changes != rep.backlog.tenant_changes ||
                           native_backlog->tenant_txns != rep.backlog.tenant_txns ||
                           native_backlog->other_changes != rep.backlog.other_changes)) {
      return fail(Status::internal("the two backlogs differ: " +
                                   std::to_string(native_backlog->tenant_changes) + " vs " +
                                   std::to_string(rep.backlog.tenant_changes) + " tenant changes"));
    }
    reps.push_back(std::move(rep));
  }
  if (compare) {
    printCompare(b, reps);
    for (const Side& side : {oursSide(b), compareSide(b)}) cleanupSide(b, side);
    say("== stopping the clusters\n");
    return native_failed ? 1 : 0;
  }
  if (!args.skip_native) cleanupNative(b);  // the steady phase runs without a second slot

  // (b) steady lag.
  say("== ours: steady lag, %u tx/s for %u s with `stampmover migrate` following\n", args.rate,
      args.steady_seconds);
  auto steady = runSteady(b);
  std::optional<Status> steady_failed;
  if (!steady) {
    say("   steady FAILED: %s\n", steady.status().message().c_str());
    steady_failed = steady.status();
  }

  printResults(b, reps, native_failed, steady ? &*steady : nullptr, steady_failed);

  cleanupSide(b, oursSide(b));
  say("== stopping the clusters\n");
  return native_failed || steady_failed ? 1 : 0;
}

}  // namespace

// `--source kafka`: the Kafka (Debezium) source against the pgoutput path (issue 14) is its own
// program (bench/kafka); this runs it with the other arguments. Returns only if exec fails.
int execKafkaBench(int argc, char** argv) {
  std::vector<char*> args = {const_cast<char*>(BENCH_KAFKA_BIN)};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--source") {
      ++i;  // and its value
      continue;
    }
    if (a.rfind("--source=", 0) == 0) continue;
    args.push_back(argv[i]);
  }
  args.push_back(nullptr);
  execv(BENCH_KAFKA_BIN, args.data());
  return reportError("bench_cdc", std::string("cannot run ") + BENCH_KAFKA_BIN + ": " +
                                      std::strerror(errno));
}

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--source" && i + 1 < argc && std::string(argv[i + 1]) == "kafka") ||
        a == "--source=kafka") {
      return execKafkaBench(argc, argv);
    }
  }
  Args args;
  std::string source = "pgoutput";
  CLI::App app{
      "bench_cdc: times the live catch-up of one tenant (`stampmover migrate`) on a backlog "
      "made while it was stopped, against a native subscription with the same row filter "
      "catching up the same backlog, then measures our lag under a fixed-rate writer; all in "
      "one run on two throwaway local clusters (127.0.0.1). Every result is checked: the "
      "destination's tenant rows must equal the source's."};
  app.add_option("--changes", args.changes,
                 "Tenant 42's row changes in the backlog (5 per transaction; other tenants get "
                 "as many, which the row filter drops)")
      ->capture_default_str();
  app.add_option("--rate", args.rate,
                 "Steady phase: transactions per second (half tenant 42, half tenants 1-3), "
                 "1-3 row changes each")
      ->capture_default_str();
  app.add_option("--steady-seconds", args.steady_seconds, "Steady phase: seconds of load")
      ->capture_default_str();
  app.add_flag("--skip-native", args.skip_native, "Skip the native baseline (quick tries)");
  app.add_option("--compare", args.compare,
                 "A/B of two builds: time this second stampmover binary instead of the native "
                 "subscription, on the same backlog in the other database, in alternating order "
                 "(the steady phase is skipped); prints both, their CPU and the ratio");
  app.add_option("--seed-items", args.seed_items,
                 "Tenant 42's seeded order_items before the copy (about 3x that in all)")
      ->capture_default_str();
  app.add_option("--repeat", args.repeat,
                 "Paired catch-up runs (each: a fresh backlog for both, ours and native timed in "
                 "alternating order); the median ratio is the result")
      ->capture_default_str()
      ->check(CLI::Range(1, 9));
  app.add_option("--max-batch", args.max_batch,
                 "Pass --max-batch to stampmover migrate (0 = its default)")
      ->capture_default_str();
  app.add_option("--stampmover", args.stampmover, "The stampmover binary to time")
      ->capture_default_str();
  app.add_option("--source", source,
                 "Change source: pgoutput (this benchmark), or kafka: the Kafka (Debezium) source "
                 "vs the pgoutput path on the same changes, with its own options (--items, "
                 "--txns, --partitions; see `bench_cdc --source kafka --help`)")
      ->capture_default_str()
      ->check(CLI::IsMember({"pgoutput", "kafka"}));
  CLI11_PARSE(app, argc, argv);
  // Clusters are owned inside runBench and stopped by their destructors on every return path;
  // catching here makes an unexpected exception unwind through them too.
  return runReportingExceptions("bench_cdc", [&] { return runBench(args); });
}
