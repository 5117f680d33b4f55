// The migration ledger's teardown against real servers (two stamps and a control plane, a real
// RocksDB directory): every recorded object is created by hand, the teardown drops each one and
// erases its entry, and independent SQL on each stamp (pg_replication_slots, pg_publication,
// pg_replication_origin, the fence's tables, pg_class) shows nothing left; a second teardown is
// a no-op; a server the teardown has no connection to keeps its entries until one is given; the
// control plane's mirror follows the store.
#include <gtest/gtest.h>

#include "harness/seed.h"
#include "mover/catalog.h"
#include "mover/fence.h"
#include "orchestrator/ledger.h"
#include "routing/routing_directory.h"
#include "tests/support/test_support.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;
namespace harness = stampmover::harness;
namespace mover = stampmover::mover;
namespace orch = stampmover::orch;
namespace routing = stampmover::routing;
using orch::LedgerEntry;
using orch::LedgerKind;
using orch::LedgerServer;

namespace {

struct Env {
  std::string db;
  std::string cp_db;
  std::string cp_dsn;
  PgConnection src;
  PgConnection dst;
  PgConnection cp;
  TempDir state;
  std::vector<mover::TableInfo> src_tables;
  std::vector<mover::TableInfo> dst_tables;
};

std::unique_ptr<Env> setUp() {
  auto e = std::make_unique<Env>();
  e->db = freshDatabase();
  e->cp_db = freshDatabase();
  e->cp_dsn = destCluster().dsn(e->cp_db);
  e->src = connectOrDie(sourceCluster().dsn(e->db));
  e->dst = connectOrDie(destCluster().dsn(e->db));
  e->cp = connectOrDie(e->cp_dsn);
  for (auto* c : {&e->src, &e->dst}) EXPECT_TRUE(harness::createDemoSchema(*c).isOk());
  auto st = mover::discoverTenantTables(e->src, {});
  EXPECT_TRUE(st) << st.status().message();
  if (st) e->src_tables = *st;
  auto dt = mover::discoverTenantTables(e->dst, {});
  EXPECT_TRUE(dt) << dt.status().message();
  if (dt) e->dst_tables = *dt;
  return e;
}

// Everything of the migration named `name` that SQL of the test's own finds on `c`.
std::string leftOn(PgConnection& c, const std::string& name) {
  std::string out;
  out += scalar(c, "SELECT string_agg('slot ' || slot_name, ',') FROM pg_replication_slots WHERE "
                   "slot_name LIKE $1 || '%'", {name});
  out += scalar(c, "SELECT string_agg('publication ' || pubname, ',') FROM pg_publication");
  out += scalar(c, "SELECT string_agg('origin ' || roname, ',') FROM pg_replication_origin WHERE "
                   "roname LIKE $1 || '%'", {name});
  out += scalar(c, "SELECT string_agg('table ' || c.oid::regclass::text, ',') FROM pg_class c JOIN "
                   "pg_namespace n ON n.oid = c.relnamespace WHERE (n.nspname = 'stampmover' AND "
                   "c.relname IN ('fence', 'fence_users')) OR c.relname = 'ledger_stage'");
  out += scalar(c, "SELECT string_agg('trigger ' || tgname, ',') FROM pg_trigger WHERE tgname LIKE "
                   "'stampmover_fence%'");
  return out;
}

std::string mirrorCount(Env& e, const std::string& id) {
  return scalar(e.cp, "SELECT count(*) FROM stampmover_routing.migration_ledger WHERE "
                      "migration_id = $1", {id});
}

}  // namespace

TEST(Ledger, TeardownDropsEveryRecordedObjectOnceAndIsIdempotent) {
  auto e = setUp();
  const std::string name = "stampmover_ledgertest_" + e->db;
  const std::string rname = name + "_r";
  const std::string id = mover::migrationId("42", "stamp-a", "stamp-b");
  auto store = mover::openRocksDbCheckpointStore({e->state.path(), true});
  ASSERT_TRUE(store) << store.status().message();
  auto ledger = orch::Ledger::open(**store, id, e->cp_dsn);
  ASSERT_TRUE(ledger) << ledger.status().message();

  // Recorded first, then created (as the migration does).
  std::vector<LedgerEntry> all = orch::forwardLedgerEntries(name);
  for (auto& x : orch::freezeLedgerEntries(rname, "stamp-a", "stamp-b")) all.push_back(x);
  all.push_back({LedgerKind::kStagingTable, LedgerServer::kDestination, "public.ledger_stage"});
  all.push_back({LedgerKind::kRoutingEntry, LedgerServer::kControlPlane, "42"});
  ASSERT_TRUE((*ledger)->intend(all).isOk());
  EXPECT_EQ(mirrorCount(*e, id), std::to_string(all.size())) << "mirrored in the control plane";

  execOrDie(e->src, "CREATE PUBLICATION " + name + " FOR TABLE orders");
  execOrDie(e->src, "SELECT pg_create_logical_replication_slot('" + name + "', 'pgoutput')");
  execOrDie(e->dst, "SELECT pg_replication_origin_create('" + name + "')");
  execOrDie(e->dst, "CREATE PUBLICATION " + rname + " FOR TABLE orders");
  execOrDie(e->dst, "SELECT pg_create_logical_replication_slot('" + rname + "', 'pgoutput')");
  execOrDie(e->src, "SELECT pg_replication_origin_create('" + rname + "')");
  execOrDie(e->dst, "CREATE TABLE ledger_stage (id bigint)");
  ASSERT_TRUE(mover::acquireFence(e->src, e->src_tables, id, {}).isOk());
  ASSERT_TRUE(mover::acquireFence(e->dst, e->dst_tables, id, {}).isOk());
  ASSERT_NE(leftOn(e->src, name), "");
  ASSERT_NE(leftOn(e->dst, name), "");
  for (const auto& x : all) {
    PgConnection& c = x.server == LedgerServer::kSource ? e->src : e->dst;
    if (x.server == LedgerServer::kControlPlane) continue;
    auto there = orch::ledgerObjectExists(x, c, id);
    ASSERT_TRUE(there) << there.status().message();
    EXPECT_TRUE(*there) << orch::ledgerKindName(x.kind) << " " << x.name;
  }

  routing::PgRoutingDirectory routes(e->cp_dsn);
  ASSERT_TRUE(routes.ensureSchema().isOk());
  ASSERT_TRUE(routes.put("42", "stamp-a").isOk());
  orch::TeardownTargets t;
  t.tenant = "42";
  t.source_stamp = "stamp-a";
  t.destination_stamp = "stamp-b";
  t.source = &e->src;
  t.destination = &e->dst;
  t.routes = &routes;
  t.source_tables = e->src_tables;
  t.destination_tables = e->dst_tables;
  t.failpoints = false;
  auto rep = orch::teardown(**ledger, t);
  ASSERT_TRUE(rep) << rep.status().message();
  EXPECT_EQ(rep->removed.size(), all.size());
  EXPECT_TRUE(rep->kept.empty());
  EXPECT_EQ(leftOn(e->src, name), "") << "source";
  EXPECT_EQ(leftOn(e->dst, name), "") << "destination";
  auto left = (*ledger)->entries();
  ASSERT_TRUE(left);
  EXPECT_TRUE(left->empty());
  EXPECT_EQ(mirrorCount(*e, id), "0");
  EXPECT_EQ(scalar(e->cp, "SELECT stamp || ',' || state FROM stampmover_routing.routes WHERE "
                          "tenant = '42'"),
            "stamp-a,active")
      << "the routing entry is settled, never deleted";

  // Again, as after a kill right at its end: nothing to do, nothing fails.
  ASSERT_TRUE((*ledger)->intend(all).isOk());
  auto again = orch::teardown(**ledger, t);
  ASSERT_TRUE(again) << again.status().message();
  EXPECT_EQ(leftOn(e->src, name), "");
  EXPECT_EQ(leftOn(e->dst, name), "");
  left = (*ledger)->entries();
  ASSERT_TRUE(left);
  EXPECT_TRUE(left->empty());
}

TEST(Ledger, AServerWithoutAConnectionKeepsItsEntries) {
  auto e = setUp();
  const std::string name = "stampmover_ledgerkept_" + e->db;
  const std::string id = mover::migrationId("42", "stamp-a", "stamp-c");
  auto store = mover::openRocksDbCheckpointStore({e->state.path(), true});
  ASSERT_TRUE(store) << store.status().message();
  auto ledger = orch::Ledger::open(**store, id);
  ASSERT_TRUE(ledger) << ledger.status().message();
  const auto fwd = orch::forwardLedgerEntries(name);
  ASSERT_TRUE((*ledger)->intend(fwd).isOk());
  execOrDie(e->src, "CREATE PUBLICATION " + name + " FOR TABLE orders");
  execOrDie(e->src, "SELECT pg_create_logical_replication_slot('" + name + "', 'pgoutput')");
  execOrDie(e->dst, "SELECT pg_replication_origin_create('" + name + "')");

  orch::TeardownTargets t;
  t.tenant = "42";
  t.source = &e->src;  // no destination: its origin cannot be checked
  t.unfence_source = t.unfence_destination = false;
  t.settle_route = false;
  t.failpoints = false;
  auto rep = orch::teardown(**ledger, t);
  ASSERT_TRUE(rep) << rep.status().message();
  ASSERT_EQ(rep->kept.size(), 1u);
  EXPECT_EQ(rep->kept[0].kind, LedgerKind::kOrigin);
  EXPECT_EQ(leftOn(e->src, name), "");
  EXPECT_EQ(leftOn(e->dst, name), "origin " + name) << "untouched without a connection";
  EXPECT_TRUE((*ledger)->contains(fwd[2])) << "the origin stays in the ledger";

  t.destination = &e->dst;
  rep = orch::teardown(**ledger, t);
  ASSERT_TRUE(rep) << rep.status().message();
  EXPECT_TRUE(rep->kept.empty());
  EXPECT_EQ(leftOn(e->dst, name), "");
  auto left = (*ledger)->entries();
  ASSERT_TRUE(left);
  EXPECT_TRUE(left->empty());
}
