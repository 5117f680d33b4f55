// Snapshot copy against real clusters: the tenant's rows arrive exactly (compared by ordered
// SELECTs of both sides, independent of the copy code) across awkward types, TOASTed values,
// composite and text keys and foreign keys; other tenants are never read into the
// destination; text and uuid tenant keys and per-table tenant columns work; and a copy
// killed with SIGKILL resumes, copying only the remaining chunks, to an identical result.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "harness/seed.h"
#include "mover/checkpoint_store.h"
#include "mover/source_setup.h"
#include "tests/support/test_support.h"

using namespace stampmover;
using namespace stampmover::testing;
using common::PgConnection;

namespace {

struct TableOrder {
  const char* table;
  const char* order_by;
};
const TableOrder kDemoTables[] = {{"accounts", "account_id"},
                                  {"orders", "order_id"},
                                  {"order_items", "order_id, line"},
                                  {"documents", "doc_key"},
                                  {"events", "event_id"}};

// An extra table with every awkward value the brief names, for tenant 42 and others.
const char* kAwkwardSchema = R"SQL(
CREATE TABLE awkward (
  tenant_id bigint NOT NULL, k text NOT NULL, n numeric, f float8, ts timestamptz, b bytea,
  j jsonb, arr int[], tarr text[], t text, big text, PRIMARY KEY (tenant_id, k));
)SQL";
const char* kAwkwardRows = R"SQL(
INSERT INTO awkward VALUES
 (42, E'tab\there', 1.500, 'NaN', '2024-02-29 23:59:59.999999+05:30', '\x00ff5c0a', '{"b":1,"a":[1,2,{"c":null}]}',
  '{1,NULL,3}', '{"x,y","q\"uote",NULL,""}', E'line1\nline2\\back\\slash', NULL),
 (42, E'newline\nkey', -0.0, '-0', 'infinity', '', 'null', '{}', '{}', '', repeat('TOAST', 2000)),
 (42, 'ünïcødé ☃ 🚀', 123456789012345678901234567890.123456789, 1e308, '-infinity', NULL, '"str"',
  NULL, NULL, 'null', repeat(md5('x'), 300)),
 (42, E'back\\slash', 0, 0.1, '1970-01-01 00:00:00+00', '\x', '[]', '{-1}', '{""}', NULL, ''),
 (7, 'other', 1, 1, now(), '\x01', '{}', '{1}', '{a}', 'other tenant', 'x'),
 (8, E'tab\there', 2, 2, now(), '\x02', '{}', '{2}', '{b}', 'other tenant', 'y');
)SQL";

void expectTenantEqual(PgConnection& src, PgConnection& dst, const std::string& table,
                       const std::string& order_by, const std::string& tenant,
                       const std::string& column = "tenant_id") {
  auto a = tenantRows(src, table, tenant, order_by, column);
  auto b = tenantRows(dst, table, tenant, order_by, column);
  EXPECT_FALSE(a.empty()) << table;
  ASSERT_EQ(a.size(), b.size()) << table;
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << table << " row " << i;
}

std::vector<std::string> copyArgs(const std::string& db, const std::string& state,
                                  const std::string& tenant = "42") {
  return {"copy", "--tenant", tenant, "--source-dsn", sourceCluster().dsn(db), "--dest-dsn",
          destCluster().dsn(db), "--state-dir", state, "--progress", "log"};
}

std::string readAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t countOf(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + 1)) ++n;
  return n;
}

// The demo schema on both sides and 20000 items each for tenant 42 and the others on the
// source: enough chunks at --chunk-kb 128 for a kill to land mid-copy.
void createAndSeedForKill(PgConnection& src, PgConnection& dst) {
  for (auto* c : {&src, &dst}) ASSERT_TRUE(harness::createDemoSchema(*c).isOk());
  harness::SeedOptions seed;
  seed.tenant_items = 20000;
  seed.other_items = 20000;
  ASSERT_TRUE(harness::seedTenants(src, seed).isOk());
}

}  // namespace

TEST(Copy, MovesTenantExactlyAndNothingElse) {
  std::string db = freshDatabase();
  auto src = connectOrDie(sourceCluster().dsn(db));
  auto dst = connectOrDie(destCluster().dsn(db));
  for (auto* c : {&src, &dst}) {
    ASSERT_TRUE(harness::createDemoSchema(*c).isOk());
    execOrDie(*c, kAwkwardSchema);
  }
  harness::SeedOptions seed;
  seed.tenant_items = 3000;
  seed.other_items = 3000;
  ASSERT_TRUE(harness::seedTenants(src, seed).isOk());
  execOrDie(src, kAwkwardRows);
  harness::SeedOptions dest_seed;  // the destination already serves tenants 7 and 8
  dest_seed.tenant = 7;
  dest_seed.others = {8};
  dest_seed.tenant_items = 500;
  dest_seed.other_items = 500;
  ASSERT_TRUE(harness::seedTenants(dst, dest_seed).isOk());
  execOrDie(dst, "INSERT INTO awkward VALUES (7, 'dest-own', 1, 1, now(), '\\x01', '{}', '{1}', '{a}', 'd', 'd')");
  std::string dest_others_before =
      scalar(dst, "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM order_items t");
  std::string dest_awkward_before =
      scalar(dst, "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM awkward t");

  TempDir state;
  auto args = copyArgs(db, state.path());
  args.insert(args.end(), {"--jobs", "2", "--chunk-kb", "64"});  // several chunks per table
  auto r = runStampmover(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("copy report"), std::string::npos) << r.out;

  for (const auto& t : kDemoTables) expectTenantEqual(src, dst, t.table, t.order_by, "42");
  expectTenantEqual(src, dst, "awkward", "k", "42");
  // Byte-exact TOASTed value, and NULL stays distinct from '' and 'null'.
  EXPECT_EQ(scalar(dst, "SELECT md5(big) FROM awkward WHERE tenant_id = 42 AND k = E'newline\\nkey'"),
            scalar(src, "SELECT md5(repeat('TOAST', 2000))"));
  EXPECT_EQ(scalar(dst, "SELECT count(*) FROM awkward WHERE tenant_id = 42 AND t IS NULL"), "1");
  EXPECT_EQ(scalar(dst, "SELECT count(*) FROM awkward WHERE tenant_id = 42 AND t = ''"), "1");
  EXPECT_EQ(scalar(dst, "SELECT count(*) FROM awkward WHERE tenant_id = 42 AND t = 'null'"), "1");
  // Other tenants: the source's never arrive; the destination's own are untouched.
  for (const auto& t : kDemoTables) {
    EXPECT_EQ(scalar(dst, std::string("SELECT count(*) FROM ") + t.table +
                              " WHERE tenant_id NOT IN (42, 7, 8)"),
              "0")
        << t.table;
  }
  EXPECT_EQ(scalar(dst, "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM order_items t "
                        "WHERE tenant_id <> 42"),
            dest_others_before);
  EXPECT_EQ(scalar(dst, "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM awkward t "
                        "WHERE tenant_id <> 42"),
            dest_awkward_before);
  EXPECT_EQ(r.out.find("currencies"), std::string::npos) << "global table copied: " << r.out;

  // The slot and publication are kept for catch-up; the publication filters by tenant.
  std::string name = mover::replicationNameForTenant("42", PQdb(src.raw()));
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", {name}), "1");
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1 AND "
                        "rowfilter IS NOT NULL",
                   {name}),
            "6");

  // Rerun: already copied, nothing changes.
  auto again = runStampmover(copyArgs(db, state.path()));
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("already copied"), std::string::npos) << again.out;

  // cleanup drops what the migration created on the source.
  auto cl = runStampmover({"cleanup", "--tenant", "42", "--source-dsn", sourceCluster().dsn(db),
                           "--state-dir", state.path()});
  EXPECT_EQ(cl.exit_code, 0) << cl.err;
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM pg_replication_slots"), "0");
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM pg_publication"), "0");
}

TEST(Copy, TextAndUuidTenantKeysAndPerTableColumns) {
  std::string db = freshDatabase();
  auto src = connectOrDie(sourceCluster().dsn(db));
  auto dst = connectOrDie(destCluster().dsn(db));
  const char* schema = R"SQL(
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE orgs (org text PRIMARY KEY, name text, m mood, ms mood[]);
CREATE TABLE notes (org text REFERENCES orgs, id int, body text, m mood, PRIMARY KEY (org, id));
CREATE TABLE legacy (owner text, id uuid, v int, PRIMARY KEY (owner, id));
)SQL";
  for (auto* c : {&src, &dst}) execOrDie(*c, schema);
  execOrDie(src, R"SQL(
INSERT INTO orgs VALUES ('acme''s "co"', 'Acme', 'happy', '{ok,sad}'), ('other', 'Other', 'sad', NULL);
INSERT INTO notes SELECT o, g, 'note ' || g, (ARRAY['sad','ok','happy']::mood[])[1 + g % 3]
  FROM unnest(ARRAY['acme''s "co"', 'other']) o, generate_series(1, 500) g;
INSERT INTO legacy SELECT o, md5(o || g)::uuid, g FROM unnest(ARRAY['acme''s "co"', 'other']) o,
  generate_series(1, 300) g;
)SQL");
  TempDir state;
  auto args = copyArgs(db, state.path(), "acme's \"co\"");
  args.insert(args.end(), {"--tenant-column", "org", "--table-tenant-column", "public.legacy=owner"});
  auto r = runStampmover(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expectTenantEqual(src, dst, "orgs", "org", "acme's \"co\"", "org");
  expectTenantEqual(src, dst, "notes", "id", "acme's \"co\"", "org");
  expectTenantEqual(src, dst, "legacy", "id", "acme's \"co\"", "owner");
  EXPECT_EQ(scalar(dst, "SELECT count(*) FROM notes WHERE org = 'other'"), "0");
  EXPECT_NE(r.out.find("text"), std::string::npos) << "enum tables use text COPY: " << r.out;

  // A uuid tenant key.
  std::string db2 = freshDatabase();
  auto src2 = connectOrDie(sourceCluster().dsn(db2));
  auto dst2 = connectOrDie(destCluster().dsn(db2));
  for (auto* c : {&src2, &dst2}) {
    execOrDie(*c, "CREATE TABLE items (tenant_id uuid, id bigint, v text, PRIMARY KEY (tenant_id, id))");
  }
  execOrDie(src2, "INSERT INTO items SELECT ('00000000-0000-0000-0000-00000000000' || (g % 3))::uuid, g, "
                  "'v' || g FROM generate_series(1, 3000) g");
  TempDir state2;
  const std::string tenant = "00000000-0000-0000-0000-000000000001";
  auto r2 = runStampmover({"copy", "--tenant", tenant, "--source-dsn", sourceCluster().dsn(db2),
                           "--dest-dsn", destCluster().dsn(db2), "--state-dir", state2.path()});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  expectTenantEqual(src2, dst2, "items", "id", tenant);
  EXPECT_EQ(scalar(dst2, "SELECT count(*) FROM items"), "1000");
}

// kill -9 in the middle of the copy, rows moved between CTID blocks while it was down, then a
// rerun: only the remaining chunks are copied (through staging + upsert) and the destination
// equals the source.
TEST(Copy, KillNineMidCopyResumesToIdenticalResult) {
  std::string db = freshDatabase();
  auto src = connectOrDie(sourceCluster().dsn(db));
  auto dst = connectOrDie(destCluster().dsn(db));
  ASSERT_NO_FATAL_FAILURE(createAndSeedForKill(src, dst));

  TempDir state;
  std::string log = state.path() + "/copy.log";
  auto args = copyArgs(db, state.path() + "/db");
  // Many small chunks, one job, throttled so the kill lands mid-copy.
  args.insert(args.end(), {"--jobs", "1", "--chunk-kb", "128", "--max-rate", "3", "--log-level", "debug"});
  ChildProcess child(spawnStampmover(args, log));
  const pid_t pid = child.pid();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (countOf(readAll(log), "chunk ") < 4 && std::chrono::steady_clock::now() < deadline) {
    ASSERT_EQ(kill(pid, 0), 0) << "copy exited early: " << readAll(log);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, SIGKILL);
  ASSERT_EQ(child.wait(), -SIGKILL) << readAll(log);

  // Which chunks are done? Read the worker's own store (the process is gone).
  std::vector<mover::ChunkDone> done;
  mover::MigrationRecord rec;
  {
    auto store = mover::openRocksDbCheckpointStore({state.path() + "/db", false});
    ASSERT_TRUE(store) << store.status().message();
    auto recs = (*store)->listMigrations();
    ASSERT_TRUE(recs);
    ASSERT_EQ(recs->size(), 1u);
    rec = (*recs)[0];
    EXPECT_EQ(rec.phase, "copying");
    done = *(*store)->loadChunksDone(rec.id);
  }
  ASSERT_GE(done.size(), 4u);
  ASSERT_LT(done.size(), rec.plan.size()) << "copy finished before the kill; slow it down";

  // Move tenant rows out of a completed chunk into the heap's tail (a later, open chunk):
  // the widened row cannot stay on its full page. The resumed copy meets these keys again.
  const mover::ChunkDone& first = done.front();
  const mover::ChunkSpec* spec = nullptr;
  for (const auto& c : rec.plan) {
    if (c.table == first.table && c.index == first.index) spec = &c;
  }
  ASSERT_NE(spec, nullptr);
  std::string table = first.table.substr(first.table.find('.') + 1);
  std::string where = "tenant_id = 42 AND ctid >= '(" + std::to_string(spec->start_block) +
                      ",0)' AND ctid < '(" + std::to_string(spec->end_block) + ",0)'";
  std::string moved_col = table == "accounts" ? "name" : table == "orders" ? "status" : "sku";
  execOrDie(src, "UPDATE " + table + " SET " + moved_col + " = " + moved_col +
                     " || repeat('m', 600) WHERE " + where);
  // New rows while it was down: in the resumed copy's snapshot and in the WAL after the slot's
  // consistent point, so catch-up replays their inserts over rows already there.
  execOrDie(src, "INSERT INTO order_items SELECT 42, 1, 990000 + g, 'SKU-down', 1, 1.5, NULL "
                 "FROM generate_series(1, 50) g");
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM " + table + " WHERE " + where), "0")
      << "updated rows should have left the completed chunk";

  auto r = runStampmover(copyArgs(db, state.path() + "/db"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(resumed)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(std::to_string(done.size()) + " already done before this run"),
            std::string::npos)
      << r.out;
  for (const auto& t : kDemoTables) expectTenantEqual(src, dst, t.table, t.order_by, "42");
  EXPECT_EQ(scalar(dst, "SELECT count(*) FROM " + table + " WHERE " + moved_col + " LIKE '%mmmm'"),
            scalar(src, "SELECT count(*) FROM " + table + " WHERE " + moved_col + " LIKE '%mmmm'"));

  // Catch-up from the consistent point replays what the resumed copy already holds: those
  // inserts go as upserts (the record says through where), never as failing plain inserts.
  {
    auto store = mover::openRocksDbCheckpointStore({state.path() + "/db", false, true});
    ASSERT_TRUE(store) << store.status().message();
    auto recs = (*store)->listMigrations();
    ASSERT_TRUE(recs);
    ASSERT_EQ(recs->size(), 1u);
    EXPECT_GT((*recs)[0].upsert_through, (*recs)[0].consistent_point);
  }
  execOrDie(src, "INSERT INTO order_items SELECT 42, 1, 995000 + g, 'SKU-after', 1, 1.5, NULL "
                 "FROM generate_series(1, 50) g");
  auto m = runStampmover({"migrate", "--tenant", "42", "--source-dsn", sourceCluster().dsn(db),
                          "--dest-dsn", destCluster().dsn(db), "--state-dir", state.path() + "/db",
                          "--progress", "log", "--until-caught-up"});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  EXPECT_EQ(m.err.find("already exists"), std::string::npos) << m.err;
  for (const auto& t : kDemoTables) expectTenantEqual(src, dst, t.table, t.order_by, "42");
}

// Rolling back an interrupted copy: cleanup --purge-destination drops the slot and the
// publication and deletes the partial copy; the source is untouched and a new copy can start.
TEST(Copy, CleanupAfterAnInterruptedCopyLeavesNothing) {
  std::string db = freshDatabase();
  auto src = connectOrDie(sourceCluster().dsn(db));
  auto dst = connectOrDie(destCluster().dsn(db));
  ASSERT_NO_FATAL_FAILURE(createAndSeedForKill(src, dst));
  execOrDie(dst, "INSERT INTO accounts (tenant_id, account_id, name, created_at) VALUES (7, 1, 'own', now())");
  const std::string before = scalar(src, "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM orders t");
  TempDir state;
  std::string log = state.path() + "/copy.log";
  auto args = copyArgs(db, state.path() + "/db");
  args.insert(args.end(), {"--jobs", "1", "--chunk-kb", "128", "--max-rate", "3", "--log-level", "debug"});
  ChildProcess child(spawnStampmover(args, log));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (countOf(readAll(log), "chunk ") < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(child.pid(), SIGKILL);
  ASSERT_EQ(child.wait(), -SIGKILL);
  ASSERT_NE(scalar(dst, "SELECT count(*) FROM accounts WHERE tenant_id = 42"), "0") << "partial copy expected";
  auto r = runStampmover({"cleanup", "--tenant", "42", "--source-dsn", sourceCluster().dsn(db),
                          "--dest-dsn", destCluster().dsn(db), "--purge-destination", "--state-dir",
                          state.path() + "/db"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const auto& t : kDemoTables) {
    EXPECT_EQ(scalar(dst, std::string("SELECT count(*) FROM ") + t.table + " WHERE tenant_id = 42"), "0") << t.table;
  }
  EXPECT_EQ(scalar(dst, "SELECT count(*) FROM accounts WHERE tenant_id = 7"), "1") << "others untouched";
  std::string name = mover::replicationNameForTenant("42", PQdb(src.raw()));
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", {name}), "0");
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM pg_publication"), "0");
  EXPECT_EQ(scalar(src, "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM orders t"), before);
  // A fresh copy starts from scratch and is complete.
  auto again = runStampmover(copyArgs(db, state.path() + "/db"));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out.find("(resumed)"), std::string::npos) << again.out;
  for (const auto& t : kDemoTables) expectTenantEqual(src, dst, t.table, t.order_by, "42");
}

// The demo (README command 1) end to end, small.
TEST(Demo, RunsEndToEnd) {
  auto r = runStampmover({"demo", "--rows", "3000", "--writer-seconds", "3"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("demo OK"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" 0 acknowledged writes lost"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("writes unavailable for"), std::string::npos) << r.out;
}
