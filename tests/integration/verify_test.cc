// Verify against real clusters: after a correct `stampmover copy`, differences injected directly
// on the destination (a missing row, an extra row, a changed column, NULL vs '' and '' vs
// 'null', one changed byte inside a 100 KB value) are each reported exactly, with nothing else —
// not the changes PostgreSQL's `=` calls equal (-0.0 vs 0, trailing zeros of numeric, '1 day'
// vs '24 hours', jsonb key order), not the destination's own tenants, not another source
// tenant's rows on the destination (listed apart only with --other-tenants); a clean copy
// verifies clean, also when both stamps hold another tenant (an earlier move not purged);
// servers with different TimeZone/DateStyle/IntervalStyle/bytea_output/extra_float_digits
// defaults still match; unknown tenants and tables that differ in shape are refused; an
// interrupted verify resumes from its checkpoints; key-range and block-range pieces agree; and live mode, while `migrate` follows a concurrent
// writer, verifies clean with zero false differences and still finds a real one.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "harness/local_cluster.h"
#include "harness/seed.h"
#include "mover/source_setup.h"
#include "tests/support/test_support.h"
#include "tests/support/writer.h"
#include "verify/verifier.h"

using namespace stampmover;
using namespace stampmover::testing;
using common::PgConnection;
using json = nlohmann::ordered_json;  // keeps the key columns in key order

namespace {

// Awkward values the equality rules are about, and a 100 KB TOASTed value.
const char* kAwkwardSchema = R"SQL(
CREATE TABLE awkward (
  tenant_id bigint NOT NULL, k text NOT NULL, n numeric, f float8, r real, ts timestamptz,
  d date, iv interval, b bytea, j jsonb, arr int[], t text, big text, PRIMARY KEY (tenant_id, k));
)SQL";
const char* kAwkwardRows = R"SQL(
INSERT INTO awkward VALUES
 (42, 'decimals', 1.500, '-0', '-0', '2024-02-29 23:59:59.999999+05:30', '2024-02-29', '1 day',
  '\x00ff5c0a', '{"b":1,"a":[1,2,{"c":null}]}', '{1,NULL,3}', NULL, NULL),
 (42, 'empty', 0, 'NaN', 'Infinity', 'infinity', '-infinity', '1 mon 2 days 03:04:05.678', '',
  'null', '{}', '', ''),
 (42, 'nullish', NULL, 1e308, 0.1, '1970-01-01 00:00:00+00', NULL, '-1 year', NULL, '"str"', NULL,
  'null', NULL),
 (42, E'tab\there ünï ☃', 123456789012345678901234567890.123456789, 0.1, 3.25, '2000-01-01 12:00:00-08', '2000-01-01',
  '00:00:00.000001', '\x', '[]', '{-1}', E'line1\nline2\\back\\slash', 'x'),
 (42, 'big', 3.0, 2.5, 2.5, '2024-01-01 00:00:00+00', '2024-01-01', '0', NULL, '{}', NULL, 'big one',
  (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 3200) g)),
 (1, 'other', 1, 1, 1, now(), now(), '1 day', '\x01', '{}', '{1}', 'other tenant', 'x');
)SQL";

struct Env {
  std::string db;
  std::string src_dsn;
  std::string dst_dsn;
  PgConnection src;
  PgConnection dst;
  TempDir state;
};

// Schema on both sides; tenant 42 among 1, 2, 3 on the source; the destination already serves
// tenants 7 and 8 (its own rows must never be reported).
std::unique_ptr<Env> setUp(harness::LocalCluster& s, harness::LocalCluster& d,
                           const std::string& db, uint64_t items, bool scratch = false) {
  auto e = std::make_unique<Env>();
  e->db = db;
  e->src_dsn = s.dsn(db);
  e->dst_dsn = d.dsn(db);
  e->src = connectOrDie(e->src_dsn);
  e->dst = connectOrDie(e->dst_dsn);
  for (auto* c : {&e->src, &e->dst}) {
    EXPECT_TRUE(harness::createDemoSchema(*c).isOk());
    execOrDie(*c, kAwkwardSchema);
  }
  if (scratch) {
    createScratchTable(e->src_dsn);
    createScratchTable(e->dst_dsn);
    execOrDie(e->src,
              "INSERT INTO scratch SELECT t, g, 'init' FROM unnest(ARRAY[42, 1]) t, "
              "generate_series(1, 100) g");
  }
  harness::SeedOptions seed;
  seed.tenant_items = items;
  seed.other_items = items;
  EXPECT_TRUE(harness::seedTenants(e->src, seed).isOk());
  execOrDie(e->src, kAwkwardRows);
  harness::SeedOptions dest_seed;
  dest_seed.tenant = 7;
  dest_seed.others = {8};
  dest_seed.tenant_items = 300;
  dest_seed.other_items = 300;
  EXPECT_TRUE(harness::seedTenants(e->dst, dest_seed).isOk());
  return e;
}

std::string readAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void copyTenant(const Env& e) {
  auto r = runStampmover({"copy", "--tenant", "42", "--source-dsn", e.src_dsn, "--dest-dsn",
                          e.dst_dsn, "--state-dir", e.state.path() + "/copy", "--progress", "log"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

struct Verified {
  int exit_code = -1;
  json report;
  std::string out, err;
};

// Runs `stampmover verify` with its resume state under `state` (default: its own directory).
Verified runVerifyCli(const Env& e, std::vector<std::string> extra = {}, std::string state = "") {
  std::string report = e.state.path() + "/diff.json";
  std::remove(report.c_str());
  std::vector<std::string> args = {
      "verify",       "--tenant",    "42",
      "--source-dsn", e.src_dsn,     "--dest-dsn",
      e.dst_dsn,      "--state-dir", state.empty() ? e.state.path() + "/verify" : state,
      "--report",     report,        "--progress",
      "log",          "--jobs",      "2",
      "--chunk-rows", "500"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = runStampmover(args);
  Verified v;
  v.exit_code = r.exit_code;
  v.out = r.out;
  v.err = r.err;
  std::string text = readAll(report);
  if (!text.empty()) v.report = json::parse(text);
  return v;
}

// "table|kind|col=val,col=val|columns|tenant" for every reported row.
std::multiset<std::string> reportedRows(const json& report) {
  std::multiset<std::string> out;
  for (const auto& r : report.at("rows")) {
    std::string key;
    for (const auto& [c, v] : r.at("key").items()) {
      key += (key.empty() ? "" : ",") + c + "=" + (v.is_null() ? "NULL" : v.get<std::string>());
    }
    std::string cols;
    if (r.contains("columns")) {
      for (const auto& c : r.at("columns"))
        cols += (cols.empty() ? "" : ",") + c.get<std::string>();
    }
    out.insert(r.at("table").get<std::string>() + "|" + r.at("kind").get<std::string>() + "|" +
               key + "|" + cols + "|" +
               (r.contains("tenant") ? r.at("tenant").get<std::string>() : ""));
  }
  return out;
}

uint64_t tableCount(const json& report, const std::string& table, const char* field) {
  for (const auto& t : report.at("tables")) {
    if (t.at("table") == table) return t.at(field).get<uint64_t>();
  }
  ADD_FAILURE() << "no table " << table << " in report";
  return 0;
}

}  // namespace

TEST(Verify, CleanCopyVerifiesClean) {
  auto e = setUp(sourceCluster(), destCluster(), freshDatabase(), 3000);
  ASSERT_NO_FATAL_FAILURE(copyTenant(*e));
  auto v = runVerifyCli(*e);
  ASSERT_EQ(v.exit_code, 0) << v.out << v.err;
  EXPECT_NE(v.out.find("result: IDENTICAL"), std::string::npos) << v.out;
  EXPECT_TRUE(v.report.at("identical").get<bool>());
  EXPECT_TRUE(v.report.at("rows").empty()) << v.report.dump(2);
  EXPECT_EQ(tableCount(v.report, "public.order_items", "source_rows"), 3000u);
  EXPECT_EQ(tableCount(v.report, "public.order_items", "dest_rows"), 3000u);
  EXPECT_EQ(tableCount(v.report, "public.awkward", "source_rows"), 5u);
  EXPECT_GT(tableCount(v.report, "public.events", "chunks"), 1u) << "several chunks per table";
  EXPECT_EQ(v.out.find("currencies"), std::string::npos) << "global table is not a tenant table";
}

TEST(Verify, ReportsExactlyTheInjectedDifferences) {
  auto e = setUp(sourceCluster(), destCluster(), freshDatabase(), 3000);
  ASSERT_NO_FATAL_FAILURE(copyTenant(*e));
  // Pick rows to tamper with.
  std::string oi = scalar(e->dst,
                          "SELECT order_id || ',' || line FROM order_items WHERE tenant_id = 42 "
                          "ORDER BY order_id, line LIMIT 1 OFFSET 1234");
  std::string oi_order = oi.substr(0, oi.find(','));
  std::string oi_line = oi.substr(oi.find(',') + 1);
  ASSERT_EQ(
      scalar(e->dst, "SELECT email IS NULL FROM accounts WHERE tenant_id = 42 AND account_id = 7"),
      "t");
  std::string foreign_event =
      scalar(e->src, "SELECT event_id FROM events WHERE tenant_id = 1 ORDER BY event_id LIMIT 1");

  // Real differences.
  execOrDie(e->dst, "DELETE FROM order_items WHERE tenant_id = 42 AND order_id = " + oi_order +
                        " AND line = " + oi_line);  // missing
  execOrDie(e->dst,
            "INSERT INTO events VALUES (42, '00000000-0000-0000-0000-0000000000aa', 'inject', "
            "'2024-01-01 00:00:00+00', NULL, NULL)");  // extra
  execOrDie(
      e->dst,
      "UPDATE orders SET status = 'tampered' WHERE tenant_id = 42 AND order_id = 10");  // column
  execOrDie(
      e->dst,
      "UPDATE accounts SET email = '' WHERE tenant_id = 42 AND account_id = 7");  // NULL -> ''
  execOrDie(e->dst,
            "UPDATE awkward SET t = 'null' WHERE tenant_id = 42 AND k = 'empty'");  // '' -> 'null'
  execOrDie(e->dst,
            "UPDATE awkward SET big = overlay(big placing 'X' from 51200 for 1) "
            "WHERE tenant_id = 42 AND k = 'big'");  // 1 byte of 100 KB
  execOrDie(e->dst, "INSERT INTO events SELECT * FROM (VALUES (1::bigint, '" + foreign_event +
                        "'::uuid, 'login', '2024-06-01 00:00:00+00'::timestamptz, NULL::jsonb, "
                        "NULL::numeric)) v");  // another tenant
  ASSERT_EQ(scalar(e->dst, "SELECT length(big) FROM awkward WHERE tenant_id = 42 AND k = 'big'"),
            "102400");
  // Changes PostgreSQL's `=` calls equal: none may be reported.
  execOrDie(e->dst,
            "UPDATE awkward SET f = 0, r = 0 WHERE tenant_id = 42 AND k = 'decimals'");  // -0 -> 0
  execOrDie(e->dst,
            "UPDATE awkward SET n = 1.5 WHERE tenant_id = 42 AND k = 'decimals'");  // 1.500 -> 1.5
  execOrDie(e->dst,
            "UPDATE awkward SET iv = '24 hours' WHERE tenant_id = 42 AND k = 'decimals'");  // 1 day
  execOrDie(e->dst,
            "UPDATE awkward SET j = '{\"a\":[1,2,{\"c\":null}],   \"b\":1}' WHERE tenant_id = 42 "
            "AND k = 'decimals'");  // key order
  execOrDie(
      e->dst,
      "UPDATE orders SET total = total::numeric(20,6) WHERE tenant_id = 42");  // 3.00 -> 3.000000
  ASSERT_EQ(
      scalar(
          e->dst,
          "SELECT f::text || ' ' || n::text FROM awkward WHERE tenant_id = 42 AND k = 'decimals'"),
      "0 1.5");
  ASSERT_EQ(
      scalar(
          e->src,
          "SELECT f::text || ' ' || n::text FROM awkward WHERE tenant_id = 42 AND k = 'decimals'"),
      "-0 1.500");

  auto v = runVerifyCli(*e);
  ASSERT_EQ(v.exit_code, 1) << v.out << v.err;
  std::multiset<std::string> expected = {
      "public.order_items|missing|tenant_id=42,order_id=" + oi_order + ",line=" + oi_line + "||",
      "public.events|extra|tenant_id=42,event_id=00000000-0000-0000-0000-0000000000aa||",
      "public.orders|different|tenant_id=42,order_id=10|status|",
      "public.accounts|different|tenant_id=42,account_id=7|email|",
      "public.awkward|different|tenant_id=42,k=empty|t|",
      "public.awkward|different|tenant_id=42,k=big|big|",
  };
  EXPECT_EQ(reportedRows(v.report), expected) << v.out;
  EXPECT_EQ(v.report.at("differences").get<uint64_t>(), 6u);
  EXPECT_FALSE(v.report.at("identical").get<bool>());
  EXPECT_FALSE(v.report.at("other_tenants_checked").get<bool>()) << "judges tenant 42 only";
  EXPECT_EQ(tableCount(v.report, "public.events", "extra"), 1u);
  EXPECT_EQ(tableCount(v.report, "public.order_items", "missing"), 1u);
  EXPECT_EQ(tableCount(v.report, "public.order_items", "dest_rows"), 2999u);
  EXPECT_NE(v.out.find("result: DIFFERENT"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("different  public.awkward (tenant_id=42, k=big): columns big"),
            std::string::npos)
      << v.out;

  // Asked for, the other tenant's row is listed apart, never as a difference of tenant 42.
  auto ot = runVerifyCli(*e, {"--other-tenants", "report"});
  EXPECT_EQ(ot.exit_code, 1);
  EXPECT_EQ(reportedRows(ot.report), expected) << ot.out;
  EXPECT_EQ(ot.report.at("differences").get<uint64_t>(), 6u) << ot.out;
  EXPECT_EQ(ot.report.at("other_tenant_rows").get<uint64_t>(), 1u) << ot.out;
  EXPECT_EQ(tableCount(ot.report, "public.events", "other_tenant_rows"), 1u);
  ASSERT_EQ(ot.report.at("other_tenants").size(), 1u) << ot.report.dump(2);
  EXPECT_EQ(ot.report.at("other_tenants")[0].at("tenant"), "1");
  EXPECT_EQ(ot.report.at("other_tenants")[0].at("key").at("event_id"), foreign_event);
  EXPECT_NE(ot.out.find("tenant 1 public.events (tenant_id=1, event_id=" + foreign_event + ")"),
            std::string::npos)
      << ot.out;
  // The flag older scripts pass is still accepted.
  auto nf = runVerifyCli(*e, {"--no-foreign-check"});
  EXPECT_EQ(nf.exit_code, 1);
  EXPECT_EQ(nf.report.at("differences").get<uint64_t>(), 6u) << nf.out;
}

// The normal state of a shared stamp: an earlier move of tenant 7 was finalized without purging
// its source, so both stamps hold tenant 7. Tenant 42, moved now, is identical and must verify
// so: tenant 7's rows are not its differences. Asked for, they are listed apart (and fail the
// run only with --other-tenants fail).
TEST(Verify, AnotherTenantOnBothStampsIsNotADifference) {
  std::string db = freshDatabase();
  auto e = std::make_unique<Env>();
  e->db = db;
  e->src_dsn = sourceCluster().dsn(db);
  e->dst_dsn = destCluster().dsn(db);
  e->src = connectOrDie(e->src_dsn);
  e->dst = connectOrDie(e->dst_dsn);
  for (auto* c : {&e->src, &e->dst}) ASSERT_TRUE(harness::createDemoSchema(*c).isOk());
  createScratchTable(e->src_dsn);  // expectDemoTenantEqual() compares it too
  createScratchTable(e->dst_dsn);
  harness::SeedOptions seed;
  seed.tenant_items = 1000;
  seed.others = {7, 1};
  seed.other_items = 1000;
  ASSERT_TRUE(harness::seedTenants(e->src, seed).isOk());
  // The earlier move of tenant 7 (copied, never purged from the source).
  auto earlier = runStampmover({"copy", "--tenant", "7", "--source-dsn", e->src_dsn, "--dest-dsn",
                                e->dst_dsn, "--state-dir", e->state.path() + "/copy7",
                                "--progress", "log"});
  ASSERT_EQ(earlier.exit_code, 0) << earlier.err;
  ASSERT_NE(scalar(e->dst, "SELECT count(*) FROM orders WHERE tenant_id = 7"), "0");
  ASSERT_NO_FATAL_FAILURE(copyTenant(*e));
  // Independently of the verifier: tenant 42 is the same on both sides.
  ASSERT_NO_FATAL_FAILURE(expectDemoTenantEqual(e->src, e->dst));
  const uint64_t tenant7 = std::stoull(scalar(
      e->dst,
      "SELECT (SELECT count(*) FROM accounts WHERE tenant_id = 7) + (SELECT count(*) FROM orders "
      "WHERE tenant_id = 7) + (SELECT count(*) FROM order_items WHERE tenant_id = 7) + (SELECT "
      "count(*) FROM documents WHERE tenant_id = 7) + (SELECT count(*) FROM events WHERE "
      "tenant_id = 7)"));

  auto v = runVerifyCli(*e);
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  EXPECT_NE(v.out.find("result: IDENTICAL"), std::string::npos) << v.out;
  ASSERT_FALSE(v.report.is_null()) << v.err;
  EXPECT_TRUE(v.report.at("identical").get<bool>());
  EXPECT_EQ(v.report.at("differences").get<uint64_t>(), 0u);
  EXPECT_TRUE(v.report.at("rows").empty()) << v.report.dump(2);

  auto reported = runVerifyCli(*e, {"--other-tenants", "report"});
  EXPECT_EQ(reported.exit_code, 0) << reported.out << reported.err;
  EXPECT_NE(reported.out.find("result: IDENTICAL"), std::string::npos) << reported.out;
  EXPECT_NE(reported.out.find(" rows of other tenants present on both stamps (an earlier move "
                              "not purged, or a leak); not differences of tenant 42"),
            std::string::npos)
      << reported.out;
  ASSERT_FALSE(reported.report.is_null()) << reported.err;
  EXPECT_EQ(reported.report.at("differences").get<uint64_t>(), 0u);
  EXPECT_EQ(reported.report.at("other_tenant_rows").get<uint64_t>(), tenant7);
  EXPECT_TRUE(reported.report.at("rows").empty()) << reported.report.dump(2);
  for (const auto& row : reported.report.at("other_tenants")) EXPECT_EQ(row.at("tenant"), "7");

  auto failed = runVerifyCli(*e, {"--other-tenants", "fail"});
  EXPECT_EQ(failed.exit_code, 1) << failed.out << failed.err;
  EXPECT_NE(failed.out.find("other-tenants check: FAILED"), std::string::npos) << failed.out;
}

TEST(Verify, UnknownTenantMissingTableOrColumnIsRefused) {
  auto e = setUp(sourceCluster(), destCluster(), freshDatabase(), 200);
  ASSERT_NO_FATAL_FAILURE(copyTenant(*e));
  auto unknown = runStampmover({"verify", "--tenant", "4242", "--source-dsn", e->src_dsn,
                                "--dest-dsn", e->dst_dsn, "--state-dir", e->state.path() + "/v"});
  EXPECT_EQ(unknown.exit_code, 2) << unknown.out << unknown.err;
  EXPECT_NE(unknown.err.find("tenant 4242 has no rows"), std::string::npos) << unknown.err;
  execOrDie(e->dst, "ALTER TABLE awkward ALTER COLUMN t TYPE varchar(50)");
  auto v = runVerifyCli(*e);
  EXPECT_EQ(v.exit_code, 2) << v.out << v.err;
  EXPECT_NE(v.err.find("column \"t\" is text on source"), std::string::npos) << v.err;
  execOrDie(e->dst, "DROP TABLE awkward");
  v = runVerifyCli(*e);
  EXPECT_EQ(v.exit_code, 2) << v.out << v.err;
  EXPECT_NE(v.err.find("public.awkward"), std::string::npos) << v.err;
}

// Servers whose defaults disagree on every setting that changes how values print.
TEST(Verify, ServersWithDifferentSessionDefaultsStillMatch) {
  harness::ClusterOptions so;
  so.name = "verify-ny";
  so.timezone = "America/New_York";
  so.datestyle = "SQL, DMY";
  so.settings = {
      {"IntervalStyle", "sql_standard"}, {"extra_float_digits", "0"}, {"bytea_output", "escape"}};
  harness::ClusterOptions dopt;
  dopt.name = "verify-kolkata";
  dopt.timezone = "Asia/Kolkata";
  dopt.datestyle = "German, DMY";
  dopt.settings = {{"IntervalStyle", "iso_8601"}, {"extra_float_digits", "1"}};
  auto s = harness::LocalCluster::start(so);
  ASSERT_TRUE(s) << s.status().message();
  auto d = harness::LocalCluster::start(dopt);
  ASSERT_TRUE(d) << d.status().message();
  ASSERT_TRUE((*s)->createDatabase("app").isOk());
  ASSERT_TRUE((*d)->createDatabase("app").isOk());
  auto e = setUp(**s, **d, "app", 1000);
  ASSERT_EQ(scalar(e->src, "SHOW TimeZone"), "America/New_York");
  ASSERT_EQ(scalar(e->dst, "SHOW DateStyle"), "German, DMY");
  ASSERT_NE(scalar(e->src, "SELECT ts::text FROM awkward WHERE k = 'big'"),
            scalar(e->dst, "SELECT '2024-01-01 00:00:00+00'::timestamptz::text"))
      << "the two servers print the same instant differently";
  ASSERT_NO_FATAL_FAILURE(copyTenant(*e));
  auto v = runVerifyCli(*e);
  ASSERT_EQ(v.exit_code, 0) << v.out << v.err;
  EXPECT_TRUE(v.report.at("rows").empty()) << v.report.dump(2);

  // And a real difference in a time zone-sensitive column is still found, alone.
  execOrDie(e->dst,
            "UPDATE awkward SET ts = ts + interval '1 microsecond' WHERE tenant_id = 42 AND k = "
            "'nullish'");
  v = runVerifyCli(*e);
  ASSERT_EQ(v.exit_code, 1) << v.out << v.err;
  EXPECT_EQ(reportedRows(v.report),
            std::multiset<std::string>{"public.awkward|different|tenant_id=42,k=nullish|ts|"});
  e.reset();
  EXPECT_TRUE((*s)->stop().isOk());
  EXPECT_TRUE((*d)->stop().isOk());
}

namespace {

// In-memory resume state, and an observer that interrupts the first run after one table.
class MemCheckpoint : public verify::VerifyCheckpoint {
 public:
  common::Result<std::optional<std::string>> load(const std::string& name) override {
    std::lock_guard lock(mu_);
    auto it = values_.find(name);
    return it == values_.end() ? std::optional<std::string>()
                               : std::optional<std::string>(it->second);
  }
  void save(const std::string& name, std::string value) override {
    std::lock_guard lock(mu_);
    values_[name] = std::move(value);
  }
  size_t size() {
    std::lock_guard lock(mu_);
    return values_.size();
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::string> values_;
};

class StopAfterFirstTable : public verify::VerifyObserver {
 public:
  explicit StopAfterFirstTable(std::atomic<bool>* stop) : stop_(stop) {}
  void tableStarted(size_t) override {}
  void rowsVerified(size_t, uint64_t, uint64_t) override {}
  void tableDone(size_t, const verify::TableVerifyResult&) override { stop_->store(true); }

 private:
  std::atomic<bool>* stop_;
};

}  // namespace

// The demo tables as the orchestrator would describe them, for calling the verifier directly.
std::vector<verify::VerifyTable> demoTables(const std::string& dsn) {
  std::vector<verify::VerifyTable> tables;
  auto conn = connectOrDie(dsn);
  const std::pair<const char*, std::vector<std::string>> keys[] = {
      {"accounts", {"tenant_id", "account_id"}},
      {"orders", {"tenant_id", "order_id"}},
      {"order_items", {"tenant_id", "order_id", "line"}},
      {"events", {"tenant_id", "event_id"}}};
  for (const auto& [name, pk] : keys) {
    verify::VerifyTable t;
    t.schema = "public";
    t.name = name;
    t.tenant_column = "tenant_id";
    t.primary_key = pk;
    auto res = conn.query(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        {std::string(name)});
    EXPECT_TRUE(res);
    for (int r = 0; res && r < common::rowCount(*res); ++r)
      t.columns.push_back({common::cell(*res, r, 0), ""});
    tables.push_back(t);
  }
  return tables;
}

TEST(Verify, InterruptedVerifyResumesWithCheckpointedResults) {
  auto e = setUp(sourceCluster(), destCluster(), freshDatabase(), 20000);
  ASSERT_NO_FATAL_FAILURE(copyTenant(*e));
  execOrDie(e->dst, "UPDATE orders SET status = 'tampered' WHERE tenant_id = 42 AND order_id = 11");
  auto tables = demoTables(e->src_dsn);
  verify::VerifyOptions o;
  o.tenant = "42";
  o.jobs = 1;
  o.chunk_rows = 1000;
  o.rows_per_piece = 2000;  // several heap block-range pieces per table and side
  MemCheckpoint ckpt;
  std::atomic<bool> stop{false};
  StopAfterFirstTable obs(&stop);
  auto first = verify::runVerify({e->src_dsn, "source"}, {e->dst_dsn, "destination"}, tables, o,
                                 &obs, &ckpt, &stop);
  ASSERT_FALSE(first);
  EXPECT_EQ(first.status().errorClass(), common::ErrorClass::kCancelled)
      << first.status().message();
  size_t saved_tables = 0;
  for (const auto& t : tables) saved_tables += ckpt.load("table/" + t.key())->has_value() ? 1 : 0;
  EXPECT_GE(saved_tables, 1u) << "the finished table was saved";
  EXPECT_LT(saved_tables, tables.size()) << "the first run was interrupted";
  EXPECT_TRUE(ckpt.load("scan/public.events/0/1")->has_value() ||
              ckpt.load("plan/public.order_items")->has_value())
      << "work in progress was saved";

  auto second = verify::runVerify({e->src_dsn, "source"}, {e->dst_dsn, "destination"}, tables, o,
                                  nullptr, &ckpt, nullptr);
  ASSERT_TRUE(second) << second.status().message();
  ASSERT_EQ(second->tables.size(), 4u);
  size_t resumed = 0;
  for (const auto& t : second->tables) resumed += t.resumed ? 1 : 0;
  EXPECT_EQ(resumed, saved_tables);
  EXPECT_EQ(second->differences(), 1u);
  EXPECT_EQ(second->tables[1].different, 1u);
  EXPECT_EQ(second->tables[2].source_rows, 20000u);
  EXPECT_EQ(second->tables[2].dest_rows, 20000u);
  EXPECT_EQ(second->tables[3].source_rows, 20000u);
}

// A tenant that is a small part of big shared tables is read in key-range pieces (bitmap scans
// of the key index) on the source and block-range pieces on the destination, where it is most
// of the table: the sums still meet chunk by chunk.
TEST(Verify, KeyRangeAndBlockRangePiecesAgree) {
  std::string db = freshDatabase();
  auto e = std::make_unique<Env>();
  e->db = db;
  e->src_dsn = sourceCluster().dsn(db);
  e->dst_dsn = destCluster().dsn(db);
  e->src = connectOrDie(e->src_dsn);
  e->dst = connectOrDie(e->dst_dsn);
  for (auto* c : {&e->src, &e->dst}) {
    ASSERT_TRUE(harness::createDemoSchema(*c).isOk());
    execOrDie(*c, kAwkwardSchema);
  }
  harness::SeedOptions seed;
  seed.tenant_items = 8000;
  seed.other_items = 60000;  // tenant 42 is ~12% of each table on the source
  ASSERT_TRUE(harness::seedTenants(e->src, seed).isOk());
  ASSERT_NO_FATAL_FAILURE(copyTenant(*e));
  execOrDie(e->dst, "DELETE FROM order_items WHERE tenant_id = 42 AND order_id = 77 AND line = 1");
  execOrDie(e->dst, "ANALYZE");
  auto tables = demoTables(e->src_dsn);
  verify::VerifyOptions o;
  o.tenant = "42";
  o.jobs = 3;
  o.chunk_rows = 500;
  o.rows_per_piece = 1000;
  auto r = verify::runVerify({e->src_dsn, "source"}, {e->dst_dsn, "destination"}, tables, o,
                             nullptr, nullptr, nullptr);
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_EQ(r->differences(), 1u);
  EXPECT_EQ(r->tables[2].missing, 1u);
  EXPECT_EQ(r->tables[2].source_rows, 8000u);
  EXPECT_EQ(r->tables[2].dest_rows, 7999u);
  EXPECT_EQ(r->tables[3].source_rows, 8000u);
  EXPECT_EQ(r->tables[3].dest_rows, 8000u);
  for (const auto& t : r->tables) {
    EXPECT_EQ(t.missing + t.extra + t.different,
              t.table == "public.order_items" ? 1u : 0u)
        << t.table;
  }
}

// Live mode: `migrate` follows a concurrent writer (inserts, updates of hot rows, primary-key
// changes, deletes, truncates) and verify --live runs meanwhile: zero differences, nothing
// unsettled; a difference injected on the destination is then found alone, live and quiesced.
TEST(Verify, LiveModeUnderWriterVerifiesClean) {
  auto e = setUp(sourceCluster(), destCluster(), freshDatabase(), 3000, true);
  WriterOptions wo;
  wo.dsn = e->src_dsn;
  wo.duration = std::chrono::seconds(600);
  wo.pause = std::chrono::microseconds(2000);
  wo.seed = 11;
  Writer writer(wo);
  std::string log = e->state.path() + "/migrate.log";
  pid_t pid =
      spawnStampmover({"migrate", "--tenant", "42", "--source-dsn", e->src_dsn, "--dest-dsn",
                       e->dst_dsn, "--state-dir", e->state.path() + "/copy", "--progress", "log"},
                      log);
  ASSERT_GT(pid, 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (readAll(log).find("stream: slot") == std::string::npos) {
    if (std::chrono::steady_clock::now() > deadline || kill(pid, 0) != 0) {
      kill(pid, SIGTERM);
      waitPid(pid);
      FAIL() << "migrate did not start streaming: " << readAll(log);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const uint64_t txns_before = writer.transactions();
  Verified live[4];
  // The state directory of the running migrate: verify keeps its own store inside it, so the
  // migrate's lock does not stand in the way.
  for (auto& v : live)
    v = runVerifyCli(*e, {"--live", "--live-wait", "30"}, e->state.path() + "/copy");
  const uint64_t txns_during = writer.transactions() - txns_before;
  // A real difference, in rows the writer never touches, is still found while writes go on,
  // and nothing else is.
  execOrDie(e->dst, "UPDATE awkward SET t = 'tampered' WHERE tenant_id = 42 AND k = 'nullish'");
  Verified tampered = runVerifyCli(*e, {"--live", "--live-wait", "30"});
  writer.stop();

  // Quiesce: let the applier pass the source's final position, then stop migrate.
  std::string end_lsn = scalar(e->src, "SELECT pg_current_wal_lsn()");
  std::string slot = mover::replicationNameForTenant("42", e->db);
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (scalar(e->dst,
                "SELECT coalesce(pg_replication_origin_progress($1, true) >= $2::pg_lsn, false)",
                {slot, end_lsn}) != "t" &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  kill(pid, SIGTERM);
  int rc = waitPid(pid);
  EXPECT_TRUE(rc == 0 || rc == 130) << rc << "\n" << readAll(log);

  EXPECT_GT(txns_during, 50u) << "the writer kept writing while verify ran";
  for (const auto& v : live) {
    if (getenv("SM_SHOW_LOG")) std::fputs((v.out + v.err).c_str(), stderr);
    EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
    ASSERT_FALSE(v.report.is_null()) << v.err;
    EXPECT_TRUE(v.report.at("rows").empty()) << v.report.dump(2);
    EXPECT_EQ(v.report.at("differences").get<uint64_t>(), 0u);
    EXPECT_EQ(v.report.at("unsettled").get<uint64_t>(), 0u);
    EXPECT_TRUE(v.report.at("live").get<bool>());
  }
  const std::multiset<std::string> only_tampered{
      "public.awkward|different|tenant_id=42,k=nullish|t|"};
  EXPECT_EQ(tampered.exit_code, 1) << tampered.out << tampered.err;
  ASSERT_FALSE(tampered.report.is_null()) << tampered.err;
  EXPECT_EQ(reportedRows(tampered.report), only_tampered) << tampered.out;
  EXPECT_EQ(tampered.report.at("unsettled").get<uint64_t>(), 0u);
  auto quiet = runVerifyCli(*e);  // quiesced final pass: the same single difference
  EXPECT_EQ(quiet.exit_code, 1) << quiet.out << quiet.err;
  EXPECT_EQ(reportedRows(quiet.report), only_tampered) << quiet.out;
}
