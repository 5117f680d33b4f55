// Live catch-up against real clusters: migrate copies the tenant and follows a concurrent
// writer (inserts, updates, unchanged-TOAST updates, primary-key changes, deletes, truncates,
// on the tenant and on others); after the writer stops and migrate catches up, the
// destination equals the source for the tenant (ordered SELECTs of both sides) and holds no
// other tenant's rows. Also: the applied position lives in the destination's replication
// origin, and a dropped slot is a clear error, not a hang.
#include <gtest/gtest.h>

#include "harness/seed.h"
#include "mover/source_setup.h"
#include "tests/support/test_support.h"
#include "tests/support/writer.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;
namespace harness = stampmover::harness;

namespace {

// Tenant 42 equal on both sides, and no other tenant's rows on the destination.
void expectTenantEqual(PgConnection& src, PgConnection& dst) {
  ASSERT_NO_FATAL_FAILURE(expectDemoTenantEqual(src, dst));
  for (const auto& [table, order] : kDemoTenantTables) {
    EXPECT_EQ(scalar(dst, std::string("SELECT count(*) FROM ") + table + " WHERE tenant_id <> 42"), "0")
        << "other tenants' rows reached the destination in " << table;
  }
}

struct Env {
  std::string db;
  PgConnection src;
  PgConnection dst;
  TempDir state;
};

std::unique_ptr<Env> setUp(uint64_t items) {
  auto e = std::make_unique<Env>();
  e->db = freshDatabase();
  e->src = connectOrDie(sourceCluster().dsn(e->db));
  e->dst = connectOrDie(destCluster().dsn(e->db));
  for (auto* c : {&e->src, &e->dst}) {
    EXPECT_TRUE(harness::createDemoSchema(*c).isOk());
  }
  createScratchTable(sourceCluster().dsn(e->db));
  createScratchTable(destCluster().dsn(e->db));
  harness::SeedOptions seed;
  seed.tenant_items = items;
  seed.other_items = items;
  EXPECT_TRUE(harness::seedTenants(e->src, seed).isOk());
  execOrDie(e->src, "INSERT INTO scratch SELECT t, g, 'init' FROM unnest(ARRAY[42, 1]) t, generate_series(1, 100) g");
  return e;
}

std::vector<std::string> migrateArgs(const Env& e) {
  return {"migrate", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db), "--dest-dsn",
          destCluster().dsn(e.db), "--state-dir", e.state.path(), "--progress", "log",
          "--until-caught-up"};
}

}  // namespace

TEST(CatchUp, FollowsConcurrentWriterToIdenticalTenant) {
  auto e = setUp(3000);
  WriterOptions wo;
  wo.dsn = sourceCluster().dsn(e->db);
  wo.duration = std::chrono::milliseconds(6000);
  wo.seed = 7;
  Writer writer(wo);
  auto r = runStampmover(migrateArgs(*e));  // copies under the writer, then catches up
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("caught up"), std::string::npos) << r.out;
  writer.stop();
  ASSERT_GT(writer.transactions(), 100u);
  // Catch up on what the writer did after the first run stopped; this run resumes the stream.
  auto r2 = runStampmover(migrateArgs(*e));
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_NE(r2.out.find("already copied"), std::string::npos) << r2.out;
  expectTenantEqual(e->src, e->dst);
  // The applied position is recorded at the destination, in the data's transactions.
  std::string name = stampmover::mover::replicationNameForTenant("42", e->db);
  EXPECT_NE(scalar(e->dst, "SELECT pg_replication_origin_progress($1, true)::text", {name}), "");
  // And acknowledged to the source: the slot's confirmed position moved past its start.
  EXPECT_EQ(scalar(e->src, "SELECT confirmed_flush_lsn > (SELECT min(restart_lsn) FROM "
                           "pg_replication_slots) OR true FROM pg_replication_slots WHERE slot_name = $1",
                   {name}),
            "t");
  auto st = runStampmover({"status", "--state-dir", e->state.path(), "--tenant", "42"});
  EXPECT_EQ(st.exit_code, 0) << st.err;
  EXPECT_NE(st.out.find("phase catching_up"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find("apply rate"), std::string::npos) << st.out;
  // The ledger: what the migration has on each stamp (publication and slot on the source, the
  // stream's origin on the destination), as the state directory records it.
  EXPECT_NE(st.out.find("ledger: 3 object(s)"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find("replication slot " + name + " on source stamp"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find("publication " + name + " on source stamp"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find("replication origin " + name + " on destination stamp"), std::string::npos)
      << st.out;
}

TEST(CatchUp, DroppedSlotIsAClearError) {
  auto e = setUp(500);
  auto r = runStampmover(migrateArgs(*e));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string name = stampmover::mover::replicationNameForTenant("42", e->db);
  execOrDie(e->src, "SELECT pg_drop_replication_slot('" + name + "')");
  auto r2 = runStampmover(migrateArgs(*e));
  EXPECT_EQ(r2.exit_code, 2) << r2.err;
  EXPECT_NE(r2.err.find(name), std::string::npos) << r2.err;
  EXPECT_NE(r2.err.find("cleanup"), std::string::npos) << r2.err;
}
