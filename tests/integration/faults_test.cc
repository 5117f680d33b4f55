// Fault scenarios for `stampmover migrate` against real clusters, one per hazard: kill -9 at
// random moments (copy and catch-up) then resume; source and destination restarts mid-stream;
// schema drift that pauses with a report; an unchanged-TOAST update of a row the destination
// lacks; TRUNCATE of a shared table. Every check is independent of stampmover's own verdict:
// ordered `SELECT t::text` of both sides for every tenant table, and no foreign tenant's rows
// on the destination.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "harness/local_cluster.h"
#include "harness/seed.h"
#include "mover/source_setup.h"
#include "tests/support/test_support.h"
#include "tests/support/writer.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;
namespace harness = stampmover::harness;
using std::chrono::milliseconds;

namespace {

void sleepMs(int64_t ms) { std::this_thread::sleep_for(milliseconds(ms)); }

std::string tail(const std::string& s, size_t bytes = 3000) {
  return s.size() <= bytes ? s : "..." + s.substr(s.size() - bytes);
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

int envInt(const char* name, int def) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : def;
}

// Destination equals source for tenant 42 in every tenant table; on mismatch, names the first
// rows missing or extra on the destination. The destination holds no rows of other tenants
// except those in `allowed_others` (rows the test put there itself).
void expectTenantEqual(PgConnection& src, PgConnection& dst,
                       const std::vector<std::string>& allowed_others = {}) {
  for (const auto& [table, order] : kDemoTenantTables) {
    auto a = tenantRows(src, table, "42", order);
    auto b = tenantRows(dst, table, "42", order);
    if (a == b) continue;
    std::set<std::string> sa(a.begin(), a.end()), sb(b.begin(), b.end());
    std::string diff;
    int shown = 0;
    for (const auto& r : a) {
      if (!sb.count(r) && shown++ < 5)
        diff += "  missing on destination: " + r.substr(0, 300) + "\n";
    }
    shown = 0;
    for (const auto& r : b) {
      if (!sa.count(r) && shown++ < 5)
        diff += "  extra on destination:   " + r.substr(0, 300) + "\n";
    }
    ADD_FAILURE() << "tenant 42 differs in " << table << ": source " << a.size()
                  << " rows, destination " << b.size() << " rows\n"
                  << diff;
  }
  std::string not_in = "42";
  for (const auto& t : allowed_others) not_in += ", " + t;
  for (const auto& [table, order] : kDemoTenantTables) {
    EXPECT_EQ(scalar(dst, std::string("SELECT count(*) FROM ") + table +
                              " WHERE tenant_id NOT IN (" + not_in + ")"),
              "0")
        << "other tenants' rows reached the destination in " << table;
  }
}

struct Env {
  harness::LocalCluster* src_cluster = nullptr;
  harness::LocalCluster* dst_cluster = nullptr;
  std::string db;
  PgConnection src;
  PgConnection dst;
  TempDir state;
  TempDir logs;
  std::string srcDsn() const { return src_cluster->dsn(db); }
  std::string dstDsn() const { return dst_cluster->dsn(db); }
  void reconnect() {
    src = connectOrDie(srcDsn());
    dst = connectOrDie(dstDsn());
  }
};

// Demo schema on both sides, `scratch` on both, the source seeded with tenant 42 among others,
// plus 20 documents per tenant (42 and 1) whose bodies are ~6 KB of hex digests: incompressible
// enough to be stored out of line, so an update that leaves them alone reaches the stream as an
// unchanged-TOAST marker. Their keys ('big/..') sort first, so the writer retitles them.
std::unique_ptr<Env> setUp(harness::LocalCluster& s, harness::LocalCluster& d,
                           const std::string& db, uint64_t items) {
  auto e = std::make_unique<Env>();
  e->src_cluster = &s;
  e->dst_cluster = &d;
  e->db = db;
  e->reconnect();
  for (auto* c : {&e->src, &e->dst}) EXPECT_TRUE(harness::createDemoSchema(*c).isOk());
  createScratchTable(e->srcDsn());
  createScratchTable(e->dstDsn());
  harness::SeedOptions seed;
  seed.tenant_items = items;
  seed.other_items = items;
  EXPECT_TRUE(harness::seedTenants(e->src, seed).isOk());
  execOrDie(e->src,
            "INSERT INTO scratch SELECT t, g, 'init' FROM unnest(ARRAY[42, 1]) t, "
            "generate_series(1, 100) g");
  execOrDie(e->src,
            "INSERT INTO documents (tenant_id, doc_key, title, body, meta, updated_at) "
            "SELECT t, 'big/' || lpad(g::text, 2, '0'), 'Big ' || g, "
            "(SELECT string_agg(md5(t::text || '/' || g || '/' || i), '') "
            "FROM generate_series(1, 200) i), "
            "jsonb_build_object('big', g), timestamp '2024-05-02' + g * interval '1 hour' "
            "FROM unnest(ARRAY[42, 1]) t, generate_series(1, 20) g");
  return e;
}

std::vector<std::string> migrateArgs(const Env& e, bool until_caught_up) {
  std::vector<std::string> a = {"migrate",      "--tenant",   "42",       "--source-dsn",
                                e.srcDsn(),     "--dest-dsn", e.dstDsn(), "--state-dir",
                                e.state.path(), "--progress", "log"};
  if (until_caught_up) a.push_back("--until-caught-up");
  return a;
}

// True while `pid` (our child) is running: not exited, not a zombie. Does not reap it, so
// waitPid() still returns its exit status.
bool childAlive(pid_t pid) {
  if (kill(pid, 0) != 0) return false;
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return false;
  return info.si_pid == 0;
}

// SIGKILLs and reaps a child still running when the test ends early (a failed ASSERT), so no
// migrate outlives its test or keeps a walsender that blocks a cluster's shutdown. Declare it
// after the clusters: it must go first.
struct ChildGuard {
  pid_t pid = -1;
  ~ChildGuard() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitPid(pid);
    }
  }
};

// Polls `log_path` until it contains one of `needles`, `pid` exits, or `timeout` passes.
bool waitForLog(const std::string& log_path, const std::vector<std::string>& needles, pid_t pid,
                milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    std::string text = readFile(log_path);
    for (const auto& n : needles) {
      if (contains(text, n)) return true;
    }
    if (!childAlive(pid)) return false;
    sleepMs(2);
  }
  return false;
}

// True when a walsender streams the slot: START_REPLICATION was issued, catch-up is running.
// Read from the source's catalog, not from stampmover's log wording.
bool slotActive(PgConnection& src, const std::string& slot) {
  return scalar(src, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", {slot}) == "t";
}

// Polls until the slot is streamed, `pid` exits, or `timeout` passes.
bool waitForSlotActive(PgConnection& src, const std::string& slot, pid_t pid,
                       milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (slotActive(src, slot)) return true;
    if (!childAlive(pid)) return false;
    sleepMs(20);
  }
  return false;
}

// Where a run was when killed: streaming (slot active at the kill), else the last copy phase
// its log reached.
std::string phaseOf(bool streaming, const std::string& log) {
  if (streaming) return "catch-up";
  if (contains(log, "phase copied")) return "copied, before streaming";
  if (contains(log, "phase copying") || contains(log, "resuming the copy")) return "copy";
  if (contains(log, "phase starting")) return "slot/publication setup";
  return "startup/preflight";
}

}  // namespace

// kill -9 of `migrate` at random moments — the first ones early (setup, copy), most during
// catch-up — under a concurrent writer; then one run to completion: destination equals source.
// STAMPMOVER_SOAK_KILLS=N runs N kills (soak); STAMPMOVER_FAULTS_SEED replays a sequence.
TEST(Faults, KillNineAtRandomMomentsConverges) {
  const int kills = std::max(1, envInt("STAMPMOVER_SOAK_KILLS", 10));
  const uint32_t seed = static_cast<uint32_t>(envInt("STAMPMOVER_FAULTS_SEED", 20240611));
  std::cout << "[   info   ] kill -9 loop: " << kills << " kills, rng seed " << seed
            << " (replay with STAMPMOVER_FAULTS_SEED=" << seed << ")" << std::endl;
  RecordProperty("rng_seed", static_cast<int>(seed));
  auto e = setUp(sourceCluster(), destCluster(), freshDatabase(), 3000);
  ASSERT_FALSE(HasFailure());

  WriterOptions wo;
  wo.dsn = e->srcDsn();
  wo.duration = milliseconds(std::max<int64_t>(40'000, int64_t{kills} * 2'000 + 10'000));
  wo.max_transactions = 100'000'000;
  wo.pause = std::chrono::microseconds(2000);
  wo.seed = 17;
  Writer writer(wo);

  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delay_ms(100, 1500);
  std::uniform_int_distribution<int> copy_extra_ms(0, 40);
  std::map<std::string, int> where;
  int not_started = 0;
  const std::string slot = stampmover::mover::replicationNameForTenant("42", e->db);
  for (int i = 0; i < kills; ++i) {
    const std::string log = e->logs.path() + "/run" + std::to_string(i) + ".log";
    const int delay = delay_ms(rng);  // drawn every round so the sequence depends on the seed only
    const int extra = copy_extra_ms(rng);
    auto t0 = std::chrono::steady_clock::now();
    pid_t pid = spawnStampmover(migrateArgs(*e, false), log);
    ASSERT_GT(pid, 0);
    ChildGuard guard{pid};
    if (i == 0) {
      sleepMs(50);  // early: preflight or slot setup
    } else if (i == 1) {
      // Aim into the copy: kill right after it starts (or resumes).
      waitForLog(log, {"phase copying", "resuming the copy", "phase copied"}, pid,
                 milliseconds(20'000));
      sleepMs(extra);
    } else {
      sleepMs(delay);
    }
    const auto waited =
        std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - t0).count();
    const bool streaming = slotActive(e->src, slot);
    kill(pid, SIGKILL);
    const int rc = waitPid(pid);
    guard.pid = -1;
    const std::string text = readFile(log);
    if (rc == 127 && text.empty()) {
      // execv failed: the binary was being relinked by a parallel build. Not a run; go on.
      std::cout << "[   info   ] run " << i << " did not start (stampmover binary missing?)"
                << std::endl;
      ++not_started;
      continue;
    }
    const std::string phase = phaseOf(streaming, text);
    where[phase]++;
    std::cout << "[   info   ] kill " << i << " after " << waited << " ms, during " << phase
              << (rc == -SIGKILL ? "" : " (had already exited with " + std::to_string(rc) + ")")
              << std::endl;
    EXPECT_EQ(rc, -SIGKILL) << "run " << i << " exited by itself before the kill:\n" << tail(text);
  }
  writer.stop();
  std::cout << "[   info   ] writer: " << writer.transactions() << " transactions, "
            << writer.errors() << " errors; kills by phase:";
  for (const auto& [p, n] : where) std::cout << " " << p << "=" << n;
  std::cout << std::endl;
  EXPECT_GT(writer.transactions(), 500u);
  EXPECT_GE(where["catch-up"], 1) << "no kill landed during catch-up";
  EXPECT_LE(not_started, kills / 5) << "too many runs could not exec " << stampmoverBin();

  auto r = runStampmover(migrateArgs(*e, true));
  ASSERT_EQ(r.exit_code, 0) << tail(r.err, 6000);
  expectTenantEqual(e->src, e->dst);

  // The applied position lives at the destination; the slot was acknowledged, but never past
  // the source's WAL. (Not compared with the origin: acknowledging WAL that holds nothing for
  // the tenant past the last applied commit is legitimate, and native apply does it.)
  const std::string origin =
      scalar(e->dst, "SELECT pg_replication_origin_progress($1, true)::text", {slot});
  ASSERT_NE(origin, "") << "no replication origin progress for " << slot;
  EXPECT_EQ(scalar(e->src,
                   "SELECT confirmed_flush_lsn <= pg_current_wal_lsn() FROM pg_replication_slots "
                   "WHERE slot_name = $1",
                   {slot}),
            "t");
}

// pg_ctl restart -m fast of the source, then of the destination, while migrate streams under
// a writer: migrate survives (reconnects with backoff), stops cleanly on SIGTERM, and a rerun
// catches up to an identical tenant. Uses its own clusters: restarting the shared ones would
// disturb the other tests.
TEST(Faults, SourceRestartMidStream) {
  harness::ClusterOptions so;
  so.name = "rs-src";
  auto s = harness::LocalCluster::start(so);
  ASSERT_TRUE(s) << s.status().message();
  std::unique_ptr<harness::LocalCluster> src = std::move(*s);
  harness::ClusterOptions dopt;
  dopt.name = "rs-dst";
  auto d = harness::LocalCluster::start(dopt);
  ASSERT_TRUE(d) << d.status().message();
  std::unique_ptr<harness::LocalCluster> dst = std::move(*d);
  ASSERT_TRUE(src->createDatabase("faults").isOk());
  ASSERT_TRUE(dst->createDatabase("faults").isOk());
  auto e = setUp(*src, *dst, "faults", 2000);
  ASSERT_FALSE(HasFailure());

  WriterOptions wo;
  wo.dsn = e->srcDsn();
  wo.duration = milliseconds(150'000);  // stopped explicitly below
  wo.max_transactions = 100'000'000;
  wo.pause = std::chrono::microseconds(2000);
  wo.seed = 23;
  Writer writer(wo);

  const std::string log = e->logs.path() + "/migrate.log";
  pid_t pid = spawnStampmover(migrateArgs(*e, false), log);
  ASSERT_GT(pid, 0);
  ChildGuard guard{pid};
  // Restart only once the slot is streamed: this scenario is about the live stream.
  const std::string slot = stampmover::mover::replicationNameForTenant("42", e->db);
  ASSERT_TRUE(waitForSlotActive(e->src, slot, pid, milliseconds(60'000)))
      << tail(readFile(log));
  sleepMs(2000);
  ASSERT_TRUE(childAlive(pid)) << tail(readFile(log));
  // A transaction in flight when the fast shutdown comes (as the writer's may be, by chance):
  // the shutdown aborts it, so the source's last WAL record before its shutdown checkpoint is
  // not a commit the stream will ever deliver.
  PgConnection inflight = connectOrDie(e->srcDsn(), "in-flight");
  execOrDie(inflight, "BEGIN; INSERT INTO scratch VALUES (1, 999999, 'in flight at shutdown')");
  auto t0 = std::chrono::steady_clock::now();
  auto st = src->restart();
  std::cout
      << "[   info   ] source restart took "
      << std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - t0).count()
      << " ms" << std::endl;
  if (!st.isOk()) {
    ADD_FAILURE() << "the source's fast restart did not finish while migrate streamed from it ("
                  << st.message()
                  << "): its logical walsender waits at shutdown until the client confirms "
                     "flush up to the last WAL record sent, and migrate keeps confirming only "
                     "its last applied commit. migrate log:\n"
                  << tail(readFile(log));
    // Go on with the rest of the scenario: ending migrate releases the walsender, the shutdown
    // completes, and pg_ctl restart starts the stopped server; then a fresh migrate streams.
    kill(pid, SIGKILL);
    waitPid(pid);
    guard.pid = -1;
    ASSERT_TRUE(src->restart().isOk());
    pid = spawnStampmover(migrateArgs(*e, false), log);
    ASSERT_GT(pid, 0);
    guard.pid = pid;
    e->src = connectOrDie(e->srcDsn());
    ASSERT_TRUE(waitForSlotActive(e->src, slot, pid, milliseconds(60'000)))
        << tail(readFile(log));
  }
  sleepMs(2000);
  EXPECT_TRUE(childAlive(pid)) << "migrate exited after the source restart:\n"
                               << tail(readFile(log));
  t0 = std::chrono::steady_clock::now();
  st = dst->restart();
  std::cout
      << "[   info   ] destination restart took "
      << std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - t0).count()
      << " ms" << std::endl;
  ASSERT_TRUE(st.isOk()) << st.message() << "\nmigrate log:\n" << tail(readFile(log));
  sleepMs(2000);
  writer.stop();
  std::cout << "[   info   ] writer: " << writer.transactions() << " transactions, "
            << writer.errors() << " errors" << std::endl;
  EXPECT_GT(writer.transactions(), 500u);

  const bool alive = childAlive(pid);
  EXPECT_TRUE(alive) << "migrate did not survive the restarts:\n" << tail(readFile(log));
  if (alive) {
    kill(pid, SIGTERM);
    EXPECT_EQ(waitPid(pid), 130) << tail(readFile(log));  // cancelled, at a checkpoint
    guard.pid = -1;
  }
  const std::string text = readFile(log);
  EXPECT_TRUE(contains(text, "reconnecting")) << tail(text);
  size_t reconnects = 0;
  for (size_t at = text.find("reconnecting"); at != std::string::npos;
       at = text.find("reconnecting", at + 1)) {
    if (std::getenv("STAMPMOVER_FAULTS_VERBOSE") != nullptr) {
      size_t bol = text.rfind('\n', at);
      bol = bol == std::string::npos ? 0 : bol + 1;
      std::cout << "[   info   ] " << text.substr(bol, text.find('\n', at) - bol) << std::endl;
    }
    ++reconnects;
  }
  std::cout << "[   info   ] migrate logged " << reconnects << " reconnect(s)" << std::endl;

  auto r = runStampmover(migrateArgs(*e, true));
  ASSERT_EQ(r.exit_code, 0) << tail(r.err, 6000);
  e->reconnect();  // the fixture's sessions died with the restarts
  expectTenantEqual(e->src, e->dst);
}

// A column added on the source only: the next Relation message cannot be applied, so migrate
// stops with exit 2 naming the table and the column; once the destination has the column too,
// a rerun applies the change (the coupon included).
TEST(Faults, SchemaDriftPausesWithReport) {
  auto e = setUp(sourceCluster(), destCluster(), freshDatabase(), 500);
  ASSERT_FALSE(HasFailure());
  auto r = runStampmover(migrateArgs(*e, true));
  ASSERT_EQ(r.exit_code, 0) << r.err;

  execOrDie(e->src, "ALTER TABLE orders ADD COLUMN coupon text");
  execOrDie(e->src, "UPDATE orders SET coupon = 'SPRING-10' WHERE tenant_id = 42 AND order_id = 7");
  execOrDie(e->src,
            "INSERT INTO orders (tenant_id, order_id, account_id, status, total, coupon) "
            "VALUES (42, 900001, 1, 'new', 9.99, 'WELCOME')");
  auto paused = runStampmover(migrateArgs(*e, true));
  EXPECT_EQ(paused.exit_code, 2) << paused.err;
  EXPECT_TRUE(contains(paused.err, "public.orders")) << paused.err;
  EXPECT_TRUE(contains(paused.err, "\"coupon\"")) << paused.err;
  // Paused means nothing of the drifted change was guessed at the destination.
  EXPECT_EQ(
      scalar(e->dst, "SELECT count(*) FROM orders WHERE tenant_id = 42 AND order_id = 900001"),
      "0");

  execOrDie(e->dst, "ALTER TABLE orders ADD COLUMN coupon text");
  auto resumed = runStampmover(migrateArgs(*e, true));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(scalar(e->dst, "SELECT coupon FROM orders WHERE tenant_id = 42 AND order_id = 7"),
            "SPRING-10");
  EXPECT_EQ(scalar(e->dst, "SELECT coupon FROM orders WHERE tenant_id = 42 AND order_id = 900001"),
            "WELCOME");
  expectTenantEqual(e->src, e->dst);
}

// An update that leaves an out-of-line TOASTed body unchanged reaches the stream as an
// unchanged-TOAST marker; when the destination lacks the row, the applier must repair it from
// the source with the full body rather than insert a row without it.
TEST(Faults, UnchangedToastUpdateOfMissingRowIsRepaired) {
  auto e = setUp(sourceCluster(), destCluster(), freshDatabase(), 500);
  ASSERT_FALSE(HasFailure());
  auto r = runStampmover(migrateArgs(*e, true));
  ASSERT_EQ(r.exit_code, 0) << r.err;

  const std::string key = "big/05";
  ASSERT_EQ(
      scalar(e->src,
             "SELECT length(body) > 2048 FROM documents WHERE tenant_id = 42 AND doc_key = $1",
             {key}),
      "t");
  const std::string body_md5 = scalar(
      e->src, "SELECT md5(body) FROM documents WHERE tenant_id = 42 AND doc_key = $1", {key});
  ASSERT_EQ(scalar(e->dst, "SELECT md5(body) FROM documents WHERE tenant_id = 42 AND doc_key = $1",
                   {key}),
            body_md5);
  // The row goes missing at the destination; the source then changes its title only.
  execOrDie(e->dst, "DELETE FROM documents WHERE tenant_id = 42 AND doc_key = 'big/05'");
  ASSERT_EQ(
      scalar(e->dst, "SELECT count(*) FROM documents WHERE tenant_id = 42 AND doc_key = $1", {key}),
      "0");
  execOrDie(e->src,
            "UPDATE documents SET title = 'retitled, body untouched' "
            "WHERE tenant_id = 42 AND doc_key = 'big/05'");

  auto r2 = runStampmover(migrateArgs(*e, true));
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r2.out, m, std::regex(R"((\d+) TOAST repairs)"))) << r2.out;
  EXPECT_GE(std::stoull(m[1].str()), 1u) << r2.out;
  EXPECT_EQ(scalar(e->dst, "SELECT md5(body) FROM documents WHERE tenant_id = 42 AND doc_key = $1",
                   {key}),
            body_md5);
  EXPECT_EQ(
      scalar(e->dst, "SELECT title FROM documents WHERE tenant_id = 42 AND doc_key = $1", {key}),
      "retitled, body untouched");
  expectTenantEqual(e->src, e->dst);
}

// TRUNCATE of a table other tenants share becomes a tenant-scoped DELETE at the destination:
// tenant 42's rows go, the destination's own tenant-7 rows stay.
TEST(Faults, TruncateOfSharedTableDeletesOnlyTenantRows) {
  auto e = setUp(sourceCluster(), destCluster(), freshDatabase(), 500);
  ASSERT_FALSE(HasFailure());
  auto r = runStampmover(migrateArgs(*e, true));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(scalar(e->dst, "SELECT count(*) FROM scratch WHERE tenant_id = 42"), "100");

  execOrDie(
      e->dst,
      "INSERT INTO scratch SELECT 7, g, 'destination own ' || g FROM generate_series(1, 25) g");
  const auto tenant7 = tenantRows(e->dst, "scratch", "7", "id");
  execOrDie(e->src, "TRUNCATE scratch");

  auto r2 = runStampmover(migrateArgs(*e, true));
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(scalar(e->dst, "SELECT count(*) FROM scratch WHERE tenant_id = 42"), "0");
  EXPECT_EQ(tenantRows(e->dst, "scratch", "7", "id"), tenant7);
  EXPECT_EQ(tenant7.size(), 25u);
  expectTenantEqual(e->src, e->dst, {"7"});
}
