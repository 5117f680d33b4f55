// Verify benchmark (bench/verify): the whole `stampmover verify` process against the
// server-side anchor an operator would otherwise run, in one run on the same two throwaway
// clusters and the same tenant: for every tenant table,
//   SELECT md5(string_agg(md5(t::text), '' ORDER BY <pk>)) FROM <table> t WHERE tenant_id = 42
// on both servers at once (one thread and one connection per server, the tables in sequence),
// timed until both servers have finished. The anchor only says equal or not; its digests must
// agree, and verify must exit 0 (identical), for a run to count.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
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

namespace {

using namespace stampmover::bench;  // NOLINT: shared benchmark helpers
using stampmover::common::PgConnection;

// Tenant tables of the demo schema.
constexpr const char* kTables[] = {"accounts", "orders", "order_items", "documents", "events"};
constexpr const char* kTenant = "42";
constexpr auto kChildTimeout = std::chrono::minutes(30);  // one copy or verify process
constexpr uint64_t kMaxRows = 50'000'000;                 // --rows upper bound
constexpr uint32_t kMaxRepeat = 20;                       // --repeat upper bound

struct Args {
  uint64_t rows = 1'000'000;  // Default: 1000000 tenant rows in order_items (~3M in all)
  uint32_t repeat = 3;        // Default: 3 runs per method
  uint32_t jobs = 0;          // Default: 0 (verify's own default --jobs)
  std::string stampmover = STAMPMOVER_BIN;  // Default: the binary built beside this benchmark
};

struct Bench {
  Args args;
  std::unique_ptr<harness::LocalCluster> src_cluster;
  std::unique_ptr<harness::LocalCluster> dst_cluster;
  PgConnection src;
  PgConnection dst;
  std::string src_dsn;
  std::string dst_dsn;
  std::vector<std::pair<std::string, std::string>> anchor_sql;  // table, query
  uint64_t total_rows = 0;
};

struct RunResult {
  double seconds = 0;
  std::optional<long> maxrss_kib;  // ours only
  std::optional<double> cpu_seconds;
};

std::vector<std::string> stampmoverArgv(const Bench& b, const std::string& state_dir,
                                        std::vector<std::string> rest) {
  std::vector<std::string> argv = {b.args.stampmover, "--state-dir", state_dir};
  argv.insert(argv.end(), rest.begin(), rest.end());
  return argv;
}

Status seedSource(Bench& b) {
  harness::SeedOptions seed;
  seed.tenant = 42;
  seed.tenant_items = b.args.rows;
  seed.other_items = b.args.rows;
  seed.others = {1, 2, 3};
  say("== seeding the source: tenant 42 with %s order_items (~%s rows in 5 tables), tenants "
      "1, 2, 3 with %s order_items between them\n",
      withCommas(b.args.rows).c_str(), withCommas(harness::seededTenantRows(b.args.rows)).c_str(),
      withCommas(b.args.rows).c_str());
  auto t0 = Clock::now();
  SM_RETURN_IF_ERROR(harness::seedTenants(b.src, seed).withContext("seed the source"));
  double seed_s = secondsSince(t0);
  auto t1 = Clock::now();
  SM_RETURN_IF_ERROR(b.src.exec("VACUUM (FREEZE, ANALYZE)"));
  say("   seeded in %.1f s; VACUUM (FREEZE, ANALYZE) %.1f s\n", seed_s, secondsSince(t1));
  return Status::ok();
}

// The untimed copy of the tenant with `stampmover copy`, then its slot and publication dropped.
Status copyTenant(Bench& b) {
  SM_ASSIGN_OR_RETURN(std::string dir, makeTempDir("stampmover-vbench-copy"));
  RemoveDir remove{dir};
  say("== copying tenant 42 with `stampmover copy` (not timed)\n");
  auto t0 = Clock::now();
  std::string log = dir + "/copy.log";
  SM_ASSIGN_OR_RETURN(
      ChildResult r,
      runChild(stampmoverArgv(b, dir + "/db",
                              {"copy", "--tenant", kTenant, "--source-dsn", b.src_dsn,
                               "--dest-dsn", b.dst_dsn, "--progress", "log"}),
               log, kChildTimeout, false));
  Status st = childStatus(r, "stampmover copy", log);
  std::string clog = dir + "/cleanup.log";
  auto c = runChild(
      stampmoverArgv(b, dir + "/db", {"cleanup", "--tenant", kTenant, "--source-dsn", b.src_dsn}),
      clog, std::chrono::minutes(2), false);
  SM_RETURN_IF_ERROR(st);
  if (!c) return c.status();
  SM_RETURN_IF_ERROR(childStatus(*c, "stampmover cleanup", clog));
  say("   copied in %.1f s\n", secondsSince(t0));
  // Settle the destination as the source was settled: hint bits, visibility map, statistics.
  SM_RETURN_IF_ERROR(b.dst.exec("VACUUM (FREEZE, ANALYZE)"));
  return Status::ok();
}

// Row counts of the tenant on both sides (must agree) and the anchor query of each table,
// ordered by the table's primary key as the catalog states it.
Status prepareTables(Bench& b) {
  say("== tenant 42 (source = destination row counts)\n");
  for (const char* t : kTables) {
    std::string count_sql = std::string("SELECT count(*) FROM ") + t + " WHERE tenant_id = " + kTenant;
    SM_ASSIGN_OR_RETURN(auto sv, b.src.queryValue(count_sql));
    SM_ASSIGN_OR_RETURN(auto dv, b.dst.queryValue(count_sql));
    SM_ASSIGN_OR_RETURN(uint64_t srows, parseU64(sv.value_or(""), "count"));
    SM_ASSIGN_OR_RETURN(uint64_t drows, parseU64(dv.value_or(""), "count"));
    if (srows != drows) {
      return Status::dataLoss(std::string("after the copy, ") + t + " has " +
                              std::to_string(srows) + " rows of tenant 42 on the source and " +
                              std::to_string(drows) + " on the destination");
    }
    SM_ASSIGN_OR_RETURN(
        auto pk, b.src.queryValue(
                     "SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord) FROM "
                     "pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
                     "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                     "WHERE i.indrelid = $1::regclass AND i.indisprimary",
                     {std::string(t)}));
    if (!pk || pk->empty()) return Status::internal(std::string("no primary key on ") + t);
    b.anchor_sql.emplace_back(t, std::string("SELECT md5(string_agg(md5(t::text), '' ORDER BY ") +
                                     *pk + ")) FROM " + t + " t WHERE tenant_id = " + kTenant);
    b.total_rows += srows;
    say("   %-12s %12s rows   ORDER BY %s\n", t, withCommas(srows).c_str(), pk->c_str());
  }
  say("   %-12s %12s rows\n", "total", withCommas(b.total_rows).c_str());
  return Status::ok();
}

Status checkpointBoth(Bench& b) {
  SM_RETURN_IF_ERROR(b.src.exec("CHECKPOINT"));
  return b.dst.exec("CHECKPOINT");
}

// The whole `stampmover verify` process, with a fresh state directory (no resumed chunks).
Result<RunResult> runOurs(Bench& b) {
  SM_ASSIGN_OR_RETURN(std::string dir, makeTempDir("stampmover-vbench-verify"));
  RemoveDir remove{dir};
  std::string log = dir + "/verify.log";
  std::vector<std::string> rest = {"verify",     "--tenant",  kTenant,   "--source-dsn",
                                   b.src_dsn,    "--dest-dsn", b.dst_dsn, "--progress",
                                   "log"};
  if (b.args.jobs) {
    rest.push_back("--jobs");
    rest.push_back(std::to_string(b.args.jobs));
  }
  SM_ASSIGN_OR_RETURN(ChildResult r,
                      runChild(stampmoverArgv(b, dir + "/db", rest), log, kChildTimeout, true));
  SM_RETURN_IF_ERROR(childStatus(r, "stampmover verify (exit 0 = identical expected)", log));
  RunResult out;
  out.seconds = r.seconds;
  out.maxrss_kib = r.maxrss_kib;
  out.cpu_seconds = r.cpu_seconds;
  return out;
}

// The anchor: every table's digest on both servers concurrently; wall time until both finish.
Result<RunResult> runAnchor(Bench& b) {
  // Connections are opened before the clock starts, as verify's are part of its process time
  // (a few ms either way).
  SM_ASSIGN_OR_RETURN(auto sconn, PgConnection::connect(b.src_dsn, "source (anchor)"));
  SM_ASSIGN_OR_RETURN(auto dconn, PgConnection::connect(b.dst_dsn, "destination (anchor)"));
  struct Side {
    PgConnection* conn;
    std::vector<std::string> digests;
    Status status = Status::ok();
    double seconds = 0;
  };
  Side sides[2] = {{&sconn, {}, Status::ok(), 0}, {&dconn, {}, Status::ok(), 0}};
  auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (auto& side : sides) {
    threads.emplace_back([&b, &side, t0] {
      for (const auto& [table, sql] : b.anchor_sql) {
        auto v = side.conn->queryValue(sql);
        if (!v) {
          side.status = v.status().withContext("anchor on " + table);
          return;
        }
        side.digests.push_back(v->value_or("NULL"));
      }
      side.seconds = secondsSince(t0);
    });
  }
  for (auto& t : threads) t.join();
  RunResult out;
  out.seconds = secondsSince(t0);
  SM_RETURN_IF_ERROR(sides[0].status);
  SM_RETURN_IF_ERROR(sides[1].status);
  for (size_t i = 0; i < b.anchor_sql.size(); ++i) {
    if (sides[0].digests[i] != sides[1].digests[i]) {
      return Status::dataLoss("anchor digests differ for " + b.anchor_sql[i].first + ": source " +
                              sides[0].digests[i] + ", destination " + sides[1].digests[i]);
    }
  }
  say("      | source %.2f s, destination %.2f s; all %zu table digests equal\n",
      sides[0].seconds, sides[1].seconds, b.anchor_sql.size());
  return out;
}

int fail(const Status& st) { return reportError("bench_verify", st.message()); }

int runBench(const Args& args) {
  if (Status st = checkRange("--rows", args.rows, 1, kMaxRows); !st.isOk()) return fail(st);
  if (Status st = checkRange("--repeat", args.repeat, 1, kMaxRepeat); !st.isOk()) return fail(st);
  if (Status st = checkStampmoverBinary(args.stampmover); !st.isOk()) return fail(st);
  Bench b;
  b.args = args;
  say("== starting two throwaway clusters (PostgreSQL 15, 127.0.0.1 only)\n");
  if (Status st = startCluster("vbench-src", b.src_cluster); !st.isOk()) return fail(st);
  if (Status st = startCluster("vbench-dst", b.dst_cluster); !st.isOk()) return fail(st);
  say("   source: port %d   destination: port %d\n", b.src_cluster->port(),
      b.dst_cluster->port());
  for (auto* c : {b.src_cluster.get(), b.dst_cluster.get()}) {
    if (Status st = c->createDatabase("app"); !st.isOk()) return fail(st);
  }
  b.src_dsn = b.src_cluster->dsn("app");
  b.dst_dsn = b.dst_cluster->dsn("app");
  auto src = PgConnection::connect(b.src_dsn, "source");
  if (!src) return fail(src.status());
  b.src = std::move(*src);
  auto dst = PgConnection::connect(b.dst_dsn, "destination");
  if (!dst) return fail(dst.status());
  b.dst = std::move(*dst);
  for (auto* c : {&b.src, &b.dst}) {
    if (Status st = c->exec("SET client_min_messages = warning"); !st.isOk()) return fail(st);
    if (Status st = harness::createDemoSchema(*c); !st.isOk()) return fail(st);
  }
  if (Status st = seedSource(b); !st.isOk()) return fail(st);
  if (Status st = copyTenant(b); !st.isOk()) return fail(st);
  if (Status st = prepareTables(b); !st.isOk()) return fail(st);

  std::vector<RunResult> ours, anchor;
  for (uint32_t rep = 1; rep <= args.repeat; ++rep) {
    // Alternate the order, so neither method always runs on the other's warm cache.
    for (int k = 0; k < 2; ++k) {
      bool run_ours = (k == 0) == (rep % 2 == 1);
      say("== run %u/%u: %s\n", rep, args.repeat,
          run_ours ? "ours (stampmover verify)" : "anchor (md5 string_agg, both servers)");
      if (Status st = checkpointBoth(b); !st.isOk()) return fail(st);
      auto r = run_ours ? runOurs(b) : runAnchor(b);
      if (!r) return fail(r.status().withContext(run_ours ? "ours" : "anchor"));
      (run_ours ? ours : anchor).push_back(*r);
      say("   %.2f s, %s rows/s%s\n", r->seconds,
          withCommas(static_cast<uint64_t>(static_cast<double>(b.total_rows) / r->seconds)).c_str(),
          r->maxrss_kib ? (", exit 0 (identical), peak RSS " +
                           std::to_string(*r->maxrss_kib / 1024) + " MiB")
                              .c_str()
                        : "");
    }
  }

  auto secs = [](const std::vector<RunResult>& v) {
    std::vector<double> s;
    for (const auto& r : v) s.push_back(r.seconds);
    return s;
  };
  double ours_med = median(secs(ours)), anchor_med = median(secs(anchor));
  long rss = 0;
  std::vector<double> cpu;
  for (const auto& r : ours) {
    rss = std::max(rss, r.maxrss_kib.value_or(0));
    if (r.cpu_seconds) cpu.push_back(*r.cpu_seconds);
  }
  say("\n== results: tenant 42, %s rows in 5 tables, %u run(s) each%s\n",
      withCommas(b.total_rows).c_str(), args.repeat,
      args.jobs ? (", verify --jobs " + std::to_string(args.jobs)).c_str()
                : ", verify's default --jobs");
  say("   seconds = wall clock: ours = the whole `stampmover verify` process (exit 0); anchor = "
      "md5(string_agg(md5(t::text) ORDER BY pk))\n   of every table on both servers at once "
      "until both finish (digests equal). CPU = client process user+sys.\n\n");
  say("   %-28s %4s %9s %9s %11s %9s %10s %7s\n", "method", "runs", "median s", "best s",
      "rows/s", "vs anchor", "peak RSS", "CPU s");
  for (int k = 0; k < 2; ++k) {
    const auto& v = k == 0 ? ours : anchor;
    auto s = secs(v);
    double med = median(s);
    double best = *std::min_element(s.begin(), s.end());
    char rss_s[24] = "-", cpu_s[16] = "-";
    if (k == 0) {
      std::snprintf(rss_s, sizeof rss_s, "%.1f MiB", static_cast<double>(rss) / 1024);
      if (!cpu.empty()) std::snprintf(cpu_s, sizeof cpu_s, "%.1f", median(cpu));
    }
    say("   %-28s %4zu %9.2f %9.2f %11s %8.2fx %10s %7s\n",
        k == 0 ? "ours (stampmover verify)" : "anchor (both servers)", v.size(), med, best,
        withCommas(static_cast<uint64_t>(static_cast<double>(b.total_rows) / med)).c_str(),
        med / anchor_med, rss_s, cpu_s);
  }
  double ratio = ours_med / anchor_med;
  double rss_mib = static_cast<double>(rss) / 1024;
  say("\n== targets: ours/anchor %.2f (target <= 0.67: %s)  peak RSS %.1f MiB (target < 256: "
      "%s)\n",
      ratio, ratio <= 0.67 ? "met" : "MISSED", rss_mib, rss_mib < 256 ? "met" : "MISSED");
  say("== stopping the clusters\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  CLI::App app{
      "bench_verify: times `stampmover verify` of one tenant against the server-side anchor "
      "(md5 of string_agg of md5(row::text) ordered by primary key, per table, on both servers "
      "at once), in one run on two throwaway local clusters (127.0.0.1). The tenant is copied "
      "first with `stampmover copy` (untimed); verify must exit 0 and the anchor digests must "
      "agree."};
  app.add_option("--rows", args.rows,
                 "Tenant 42's rows in order_items (about 3x that in all five tables); other "
                 "tenants get as many")
      ->capture_default_str();
  app.add_option("--repeat", args.repeat, "Runs per method, alternating (median and best shown)")
      ->capture_default_str();
  app.add_option("--jobs", args.jobs, "--jobs passed to verify (0 = verify's default)")
      ->capture_default_str();
  app.add_option("--stampmover", args.stampmover, "The stampmover binary to time")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return runReportingExceptions("bench_verify", [&] { return runBench(args); });
}
