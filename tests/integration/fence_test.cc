// The stamp write fence against a real cluster: fencing is one row write that rejects the
// fenced tenant's inserts, updates, deletes and TRUNCATE (SQLSTATE 55P04) and no one else's;
// apply sessions (session_replication_role = replica) pass; the wait after fencing blocks on
// every session that could still write the tenant unseen (a REPEATABLE READ reader whose
// snapshot predates the fence, a writer that wrote before the fence committed) and names them;
// the fence is shared by the migrations that acquire it and goes with the last release;
// installing under a long transaction times out per attempt instead of queueing writers.
#include "mover/fence.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "harness/seed.h"
#include "mover/catalog.h"
#include "tests/support/test_support.h"

using namespace stampmover;
using namespace stampmover::testing;
using common::PgConnection;
using common::Result;
using common::Status;

namespace {

std::vector<mover::TableInfo> tenantTables(PgConnection& c) {
  auto t = mover::discoverTenantTables(c, {});
  EXPECT_TRUE(t) << t.status().message();
  return t ? *t : std::vector<mover::TableInfo>{};
}

std::string sqlstateOf(PgConnection& c, const std::string& sql) {
  auto r = c.exec(sql);
  if (r.isOk()) return "ok";
  // The message carries the server text; the fence's is recognisable.
  return r.message().find("tenant is being moved") != std::string::npos ? "fenced" : r.message();
}

// The row triggers' WHEN asks pg_sequence_last_value(mask) IS NOT NULL: "nobody fenced" is the
// sequence's never-called state, which reads as NULL.
constexpr const char* kMaskIsEmpty =
    "SELECT pg_sequence_last_value('stampmover.fence_mask') IS NULL";

}  // namespace

TEST(Fence, FencesOnlyTheTenantAndNotApplySessions) {
  std::string db = freshDatabase();
  auto src = connectOrDie(sourceCluster().dsn(db));
  ASSERT_TRUE(harness::createDemoSchema(src).isOk());
  harness::SeedOptions seed;
  seed.tenant_items = 200;
  seed.other_items = 200;
  ASSERT_TRUE(harness::seedTenants(src, seed).isOk());
  auto tables = tenantTables(src);
  ASSERT_TRUE(mover::installFence(src, tables, {}).isOk());
  ASSERT_TRUE(mover::installFence(src, tables, {}).isOk()) << "idempotent";
  for (const auto& t : tables) EXPECT_TRUE(*mover::fenceInstalled(src, t)) << t.key();

  auto xid = mover::fenceTenant(src, "42", 7, std::chrono::minutes(5));
  ASSERT_TRUE(xid) << xid.status().message();
  auto app = connectOrDie(sourceCluster().dsn(db));
  EXPECT_EQ(sqlstateOf(app,
                       "INSERT INTO accounts (tenant_id, account_id, name, created_at) VALUES (42, "
                       "999999, 'x', now())"),
            "fenced");
  EXPECT_EQ(sqlstateOf(app, "UPDATE orders SET status = 'x' WHERE tenant_id = 42 AND order_id = 1"),
            "fenced");
  EXPECT_EQ(sqlstateOf(app, "DELETE FROM order_items WHERE tenant_id = 42 AND order_id = 2"),
            "fenced");
  EXPECT_EQ(sqlstateOf(app, "UPDATE orders SET status = 'x' WHERE tenant_id = 1 AND order_id = 1"),
            "ok");
  EXPECT_EQ(sqlstateOf(app,
                       "INSERT INTO accounts (tenant_id, account_id, name, created_at) VALUES (1, "
                       "999999, 'x', now())"),
            "ok");
  // Moving a row into the fenced tenant is a write of the fenced tenant, too.
  EXPECT_EQ(
      sqlstateOf(app,
                 "UPDATE accounts SET tenant_id = 42 WHERE tenant_id = 1 AND account_id = 999999"),
      "fenced");
  auto applier = connectOrDie(sourceCluster().dsn(db));
  execOrDie(applier, "SET session_replication_role = replica");
  // And moving one out of it (the trigger looks up the old tenant only when it changes). The
  // account must not exist for tenant 1: the row triggers are AFTER triggers, so a write that
  // also breaks a constraint reports the constraint.
  execOrDie(applier,
            "INSERT INTO accounts (tenant_id, account_id, name, created_at) VALUES (42, 888888, "
            "'x', now())");
  EXPECT_EQ(
      sqlstateOf(app,
                 "UPDATE accounts SET tenant_id = 1 WHERE tenant_id = 42 AND account_id = 888888"),
      "fenced");
  EXPECT_EQ(
      sqlstateOf(applier,
                 "UPDATE orders SET status = 'reverse' WHERE tenant_id = 42 AND order_id = 1"),
      "ok");

  ASSERT_TRUE(mover::uninstallFence(src, tables, {}).isOk());
  for (const auto& t : tables)
    EXPECT_TRUE(*mover::fenceInstalled(src, t)) << "kept while a tenant is fenced";
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
  EXPECT_EQ(sqlstateOf(app, "UPDATE orders SET status = 'y' WHERE tenant_id = 42 AND order_id = 1"),
            "ok");
  ASSERT_TRUE(mover::uninstallFence(src, tables, {}).isOk());
  for (const auto& t : tables) EXPECT_FALSE(*mover::fenceInstalled(src, t)) << t.key();
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM pg_class WHERE relname = 'fence'"), "0");
}

TEST(Fence, WaitsOutTransactionsOlderThanTheFence) {
  std::string db = freshDatabase();
  auto src = connectOrDie(sourceCluster().dsn(db));
  ASSERT_TRUE(harness::createDemoSchema(src).isOk());
  harness::SeedOptions seed;
  seed.tenant_items = 50;
  seed.other_items = 50;
  ASSERT_TRUE(harness::seedTenants(src, seed).isOk());
  ASSERT_TRUE(mover::installFence(src, tenantTables(src), {}).isOk());
  // A REPEATABLE READ writer that started before the fence would not see it.
  auto old = connectOrDie(sourceCluster().dsn(db));
  execOrDie(old,
            "BEGIN ISOLATION LEVEL REPEATABLE READ; UPDATE orders SET status = 'early' "
            "WHERE tenant_id = 42 AND order_id = 3");
  auto xid = mover::fenceTenant(src, "42", 1, std::chrono::minutes(5));
  ASSERT_TRUE(xid);
  auto waited = mover::waitForOlderTransactions(src, *xid, std::chrono::milliseconds(300));
  ASSERT_FALSE(waited.isOk());
  EXPECT_EQ(waited.errorClass(), common::ErrorClass::kRetryable);
  EXPECT_NE(waited.message().find("older than the fence"), std::string::npos) << waited.message();
  execOrDie(old, "COMMIT");
  EXPECT_TRUE(mover::waitForOlderTransactions(src, *xid, std::chrono::milliseconds(2000)).isOk());
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
  // A fence left by a worker that died expires by itself; an extended one does not.
  auto app = connectOrDie(sourceCluster().dsn(db));
  ASSERT_TRUE(mover::fenceTenant(src, "42", 2, std::chrono::milliseconds(300)));
  EXPECT_EQ(sqlstateOf(app, "UPDATE orders SET status = 'a' WHERE tenant_id = 42 AND order_id = 3"),
            "fenced");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(sqlstateOf(app, "UPDATE orders SET status = 'b' WHERE tenant_id = 42 AND order_id = 3"),
            "ok");
  EXPECT_FALSE(mover::extendFence(src, "42").isOk()) << "an expired fence cannot be extended";
  ASSERT_TRUE(mover::fenceTenant(src, "42", 3, std::chrono::milliseconds(300)));
  ASSERT_TRUE(mover::extendFence(src, "42").isOk());
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(sqlstateOf(app, "UPDATE orders SET status = 'c' WHERE tenant_id = 42 AND order_id = 3"),
            "fenced");
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
}

TEST(Fence, InstallUnderALongTransactionTimesOutInsteadOfQueueing) {
  std::string db = freshDatabase();
  auto src = connectOrDie(sourceCluster().dsn(db));
  ASSERT_TRUE(harness::createDemoSchema(src).isOk());
  auto tables = tenantTables(src);
  auto blocker = connectOrDie(sourceCluster().dsn(db));
  execOrDie(blocker,
            "BEGIN; INSERT INTO accounts (tenant_id, account_id, name, created_at) VALUES (5, 1, "
            "'long', now())");
  mover::FenceInstallOptions o;
  o.lock_timeout = std::chrono::milliseconds(150);
  o.attempts = 2;
  o.backoff = std::chrono::milliseconds(50);
  auto t0 = std::chrono::steady_clock::now();
  auto st = mover::installFence(src, tables, o);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(st.isOk());
  EXPECT_NE(st.message().find("public.accounts"), std::string::npos) << st.message();
  EXPECT_LT(took, std::chrono::seconds(3));
  // Meanwhile other writers were never queued for longer than one lock_timeout.
  execOrDie(blocker, "COMMIT");
  EXPECT_TRUE(mover::installFence(src, tables, {}).isOk());
}

namespace {

// The statement's SQLSTATE ("ok" when it succeeds): the fence is recognised by its code.
std::string sqlstateCode(PgConnection& c, const std::string& sql) {
  common::PgResult r{PQexec(c.raw(), sql.c_str())};
  const auto st = PQresultStatus(r.get());
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return "ok";
  const char* code = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
  return code != nullptr ? code : "?";
}

PgConnection seededSource(const std::string& db) {
  auto src = connectOrDie(sourceCluster().dsn(db));
  EXPECT_TRUE(harness::createDemoSchema(src).isOk());
  harness::SeedOptions seed;
  seed.tenant_items = 50;
  seed.other_items = 50;
  EXPECT_TRUE(harness::seedTenants(src, seed).isOk());
  return src;
}

std::string pidOf(PgConnection& c) { return scalar(c, "SELECT pg_backend_pid()"); }

}  // namespace

// Issue 11, item 1: a REPEATABLE READ transaction that has only read holds no xid, so the old
// wait (snapshot xmin of running xids) returned at once; its snapshot predates the fence row,
// so it could write the fenced tenant afterwards. The wait must name it, then block until it
// ends.
TEST(Fence, WaitBlocksOnARepeatableReadReaderUntilItEnds) {
  std::string db = freshDatabase();
  auto src = seededSource(db);
  ASSERT_TRUE(mover::acquireFence(src, tenantTables(src), "m1", {}).isOk());
  ASSERT_TRUE(mover::armFence(src).isOk());
  auto rr = connectOrDie(sourceCluster().dsn(db));
  const std::string rr_pid = pidOf(rr);
  execOrDie(
      rr,
      "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM orders WHERE tenant_id = 42");
  auto xid = mover::fenceTenant(src, "42", 1, std::chrono::minutes(5));
  ASSERT_TRUE(xid) << xid.status().message();

  auto waited = mover::waitForOlderTransactions(src, *xid, std::chrono::milliseconds(300));
  ASSERT_FALSE(waited.isOk()) << "a reader whose snapshot predates the fence was not waited for";
  EXPECT_EQ(waited.errorClass(), common::ErrorClass::kRetryable);
  EXPECT_NE(waited.message().find("pid " + rr_pid + " "), std::string::npos) << waited.message();
  EXPECT_NE(waited.message().find("idle in transaction"), std::string::npos) << waited.message();
  EXPECT_NE(waited.message().find("snapshot older than the fence"), std::string::npos)
      << waited.message();
  // Why: its snapshot does not see the fence row, so the trigger lets it write the tenant.
  EXPECT_EQ(
      sqlstateOf(rr, "UPDATE orders SET status = 'late' WHERE tenant_id = 42 AND order_id = 3"),
      "ok");

  // The wait blocks until that transaction ends, then returns.
  std::atomic<bool> done{false};
  Status result = Status::internal("not run");
  std::thread waiter([&] {
    result = mover::waitForOlderTransactions(src, *xid, std::chrono::seconds(20));
    done.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_FALSE(done.load()) << "returned while the old transaction was still open";
  execOrDie(rr, "ROLLBACK");
  waiter.join();
  EXPECT_TRUE(result.isOk()) << result.message();
  // Any transaction from here on sees the fence.
  execOrDie(
      rr,
      "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM orders WHERE tenant_id = 42");
  EXPECT_EQ(
      sqlstateCode(rr, "UPDATE orders SET status = 'late' WHERE tenant_id = 42 AND order_id = 3"),
      mover::kFenceSqlState);
  execOrDie(rr, "ROLLBACK");
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
}

// Issue 11, item 1: a READ COMMITTED writer whose xid is newer than the fence's but which wrote
// before the fence committed (its trigger could not see the uncommitted fence row), then sits
// idle in transaction: it commits whenever it likes, after the drain's position. The old wait
// (oldest running xid > fence xid) returned at once.
TEST(Fence, WaitBlocksOnAnIdleWriterThatWroteBeforeTheFenceCommitted) {
  std::string db = freshDatabase();
  auto src = seededSource(db);
  ASSERT_TRUE(mover::acquireFence(src, tenantTables(src), "m1", {}).isOk());
  ASSERT_TRUE(mover::armFence(src).isOk());
  // Hold the fence transaction open after its INSERT (xid assigned) until we let it commit.
  auto control = connectOrDie(sourceCluster().dsn(db));
  execOrDie(control,
            "CREATE FUNCTION public.hold_fence() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN "
            "PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $f$; "
            "CREATE TRIGGER hold AFTER INSERT OR UPDATE ON stampmover.fence FOR EACH ROW "
            "EXECUTE FUNCTION public.hold_fence(); SELECT pg_advisory_lock(4242)");
  const std::string fencer_pid = pidOf(src);
  Result<uint64_t> xid = Status::internal("not run");
  std::thread fencer([&] { xid = mover::fenceTenant(src, "42", 1, std::chrono::minutes(5)); });
  for (int i = 0;
       i < 500 && scalar(control, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = " +
                                      fencer_pid) != "Lock";
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto writer = connectOrDie(sourceCluster().dsn(db));
  const std::string writer_pid = pidOf(writer);
  execOrDie(writer,
            "BEGIN; UPDATE orders SET status = 'between' WHERE tenant_id = 42 AND order_id = 4");
  execOrDie(control, "SELECT pg_advisory_unlock(4242)");
  fencer.join();
  ASSERT_TRUE(xid) << xid.status().message();
  EXPECT_LT(*xid, std::stoull(scalar(writer, "SELECT pg_current_xact_id()::text")))
      << "the writer's xid must be newer than the fence's for this test";

  auto waited = mover::waitForOlderTransactions(src, *xid, std::chrono::milliseconds(300));
  ASSERT_FALSE(waited.isOk())
      << "a write made before the fence committed would commit after the drain";
  EXPECT_EQ(waited.errorClass(), common::ErrorClass::kRetryable);
  EXPECT_NE(waited.message().find("pid " + writer_pid + " "), std::string::npos)
      << waited.message();
  EXPECT_NE(waited.message().find("idle in transaction"), std::string::npos) << waited.message();
  execOrDie(writer, "COMMIT");
  EXPECT_TRUE(mover::waitForOlderTransactions(src, *xid, std::chrono::seconds(5)).isOk());
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
}

// Sessions that cannot write the tenant unseen do not hold the window: one whose transaction
// began before the fence but that has neither a snapshot nor an xid (its next statement sees
// the fence), and sessions of another database.
TEST(Fence, WaitIgnoresSessionsThatCannotMissTheFence) {
  std::string db = freshDatabase();
  auto src = seededSource(db);
  ASSERT_TRUE(mover::acquireFence(src, tenantTables(src), "m1", {}).isOk());
  ASSERT_TRUE(mover::armFence(src).isOk());
  auto rc = connectOrDie(sourceCluster().dsn(db));
  execOrDie(rc, "BEGIN; SELECT count(*) FROM orders");  // READ COMMITTED, idle, no xid
  auto rr = connectOrDie(sourceCluster().dsn(db));
  execOrDie(rr, "BEGIN ISOLATION LEVEL REPEATABLE READ");  // no statement yet: no snapshot
  auto other_db = connectOrDie(sourceCluster().dsn("postgres"));
  execOrDie(other_db, "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1");
  auto xid = mover::fenceTenant(src, "42", 1, std::chrono::minutes(5));
  ASSERT_TRUE(xid);
  Status waited = mover::waitForOlderTransactions(src, *xid, std::chrono::milliseconds(2000));
  EXPECT_TRUE(waited.isOk()) << waited.message();
  EXPECT_EQ(
      sqlstateCode(rc, "UPDATE orders SET status = 'x' WHERE tenant_id = 42 AND order_id = 3"),
      mover::kFenceSqlState);
  EXPECT_EQ(
      sqlstateCode(rr, "UPDATE orders SET status = 'x' WHERE tenant_id = 42 AND order_id = 3"),
      mover::kFenceSqlState);
  for (auto* c : {&rc, &rr, &other_db}) execOrDie(*c, "ROLLBACK");
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
}

// Issue 11, item 2: TRUNCATE fires no row trigger. It removes every tenant's rows, so it is
// refused while any tenant of the stamp is fenced; apply sessions (replica) still pass.
TEST(Fence, TruncateIsRefusedWhileATenantIsFenced) {
  std::string db = freshDatabase();
  auto src = seededSource(db);
  ASSERT_TRUE(mover::acquireFence(src, tenantTables(src), "m1", {}).isOk());
  ASSERT_TRUE(mover::armFence(src).isOk());
  auto app = connectOrDie(sourceCluster().dsn(db));
  EXPECT_EQ(sqlstateCode(app, "BEGIN; TRUNCATE events; ROLLBACK"), "ok") << "nobody fenced yet";
  execOrDie(app, "ROLLBACK");
  ASSERT_TRUE(mover::fenceTenant(src, "42", 1, std::chrono::minutes(5)));
  EXPECT_EQ(sqlstateCode(app, "TRUNCATE events"), mover::kFenceSqlState);
  EXPECT_EQ(sqlstateCode(app, "TRUNCATE order_items"), mover::kFenceSqlState);
  EXPECT_EQ(scalar(src, "SELECT count(*) > 0 FROM events WHERE tenant_id = 42"), "t");
  auto applier = connectOrDie(sourceCluster().dsn(db));
  execOrDie(applier, "SET session_replication_role = replica");
  EXPECT_EQ(sqlstateCode(applier, "TRUNCATE documents"), "ok");
  EXPECT_EQ(
      sqlstateCode(applier, "UPDATE orders SET status = 'r' WHERE tenant_id = 42 AND order_id = 3"),
      "ok");
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
  EXPECT_EQ(sqlstateCode(app, "TRUNCATE events"), "ok");
  // An expired fence fences nothing.
  ASSERT_TRUE(mover::fenceTenant(src, "42", 2, std::chrono::milliseconds(1)));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(sqlstateCode(app, "TRUNCATE order_items"), "ok");
}

// Issue 11, item 3: the fence is the stamp's, reference-counted by the migrations using it.
// Finalizing one migration (release, or the old uninstall) must not take the triggers from
// another whose tenant is fenced.
TEST(Fence, SharedByMigrationsUntilTheLastOneReleases) {
  std::string db = freshDatabase();
  auto src = seededSource(db);
  auto tables = tenantTables(src);
  ASSERT_TRUE(mover::acquireFence(src, tables, "move-42", {}).isOk());
  ASSERT_TRUE(mover::acquireFence(src, tables, "move-7", {}).isOk());
  ASSERT_TRUE(mover::armFence(src).isOk());
  ASSERT_TRUE(mover::acquireFence(src, tables, "move-7", {}).isOk()) << "idempotent";
  EXPECT_EQ(*mover::fenceUsers(src), (std::vector<std::string>{"move-42", "move-7"}));
  ASSERT_TRUE(mover::fenceTenant(src, "42", 1, std::chrono::minutes(5)));
  ASSERT_TRUE(mover::extendFence(src, "42").isOk());  // flipped: fenced until finalize

  ASSERT_TRUE(mover::releaseFence(src, "move-7", tables, {}).isOk());
  ASSERT_TRUE(mover::uninstallFence(src, tables, {}).isOk()) << "the old teardown entry point";
  for (const auto& t : tables) EXPECT_TRUE(*mover::fenceInstalled(src, t)) << t.key();
  EXPECT_TRUE(mover::checkFenceInPlace(src, tables).isOk());
  EXPECT_EQ(*mover::fenceUsers(src), (std::vector<std::string>{"move-42"}));
  auto app = connectOrDie(sourceCluster().dsn(db));
  EXPECT_EQ(
      sqlstateCode(app, "UPDATE orders SET status = 'x' WHERE tenant_id = 42 AND order_id = 1"),
      mover::kFenceSqlState);
  EXPECT_EQ(
      sqlstateCode(app, "UPDATE orders SET status = 'x' WHERE tenant_id = 1 AND order_id = 1"),
      "ok");

  // The last user, while its tenant is still fenced: the triggers stay (never unfence by
  // dropping them); once unfenced, a second release removes everything.
  ASSERT_TRUE(mover::releaseFence(src, "move-42", tables, {}).isOk());
  for (const auto& t : tables) EXPECT_TRUE(*mover::fenceInstalled(src, t)) << t.key();
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
  ASSERT_TRUE(mover::releaseFence(src, "move-42", tables, {}).isOk());
  for (const auto& t : tables) EXPECT_FALSE(*mover::fenceInstalled(src, t)) << t.key();
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'stampmover%'"), "0");
  EXPECT_EQ(
      scalar(src, "SELECT count(*) FROM pg_class WHERE relnamespace = 'stampmover'::regnamespace"),
      "0");
  EXPECT_EQ(
      scalar(src, "SELECT count(*) FROM pg_proc WHERE pronamespace = 'stampmover'::regnamespace"),
      "0");
  EXPECT_TRUE(mover::fenceUsers(src)->empty());
  EXPECT_TRUE(mover::releaseFence(src, "move-42", tables, {}).isOk()) << "idempotent";
  EXPECT_TRUE(mover::unfenceTenant(src, "42").isOk()) << "nothing installed: nothing to do";
}

// Issue 11, item 3: checked just before each freeze; names the table and what is missing.
TEST(Fence, CheckInPlaceNamesMissingOrDisabledTriggers) {
  std::string db = freshDatabase();
  auto src = seededSource(db);
  auto tables = tenantTables(src);
  EXPECT_EQ(mover::checkFenceInPlace(src, tables).errorClass(), common::ErrorClass::kRefused);
  ASSERT_TRUE(mover::acquireFence(src, tables, "m1", {}).isOk());
  EXPECT_TRUE(mover::checkFenceInPlace(src, tables).isOk());
  execOrDie(src,
            "DROP TRIGGER stampmover_fence_row ON orders; "
            "ALTER TABLE events DISABLE TRIGGER stampmover_fence_truncate");
  Status st = mover::checkFenceInPlace(src, tables);
  ASSERT_FALSE(st.isOk());
  EXPECT_EQ(st.errorClass(), common::ErrorClass::kRefused);
  EXPECT_NE(st.message().find("public.orders: stampmover_fence_row missing"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("public.events: stampmover_fence_truncate disabled"),
            std::string::npos)
      << st.message();
  ASSERT_TRUE(mover::acquireFence(src, tables, "m1", {}).isOk()) << "reinstalls what is missing";
  EXPECT_TRUE(mover::checkFenceInPlace(src, tables).isOk());

  // A mask reset by hand would let a fenced tenant write; the check puts it right.
  ASSERT_TRUE(mover::fenceTenant(src, "42", 1, std::chrono::minutes(5)));
  execOrDie(src, "SELECT setval('stampmover.fence_mask', 0)");
  EXPECT_TRUE(mover::checkFenceInPlace(src, tables).isOk());
  auto app = connectOrDie(sourceCluster().dsn(db));
  EXPECT_EQ(sqlstateCode(app, "DELETE FROM order_items WHERE tenant_id = 42 AND order_id = 1"),
            mover::kFenceSqlState);
  // RESTART leaves the sequence never-called: NULL, which the WHEN reads as "nobody fenced".
  execOrDie(src, "ALTER SEQUENCE stampmover.fence_mask RESTART");
  EXPECT_EQ(sqlstateCode(app, "DELETE FROM order_items WHERE tenant_id = 42 AND order_id = 1"),
            "ok")
      << "the hand-made reset does unfence: that is what the check before each freeze is for";
  EXPECT_TRUE(mover::checkFenceInPlace(src, tables).isOk());
  EXPECT_EQ(scalar(src, kMaskIsEmpty), "f");
  EXPECT_EQ(sqlstateCode(app, "DELETE FROM order_items WHERE tenant_id = 42 AND order_id = 2"),
            mover::kFenceSqlState);
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
}

// The mask only filters: with several tenants fenced, unfencing one leaves the others fenced,
// and tenants that are not fenced are never refused (whatever their bit).
TEST(Fence, MaskFollowsTheFencedTenants) {
  std::string db = freshDatabase();
  auto src = connectOrDie(sourceCluster().dsn(db));
  execOrDie(src,
            "CREATE TABLE kv (tenant_id text NOT NULL, k int NOT NULL, v int, PRIMARY KEY "
            "(tenant_id, k)); "
            "INSERT INTO kv SELECT 't' || t, k, 0 FROM generate_series(1, 200) t, "
            "generate_series(1, 2) k");
  auto tables = tenantTables(src);
  ASSERT_TRUE(mover::acquireFence(src, tables, "m1", {}).isOk());
  ASSERT_TRUE(mover::armFence(src).isOk());
  EXPECT_EQ(scalar(src, kMaskIsEmpty), "t") << "nobody fenced: the mask reads NULL";
  ASSERT_TRUE(mover::fenceTenant(src, "t1", 1, std::chrono::minutes(5)));
  ASSERT_TRUE(mover::fenceTenant(src, "t2", 1, std::chrono::minutes(5)));
  auto app = connectOrDie(sourceCluster().dsn(db));
  int refused = 0;
  for (int t = 1; t <= 200; ++t) {
    const std::string code =
        sqlstateCode(app, "UPDATE kv SET v = v + 1 WHERE tenant_id = 't" + std::to_string(t) + "'");
    if (t <= 2) {
      EXPECT_EQ(code, mover::kFenceSqlState) << "t" << t;
    } else {
      EXPECT_EQ(code, "ok") << "t" << t;
    }
    refused += code != "ok";
  }
  EXPECT_EQ(refused, 2);
  EXPECT_EQ(sqlstateCode(app, "INSERT INTO kv VALUES ('t2', 9, 0)"), mover::kFenceSqlState);
  EXPECT_EQ(
      sqlstateCode(app, "UPDATE kv SET tenant_id = 't2', k = 99 WHERE tenant_id = 't3' AND k = 1"),
      mover::kFenceSqlState);
  ASSERT_TRUE(mover::unfenceTenant(src, "t1").isOk());
  EXPECT_EQ(sqlstateCode(app, "UPDATE kv SET v = 5 WHERE tenant_id = 't1'"), "ok");
  EXPECT_EQ(sqlstateCode(app, "DELETE FROM kv WHERE tenant_id = 't2'"), mover::kFenceSqlState);
  ASSERT_TRUE(mover::unfenceTenant(src, "t2").isOk());
  EXPECT_EQ(scalar(src, kMaskIsEmpty), "t") << "nobody fenced: the mask reads NULL";
  EXPECT_EQ(sqlstateCode(app, "DELETE FROM kv WHERE tenant_id = 't2'"), "ok");
}

// A stamp still carrying the trigger of an older version (BEFORE, one per table) gets the new
// ones in its place, and other tenants' writes still land.
TEST(Fence, AcquireReplacesTheOlderTrigger) {
  std::string db = freshDatabase();
  auto src = seededSource(db);
  auto tables = tenantTables(src);
  const std::string oid = scalar(src, "SELECT 'orders'::regclass::oid::text");
  execOrDie(src, "CREATE SCHEMA stampmover; CREATE FUNCTION stampmover.fence_" + oid +
                     "() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN RETURN NEW; END $f$; "
                     "CREATE TRIGGER stampmover_fence BEFORE INSERT OR UPDATE OR DELETE ON orders "
                     "FOR EACH ROW EXECUTE FUNCTION stampmover.fence_" +
                     oid + "()");
  ASSERT_TRUE(mover::acquireFence(src, tables, "m1", {}).isOk());
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM pg_trigger WHERE tgname = 'stampmover_fence'"), "0");
  EXPECT_TRUE(mover::checkFenceInPlace(src, tables).isOk());
  execOrDie(src, "UPDATE orders SET status = 'landed' WHERE tenant_id = 1 AND order_id = 1");
  EXPECT_EQ(scalar(src, "SELECT status FROM orders WHERE tenant_id = 1 AND order_id = 1"),
            "landed");
}

// pg_stat_activity hides other roles' xids, snapshots and states from a role that is neither
// superuser nor in pg_read_all_stats: the wait would see nobody and return at once. Refuse.
TEST(Fence, WaitRefusesARoleThatCannotSeeOtherSessions) {
  std::string db = freshDatabase();
  auto src = seededSource(db);
  ASSERT_TRUE(mover::acquireFence(src, tenantTables(src), "m1", {}).isOk());
  ASSERT_TRUE(mover::armFence(src).isOk());
  execOrDie(src,
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fence_blind') "
            "THEN CREATE ROLE fence_blind LOGIN; END IF; END $$; "
            "REVOKE pg_read_all_stats FROM fence_blind; "
            "GRANT INSERT, UPDATE, DELETE ON stampmover.fence TO fence_blind; "
            "GRANT UPDATE ON SEQUENCE stampmover.fence_mask TO fence_blind");
  auto blind = connectOrDie(sourceCluster().dsn(db) + " user=fence_blind");
  auto rr = connectOrDie(sourceCluster().dsn(db));
  execOrDie(rr, "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM orders");
  auto xid = mover::fenceTenant(src, "42", 1, std::chrono::minutes(5));
  ASSERT_TRUE(xid) << xid.status().message();
  Status st = mover::waitForOlderTransactions(blind, *xid, std::chrono::milliseconds(300));
  ASSERT_FALSE(st.isOk()) << "returned although it could not see the reader";
  EXPECT_EQ(st.errorClass(), common::ErrorClass::kRefused) << st.message();
  EXPECT_NE(st.message().find("pg_read_all_stats"), std::string::npos) << st.message();
  EXPECT_EQ(mover::checkFenceInPlace(blind, tenantTables(src)).errorClass(),
            common::ErrorClass::kRefused);
  execOrDie(src, "GRANT pg_read_all_stats TO fence_blind");
  st = mover::waitForOlderTransactions(blind, *xid, std::chrono::milliseconds(300));
  EXPECT_EQ(st.errorClass(), common::ErrorClass::kRetryable) << st.message();
  execOrDie(rr, "ROLLBACK");
  EXPECT_TRUE(mover::waitForOlderTransactions(blind, *xid, std::chrono::seconds(5)).isOk());
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
}

// The row trigger's function is not called at all while nobody is fenced (the WHEN clause
// stops it: that is what keeps other tenants' writes cheap), and is called while someone is.
TEST(Fence, RowFunctionRunsOnlyWhileSomeoneIsFenced) {
  std::string db = freshDatabase();
  auto src = seededSource(db);
  auto tables = tenantTables(src);
  ASSERT_TRUE(mover::acquireFence(src, tables, "m1", {}).isOk());
  ASSERT_TRUE(mover::armFence(src).isOk());
  const std::string fn =
      scalar(src,
             "SELECT tgfoid::text FROM pg_trigger WHERE tgname = 'stampmover_fence_row' "
             "AND tgrelid = 'orders'::regclass");
  auto app = connectOrDie(sourceCluster().dsn(db));
  execOrDie(app, "SET track_functions = 'pl'");
  // The session's pending counts (not flushed inside a transaction) before and after `sql`.
  const std::string count = "SELECT coalesce(pg_stat_get_xact_function_calls(" + fn + "), 0)::text";
  auto calls = [&](const std::string& sql) {
    execOrDie(app, "BEGIN");
    const long before = std::stol(scalar(app, count));
    execOrDie(app, sql);
    const long after = std::stol(scalar(app, count));
    execOrDie(app, "COMMIT");
    return std::to_string(after - before);
  };
  const std::string upd = "UPDATE orders SET status = 'x' WHERE tenant_id = 1 AND order_id <= 3";
  EXPECT_EQ(calls(upd), "0") << "nobody fenced";
  ASSERT_TRUE(mover::fenceTenant(src, "42", 1, std::chrono::minutes(5)));
  EXPECT_EQ(calls(upd), "3") << "someone fenced: every row is checked";
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
  EXPECT_EQ(calls(upd), "0") << "unfenced again";
}

// Issue 11, item 8: acquired, the row triggers are dormant (disabled: other tenants' writes pay
// next to nothing); fencing is refused until the stamp is armed, which the check before each
// freeze does; new triggers on an armed stamp are armed; writes are fenced only once armed.
TEST(Fence, DormantUntilArmedAndFencingRefusedUntilThen) {
  std::string db = freshDatabase();
  auto src = seededSource(db);
  auto tables = tenantTables(src);
  const std::string states =
      "SELECT string_agg(DISTINCT tgenabled::text, ',') FROM pg_trigger WHERE tgname = "
      "'stampmover_fence_row'";
  ASSERT_TRUE(mover::acquireFence(src, tables, "m1", {}).isOk());
  EXPECT_EQ(scalar(src, states), "D") << "dormant after acquire";
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM pg_trigger WHERE tgname = 'stampmover_fence_row'"),
            std::to_string(tables.size()));
  for (const auto& t : tables) EXPECT_TRUE(*mover::fenceInstalled(src, t)) << t.key();

  // Fencing a dormant stamp would not be enforced: refused, nothing written.
  auto refused = mover::fenceTenant(src, "42", 1, std::chrono::minutes(5));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.status().errorClass(), common::ErrorClass::kRefused);
  EXPECT_NE(refused.status().message().find("not armed on"), std::string::npos)
      << refused.status().message();
  EXPECT_NE(refused.status().message().find("orders"), std::string::npos);
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM stampmover.fence"), "0");
  auto app = connectOrDie(sourceCluster().dsn(db));
  EXPECT_EQ(sqlstateCode(app, "UPDATE orders SET status = 'd' WHERE tenant_id = 42"), "ok");

  // Arming is part of the check before each freeze; idempotent.
  ASSERT_TRUE(mover::checkFenceInPlace(src, tables).isOk());
  EXPECT_EQ(scalar(src, states), "O");
  ASSERT_TRUE(mover::armFence(src).isOk());
  ASSERT_TRUE(mover::fenceTenant(src, "42", 1, std::chrono::minutes(5)));
  EXPECT_EQ(sqlstateCode(app, "UPDATE orders SET status = 'e' WHERE tenant_id = 42"),
            mover::kFenceSqlState);
  EXPECT_EQ(sqlstateCode(app, "INSERT INTO documents (tenant_id, doc_key) VALUES (42, 'dz')"),
            mover::kFenceSqlState);
  EXPECT_EQ(sqlstateCode(app, "DELETE FROM order_items WHERE tenant_id = 42 AND order_id = 1"),
            mover::kFenceSqlState);
  EXPECT_EQ(sqlstateCode(app, "UPDATE orders SET status = 'e' WHERE tenant_id = 1"), "ok");

  // A table acquired later, by another migration, on the armed stamp: armed at once.
  execOrDie(src,
            "CREATE TABLE late (tenant_id bigint NOT NULL, k int NOT NULL, PRIMARY KEY "
            "(tenant_id, k))");
  auto with_late = tenantTables(src);
  ASSERT_EQ(with_late.size(), tables.size() + 1);
  ASSERT_TRUE(mover::acquireFence(src, with_late, "m2", {}).isOk());
  EXPECT_EQ(scalar(src, states), "O");
  EXPECT_EQ(sqlstateCode(app, "INSERT INTO late VALUES (42, 1)"), mover::kFenceSqlState);
  EXPECT_EQ(sqlstateCode(app, "INSERT INTO late VALUES (1, 1)"), "ok");
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
  ASSERT_TRUE(mover::releaseFence(src, "m1", tables, {}).isOk());
  ASSERT_TRUE(mover::releaseFence(src, "m2", with_late, {}).isOk());
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'stampmover%'"), "0");

  // A fresh acquire on an unarmed stamp is dormant again; a row trigger disabled by hand on an
  // armed stamp is dormant too: refused until the check arms it again.
  ASSERT_TRUE(mover::acquireFence(src, tables, "m3", {}).isOk());
  EXPECT_EQ(scalar(src, states), "D");
  ASSERT_TRUE(mover::checkFenceInPlace(src, tables).isOk());
  execOrDie(src, "ALTER TABLE accounts DISABLE TRIGGER stampmover_fence_row");
  EXPECT_FALSE(mover::fenceTenant(src, "42", 1, std::chrono::minutes(5)));
  ASSERT_TRUE(mover::checkFenceInPlace(src, tables).isOk());
  EXPECT_EQ(scalar(src, states), "O");
  ASSERT_TRUE(mover::fenceTenant(src, "42", 1, std::chrono::minutes(5)));
  EXPECT_EQ(sqlstateCode(app,
                         "INSERT INTO accounts (tenant_id, account_id, name, created_at) VALUES "
                         "(42, 777777, 'x', now())"),
            mover::kFenceSqlState);
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
  ASSERT_TRUE(mover::releaseFence(src, "m3", tables, {}).isOk());
}

// A stamp whose row triggers carry an older version's WHEN (mask IS DISTINCT FROM 0, which now
// fires on every write since an empty mask reads NULL) still passes the check (it fences), and
// acquireFence puts the current WHEN in its place.
TEST(Fence, AcquireReplacesAnOlderWhenClause) {
  std::string db = freshDatabase();
  auto src = seededSource(db);
  auto tables = tenantTables(src);
  ASSERT_TRUE(mover::acquireFence(src, tables, "m1", {}).isOk());
  ASSERT_TRUE(mover::armFence(src).isOk());
  const std::string oid = scalar(src, "SELECT 'orders'::regclass::oid::text");
  execOrDie(src,
            "DROP TRIGGER stampmover_fence_row ON orders; "
            "CREATE TRIGGER stampmover_fence_row AFTER INSERT OR UPDATE OR DELETE ON orders FOR "
            "EACH ROW WHEN (pg_sequence_last_value('stampmover.fence_mask'::regclass) IS DISTINCT "
            "FROM 0) EXECUTE FUNCTION stampmover.fence_row_" +
                oid + "()");
  const std::string def =
      "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'stampmover_fence_row' AND "
      "tgrelid = 'orders'::regclass";
  EXPECT_TRUE(mover::checkFenceInPlace(src, tables).isOk());
  auto app = connectOrDie(sourceCluster().dsn(db));
  EXPECT_EQ(sqlstateCode(app, "UPDATE orders SET status = 'a' WHERE tenant_id = 1"), "ok");
  ASSERT_TRUE(mover::acquireFence(src, tables, "m2", {}).isOk());
  EXPECT_NE(scalar(src, def).find("IS NOT NULL"), std::string::npos) << scalar(src, def);
  ASSERT_TRUE(mover::fenceTenant(src, "42", 1, std::chrono::minutes(5)));
  EXPECT_EQ(sqlstateCode(app, "UPDATE orders SET status = 'b' WHERE tenant_id = 42"),
            mover::kFenceSqlState);
  EXPECT_EQ(sqlstateCode(app, "UPDATE orders SET status = 'b' WHERE tenant_id = 1"), "ok");
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
}
