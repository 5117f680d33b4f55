// Chaos suite (issue 11): the worker is killed (SIGKILL) at every failpoint of the migration —
// at every phase boundary (phase.<name>), inside the cutover window, around it, at each
// teardown step, in the reverse cutover of a rollback — and at random moments, under two
// writers: an application writing through the routing directory (harness::Loadgen: retries
// while frozen or fenced, logs every acknowledged write) and a writer straight at the source
// (tests/support/direct_writer.h, with REPEATABLE READ transactions that read first and write
// later). Then migrate is rerun with the same
// arguments to completion, and the checks are independent of stampmover's code:
//   - 0 acknowledged writes lost: each is on the stamp that serves the tenant at the end;
//   - tenant 42 identical on both stamps (ordered SELECT t::text of every table; the routed
//     writer's rows are left out, as it keeps writing the serving stamp after the streams end);
//   - other tenants' rows unchanged on both stamps;
//   - the tenant writable on the serving stamp within the fence TTL;
//   - nothing of the migration left on either stamp: slot, origin, publication, fence triggers,
//     fence rows, fence users.
// Two concurrent migrations from one source stamp check the shared fence. A soak mode repeats
// the random-moment test STAMPMOVER_CHAOS_ROUNDS times (default 2: CI); STAMPMOVER_CHAOS_SEED
// replays a run.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <thread>

#include "harness/loadgen.h"
#include "harness/seed.h"
#include "mover/checkpoint_store.h"
#include "mover/source_setup.h"
#include "routing/routing_directory.h"
#include "tests/support/direct_writer.h"
#include "tests/support/test_support.h"
#include "tests/support/writer.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;
namespace harness = stampmover::harness;
namespace routing = stampmover::routing;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kWindowTimeoutMs = 2000;                  // migrate's default
constexpr int kFenceTtlMs = 3 * kWindowTimeoutMs;       // the fence expires by itself after it
constexpr int64_t kRoutedFirstId = 800'000'000;         // harness::Loadgen's scratch ids
constexpr const char* kSoakSeconds = "1";

struct Env {
  std::string db;
  std::string cp_db;
  std::string src_dsn, dst_dsn, cp_dsn;
  std::string src_name, dst_name;  // routing names: host:port/dbname, as migrate derives them
  PgConnection src;
  PgConnection dst;
  PgConnection cp;

  // The databases go with the test: dozens of them left to the clusters' shutdown made it take
  // longer than all the tests together.
  ~Env() {
    src = PgConnection();
    dst = PgConnection();
    cp = PgConnection();
    for (auto* c : {&sourceCluster(), &destCluster()}) {
      auto admin = PgConnection::connect(c->dsn(), "test cleanup", {},
                                         stampmover::common::SessionSettings::kServerDefaults);
      if (!admin) continue;
      for (const auto* name : {&db, &cp_db}) {
        admin->exec("DROP DATABASE IF EXISTS " + stampmover::common::quoteIdent(*name) + " WITH (FORCE)")
            .ignore();  // best effort: the cluster's teardown removes what is left
      }
    }
  }
};

std::unique_ptr<Env> setUp() {
  auto e = std::make_unique<Env>();
  e->db = freshDatabase();
  e->cp_db = freshDatabase();
  e->src_dsn = sourceCluster().dsn(e->db);
  e->dst_dsn = destCluster().dsn(e->db);
  e->cp_dsn = destCluster().dsn(e->cp_db);
  e->src_name = stampmover::common::dsnLocation(e->src_dsn);
  e->dst_name = stampmover::common::dsnLocation(e->dst_dsn);
  e->src = connectOrDie(e->src_dsn);
  e->dst = connectOrDie(e->dst_dsn);
  e->cp = connectOrDie(e->cp_dsn);
  for (auto* c : {&e->src, &e->dst}) EXPECT_TRUE(harness::createDemoSchema(*c).isOk());
  createScratchTable(e->src_dsn);
  createScratchTable(e->dst_dsn);
  harness::SeedOptions seed;  // tenant 42 and others 1, 2, 3 on the source
  seed.tenant_items = 150;
  seed.other_items = 150;
  EXPECT_TRUE(harness::seedTenants(e->src, seed).isOk());
  harness::SeedOptions dest_seed;  // tenants of the destination stamp: 7 and 8
  dest_seed.tenant = 7;
  dest_seed.others = {8};
  dest_seed.tenant_items = 60;
  dest_seed.other_items = 60;
  EXPECT_TRUE(harness::seedTenants(e->dst, dest_seed).isOk());
  // Other tenants' scratch rows, which must stay untouched (each stamp's own tenants).
  execOrDie(e->src, "INSERT INTO scratch SELECT t, g, 'other' FROM unnest('{1,2,3}'::bigint[]) t, "
                    "generate_series(1, 20) g");
  execOrDie(e->dst, "INSERT INTO scratch SELECT t, g, 'other' FROM unnest('{7,8}'::bigint[]) t, "
                    "generate_series(1, 20) g");
  // The routing entry exists before any writer resolves it (migrate would create the same).
  routing::PgRoutingDirectory routes(e->cp_dsn);
  EXPECT_TRUE(routes.ensureSchema().isOk());
  for (const char* tenant : {"42", "2"}) EXPECT_TRUE(routes.put(tenant, e->src_name).isOk());
  return e;
}

std::vector<std::string> migrateArgs(const Env& e, const std::string& state_dir, bool rollback,
                                     const std::string& tenant = "42", const char* soak = kSoakSeconds) {
  std::vector<std::string> a = {"migrate", "--tenant", tenant, "--source-dsn", e.src_dsn,
                                "--dest-dsn", e.dst_dsn, "--state-dir", state_dir,
                                "--progress", "log", "--cutover", "auto", "--control-plane-dsn",
                                e.cp_dsn, "--soak", soak, "--window-timeout-ms",
                                std::to_string(kWindowTimeoutMs)};
  if (rollback) a.push_back("--rollback-after-soak");
  if (getenv("SM_SHOW_LOG")) a.insert(a.end(), {"--log-level", "debug"});
  return a;
}

// The tail of a log, for failure messages.
std::string tail(const std::string& text, size_t n = 6000) {
  return text.size() > n ? "..." + text.substr(text.size() - n) : text;
}

// Rows of tenants that are not moved, per table, ordered: must not change on either stamp.
std::vector<std::string> otherTenantsRows(PgConnection& c, const std::vector<std::string>& moved) {
  std::string not_in = "{";
  for (size_t i = 0; i < moved.size(); ++i) not_in += (i ? "," : "") + moved[i];
  not_in += "}";
  std::vector<std::string> out;
  for (const auto& [table, order] : kDemoTenantTables) {
    auto r = c.query(std::string("SELECT t::text FROM ") + table + " t WHERE tenant_id <> ALL($1::bigint[]) "
                         "ORDER BY tenant_id, " + order,
                     {not_in});
    if (!r) {
      ADD_FAILURE() << r.status().message();
      return out;
    }
    for (int i = 0; i < stampmover::common::rowCount(*r); ++i) {
      out.push_back(std::string(table) + ": " + stampmover::common::cell(*r, i, 0));
    }
  }
  return out;
}

// Fails unless the tenant's rows are the same on both stamps, table by table, in key order;
// the routed writer's scratch rows are left out (it writes the serving stamp until the end).
void expectTenantEqual(PgConnection& a, PgConnection& b, const std::string& tenant) {
  for (const auto& [table, order] : kDemoTenantTables) {
    const std::string sql = std::string("SELECT t::text FROM ") + table + " t WHERE tenant_id = $1" +
                            (std::string(table) == "scratch" ? " AND id < " + std::to_string(kRoutedFirstId) : "") +
                            " ORDER BY " + order;
    auto ra = a.query(sql, {tenant});
    auto rb = b.query(sql, {tenant});
    ASSERT_TRUE(ra.isOk() && rb.isOk()) << table;
    const int n = stampmover::common::rowCount(*ra);
    ASSERT_EQ(n, stampmover::common::rowCount(*rb)) << "tenant " << tenant << ", table " << table;
    for (int i = 0; i < n; ++i) {
      ASSERT_EQ(stampmover::common::cell(*ra, i, 0), stampmover::common::cell(*rb, i, 0))
          << "tenant " << tenant << ", table " << table << ", row " << i;
    }
  }
}

// Nothing of the tenant's migration is left on the stamp: slots and origins named after the
// tenant and source database, publications, fence triggers, fence rows and fence users.
void expectNothingLeft(PgConnection& c, const char* side, const std::string& source_db,
                       const std::string& tenant = "42") {
  const std::string name = stampmover::mover::replicationNameForTenant(tenant, source_db);
  EXPECT_EQ(scalar(c, "SELECT string_agg(slot_name, ',') FROM pg_replication_slots WHERE slot_name LIKE $1 || '%'", {name}), "")
      << side << ": slots";
  EXPECT_EQ(scalar(c, "SELECT string_agg(pubname, ',') FROM pg_publication"), "") << side << ": publications";
  EXPECT_EQ(scalar(c, "SELECT string_agg(roname, ',') FROM pg_replication_origin WHERE roname LIKE $1 || '%'", {name}), "")
      << side << ": origins";
  EXPECT_EQ(scalar(c, "SELECT string_agg(tgrelid::regclass::text || '.' || tgname, ',') FROM pg_trigger "
                      "WHERE tgname LIKE 'stampmover_fence%'"), "")
      << side << ": fence triggers";
  if (scalar(c, "SELECT to_regclass('stampmover.fence') IS NOT NULL") == "t") {
    EXPECT_EQ(scalar(c, "SELECT string_agg(tenant::text, ',') FROM stampmover.fence"), "") << side << ": fence rows";
  }
  if (scalar(c, "SELECT to_regclass('stampmover.fence_users') IS NOT NULL") == "t") {
    EXPECT_EQ(scalar(c, "SELECT count(*) FROM stampmover.fence_users"), "0") << side << ": fence users";
  }
  // With no user left the fence's own objects go too (mover/fence.h, releaseFence).
  EXPECT_EQ(scalar(c, "SELECT string_agg(c.oid::regclass::text, ',') FROM pg_class c JOIN pg_namespace n "
                      "ON n.oid = c.relnamespace WHERE n.nspname = 'stampmover' AND c.relname IN "
                      "('fence', 'fence_users')"),
            "")
      << side << ": fence tables";
}

// The migration's ledger is empty once it finalized or rolled back: in the worker's state
// directory, in the control plane's mirror, and as `stampmover status` shows it; the record's
// phase is the terminal one.
void expectLedgerEmpty(const Env& e, const std::string& state_dir, const std::string& tenant,
                       bool rolled_back) {
  const std::string id = stampmover::mover::migrationId(tenant, e.src_name, e.dst_name);
  {
    auto store = stampmover::mover::openRocksDbCheckpointStore({state_dir, false, true});
    ASSERT_TRUE(store) << store.status().message();
    auto rec = (*store)->loadMigration(id);
    ASSERT_TRUE(rec && rec->has_value()) << "no record of " << id;
    EXPECT_EQ((*rec)->phase, rolled_back ? "rolled_back" : "finalized");
    auto ledger = (*store)->loadLedger(id);
    ASSERT_TRUE(ledger) << ledger.status().message();
    std::string left;
    for (const auto& [key, value] : *ledger) left += key + " ";
    EXPECT_EQ(left, "") << "ledger of " << id << " in the state directory";
  }
  PgConnection cp = connectOrDie(e.cp_dsn);
  EXPECT_EQ(scalar(cp, "SELECT count(*) FROM stampmover_routing.migration_ledger WHERE "
                       "migration_id = $1", {id}),
            "0")
      << "ledger of " << id << " mirrored in the control plane";
  auto st = runStampmover({"status", "--tenant", tenant, "--state-dir", state_dir});
  EXPECT_EQ(st.exit_code, 0) << st.err;
  EXPECT_NE(st.out.find("ledger: empty"), std::string::npos) << st.out;
}

// A write of the tenant succeeds on `c` within the fence TTL (plus a margin).
void expectWritable(PgConnection& c, const char* side, int64_t id, const std::string& tenant = "42") {
  const auto t0 = Clock::now();
  std::string last;
  while (Clock::now() - t0 < std::chrono::milliseconds(kFenceTtlMs + 1000)) {
    auto r = c.query("INSERT INTO scratch VALUES ($1, $2, 'writable at the end')", {tenant, std::to_string(id)});
    if (r) return;
    last = r.status().message();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ADD_FAILURE() << "tenant " << tenant << " not writable on the serving " << side << " within "
                << kFenceTtlMs << " ms: " << last;
}

// The writers of one tenant: through the routing directory and straight at the source.
// The routed writers are two: a busy one, which meets every fence and so always refreshes its
// cached route, and a slow one (a few writes a second), whose cached route (1 s) can outlive a
// flip without it noticing: it writes where a router with a stale cache would.
struct Writers {
  std::unique_ptr<harness::Loadgen> routed;
  std::unique_ptr<harness::Loadgen> routed_slow;
  std::unique_ptr<DirectWriter> direct;

  Writers(const Env& e, const std::string& tenant) {
    harness::LoadgenOptions lo;
    lo.control_plane_dsn = e.cp_dsn;
    lo.stamp_dsns = {{e.src_name, e.src_dsn}, {e.dst_name, e.dst_dsn}};
    lo.tenant = tenant;
    lo.rate = 100;
    lo.duration = std::chrono::minutes(10);  // stopped by the test
    lo.first_id = kRoutedFirstId;
    routed = std::make_unique<harness::Loadgen>(lo);
    routed->start();
    lo.rate = 5;
    lo.first_id = kRoutedFirstId + 50'000'000;
    routed_slow = std::make_unique<harness::Loadgen>(lo);
    routed_slow->start();
    DirectWriterOptions dw;
    dw.dsn = e.src_dsn;
    dw.stamp = e.src_name;
    dw.control_plane_dsn = e.cp_dsn;
    dw.tenant = tenant;
    direct = std::make_unique<DirectWriter>(dw);
    // Both write before the migration begins.
    for (int i = 0; i < 250 && (direct->acknowledged() < 3 || routed->report().acknowledged < 3); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  void stop() {
    routed->stop();
    routed_slow->stop();
    direct->stop();
  }
};

// Every check of the end state, for `tenant` whose migration ended finalized (on the
// destination) or rolled back (on the source).
void checkEnd(Env& e, Writers& w, const std::string& tenant, bool rolled_back,
              const std::vector<std::string>& others_src, const std::vector<std::string>& others_dst,
              const std::vector<std::string>& moved, int64_t writable_id) {
  SCOPED_TRACE("tenant " + tenant);
  EXPECT_EQ(scalar(e.cp, "SELECT stamp || ',' || state || ',' || coalesce(shadow_stamp, '-') FROM "
                         "stampmover_routing.routes WHERE tenant = $1", {tenant}),
            (rolled_back ? e.src_name : e.dst_name) + ",active,-");
  PgConnection& serving = rolled_back ? e.src : e.dst;
  const char* serving_side = rolled_back ? "source" : "destination";
  auto lost = w.routed->missingOn(rolled_back ? e.src_dsn : e.dst_dsn);
  ASSERT_TRUE(lost.isOk()) << lost.status().message();
  const auto rep = w.routed->report();
  EXPECT_EQ(*lost, 0u) << "routed writer: acknowledged writes lost (of " << rep.acknowledged
                       << ", checked on the serving " << serving_side << ")";
  EXPECT_GT(rep.acknowledged, 0u);
  auto lost_slow = w.routed_slow->missingOn(rolled_back ? e.src_dsn : e.dst_dsn);
  ASSERT_TRUE(lost_slow.isOk()) << lost_slow.status().message();
  EXPECT_EQ(*lost_slow, 0u) << "slow routed writer: acknowledged writes lost (of "
                            << w.routed_slow->report().acknowledged << ", checked on the serving "
                            << serving_side << ")";
  EXPECT_EQ(scalar(e.cp, "SELECT phase FROM stampmover_routing.migrations WHERE tenant = $1", {tenant}),
            rolled_back ? "rolled_back" : "finalized")
      << "the control plane's view of the migration";
  EXPECT_EQ(w.direct->missingOn(serving), "") << "direct writer: acknowledged writes lost (of "
                                               << w.direct->acknowledged() << ")";
  EXPECT_GT(w.direct->acknowledgedRepeatableRead(), 0u);
  EXPECT_EQ(w.direct->otherErrors(), 0u) << w.direct->lastError();
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e.src, e.dst, tenant));
  EXPECT_EQ(otherTenantsRows(e.src, moved), others_src) << "other tenants changed on the source";
  EXPECT_EQ(otherTenantsRows(e.dst, moved), others_dst) << "other tenants changed on the destination";
  expectWritable(serving, serving_side, writable_id, tenant);
}

enum class KillAt { kFailpoint, kRandom };

struct Plan {
  std::string failpoint;  // kill there (kFailpoint)
  bool rollback = false;  // --rollback-after-soak
  int kill_after_ms = 0;  // kRandom: SIGKILL by pid this long after the start
};

// One chaos run: writers, a first migrate killed, a rerun to completion, every check.
void runChaos(KillAt how, const Plan& p) {
  auto e = setUp();
  TempDir state;
  const auto others_src = otherTenantsRows(e->src, {"42"});
  const auto others_dst = otherTenantsRows(e->dst, {"42"});
  Writers w(*e, "42");
  const auto args = migrateArgs(*e, state.path(), p.rollback);
  const std::string log = state.path() + "/first.log";
  if (how == KillAt::kFailpoint) {
    setenv("STAMPMOVER_FAILPOINTS", (p.failpoint + "=kill").c_str(), 1);
    ChildProcess child(spawnStampmover(args, log));
    unsetenv("STAMPMOVER_FAILPOINTS");
    const int rc = child.wait();
    const std::string text = readFile(log);
    ASSERT_EQ(rc, -SIGKILL) << "the first run must die at " << p.failpoint << ":\n" << tail(text);
    ASSERT_NE(text.find("failpoint " + p.failpoint + ": kill"), std::string::npos) << tail(text);
  } else {
    ChildProcess child(spawnStampmover(args, log));
    std::this_thread::sleep_for(std::chrono::milliseconds(p.kill_after_ms));
    kill(child.pid(), SIGKILL);
    const int rc = child.wait();
    // A run that finished before the kill is a valid round too (the rerun is then a no-op).
    EXPECT_TRUE(rc == -SIGKILL || rc == 0) << rc << "\n" << tail(readFile(log));
  }
  auto r = runStampmover(args);
  w.stop();
  ASSERT_EQ(r.exit_code, 0) << "rerun:\n" << tail(r.err) << "\nfirst run:\n" << tail(readFile(log), 3000);
  if (getenv("SM_SHOW_LOG")) std::fputs(r.err.c_str(), stderr);
  checkEnd(*e, w, "42", p.rollback, others_src, others_dst, {"42"}, 900'000'001);
  expectNothingLeft(e->src, "source", e->db);
  expectNothingLeft(e->dst, "destination", e->db);
  expectLedgerEmpty(*e, state.path(), "42", p.rollback);
}

struct FailpointCase {
  const char* failpoint;
  bool rollback;
};

void PrintTo(const FailpointCase& c, std::ostream* os) {
  *os << c.failpoint << (c.rollback ? " (rollback)" : " (finalize)");
}

std::string caseName(const ::testing::TestParamInfo<FailpointCase>& info) {
  std::string n = std::string(info.param.failpoint) + (info.param.rollback ? "_rollback" : "_finalize");
  for (char& c : n) {
    if (c == '.') c = '_';
  }
  return n;
}

class ChaosFailpoint : public ::testing::TestWithParam<FailpointCase> {};

}  // namespace

TEST_P(ChaosFailpoint, KilledThereThenRerunLosesNothing) {
  runChaos(KillAt::kFailpoint, {GetParam().failpoint, GetParam().rollback, 0});
}

// The forward cutover and the migrate steps around it, with a finalize at the end; each
// teardown step in a finalize and in a rollback; the reverse cutover of a rollback.
INSTANTIATE_TEST_SUITE_P(
    Forward, ChaosFailpoint,
    ::testing::Values(FailpointCase{"migrate.before_prepare_freeze", false},
                      FailpointCase{"migrate.after_prepare_freeze", false},
                      FailpointCase{"cutover.before_freeze", false},
                      FailpointCase{"cutover.after_freeze", false},
                      FailpointCase{"cutover.after_fence", false},
                      FailpointCase{"cutover.after_drain", false},
                      FailpointCase{"cutover.after_recheck", false},
                      FailpointCase{"cutover.after_sequences", false},
                      FailpointCase{"cutover.before_flip", false},
                      FailpointCase{"cutover.after_flip", false},
                      FailpointCase{"migrate.before_dual_write_record", false}),
    caseName);
INSTANTIATE_TEST_SUITE_P(
    Teardown, ChaosFailpoint,
    ::testing::Values(FailpointCase{"teardown.begin", false},
                      FailpointCase{"teardown.after_reverse_slot", false},
                      FailpointCase{"teardown.after_origins", false},
                      FailpointCase{"teardown.after_unfence", false},
                      FailpointCase{"teardown.before_active", false},
                      FailpointCase{"teardown.begin", true},
                      FailpointCase{"teardown.after_reverse_slot", true},
                      FailpointCase{"teardown.after_origins", true},
                      FailpointCase{"teardown.after_unfence", true}),
    caseName);
// Every phase boundary: killed right after the new phase was persisted (before anything of
// that phase ran); the copy's phases, each step of a finalize and of a rollback, and after the
// terminal phase (the rerun has nothing to do).
INSTANTIATE_TEST_SUITE_P(
    Phases, ChaosFailpoint,
    ::testing::Values(FailpointCase{"phase.starting", false},
                      FailpointCase{"phase.copying", false},
                      FailpointCase{"phase.copied", false},
                      FailpointCase{"phase.catching_up", false},
                      FailpointCase{"phase.freezing", false},
                      FailpointCase{"phase.dual_write", false},
                      FailpointCase{"phase.finalizing", false},
                      FailpointCase{"phase.finalized", false},
                      FailpointCase{"phase.dual_write", true},
                      FailpointCase{"phase.rolling_back", true},
                      FailpointCase{"phase.rolled_back", true}),
    caseName);
INSTANTIATE_TEST_SUITE_P(
    Reverse, ChaosFailpoint,
    ::testing::Values(FailpointCase{"cutover.reverse.before_freeze", true},
                      FailpointCase{"cutover.reverse.after_freeze", true},
                      FailpointCase{"cutover.reverse.after_fence", true},
                      FailpointCase{"cutover.reverse.after_drain", true},
                      FailpointCase{"cutover.reverse.after_recheck", true},
                      FailpointCase{"cutover.reverse.after_sequences", true},
                      FailpointCase{"cutover.reverse.before_flip", true},
                      FailpointCase{"cutover.reverse.after_flip", true}),
    caseName);

namespace {

unsigned chaosRounds() {
  const char* v = getenv("STAMPMOVER_CHAOS_ROUNDS");
  return v != nullptr && *v != '\0' ? static_cast<unsigned>(std::strtoul(v, nullptr, 10)) : 2;
}

}  // namespace

// kill -9 at a random moment of a run (copy, catch-up, comparison, window, soak, finalize or
// rollback), then a rerun: the same checks. STAMPMOVER_CHAOS_ROUNDS rounds (the soak mode).
TEST(Chaos, KillAtRandomMomentsThenRerunLosesNothing) {
  const char* seed_env = getenv("STAMPMOVER_CHAOS_SEED");
  const uint32_t seed = seed_env != nullptr ? static_cast<uint32_t>(std::strtoul(seed_env, nullptr, 10))
                                            : std::random_device{}();
  std::mt19937 rng(seed);
  const unsigned rounds = chaosRounds();
  unsigned failed = 0;
  const auto t0 = Clock::now();
  for (unsigned i = 0; i < rounds; ++i) {
    Plan p;
    p.rollback = rng() % 2 == 1;
    p.kill_after_ms = 100 + static_cast<int>(rng() % 3200);  // a run takes ~3 s
    SCOPED_TRACE("round " + std::to_string(i) + " (STAMPMOVER_CHAOS_SEED=" + std::to_string(seed) +
                 "): kill after " + std::to_string(p.kill_after_ms) + " ms, " +
                 (p.rollback ? "rollback" : "finalize"));
    const auto* result = ::testing::UnitTest::GetInstance()->current_test_info()->result();
    const int parts_before = result->total_part_count();
    runChaos(KillAt::kRandom, p);
    if (result->total_part_count() > parts_before) ++failed;  // a failure was recorded
  }
  std::printf("chaos soak: %u rounds, %u failed, %.0f s (seed %u)\n", rounds, failed,
              std::chrono::duration<double>(Clock::now() - t0).count(), seed);
}

// Two migrations from one source stamp at once (tenants 42 and 2, to the same destination),
// each under both writers: the shared fence stays on every stamp until the second finalizes.
TEST(Chaos, TwoConcurrentMigrationsFromOneSource) {
  auto e = setUp();
  TempDir state_a, state_b;
  const auto others_src = otherTenantsRows(e->src, {"42", "2"});
  const auto others_dst = otherTenantsRows(e->dst, {"42", "2"});
  Writers wa(*e, "42");
  Writers wb(*e, "2");
  const std::string log_a = state_a.path() + "/a.log", log_b = state_b.path() + "/b.log";
  ChildProcess a(spawnStampmover(migrateArgs(*e, state_a.path(), false, "42", "1"), log_a));
  ChildProcess b(spawnStampmover(migrateArgs(*e, state_b.path(), false, "2", "8"), log_b));
  ASSERT_EQ(a.wait(), 0) << tail(readFile(log_a));
  // Tenant 2's migration uses the fence too (it is past its freeze or about to be): the first
  // finalize must leave the triggers where they are.
  bool b_flipped = false;
  for (int i = 0; i < 1500 && !b_flipped; ++i) {
    b_flipped = scalar(e->cp, "SELECT state FROM stampmover_routing.routes WHERE tenant = '2'") == "dual_write";
    if (!b_flipped) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(b_flipped) << tail(readFile(log_b));
  const std::string n_tables = std::to_string(std::size(kDemoTenantTables));
  for (auto* c : {&e->src, &e->dst}) {
    EXPECT_EQ(scalar(*c, "SELECT count(DISTINCT tgrelid) FROM pg_trigger WHERE tgname = 'stampmover_fence_row'"),
              n_tables) << "fence triggers gone while tenant 2's migration still needs them";
  }
  EXPECT_EQ(scalar(e->src, "SELECT count(*) FROM stampmover.fence WHERE tenant = '2'"), "1")
      << "tenant 2 stays fenced on the source during its soak";
  ASSERT_EQ(b.wait(), 0) << tail(readFile(log_b));
  wa.stop();
  wb.stop();
  checkEnd(*e, wa, "42", false, others_src, others_dst, {"42", "2"}, 900'000'001);
  checkEnd(*e, wb, "2", false, others_src, others_dst, {"42", "2"}, 900'000'001);
  expectNothingLeft(e->src, "source", e->db, "42");
  expectNothingLeft(e->dst, "destination", e->db, "42");
  expectNothingLeft(e->src, "source", e->db, "2");
  expectNothingLeft(e->dst, "destination", e->db, "2");
  expectLedgerEmpty(*e, state_a.path(), "42", false);
  expectLedgerEmpty(*e, state_b.path(), "2", false);
}

namespace {

// Polls the routing entry and the old primary's fence row of tenant 42 until `done`: returns
// the milliseconds from the first sight of the flip (the entry on `new_stamp` in `state`) to
// the first sight of the old primary without the tenant's fence row; -1 if either never came.
// A rollback's flip is the entry going from dual_write back to active on the source.
double flipToUnfenceMs(Env& e, PgConnection& old_primary, const std::string& new_stamp,
                       const std::string& state, const std::atomic<bool>& done) {
  std::optional<Clock::time_point> flipped, unfenced;
  bool seen_dual_write = false;
  while (!done.load() && !unfenced) {
    const std::string now = scalar(e.cp, "SELECT stamp || ',' || state FROM stampmover_routing.routes "
                                          "WHERE tenant = '42'");
    const bool reverse = state == "active";
    if (!flipped && (!reverse || seen_dual_write) && now == new_stamp + "," + state) {
      flipped = Clock::now();
    }
    seen_dual_write = seen_dual_write || now.find(",dual_write") != std::string::npos;
    if (flipped && (scalar(old_primary, "SELECT to_regclass('stampmover.fence') IS NULL") == "t" ||
                    scalar(old_primary, "SELECT count(*) FROM stampmover.fence WHERE tenant = '42'") == "0")) {
      unfenced = Clock::now();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  if (!flipped || !unfenced) return -1;
  return std::chrono::duration<double, std::milli>(*unfenced - *flipped).count();
}

void expectOldPrimaryFencedForRouterCaches(bool rollback, const char* soak) {
  auto e = setUp();
  TempDir state;
  auto old_primary = connectOrDie(rollback ? e->dst_dsn : e->src_dsn);
  const std::string log = state.path() + "/migrate.log";
  std::atomic<bool> done{false};
  ChildProcess child(spawnStampmover(migrateArgs(*e, state.path(), rollback, "42", soak), log));
  std::thread waiter([&] {
    child.wait();
    done = true;
  });
  const double ms = flipToUnfenceMs(*e, old_primary, rollback ? e->src_name : e->dst_name,
                                    rollback ? "active" : "dual_write", done);
  waiter.join();
  ASSERT_GE(ms, 0) << "flip or unfence not seen:\n" << tail(readFile(log));
  // routing::RoutingClientOptions::cache_ttl (1 s): a router that resolved the tenant just
  // before the flip writes to the old primary until then; only its fence turns them away.
  EXPECT_GE(ms, 1000) << "the old primary was unfenced " << ms << " ms after the "
                      << (rollback ? "reverse " : "") << "flip, while routers may still send writes there";
}

}  // namespace

// After the reverse flip of a rollback, the destination (the old primary) keeps its fence as
// long as a router's cached route may still point at it; so does the source after the flip
// when the soak is shorter than that.
TEST(Chaos, OldPrimaryStaysFencedWhileRouterCachesPointAtIt) {
  {
    SCOPED_TRACE("rollback after a 1 s soak");
    expectOldPrimaryFencedForRouterCaches(true, "1");
  }
  {
    SCOPED_TRACE("finalize with no soak");
    expectOldPrimaryFencedForRouterCaches(false, "0");
  }
}
