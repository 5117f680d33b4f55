// Guards that stop a migration instead of reporting a success it cannot back: a destination
// that went back in time (its replication origin behind what the slot was told), and a
// destination that differs from the source in rows the stream never touched (the cutover's
// re-check only covers changed keys, so a full comparison must pass before the first freeze).
#include <gtest/gtest.h>

#include "harness/seed.h"
#include "mover/source_setup.h"
#include "tests/support/test_support.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;
namespace harness = stampmover::harness;

namespace {

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
  e->cp_db = freshDatabase();
  e->src = connectOrDie(sourceCluster().dsn(e->db));
  e->dst = connectOrDie(destCluster().dsn(e->db));
  e->cp = connectOrDie(destCluster().dsn(e->cp_db));
  for (auto* c : {&e->src, &e->dst}) EXPECT_TRUE(harness::createDemoSchema(*c).isOk());
  harness::SeedOptions seed;
  seed.tenant_items = 300;
  seed.other_items = 300;
  EXPECT_TRUE(harness::seedTenants(e->src, seed).isOk());
  return e;
}

std::vector<std::string> followArgs(const Env& e) {
  return {"migrate", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db), "--dest-dsn",
          destCluster().dsn(e.db), "--state-dir", e.state.path(), "--progress", "log",
          "--until-caught-up"};
}

}  // namespace

// The destination is "restored from a backup": its origin is set back to an earlier position
// while the slot was acknowledged further. Resuming would skip the changes in between.
TEST(Guards, DestinationThatWentBackInTimeIsRefused) {
  auto e = setUp();
  auto first = runStampmover(followArgs(*e));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const std::string origin = stampmover::mover::replicationNameForTenant("42", e->db);
  const std::string before =
      scalar(e->dst, "SELECT pg_replication_origin_progress($1, true)::text", {origin});
  ASSERT_FALSE(before.empty());
  execOrDie(e->src, "UPDATE orders SET status = 'after the backup' WHERE tenant_id = 42");
  auto second = runStampmover(followArgs(*e));
  ASSERT_EQ(second.exit_code, 0) << second.err;
  // What a restore does to the destination: the origin (and the rows) go back.
  execOrDie(e->dst, "SET session_replication_role = replica; "
                    "UPDATE orders SET status = 'stale' WHERE tenant_id = 42");
  scalar(e->dst, "SELECT pg_replication_origin_advance($1, $2::pg_lsn)", {origin, before});
  auto third = runStampmover(followArgs(*e));
  EXPECT_EQ(third.exit_code, 2) << third.out << third.err;
  EXPECT_NE(third.err.find("went back in time"), std::string::npos) << third.err;
  EXPECT_NE(third.err.find(before), std::string::npos) << "names the origin's position: " << third.err;
  EXPECT_NE(third.err.find("stampmover cleanup"), std::string::npos) << third.err;
}

// A row of the tenant changed at the destination behind the mover's back (never touched by the
// stream): the comparison before the first freeze finds it, and the tenant is not flipped.
TEST(Guards, CutoverComparesTheWholeTenantBeforeTheFirstFreeze) {
  auto e = setUp();
  auto first = runStampmover(followArgs(*e));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  execOrDie(e->dst, "SET session_replication_role = replica; "
                    "UPDATE accounts SET name = 'tampered' WHERE tenant_id = 42 AND account_id = 1");
  auto r = runStampmover({"migrate", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e->db),
                          "--dest-dsn", destCluster().dsn(e->db), "--state-dir", e->state.path(),
                          "--progress", "log", "--cutover", "auto", "--soak", "1",
                          "--control-plane-dsn", destCluster().dsn(e->cp_db)});
  EXPECT_EQ(r.exit_code, 4) << r.out << r.err;
  EXPECT_NE((r.out + r.err).find("difference"), std::string::npos) << r.out << r.err;
  EXPECT_EQ((r.out + r.err).find("FLIPPED"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(scalar(e->cp, "SELECT count(*) FROM stampmover_routing.routes WHERE tenant = '42' "
                          "AND state <> 'active'"),
            "0");
}
