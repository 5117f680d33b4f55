// The tenant key as typed is not the tenant key (issue 10, item 3): `--tenant 042` on a bigint
// column and an upper-case uuid must name the same tenant everywhere as the canonical form the
// server prints (`42`, lower-case uuid) — one routing entry, the fence row that the trigger
// matches, the migration board, the names — not only in the queries where the server casts.
// Checked end to end with migrate --cutover auto against a control plane, independently of
// stampmover's own code (routing rows, the fence table, ordered row dumps of both sides).
#include <gtest/gtest.h>

#include <thread>

#include "common/tenant_key.h"
#include "harness/seed.h"
#include "tests/support/test_support.h"
#include "tests/support/writer.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;
namespace common = stampmover::common;
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

std::unique_ptr<Env> newEnv() {
  auto e = std::make_unique<Env>();
  e->db = freshDatabase();
  e->cp_db = freshDatabase();  // the control plane's own database
  e->src = connectOrDie(sourceCluster().dsn(e->db));
  e->dst = connectOrDie(destCluster().dsn(e->db));
  e->cp = connectOrDie(destCluster().dsn(e->cp_db));
  return e;
}

std::vector<std::string> migrateArgs(const Env& e, const std::string& tenant) {
  std::vector<std::string> a = {"migrate", "--tenant", tenant, "--source-dsn",
                                sourceCluster().dsn(e.db), "--dest-dsn", destCluster().dsn(e.db),
                                "--state-dir", e.state.path(), "--progress", "log", "--cutover",
                                "auto", "--control-plane-dsn", destCluster().dsn(e.cp_db),
                                "--soak", "4"};
  if (getenv("SM_SHOW_LOG")) a.insert(a.end(), {"--log-level", "debug"});
  return a;
}

// Waits for the routing directory to hold an entry in `state` (whatever its tenant text);
// returns that entry's tenant, or "" on timeout.
std::string waitForAnyRoute(PgConnection& cp, const std::string& state, int seconds) {
  for (int i = 0; i < seconds * 50; ++i) {
    auto v = cp.queryValue("SELECT tenant FROM stampmover_routing.routes WHERE state = $1", {state});
    if (v && v->has_value()) return **v;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return "";
}

// Runs the migration of `typed` (which the source reads as `canonical`) through the flip and
// the soak to finalize, and checks every place the tenant is named.
void migrateAndCheckNames(Env& e, const std::string& typed, const std::string& canonical,
                          const std::string& fenced_write) {
  const std::string log = e.state.path() + "/migrate.log";
  ChildProcess child(spawnStampmover(migrateArgs(e, typed), log));
  const std::string flipped = waitForAnyRoute(e.cp, "dual_write", 60);
  ASSERT_EQ(flipped, canonical) << "no flip of tenant " << canonical << "; log:\n" << readFile(log);
  // During the soak the source is fenced for the tenant: the fence row holds the canonical key,
  // so the trigger (which compares the row's key as text) rejects the tenant's writes there.
  EXPECT_EQ(scalar(e.src, "SELECT string_agg(tenant, ',') FROM stampmover.fence"), canonical);
  auto rejected = e.src.exec(fenced_write);
  EXPECT_FALSE(rejected.isOk()) << "a write of the tenant at the fenced source was accepted";
  EXPECT_EQ(child.wait(), 0) << readFile(log);
  if (getenv("SM_SHOW_LOG")) std::fputs(readFile(log).c_str(), stderr);

  // Exactly one routing entry, under the canonical key, and its whole history too.
  EXPECT_EQ(scalar(e.cp, "SELECT string_agg(tenant || ':' || state, ',') FROM stampmover_routing.routes"),
            canonical + ":active");
  EXPECT_EQ(scalar(e.cp, "SELECT count(*) FROM stampmover_routing.route_history WHERE tenant <> $1",
                   {canonical}),
            "0");
  EXPECT_EQ(scalar(e.cp, "SELECT string_agg(tenant, ',') FROM stampmover_routing.migrations"),
            canonical);

  // The operator can name the tenant as typed and is shown the canonical one.
  ProcessResult routes = runStampmover({"routes", "--tenant", typed, "--control-plane-dsn",
                                        destCluster().dsn(e.cp_db), "--state-dir", e.state.path()});
  EXPECT_EQ(routes.exit_code, 0) << routes.err;
  EXPECT_NE(routes.out.find(canonical + " "), std::string::npos) << routes.out;
  ProcessResult status = runStampmover({"status", "--tenant", typed, "--state-dir", e.state.path()});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("migration " + canonical + "@"), std::string::npos) << status.out;
  // verify reads the key as the source does and reports the canonical form.
  ProcessResult verify = runStampmover({"verify", "--tenant", typed, "--source-dsn",
                                        sourceCluster().dsn(e.db), "--dest-dsn",
                                        destCluster().dsn(e.db), "--progress", "log"});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  EXPECT_NE(verify.out.find("verify report: tenant " + canonical + ","), std::string::npos)
      << verify.out;
}

}  // namespace

// The offline rules equal PostgreSQL's casts for the forms uuid_in and int8in accept, and
// decline what only a server can read.
TEST(TenantKeyOffline, MatchesTheServersCasts) {
  using common::TenantKeyKind;
  auto src = connectOrDie(sourceCluster().dsn("postgres"));
  for (const char* raw : {"42", "042", "+42", " 42 ", "-0", "-007", "0", "9223372036854775807",
                          "-9223372036854775808"}) {
    auto offline = common::canonicalTenantTextOffline(raw, TenantKeyKind::kInteger);
    ASSERT_TRUE(offline.has_value()) << raw;
    EXPECT_EQ(*offline, scalar(src, "SELECT ($1::bigint)::text", {std::string(raw)})) << raw;
  }
  for (const char* raw : {"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
                          "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
                          "A0EEBC999C0B4EF8BB6D6BB9BD380A11",
                          "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11"}) {
    auto offline = common::canonicalTenantTextOffline(raw, TenantKeyKind::kUuid);
    ASSERT_TRUE(offline.has_value()) << raw;
    EXPECT_EQ(*offline, scalar(src, "SELECT ($1::uuid)::text", {std::string(raw)})) << raw;
  }
  for (const char* raw : {"", "4 2", "0x2A", "1_000", "42.0", "9223372036854775808", "abc"}) {
    EXPECT_FALSE(common::canonicalTenantTextOffline(raw, TenantKeyKind::kInteger)) << raw;
  }
  for (const char* raw : {"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                          "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11", " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}) {
    EXPECT_FALSE(common::canonicalTenantTextOffline(raw, TenantKeyKind::kUuid)) << raw;
  }
  EXPECT_EQ(common::canonicalTenantTextOffline("042", TenantKeyKind::kText), "042");
  EXPECT_FALSE(common::canonicalTenantTextOffline("042", TenantKeyKind::kOther));
  EXPECT_EQ(common::tenantKeyKind("bigint"), TenantKeyKind::kInteger);
  EXPECT_EQ(common::tenantKeyKind("uuid"), TenantKeyKind::kUuid);
  EXPECT_EQ(common::tenantKeyKind("character varying(10)"), TenantKeyKind::kOther);
}

// `--tenant 042` on the demo schema's bigint tenant columns is tenant 42 end to end.
TEST(TenantKey, LeadingZerosOnABigintColumnMoveTenant42) {
  auto e = newEnv();
  for (auto* c : {&e->src, &e->dst}) ASSERT_TRUE(harness::createDemoSchema(*c).isOk());
  createScratchTable(sourceCluster().dsn(e->db));
  createScratchTable(destCluster().dsn(e->db));
  harness::SeedOptions seed;
  seed.tenant_items = 1000;
  seed.other_items = 1000;
  ASSERT_TRUE(harness::seedTenants(e->src, seed).isOk());
  ASSERT_NO_FATAL_FAILURE(
      migrateAndCheckNames(*e, "042", "42", "INSERT INTO scratch VALUES (42, 990001, 'fenced?')"));
  expectDemoTenantEqual(e->src, e->dst);
  EXPECT_EQ(scalar(e->dst, "SELECT count(*) FROM scratch WHERE id = 990001"), "0");
}

// An upper-case uuid is the lower-case tenant end to end.
TEST(TenantKey, UpperCaseUuidMovesTheLowerCaseTenant) {
  auto e = newEnv();
  const char* schema =
      "CREATE TABLE items (tenant_id uuid NOT NULL, id bigint NOT NULL, v text, "
      "PRIMARY KEY (tenant_id, id));";
  for (auto* c : {&e->src, &e->dst}) execOrDie(*c, schema);
  execOrDie(e->src,
            "INSERT INTO items SELECT t::uuid, g, 'v' || g FROM unnest(ARRAY["
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12']) t, "
            "generate_series(1, 2000) g");
  const std::string canonical = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
  ASSERT_NO_FATAL_FAILURE(migrateAndCheckNames(
      *e, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", canonical,
      "INSERT INTO items VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 990001, 'fenced?')"));
  const auto src_rows = tenantRows(e->src, "items", canonical, "id");
  EXPECT_EQ(src_rows.size(), 2000u);
  EXPECT_EQ(src_rows, tenantRows(e->dst, "items", canonical, "id"));
  EXPECT_EQ(scalar(e->dst, "SELECT count(*) FROM items WHERE tenant_id <> $1", {canonical}), "0");
}
