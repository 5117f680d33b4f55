// The source write fence against a real cluster: fencing is one row write that rejects the
// fenced tenant's inserts, updates and deletes (SQLSTATE 55P04) and no one else's; apply
// sessions (session_replication_role = replica) pass; the wait for older transactions sees
// a REPEATABLE READ writer that started before the fence; installing under a long
// transaction times out per attempt instead of queueing writers behind it.
#include <gtest/gtest.h>

#include <thread>

#include "harness/seed.h"
#include "mover/catalog.h"
#include "mover/fence.h"
#include "tests/support/test_support.h"

using namespace stampmover;
using namespace stampmover::testing;
using common::PgConnection;

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
  EXPECT_EQ(sqlstateOf(app, "INSERT INTO accounts (tenant_id, account_id, name, created_at) VALUES (42, 999999, 'x', now())"), "fenced");
  EXPECT_EQ(sqlstateOf(app, "UPDATE orders SET status = 'x' WHERE tenant_id = 42 AND order_id = 1"), "fenced");
  EXPECT_EQ(sqlstateOf(app, "DELETE FROM order_items WHERE tenant_id = 42 AND order_id = 2"), "fenced");
  EXPECT_EQ(sqlstateOf(app, "UPDATE orders SET status = 'x' WHERE tenant_id = 1 AND order_id = 1"), "ok");
  EXPECT_EQ(sqlstateOf(app, "INSERT INTO accounts (tenant_id, account_id, name, created_at) VALUES (1, 999999, 'x', now())"), "ok");
  // Moving a row into the fenced tenant is a write of the fenced tenant, too.
  EXPECT_EQ(sqlstateOf(app, "UPDATE accounts SET tenant_id = 42 WHERE tenant_id = 1 AND account_id = 999999"), "fenced");
  // And moving one out of it (the trigger looks up the old tenant only when it changes).
  EXPECT_EQ(sqlstateOf(app, "UPDATE accounts SET tenant_id = 1 WHERE tenant_id = 42 AND account_id = 1"), "fenced");

  auto applier = connectOrDie(sourceCluster().dsn(db));
  execOrDie(applier, "SET session_replication_role = replica");
  EXPECT_EQ(sqlstateOf(applier, "UPDATE orders SET status = 'reverse' WHERE tenant_id = 42 AND order_id = 1"), "ok");

  ASSERT_TRUE(mover::uninstallFence(src, tables, {}).isOk());
  for (const auto& t : tables) EXPECT_TRUE(*mover::fenceInstalled(src, t)) << "kept while a tenant is fenced";
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
  EXPECT_EQ(sqlstateOf(app, "UPDATE orders SET status = 'y' WHERE tenant_id = 42 AND order_id = 1"), "ok");
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
  execOrDie(old, "BEGIN ISOLATION LEVEL REPEATABLE READ; UPDATE orders SET status = 'early' "
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
  EXPECT_EQ(sqlstateOf(app, "UPDATE orders SET status = 'a' WHERE tenant_id = 42 AND order_id = 3"), "fenced");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(sqlstateOf(app, "UPDATE orders SET status = 'b' WHERE tenant_id = 42 AND order_id = 3"), "ok");
  EXPECT_FALSE(mover::extendFence(src, "42").isOk()) << "an expired fence cannot be extended";
  ASSERT_TRUE(mover::fenceTenant(src, "42", 3, std::chrono::milliseconds(300)));
  ASSERT_TRUE(mover::extendFence(src, "42").isOk());
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(sqlstateOf(app, "UPDATE orders SET status = 'c' WHERE tenant_id = 42 AND order_id = 3"), "fenced");
  ASSERT_TRUE(mover::unfenceTenant(src, "42").isOk());
}

TEST(Fence, InstallUnderALongTransactionTimesOutInsteadOfQueueing) {
  std::string db = freshDatabase();
  auto src = connectOrDie(sourceCluster().dsn(db));
  ASSERT_TRUE(harness::createDemoSchema(src).isOk());
  auto tables = tenantTables(src);
  auto blocker = connectOrDie(sourceCluster().dsn(db));
  execOrDie(blocker, "BEGIN; INSERT INTO accounts (tenant_id, account_id, name, created_at) VALUES (5, 1, 'long', now())");
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
