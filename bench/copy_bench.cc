// Copy benchmark: the snapshot copy of one tenant (`stampmover copy`, at several --jobs) against
// the two baselines an operator would otherwise use, all in one run on the same two throwaway
// clusters: a single-stream binary COPY pipe through psql, and native logical replication's
// initial table sync (a subscription to a row-filtered publication). Every figure is for a
// copy whose per-table row counts were checked against the source.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstring>
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

namespace {

using namespace stampmover::bench;  // NOLINT: shared benchmark helpers
using stampmover::common::PgConnection;

// Tenant tables of the demo schema, parents before children (the pipe loads with FK checks on).
constexpr const char* kTables[] = {"accounts", "orders", "order_items", "documents", "events"};
constexpr const char* kTenant = "42";
// Bounds on every load the benchmark starts.
constexpr auto kChildTimeout = std::chrono::minutes(30);   // one copy process or pipe sequence
constexpr auto kNativeTimeout = std::chrono::minutes(20);  // native initial sync
// wal_retrieve_retry_interval (default 5 s) plus a margin: see runNative().
constexpr auto kLauncherInterval = std::chrono::milliseconds(5500);
constexpr uint64_t kMaxRows = 50'000'000;  // --rows upper bound
constexpr uint32_t kMaxJobs = 16;          // --jobs-list entries upper bound
constexpr uint32_t kMaxRepeat = 20;        // --repeat upper bound

struct Args {
  uint64_t rows = 1'000'000;        // Default: 1000000 tenant rows in order_items (~3M in all)
  std::string jobs_list = "1,2,4";  // Default: "1,2,4"
  uint32_t repeat = 1;              // Default: 1 run per method
  bool keep_going = false;          // Default: false (the first failed run aborts)
  bool pipe_no_fk = false;          // Default: false (no extra diagnostic pipe row)
  std::string stampmover = STAMPMOVER_BIN;  // Default: the binary built beside this benchmark
};

struct TableCount {
  uint64_t rows = 0;
  uint64_t bytes = 0;
};

struct Bench {
  Args args;
  std::unique_ptr<harness::LocalCluster> src_cluster;
  std::unique_ptr<harness::LocalCluster> dst_cluster;
  PgConnection src;
  PgConnection dst;
  std::string src_dsn;
  std::string dst_dsn;
  std::map<std::string, TableCount> source_counts;
  uint64_t total_rows = 0;
  uint64_t total_bytes = 0;
  std::optional<Clock::time_point> last_native_start;  // CREATE SUBSCRIPTION of the last run
};

struct RunResult {
  double seconds = 0;
  std::optional<long> maxrss_kib;       // ours and pipe only
  std::optional<double> cpu_seconds;    // client-side CPU (ours, pipe)
  std::optional<double> inner_seconds;  // ours: copy phase as the copy report states it
};

// Seeds the source while a second connection prints what is running every 10 s.
Status seedSource(Bench& b) {
  harness::SeedOptions seed;
  seed.tenant = 42;
  seed.tenant_items = b.args.rows;
  seed.other_items = b.args.rows;
  seed.others = {1, 2, 3};
  say("== seeding the source: tenant 42 with %s order_items (~%s rows in 5 tables), tenants "
      "1, 2, 3 with %s order_items between them, interleaved in the same pages\n",
      withCommas(b.args.rows).c_str(), withCommas(harness::seededTenantRows(b.args.rows)).c_str(),
      withCommas(b.args.rows).c_str());
  auto t0 = Clock::now();
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread monitor([&] {
    auto mon = PgConnection::connect(b.src_dsn, "source (monitor)");
    if (!mon) return;  // progress lines only; seeding reports its own errors
    std::unique_lock lock(mu);
    while (!cv.wait_for(lock, std::chrono::seconds(10), [&] { return done; })) {
      auto r = mon->query(
          "SELECT pg_database_size(current_database()), "
          "(SELECT query FROM pg_stat_activity WHERE datname = current_database() AND "
          " state = 'active' AND pid <> pg_backend_pid() ORDER BY query_start LIMIT 1)");
      if (!r) continue;
      std::string q = stampmover::common::cell(*r, 0, 1);
      std::string step = "?";
      if (auto p = q.find("INSERT INTO "); p != std::string::npos) {
        step = q.substr(p, q.find(' ', p + 12) - p);
      } else if (q.find("ANALYZE") != std::string::npos) {
        step = "ANALYZE";
      }
      auto size = parseU64(stampmover::common::cell(*r, 0, 0), "size");
      say("   seeding: %4.0f s, source database %s, running: %s\n", secondsSince(t0),
          size ? humanBytes(static_cast<double>(*size)).c_str() : "?", step.c_str());
    }
  });
  Status st = harness::seedTenants(b.src, seed);
  {
    std::lock_guard lock(mu);
    done = true;
  }
  cv.notify_all();
  monitor.join();
  SM_RETURN_IF_ERROR(st.withContext("seed the source"));
  double seed_s = secondsSince(t0);
  // Set hint bits and the visibility map now, so that no run pays for them and every method
  // reads the same, settled heap.
  auto t1 = Clock::now();
  SM_RETURN_IF_ERROR(b.src.exec("VACUUM (FREEZE, ANALYZE)"));
  double vacuum_s = secondsSince(t1);
  SM_ASSIGN_OR_RETURN(auto size_text,
                      b.src.queryValue("SELECT pg_database_size(current_database())"));
  SM_ASSIGN_OR_RETURN(uint64_t size, parseU64(size_text.value_or("0"), "database size"));
  say("   seeded in %.1f s; VACUUM (FREEZE, ANALYZE) %.1f s; source database %s\n", seed_s,
      vacuum_s, humanBytes(static_cast<double>(size)).c_str());
  return Status::ok();
}

Status countSource(Bench& b) {
  for (const char* t : kTables) {
    SM_ASSIGN_OR_RETURN(auto r, b.src.query(std::string("SELECT count(*), "
                                                        "coalesce(sum(pg_column_size(t.*)), 0) "
                                                        "FROM ") +
                                                t + " t WHERE tenant_id = $1",
                                            {kTenant}));
    SM_ASSIGN_OR_RETURN(uint64_t rows, parseU64(stampmover::common::cell(r, 0, 0), "count"));
    SM_ASSIGN_OR_RETURN(uint64_t bytes, parseU64(stampmover::common::cell(r, 0, 1), "size"));
    b.source_counts[t] = {rows, bytes};
    b.total_rows += rows;
    b.total_bytes += bytes;
    say("   %-12s %12s rows %12s\n", t, withCommas(rows).c_str(),
        humanBytes(static_cast<double>(bytes)).c_str());
  }
  say("   %-12s %12s rows %12s  (bytes: sum of pg_column_size(row) on the source; used for "
      "MB/s)\n",
      "total", withCommas(b.total_rows).c_str(),
      humanBytes(static_cast<double>(b.total_bytes)).c_str());
  return Status::ok();
}

// Empty destination, both servers checkpointed: the same start for every run.
Status prepareRun(Bench& b) {
  SM_RETURN_IF_ERROR(
      b.dst.exec("TRUNCATE accounts, orders, order_items, documents, events CASCADE"));
  SM_RETURN_IF_ERROR(b.src.exec("CHECKPOINT"));
  return b.dst.exec("CHECKPOINT");
}

// Every run must leave exactly the source's tenant rows, and nothing else, at the destination.
Status checkDestination(Bench& b) {
  for (const char* t : kTables) {
    SM_ASSIGN_OR_RETURN(auto r, b.dst.query(std::string("SELECT count(*) FILTER (WHERE tenant_id "
                                                        "= $1), count(*) FROM ") +
                                                t,
                                            {kTenant}));
    SM_ASSIGN_OR_RETURN(uint64_t tenant_rows, parseU64(stampmover::common::cell(r, 0, 0), "count"));
    SM_ASSIGN_OR_RETURN(uint64_t all_rows, parseU64(stampmover::common::cell(r, 0, 1), "count"));
    uint64_t want = b.source_counts[t].rows;
    if (tenant_rows != want || all_rows != want) {
      return Status::dataLoss(std::string("destination table ") + t + " has " +
                              std::to_string(tenant_rows) + " rows of tenant 42 and " +
                              std::to_string(all_rows - tenant_rows) +
                              " of other tenants; the "
                              "source has " +
                              std::to_string(want) + " of tenant 42");
    }
  }
  return Status::ok();
}

std::vector<std::string> stampmoverArgv(const Bench& b, const std::string& state_dir,
                                        std::vector<std::string> rest) {
  std::vector<std::string> argv = {b.args.stampmover, "--state-dir", state_dir};
  argv.insert(argv.end(), rest.begin(), rest.end());
  return argv;
}

// Drops the tenant's slot and publication left by a copy, and the local state with them.
Status cleanupOurs(const Bench& b, const std::string& state_dir) {
  std::string log = state_dir + "/cleanup.log";
  SM_ASSIGN_OR_RETURN(
      ChildResult r,
      runChild(
          stampmoverArgv(b, state_dir, {"cleanup", "--tenant", kTenant, "--source-dsn", b.src_dsn}),
          log, std::chrono::minutes(2), false));
  return childStatus(r, "stampmover cleanup", log);
}

Result<RunResult> runOurs(Bench& b, uint32_t jobs) {
  SM_ASSIGN_OR_RETURN(std::string state_dir, makeTempDir("stampmover-bench-state"));
  RemoveDir remove_dir{state_dir};
  std::string log = state_dir + "/copy.log";
  std::vector<std::string> argv =
      stampmoverArgv(b, state_dir + "/db",
                     {"copy", "--tenant", kTenant, "--source-dsn", b.src_dsn, "--dest-dsn",
                      b.dst_dsn, "--progress", "log", "--jobs", std::to_string(jobs)});
  SM_ASSIGN_OR_RETURN(ChildResult r, runChild(argv, log, kChildTimeout, true));
  Status st = childStatus(r, "stampmover copy --jobs " + std::to_string(jobs), log);
  // The slot and publication are dropped whether or not the copy succeeded.
  Status clean = cleanupOurs(b, state_dir + "/db");
  SM_RETURN_IF_ERROR(st);
  SM_RETURN_IF_ERROR(clean);
  RunResult out;
  out.seconds = r.seconds;
  out.maxrss_kib = r.maxrss_kib;
  out.cpu_seconds = r.cpu_seconds;
  // "  total: N rows, X in S s (...)": the copy phase alone, without start-up, preflight, slot.
  std::string text = readFile(log);
  if (auto p = text.find("  total: "); p != std::string::npos) {
    auto in = text.find(" in ", p);
    if (in != std::string::npos) out.inner_seconds = std::strtod(text.c_str() + in + 4, nullptr);
  }
  return out;
}

// `no_fk` loads with session_replication_role = replica at the destination, as ours and the
// native apply do: a diagnostic row that separates the FK checks' cost from the pipe's.
Result<RunResult> runPipe(Bench& b, bool no_fk) {
  SM_ASSIGN_OR_RETURN(std::string dir, makeTempDir("stampmover-bench-pipe"));
  RemoveDir remove_dir{dir};
  std::string psql = shQuote(harness::pgBinDir() + "/psql") + " -X -q -v ON_ERROR_STOP=1";
  std::string script = "set -e\n";
  for (const char* t : kTables) {
    script += psql + " -d " + shQuote(b.src_dsn) + " -c " +
              shQuote(std::string("\\copy (SELECT * FROM ") + t + " WHERE tenant_id = " + kTenant +
                      ") TO STDOUT (FORMAT binary)") +
              " | " + (no_fk ? "PGOPTIONS='-c session_replication_role=replica' " : "") + psql +
              " -d " + shQuote(b.dst_dsn) + " -c " +
              shQuote(std::string("\\copy ") + t + " FROM STDIN (FORMAT binary)") + "\n";
  }
  std::string log = dir + "/pipe.log";
  SM_ASSIGN_OR_RETURN(ChildResult r, runChild({"/bin/sh", "-c", script}, log, kChildTimeout, true));
  SM_RETURN_IF_ERROR(childStatus(r, "psql pipe", log));
  RunResult out;
  out.seconds = r.seconds;
  out.maxrss_kib = r.maxrss_kib;
  out.cpu_seconds = r.cpu_seconds;
  return out;
}

// Best effort: a failed native run must not leave a subscription, its slots or the publication.
void cleanupNative(Bench& b) {
  if (!b.dst.exec("DROP SUBSCRIPTION IF EXISTS bench_sub").isOk()) {
    // The source side may be unreachable: detach the slot and drop the subscription locally.
    b.dst.exec("ALTER SUBSCRIPTION bench_sub DISABLE").ignore();  // best effort, see above
    b.dst.exec("ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE)").ignore();  // idem
    b.dst.exec("DROP SUBSCRIPTION IF EXISTS bench_sub").ignore();                // idem
  }
  // Slots the subscription could not drop (main slot and tablesync slots): drop them here.
  b.src
      .exec(
          "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT "
          "active AND (slot_name = 'bench_sub' OR slot_name LIKE 'pg\\_%\\_sync\\_%')")
      .ignore();  // best effort: leftovers only cost WAL retention on a throwaway cluster
  b.src.exec("DROP PUBLICATION IF EXISTS bench_pub").ignore();  // best effort, as above
}

Result<RunResult> runNative(Bench& b) {
  std::string pub = "CREATE PUBLICATION bench_pub FOR TABLE ";
  for (size_t i = 0; i < std::size(kTables); ++i) {
    pub += std::string(i ? ", " : "") + kTables[i] + " WHERE (tenant_id = " + kTenant + ")";
  }
  SM_RETURN_IF_ERROR(b.src.exec(pub));
  SM_ASSIGN_OR_RETURN(std::string conninfo, b.dst.escapeLiteral(b.src_dsn));
  // The launcher starts apply workers at most once per wal_retrieve_retry_interval (5 s by
  // default); a subscription created sooner after the previous run's would wait out the rest
  // of it, a delay no single real migration sees. Let that interval pass untimed.
  if (b.last_native_start) {
    auto since = Clock::now() - *b.last_native_start;
    if (since < kLauncherInterval) {
      say("   (waiting %.1f s, untimed, for the replication launcher's retry interval)\n",
          std::chrono::duration<double>(kLauncherInterval - since).count());
      std::this_thread::sleep_for(kLauncherInterval - since);
    }
  }
  auto t0 = Clock::now();
  b.last_native_start = t0;
  Status st = b.dst.exec("CREATE SUBSCRIPTION bench_sub CONNECTION " + conninfo +
                         " PUBLICATION bench_pub WITH (copy_data = true)");
  if (!st.isOk()) {
    cleanupNative(b);
    return st;
  }
  RunResult out;
  auto last_report = Clock::now();
  for (;;) {
    auto r = b.dst.query(
        "SELECT count(*), count(*) FILTER (WHERE r.srsubstate IN ('r', 's')), "
        "coalesce(string_agg(r.srrelid::regclass::text || ':' || r.srsubstate::text, ' ' "
        "ORDER BY r.srrelid::regclass::text), '') FROM pg_subscription_rel r JOIN pg_subscription "
        "s ON "
        "s.oid = r.srsubid WHERE s.subname = 'bench_sub'");
    if (!r) {
      cleanupNative(b);
      return r.status();
    }
    std::string total = stampmover::common::cell(*r, 0, 0);
    std::string ready = stampmover::common::cell(*r, 0, 1);
    if (total != "0" && total == ready) {
      out.seconds = secondsSince(t0);
      break;
    }
    if (Clock::now() - t0 > kNativeTimeout) {
      cleanupNative(b);
      return Status::internal("native initial sync did not finish within 20 min; states: " +
                              stampmover::common::cell(*r, 0, 2));
    }
    if (Clock::now() - last_report > std::chrono::seconds(5)) {
      last_report = Clock::now();
      say("      | %5.1f s: table states %s\n", secondsSince(t0),
          stampmover::common::cell(*r, 0, 2).c_str());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  Status drop = b.dst.exec("DROP SUBSCRIPTION bench_sub");
  if (!drop.isOk()) {
    cleanupNative(b);
    return drop;
  }
  SM_RETURN_IF_ERROR(b.src.exec("DROP PUBLICATION bench_pub"));
  return out;
}

struct Method {
  std::string name;
  uint32_t jobs = 0;  // ours only
  enum Kind { kOurs, kPipe, kPipeNoFk, kNative } kind = kOurs;
  std::vector<RunResult> runs;
  std::vector<std::string> failures;
};

Result<std::vector<uint32_t>> parseJobsList(const std::string& s) {
  std::vector<uint32_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto v = parseU64(item, "--jobs-list entry");
    if (!v || *v == 0 || *v > kMaxJobs) {
      return Status::refused("--jobs-list '" + s + "': expected comma-separated integers 1.." +
                             std::to_string(kMaxJobs));
    }
    out.push_back(static_cast<uint32_t>(*v));
  }
  if (out.empty()) return Status::refused("--jobs-list is empty");
  return out;
}

void printResults(const Bench& b, const std::vector<Method>& methods) {
  say("\n== results: tenant 42, %s rows, %s (sum of pg_column_size(row) of its rows on the "
      "source)\n",
      withCommas(b.total_rows).c_str(), humanBytes(static_cast<double>(b.total_bytes)).c_str());
  say("   seconds = wall clock (median of the correct runs): ours = the whole `stampmover copy` "
      "process\n   (start-up, preflight, publication, slot, copy); pipe = 5 psql pairs in "
      "sequence; native = CREATE SUBSCRIPTION\n   until every table is 'r'/'s'. MB = 10^6 "
      "bytes. CPU = client processes' user+sys.\n\n");
  std::optional<double> pipe_s, native_s;
  for (const auto& m : methods) {
    if (m.runs.empty()) continue;
    std::vector<double> s;
    for (const auto& r : m.runs) s.push_back(r.seconds);
    if (m.kind == Method::kPipe) pipe_s = median(s);
    if (m.kind == Method::kNative) native_s = median(s);
  }
  say("   %-24s %4s %9s %9s %11s %8s %8s %9s %10s %7s %9s\n", "method", "runs", "seconds", "best s",
      "rows/s", "MB/s", "vs pipe", "vs native", "peak RSS", "CPU s", "copy s");
  for (const auto& m : methods) {
    if (m.runs.empty()) {
      say("   %-24s %4s %9s   FAILED: %s\n", m.name.c_str(), "0", "-",
          m.failures.empty() ? "not run"
                             : m.failures.front().substr(0, m.failures.front().find('\n')).c_str());
      continue;
    }
    std::vector<double> s, cpu, inner;
    long rss = 0;
    for (const auto& r : m.runs) {
      s.push_back(r.seconds);
      if (r.cpu_seconds) cpu.push_back(*r.cpu_seconds);
      if (r.inner_seconds) inner.push_back(*r.inner_seconds);
      if (r.maxrss_kib) rss = std::max(rss, *r.maxrss_kib);
    }
    double med = median(s);
    double best = *std::min_element(s.begin(), s.end());
    char vs_pipe[16] = "-", vs_native[16] = "-", rss_s[16] = "-", cpu_s[16] = "-",
         inner_s[16] = "-";
    if (pipe_s) std::snprintf(vs_pipe, sizeof vs_pipe, "%.2fx", med / *pipe_s);
    if (native_s) std::snprintf(vs_native, sizeof vs_native, "%.2fx", med / *native_s);
    if (rss) std::snprintf(rss_s, sizeof rss_s, "%.1f MiB", static_cast<double>(rss) / 1024);
    if (!cpu.empty()) std::snprintf(cpu_s, sizeof cpu_s, "%.1f", median(cpu));
    if (!inner.empty()) std::snprintf(inner_s, sizeof inner_s, "%.2f", median(inner));
    say("   %-24s %4zu %9.2f %9.2f %11s %8.1f %8s %9s %10s %7s %9s%s\n", m.name.c_str(),
        m.runs.size(), med, best,
        withCommas(static_cast<uint64_t>(static_cast<double>(b.total_rows) / med)).c_str(),
        static_cast<double>(b.total_bytes) / 1e6 / med, vs_pipe, vs_native, rss_s, cpu_s, inner_s,
        m.failures.empty()
            ? ""
            : ("  (" + std::to_string(m.failures.size()) + " failed run(s))").c_str());
  }
  say("   (peak RSS of the pipe is the largest psql's; `copy s` = copy phase from stampmover's "
      "own report)\n");

  say("\n== targets: ours <= 1.00 x pipe, ours <= 0.75 x native, peak RSS of ours < 256 MiB\n");
  for (const auto& m : methods) {
    if (m.kind != Method::kOurs || m.runs.empty()) continue;
    std::vector<double> s;
    long rss = 0;
    for (const auto& r : m.runs) {
      s.push_back(r.seconds);
      if (r.maxrss_kib) rss = std::max(rss, *r.maxrss_kib);
    }
    double med = median(s);
    std::string line = "   " + m.name + ":";
    char buf[128];
    // "  ours/<baseline> <ratio> (target <= <target>: met|MISSED)", or n/a without the baseline.
    auto vsTarget = [&](const std::string& baseline, std::optional<double> baseline_s,
                        double target) -> std::string {
      if (!baseline_s) return "  ours/" + baseline + " n/a (" + baseline + " failed)";
      double ratio = med / *baseline_s;
      std::snprintf(buf, sizeof buf, "  ours/%s %.2f (target <= %.2f: %s)", baseline.c_str(),
                    ratio, target, ratio <= target ? "met" : "MISSED");
      return buf;
    };
    line += vsTarget("pipe", pipe_s, 1.0);
    line += vsTarget("native", native_s, 0.75);
    double rss_mib = static_cast<double>(rss) / 1024;
    std::snprintf(buf, sizeof buf, "  peak RSS %.1f MiB (target < 256: %s)", rss_mib,
                  rss_mib < 256 ? "met" : "MISSED");
    line += buf;
    say("%s\n", line.c_str());
  }
}

int fail(const Status& st) { return reportError("bench_copy", st.message()); }

int runBench(const Args& args) {
  auto jobs = parseJobsList(args.jobs_list);
  if (!jobs) return fail(jobs.status());
  if (Status st = checkRange("--rows", args.rows, 1, kMaxRows); !st.isOk()) return fail(st);
  if (Status st = checkRange("--repeat", args.repeat, 1, kMaxRepeat); !st.isOk()) return fail(st);
  if (Status st = checkStampmoverBinary(args.stampmover); !st.isOk()) return fail(st);

  Bench b;
  b.args = args;
  say("== starting two throwaway clusters (PostgreSQL 15, 127.0.0.1 only)\n");
  if (Status st = startCluster("bench-src", b.src_cluster); !st.isOk()) return fail(st);
  if (Status st = startCluster("bench-dst", b.dst_cluster); !st.isOk()) return fail(st);
  say("   bench-src: port %d   bench-dst: port %d\n", b.src_cluster->port(), b.dst_cluster->port());
  for (auto* c : {b.src_cluster.get(), b.dst_cluster.get()}) {
    Status st = c->createDatabase("app");
    if (!st.isOk()) return fail(st);
  }
  b.src_dsn = b.src_cluster->dsn("app");
  b.dst_dsn = b.dst_cluster->dsn("app");
  auto src = PgConnection::connect(b.src_dsn, "source bench-src");
  if (!src) return fail(src.status());
  b.src = std::move(*src);
  auto dst = PgConnection::connect(b.dst_dsn, "destination bench-dst");
  if (!dst) return fail(dst.status());
  b.dst = std::move(*dst);
  // CREATE/DROP SUBSCRIPTION announce their slots with NOTICEs; keep the output to the table.
  for (auto* c : {&b.src, &b.dst}) {
    Status st = c->exec("SET client_min_messages = warning");
    if (!st.isOk()) return fail(st);
  }
  for (auto* c : {&b.src, &b.dst}) {
    Status st = harness::createDemoSchema(*c);
    if (!st.isOk()) return fail(st);
  }
  if (Status st = seedSource(b); !st.isOk()) return fail(st);
  say("== tenant 42 on the source\n");
  if (Status st = countSource(b); !st.isOk()) return fail(st);

  std::vector<Method> methods;
  for (uint32_t j : *jobs) {
    Method m;
    m.name = "ours jobs=" + std::to_string(j);
    m.jobs = j;
    m.kind = Method::kOurs;
    methods.push_back(m);
  }
  Method pipe;
  pipe.name = "pipe (psql binary COPY)";
  pipe.kind = Method::kPipe;
  methods.push_back(pipe);
  if (args.pipe_no_fk) {
    Method pipe_no_fk;
    pipe_no_fk.name = "pipe, no FK checks";
    pipe_no_fk.kind = Method::kPipeNoFk;
    methods.push_back(pipe_no_fk);
  }
  Method native;
  native.name = "native subscription";
  native.kind = Method::kNative;
  methods.push_back(native);

  for (uint32_t rep = 1; rep <= args.repeat; ++rep) {
    for (auto& m : methods) {
      say("== run %u/%u: %s\n", rep, args.repeat, m.name.c_str());
      Result<RunResult> r = Status::internal("not run");
      Status st = prepareRun(b);
      if (st.isOk()) {
        switch (m.kind) {
          case Method::kOurs:
            r = runOurs(b, m.jobs);
            break;
          case Method::kPipe:
            r = runPipe(b, false);
            break;
          case Method::kPipeNoFk:
            r = runPipe(b, true);
            break;
          case Method::kNative:
            r = runNative(b);
            break;
        }
        st = r.status();
      }
      if (st.isOk()) st = checkDestination(b).withContext(m.name + ": wrong copy");
      if (!st.isOk()) {
        if (!args.keep_going) return fail(st.withContext(m.name));
        say("   FAILED (--keep-going): %s\n", st.message().c_str());
        m.failures.push_back(st.message());
        continue;
      }
      m.runs.push_back(*r);
      say("   %.2f s, %s rows/s, destination row counts match the source%s\n", r->seconds,
          withCommas(static_cast<uint64_t>(static_cast<double>(b.total_rows) / r->seconds)).c_str(),
          r->maxrss_kib && m.kind == Method::kOurs
              ? (", peak RSS " + std::to_string(*r->maxrss_kib / 1024) + " MiB").c_str()
              : "");
    }
  }
  printResults(b, methods);
  bool any_failed = false;
  for (const auto& m : methods) any_failed = any_failed || !m.failures.empty();
  say("== stopping the clusters\n");
  return any_failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  CLI::App app{
      "bench_copy: times `stampmover copy` of one tenant against a psql binary COPY pipe and a "
      "native logical-replication initial sync, all in one run on two throwaway local clusters "
      "(127.0.0.1). Every run is checked: the destination's row counts must equal the source's."};
  app.add_option("--rows", args.rows,
                 "Tenant 42's rows in order_items (about 3x that in all five tables); other "
                 "tenants get as many")
      ->capture_default_str();
  app.add_option("--jobs-list", args.jobs_list, "Comma-separated --jobs values for our copy")
      ->capture_default_str();
  app.add_option("--repeat", args.repeat, "Runs per method (the table shows the median)")
      ->capture_default_str();
  app.add_flag("--keep-going", args.keep_going,
               "Report a failed run and continue instead of stopping at the first failure");
  app.add_flag("--pipe-no-fk", args.pipe_no_fk,
               "Also time the pipe with session_replication_role=replica at the destination "
               "(no FK checks, as ours and native load): a diagnostic row, not a baseline");
  app.add_option("--stampmover", args.stampmover, "The stampmover binary to time")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  // Clusters are owned inside runBench and stopped by their destructors on every return path;
  // catching here makes an unexpected exception unwind through them too.
  return runReportingExceptions("bench_copy", [&] { return runBench(args); });
}
