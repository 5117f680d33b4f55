// Cutover end to end against real clusters (control plane = a database of its own): migrate
// with --cutover auto under a writer, writes on the destination during the dual-write soak,
// then finalize or roll back. Checked independently: routing entry, tenant rows on both
// sides (ordered SELECTs), nothing left behind (slots, publications, origins, fences).
#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "harness/seed.h"
#include "mover/catalog.h"
#include "mover/source_setup.h"
#include "orchestrator/cutover.h"
#include "tests/support/test_support.h"
#include "tests/support/writer.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;
namespace harness = stampmover::harness;

namespace {

// Slots and origins are cluster-wide and the clusters are shared by the tests of this binary:
// look only at this migration's (named after the tenant and the source database).
void expectNothingLeft(PgConnection& c, const char* side, const std::string& source_db) {
  const std::string name = stampmover::mover::replicationNameForTenant("42", source_db);
  EXPECT_EQ(scalar(c, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE $1 || '%'", {name}), "0") << side;
  EXPECT_EQ(scalar(c, "SELECT count(*) FROM pg_publication"), "0") << side;
  EXPECT_EQ(scalar(c, "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE $1 || '%'", {name}), "0") << side;
  EXPECT_EQ(scalar(c, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'stampmover_fence%'"), "0") << side;
  EXPECT_EQ(scalar(c, "SELECT to_regclass('stampmover.fence_users') IS NULL"), "t") << side;
}

struct Env {
  std::string db;
  std::string cp_db;
  PgConnection src;
  PgConnection dst;
  PgConnection cp;
  TempDir state;
};

std::unique_ptr<Env> setUp() {
  auto e = std::make_unique<Env>();
  e->db = freshDatabase();
  e->cp_db = freshDatabase();  // the control plane's own database
  e->src = connectOrDie(sourceCluster().dsn(e->db));
  e->dst = connectOrDie(destCluster().dsn(e->db));
  e->cp = connectOrDie(destCluster().dsn(e->cp_db));
  for (auto* c : {&e->src, &e->dst}) EXPECT_TRUE(harness::createDemoSchema(*c).isOk());
  createScratchTable(sourceCluster().dsn(e->db));
  createScratchTable(destCluster().dsn(e->db));
  harness::SeedOptions seed;
  seed.tenant_items = 2000;
  seed.other_items = 2000;
  EXPECT_TRUE(harness::seedTenants(e->src, seed).isOk());
  return e;
}

std::vector<std::string> args(const Env& e, const std::string& soak, bool rollback) {
  std::vector<std::string> a = {"migrate", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db),
                                "--dest-dsn", destCluster().dsn(e.db), "--state-dir", e.state.path(),
                                "--progress", "log", "--cutover", "auto", "--control-plane-dsn",
                                destCluster().dsn(e.cp_db), "--soak", soak};
  if (rollback) a.push_back("--rollback-after-soak");
  if (getenv("SM_SHOW_LOG")) a.insert(a.end(), {"--log-level", "debug"});
  return a;
}

std::string readLog(const std::string& path) {
  std::string out;
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    std::fclose(f);
  }
  return out.size() > 20000 ? out.substr(0, 20000) : out;
}

// Waits for the routing entry to reach `state`; returns false on timeout.
bool waitForRoute(PgConnection& cp, const std::string& state, int seconds) {
  for (int i = 0; i < seconds * 50; ++i) {
    auto v = cp.queryValue("SELECT state FROM stampmover_routing.routes WHERE tenant = '42'");
    if (v && v->value_or("") == state) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace

TEST(Cutover, FlipsSoaksAndFinalizesUnderAWriter) {
  auto e = setUp();
  WriterOptions wo;
  wo.dsn = sourceCluster().dsn(e->db);
  wo.duration = std::chrono::milliseconds(4000);
  wo.pause = std::chrono::microseconds(2000);
  wo.truncates = false;
  Writer writer(wo);
  std::string log = e->state.path() + "/migrate.log";
  ChildProcess child(spawnStampmover(args(*e, "4", false), log));
  ASSERT_TRUE(waitForRoute(e->cp, "dual_write", 30)) << "no flip; log:\n" << readLog(log);
  writer.stop();  // writes to the source are fenced from here on: the destination serves
  // The destination serves: these writes must reach the source through the reverse stream.
  execOrDie(e->dst, "INSERT INTO scratch VALUES (42, 900001, 'written during soak')");
  execOrDie(e->dst, "UPDATE orders SET status = 'soaked' WHERE tenant_id = 42 AND order_id = 5");
  EXPECT_EQ(child.wait(), 0) << readLog(log);
  if (getenv("SM_SHOW_LOG")) std::fputs(readLog(log).c_str(), stderr);
  {
    // Rows the writer changed during catch-up were re-checked before the window (inside it,
    // only those changed since or still different; how many depends on timing).
    const std::string text = readLog(log);
    const size_t flip = text.find("cutover: FLIPPED");
    ASSERT_NE(flip, std::string::npos) << text;
    unsigned long long before = 0, inside = 0, kept = 0;
    double ms = 0;
    const size_t at = text.find("before the window: ", flip);
    ASSERT_NE(at, std::string::npos) << text;
    ASSERT_EQ(std::sscanf(text.c_str() + at, "before the window: %llu changed rows re-checked in %lf ms (%llu",
                          &before, &ms, &kept),
              3)
        << text.substr(at, 200);
    const size_t in = text.find("re-check of ", at);
    ASSERT_NE(in, std::string::npos) << text;
    ASSERT_EQ(std::sscanf(text.c_str() + in, "re-check of %llu", &inside), 1);
    EXPECT_GT(before, 0u) << "the writer's changes were not re-checked before the window";
    EXPECT_LE(kept, before);
  }
  auto route = scalar(e->cp, "SELECT stamp || ',' || state || ',' || coalesce(shadow_stamp, '-') "
                             "FROM stampmover_routing.routes WHERE tenant = '42'");
  EXPECT_EQ(route, "127.0.0.1:" + std::to_string(destCluster().port()) + "/" + e->db + ",active,-")
      << "finalized on the destination";
  EXPECT_EQ(scalar(e->src, "SELECT v FROM scratch WHERE tenant_id = 42 AND id = 900001"), "written during soak");
  expectDemoTenantEqual(e->src, e->dst);
  expectNothingLeft(e->src, "source", e->db);
  expectNothingLeft(e->dst, "destination", e->db);
  EXPECT_EQ(scalar(e->cp, "SELECT count(*) FROM stampmover_routing.route_history WHERE tenant = '42'"), "4")
      << "put, freeze, flip, finalize";
}

TEST(Cutover, RollsBackAfterTheSoakWithoutLosingDestinationWrites) {
  auto e = setUp();
  std::string log = e->state.path() + "/migrate.log";
  ChildProcess child(spawnStampmover(args(*e, "3", true), log));
  ASSERT_TRUE(waitForRoute(e->cp, "dual_write", 30)) << "no flip; log:\n" << readLog(log);
  execOrDie(e->dst, "INSERT INTO scratch VALUES (42, 900002, 'acknowledged on the destination')");
  execOrDie(e->dst, "DELETE FROM order_items WHERE tenant_id = 42 AND order_id = 7");
  EXPECT_EQ(child.wait(), 0) << readLog(log);
  if (getenv("SM_SHOW_LOG")) std::fputs(readLog(log).c_str(), stderr);
  auto route = scalar(e->cp, "SELECT state || ',' || coalesce(shadow_stamp, '-') FROM "
                             "stampmover_routing.routes WHERE tenant = '42'");
  EXPECT_EQ(route, "active,-");
  EXPECT_EQ(scalar(e->src, "SELECT v FROM scratch WHERE tenant_id = 42 AND id = 900002"),
            "acknowledged on the destination");
  EXPECT_EQ(scalar(e->src, "SELECT count(*) FROM order_items WHERE tenant_id = 42 AND order_id = 7"), "0");
  expectDemoTenantEqual(e->src, e->dst);
  expectNothingLeft(e->src, "source", e->db);
  expectNothingLeft(e->dst, "destination", e->db);
  // The source takes the tenant's writes again.
  execOrDie(e->src, "UPDATE orders SET status = 'back' WHERE tenant_id = 42 AND order_id = 5");
}

// A failure inside the window (injected just before the flip) rolls the tenant back to the
// source, unfrozen; after the attempts run out, migrate stops with a refusal and the source
// takes the tenant's writes.
TEST(Cutover, FailureInsideTheFreezeRollsBackToTheSource) {
  auto e = setUp();
  setenv("STAMPMOVER_FAILPOINTS", "cutover.before_flip=error", 1);
  auto r = runStampmover(args(*e, "1", false));
  unsetenv("STAMPMOVER_FAILPOINTS");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("cutover did not succeed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("failpoint cutover.before_flip"), std::string::npos) << r.err;
  EXPECT_EQ(scalar(e->cp, "SELECT state || ',' || epoch FROM stampmover_routing.routes WHERE tenant = '42'"),
            "active,11")
      << "put (1), then 5 x freeze + roll back";
  EXPECT_EQ(scalar(e->src, "SELECT count(*) FROM stampmover.fence"), "0");
  execOrDie(e->src, "UPDATE orders SET status = 'writable' WHERE tenant_id = 42 AND order_id = 5");
}

// kill -9 of the worker inside the window: the fence expires by itself, so the tenant is
// writable on the source again within the bound; a rerun rolls the frozen entry back and
// completes the migration.
TEST(Cutover, KillNineInsideTheFreezeLeavesTheTenantWritable) {
  auto e = setUp();
  std::string log = e->state.path() + "/migrate.log";
  setenv("STAMPMOVER_FAILPOINTS", "cutover.after_fence=sleep:30000", 1);
  ChildProcess child(spawnStampmover(args(*e, "1", false), log));
  unsetenv("STAMPMOVER_FAILPOINTS");
  ASSERT_TRUE(waitForRoute(e->cp, "frozen", 60)) << readLog(log);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // inside the injected sleep
  kill(child.pid(), SIGKILL);
  EXPECT_EQ(child.wait(), -SIGKILL);
  auto app = connectOrDie(sourceCluster().dsn(e->db));
  EXPECT_FALSE(app.exec("UPDATE orders SET status = 'x' WHERE tenant_id = 42 AND order_id = 5").isOk())
      << "fenced right after the kill";
  const auto killed_at = std::chrono::steady_clock::now();
  bool writable = false;
  while (!writable && std::chrono::steady_clock::now() - killed_at < std::chrono::seconds(10)) {
    writable = app.exec("UPDATE orders SET status = 'y' WHERE tenant_id = 42 AND order_id = 5").isOk();
    if (!writable) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(writable) << "the fence must expire within 3 x the window timeout (6 s)";
  // The rerun rolls the frozen entry back, then cuts over and finalizes.
  auto r = runStampmover(args(*e, "1", false));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("left frozen"), std::string::npos) << r.err;
  EXPECT_EQ(scalar(e->cp, "SELECT state FROM stampmover_routing.routes WHERE tenant = '42'"), "active");
  expectDemoTenantEqual(e->src, e->dst);
  expectNothingLeft(e->src, "source", e->db);
  expectNothingLeft(e->dst, "destination", e->db);
}

namespace {

// kill -9 of the worker during the dual-write soak: the destination keeps serving (the entry
// stays dual_write, the source stays fenced), writes made there before and after the kill reach
// the source once a rerun resumes the reverse stream from its recorded position, and the rerun
// finishes the soak and finalizes.
TEST(Cutover, KillNineDuringTheSoakResumesTheReverseStream) {
  auto e = setUp();
  std::string log = e->state.path() + "/migrate.log";
  ChildProcess child(spawnStampmover(args(*e, "60", false), log));
  ASSERT_TRUE(waitForRoute(e->cp, "dual_write", 60)) << "no flip; log:\n" << readLog(log);
  execOrDie(e->dst, "INSERT INTO scratch VALUES (42, 900004, 'before the kill')");
  execOrDie(e->dst, "UPDATE orders SET status = 'soaked' WHERE tenant_id = 42 AND order_id = 5");
  // Let the reverse stream apply (and checkpoint) some of it, then kill the worker.
  for (int i = 0; i < 500 && scalar(e->src, "SELECT count(*) FROM scratch WHERE id = 900004") != "1"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(child.pid(), SIGKILL);
  EXPECT_EQ(child.wait(), -SIGKILL);
  EXPECT_EQ(scalar(e->cp, "SELECT state FROM stampmover_routing.routes WHERE tenant = '42'"),
            "dual_write")
      << "the destination keeps serving after the worker died";
  EXPECT_NE(scalar(e->src, "SELECT count(*) FROM stampmover.fence WHERE tenant = '42'"), "0")
      << "the source stays fenced";
  execOrDie(e->dst, "INSERT INTO scratch VALUES (42, 900005, 'while no worker ran')");
  execOrDie(e->dst, "DELETE FROM order_items WHERE tenant_id = 42 AND order_id = 9");

  auto r = runStampmover(args(*e, "1", false));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(scalar(e->cp, "SELECT state || ',' || coalesce(shadow_stamp, '-') FROM "
                          "stampmover_routing.routes WHERE tenant = '42'"),
            "active,-")
      << "finalized on the destination";
  EXPECT_EQ(scalar(e->src, "SELECT v FROM scratch WHERE tenant_id = 42 AND id = 900004"), "before the kill");
  EXPECT_EQ(scalar(e->src, "SELECT v FROM scratch WHERE tenant_id = 42 AND id = 900005"),
            "while no worker ran");
  EXPECT_EQ(scalar(e->src, "SELECT count(*) FROM order_items WHERE tenant_id = 42 AND order_id = 9"), "0");
  expectDemoTenantEqual(e->src, e->dst);
  expectNothingLeft(e->src, "source", e->db);
  expectNothingLeft(e->dst, "destination", e->db);
}

std::vector<std::string> manualArgs(const Env& e) {
  return {"migrate", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db), "--dest-dsn",
          destCluster().dsn(e.db), "--state-dir", e.state.path(), "--progress", "log", "--cutover",
          "manual", "--control-plane-dsn", destCluster().dsn(e.cp_db)};
}

bool waitForPhase(PgConnection& cp, const std::string& phase, int seconds) {
  for (int i = 0; i < seconds * 50; ++i) {
    auto v = cp.queryValue("SELECT phase FROM stampmover_routing.migrations WHERE tenant = '42'");
    if (v && v->value_or("") == phase) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace

// --cutover manual: the operator cuts over, writes land on the destination, then finalize
// with --purge-source removes the tenant from the old stamp after a last comparison.
TEST(Cutover, ManualCutoverThenFinalizeWithPurge) {
  auto e = setUp();
  std::string log = e->state.path() + "/migrate.log";
  // A writer while the worker follows: with a low --recheck-keys, the rows it changes are
  // re-checked (and dropped when equal) long before anyone asks for the cutover.
  WriterOptions wo;
  wo.dsn = sourceCluster().dsn(e->db);
  wo.duration = std::chrono::milliseconds(20000);
  wo.pause = std::chrono::microseconds(2000);
  wo.truncates = false;
  Writer writer(wo);
  auto margs = manualArgs(*e);
  margs.insert(margs.end(), {"--recheck-keys", "50"});
  ChildProcess child(spawnStampmover(margs, log));
  ASSERT_TRUE(waitForPhase(e->cp, "catching_up", 60)) << readLog(log);
  for (int i = 0; i < 1000 && readLog(log).find("forward stream: re-checked") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  writer.stop();
  EXPECT_NE(readLog(log).find("forward stream: re-checked"), std::string::npos)
      << "no re-check of changed rows during catch-up: " << readLog(log);
  const std::string cp = destCluster().dsn(e->cp_db);
  auto c = runStampmover({"cutover", "--tenant", "42", "--control-plane-dsn", cp});
  ASSERT_EQ(c.exit_code, 0) << c.err << readLog(log);
  EXPECT_NE(c.out.find("dual_write"), std::string::npos) << c.out;
  execOrDie(e->dst, "INSERT INTO scratch VALUES (42, 900003, 'after a manual cutover')");
  auto st = runStampmover({"status", "--control-plane-dsn", cp, "--tenant", "42", "--state-dir",
                           e->state.path() + "/none"});
  EXPECT_EQ(st.exit_code, 0) << st.err;
  EXPECT_NE(st.out.find("dual_write"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find(" ms"), std::string::npos) << "last window shown: " << st.out;
  // The ledger as the control plane mirrors it: in dual_write the reverse stream's objects and
  // both fence references are there; the forward slot was dropped at the flip.
  const std::string name = stampmover::mover::replicationNameForTenant("42", e->db);
  EXPECT_NE(st.out.find("reverse replication slot " + name + "_r on destination stamp"),
            std::string::npos) << st.out;
  EXPECT_NE(st.out.find("fence reference"), std::string::npos) << st.out;
  EXPECT_EQ(st.out.find("replication slot " + name + " on source stamp"), std::string::npos)
      << st.out;
  auto f = runStampmover({"finalize", "--tenant", "42", "--purge-source", "--control-plane-dsn", cp});
  ASSERT_EQ(f.exit_code, 0) << f.err << readLog(log);
  EXPECT_EQ(child.wait(), 0) << readLog(log);
  auto after = runStampmover({"status", "--control-plane-dsn", cp, "--tenant", "42", "--state-dir",
                              e->state.path() + "/none"});
  EXPECT_EQ(after.exit_code, 0) << after.err;
  EXPECT_NE(after.out.find("ledger of "), std::string::npos) << after.out;
  EXPECT_NE(after.out.find(": empty"), std::string::npos) << "ledger after finalize: " << after.out;
  EXPECT_EQ(after.out.find("object(s)"), std::string::npos) << "ledger after finalize: " << after.out;
  for (const auto& [table, order] : kDemoTenantTables) {
    EXPECT_EQ(scalar(e->src, std::string("SELECT count(*) FROM ") + table + " WHERE tenant_id = 42"), "0")
        << "purged from the source: " << table;
  }
  EXPECT_EQ(scalar(e->dst, "SELECT v FROM scratch WHERE tenant_id = 42 AND id = 900003"), "after a manual cutover");
  EXPECT_NE(scalar(e->src, "SELECT count(*) FROM orders WHERE tenant_id <> 42"), "0") << "others kept";
  expectNothingLeft(e->src, "source", e->db);
  expectNothingLeft(e->dst, "destination", e->db);
}

// rollback before the flip: the migration's objects and the partial copy are removed and the
// tenant stays on the source, writable.
TEST(Cutover, ManualRollbackBeforeTheFlipLeavesNothing) {
  auto e = setUp();
  std::string log = e->state.path() + "/migrate.log";
  ChildProcess child(spawnStampmover(manualArgs(*e), log));
  ASSERT_TRUE(waitForPhase(e->cp, "catching_up", 60)) << readLog(log);
  auto r = runStampmover({"rollback", "--tenant", "42", "--control-plane-dsn", destCluster().dsn(e->cp_db)});
  ASSERT_EQ(r.exit_code, 0) << r.err << readLog(log);
  EXPECT_EQ(child.wait(), 0) << readLog(log);
  EXPECT_EQ(scalar(e->dst, "SELECT count(*) FROM orders WHERE tenant_id = 42"), "0");
  EXPECT_NE(scalar(e->src, "SELECT count(*) FROM orders WHERE tenant_id = 42"), "0");
  EXPECT_EQ(scalar(e->cp, "SELECT stamp LIKE '%/' || $1 FROM stampmover_routing.routes WHERE tenant = '42'",
                   {e->db}),
            "t");
  expectNothingLeft(e->src, "source", e->db);
  expectNothingLeft(e->dst, "destination", e->db);
  execOrDie(e->src, "UPDATE orders SET status = 'still here' WHERE tenant_id = 42 AND order_id = 5");
}

// A rollback before the flip whose worker is killed right after it recorded "aborting" (before
// any teardown) is finished by a rerun of migrate: phase aborted, the partial copy and every
// object gone, the ledger empty, the tenant on the source and writable.
TEST(Cutover, RollbackBeforeTheFlipKilledMidwayIsFinishedByARerun) {
  auto e = setUp();
  std::string log = e->state.path() + "/migrate.log";
  setenv("STAMPMOVER_FAILPOINTS", "phase.aborting=kill", 1);
  ChildProcess child(spawnStampmover(manualArgs(*e), log));
  unsetenv("STAMPMOVER_FAILPOINTS");
  ASSERT_TRUE(waitForPhase(e->cp, "catching_up", 60)) << readLog(log);
  const std::string cp = destCluster().dsn(e->cp_db);
  // The worker dies before it settles: the request is left unanswered.
  runStampmover({"rollback", "--tenant", "42", "--control-plane-dsn", cp, "--wait", "5"});
  EXPECT_EQ(child.wait(), -SIGKILL) << readLog(log);
  ASSERT_NE(readLog(log).find("failpoint phase.aborting: kill"), std::string::npos) << readLog(log);
  auto mid = runStampmover({"status", "--tenant", "42", "--state-dir", e->state.path()});
  EXPECT_NE(mid.out.find("phase aborting"), std::string::npos) << mid.out;
  EXPECT_EQ(mid.out.find("ledger: empty"), std::string::npos) << "objects are left: " << mid.out;
  auto rerun = runStampmover(manualArgs(*e));
  ASSERT_EQ(rerun.exit_code, 0) << rerun.err;
  auto after = runStampmover({"status", "--tenant", "42", "--state-dir", e->state.path()});
  EXPECT_NE(after.out.find("phase aborted"), std::string::npos) << after.out;
  EXPECT_NE(after.out.find("ledger: empty"), std::string::npos) << after.out;
  EXPECT_EQ(scalar(e->dst, "SELECT count(*) FROM orders WHERE tenant_id = 42"), "0");
  EXPECT_NE(scalar(e->src, "SELECT count(*) FROM orders WHERE tenant_id = 42"), "0");
  EXPECT_EQ(scalar(e->cp, "SELECT state || ',' || (stamp LIKE '%/' || $1) FROM "
                          "stampmover_routing.routes WHERE tenant = '42'", {e->db}),
            "active,true");
  expectNothingLeft(e->src, "source", e->db);
  expectNothingLeft(e->dst, "destination", e->db);
  execOrDie(e->src, "UPDATE orders SET status = 'still here' WHERE tenant_id = 42 AND order_id = 5");
}

// The re-check outside the window keeps exactly the touched keys whose rows differ: changed,
// missing or extra at the destination; equal rows and keys gone from both sides are dropped.
// Key values with commas and quotes, and a numeric key spelled with trailing zeros.
TEST(Cutover, PruneKeepsExactlyTheKeysThatDiffer) {
  const std::string db = freshDatabase();
  auto src = connectOrDie(sourceCluster().dsn(db));
  auto dst = connectOrDie(destCluster().dsn(db));
  const char* ddl =
      "CREATE TABLE kv (tenant_id bigint NOT NULL, k text NOT NULL, n numeric NOT NULL, v text, "
      "PRIMARY KEY (tenant_id, k, n))";
  const char* rows =
      "INSERT INTO kv VALUES (42, 'a', 1, 'same'), (42, 'b,c', 2.50, 'same'), "
      "(42, 'q\"\\', 3, 'same'), (42, 'changed', 4, 'source'), (42, 'missing', 5, 'x'), "
      "(7, 'other tenant', 1, 'x')";
  for (auto* c : {&src, &dst}) {
    execOrDie(*c, ddl);
    execOrDie(*c, rows);
  }
  execOrDie(dst, "UPDATE kv SET v = 'destination' WHERE k = 'changed'");
  execOrDie(dst, "DELETE FROM kv WHERE k = 'missing'");
  execOrDie(dst, "INSERT INTO kv VALUES (42, 'extra', 6, 'y')");

  auto tables = stampmover::mover::discoverTenantTables(src, {});
  ASSERT_TRUE(tables.isOk()) << tables.status().message();
  stampmover::mover::TouchedKeys touched;
  auto& keys = touched.keys["public.kv"];
  const std::vector<std::pair<std::string, std::string>> all = {
      {"a", "1"},       {"b,c", "2.50"},    {"q\"\\", "3"}, {"changed", "4"},
      {"missing", "5"}, {"extra", "6"},     {"gone", "7"}};
  for (const auto& [k, n] : all) keys[k + "/" + n] = {std::string("42"), k, n};
  touched.count = keys.size();
  touched.whole_table["public.other"] = true;
  stampmover::orch::PruneStats stats;
  auto kept = stampmover::orch::pruneTouched(src, dst, *tables, touched, "42", &stats);
  ASSERT_TRUE(kept.isOk()) << kept.status().message();
  EXPECT_EQ(stats.checked, all.size());
  EXPECT_EQ(stats.kept, 3u);
  EXPECT_EQ(kept->count, 3u);
  std::vector<std::string> names;
  for (const auto& [encoded, pk] : kept->keys["public.kv"]) names.push_back(encoded);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"changed/4", "extra/6", "missing/5"}));
  EXPECT_TRUE(kept->whole_table.count("public.other")) << "whole-table flags are kept";
}

// After the flip the destination serves the tenant: `cleanup --purge-destination` must not
// delete it (it did: it never looked at the routing directory), with or without the control
// plane at hand (the local record says the migration reached dual_write).
TEST(Cutover, CleanupNeverPurgesTheDestinationThatServesTheTenant) {
  auto e = setUp();
  std::string log = e->state.path() + "/migrate.log";
  {
    ChildProcess child(spawnStampmover(args(*e, "60", false), log));
    ASSERT_TRUE(waitForRoute(e->cp, "dual_write", 60)) << "no flip; log:\n" << readLog(log);
  }  // killed (SIGKILL) and reaped: an abandoned worker in the middle of the soak
  const std::string rows = scalar(e->dst, "SELECT count(*) FROM orders WHERE tenant_id = 42");
  ASSERT_NE(rows, "0");
  std::vector<std::string> base = {"cleanup", "--tenant", "42", "--source-dsn",
                                   sourceCluster().dsn(e->db), "--dest-dsn", destCluster().dsn(e->db),
                                   "--state-dir", e->state.path(), "--purge-destination"};
  auto with_cp = base;
  with_cp.insert(with_cp.end(), {"--control-plane-dsn", destCluster().dsn(e->cp_db)});
  auto r = runStampmover(with_cp);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("serves the tenant"), std::string::npos) << r.err;
  auto r2 = runStampmover(base);
  EXPECT_EQ(r2.exit_code, 2) << r2.out << r2.err;
  EXPECT_NE(r2.err.find("--control-plane-dsn"), std::string::npos) << r2.err;
  // The state directory lost (a new machine, a wiped volume): no record says how far the
  // migration got, but the reverse stream on the destination says a flip may have happened.
  TempDir empty_state;
  auto lost = base;
  for (size_t i = 0; i + 1 < lost.size(); ++i) {
    if (lost[i] == "--state-dir") lost[i + 1] = empty_state.path();
  }
  auto r3 = runStampmover(lost);
  EXPECT_EQ(r3.exit_code, 2) << r3.out << r3.err;
  EXPECT_NE(r3.err.find("reverse stream"), std::string::npos) << r3.err;
  EXPECT_EQ(scalar(e->dst, "SELECT count(*) FROM orders WHERE tenant_id = 42"), rows);
}
