// Session settings are pinned on every data session: a source database whose defaults print
// values differently (DateStyle 'SQL, DMY', IntervalStyle sql_standard, extra_float_digits 0,
// TimeZone Pacific/Chatham, bytea_output escape) and a destination that parses them differently
// again (DateStyle 'Postgres, MDY', IntervalStyle iso_8601, TimeZone America/St_Johns) still
// get an exact tenant, through the COPY path (rows present before the copy; binary COPY for a
// table of built-in types, text COPY for one with a domain column) and through the pgoutput
// path (rows written while migrate follows the source, and between two runs).
//
// Unpinned, the COPY stops at "date/time field value out of range" (13/01/2024 read as MDY),
// days <= 12 swap with months, float8 keeps 15 digits, and '-1 2:03:04' (sql_standard for
// -1 day -02:03:04) becomes -1 day +02:03:04.
//
// Both sides are compared independently of stampmover: the test's own connections use the
// servers' defaults and SET the same display settings on both (spelled out here, not taken from
// common/session_settings.h), and floats are compared bit for bit (float8send/float4send).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/session_settings.h"
#include "tests/support/test_support.h"

using namespace stampmover;
using namespace stampmover::testing;
using common::PgConnection;
using common::Status;

namespace {

// `vals` has built-in types only, so the snapshot copy uses binary COPY; `vals_text` adds a
// domain (not a built-in type), which makes the copy of that table text COPY, printed by the
// source session and parsed by the destination session.
const char* kSchema = R"SQL(
CREATE DOMAIN day_d AS date;
CREATE TABLE vals (
  tenant_id bigint NOT NULL, id int NOT NULL,
  d date, ts timestamp, tstz timestamptz, iv interval, f8 float8, f4 float4, n numeric,
  m money, b bytea, j jsonb,
  PRIMARY KEY (tenant_id, id));
CREATE TABLE vals_text (LIKE vals INCLUDING ALL, dd day_d);
)SQL";

const char* const kTables[] = {"vals", "vals_text"};

// Row `g` of tenant `t`, computed by the server from numbers only, so what is stored does not
// depend on the writing session's settings. Days run 1..28 (both > 12 and <= 12), intervals
// carry fields of opposite signs, floats need 17 (float8) and 9 (float4) digits.
std::string rowsSql(const std::string& table, const std::string& tenant, const std::string& from,
                    const std::string& to) {
  const bool text = table == "vals_text";
  return "INSERT INTO " + table + " SELECT " + tenant + ", g, "
         "make_date(2000 + g % 30, 1 + g % 12, 1 + g % 28), "
         "make_timestamp(2024, 1 + (g * 5) % 12, 1 + (g * 7) % 28, g % 24, g % 60, 0.123456 + g % 59), "
         "make_timestamptz(2023, 1 + (g * 7) % 12, 1 + (g * 3) % 28, g % 24, (g * 13) % 60, 0.5, 'UTC'), "
         "make_interval(months => g % 30, days => -(g % 40), secs => -(g * 3661.25)), "
         "g::float8 / 7 + 0.1, g::float4 / 7::float4, g::numeric / 7, (g * 1.25)::numeric::money, "
         "decode(md5(g::text) || '00015c27', 'hex'), "
         "jsonb_build_object('g', g, 'f', g::float8 / 3, 'd', make_date(2024, 1 + g % 12, 1 + g % 28))" +
         std::string(text ? ", make_date(1999, 1 + (g * 5) % 12, 1 + (g * 11) % 28)" : "") +
         " FROM generate_series(" + from + ", " + to + ") g";
}

// First value of a simple-protocol query: replication connections take no other.
std::string simpleScalar(PgConnection& c, const std::string& sql) {
  common::PgResult r{PQexec(c.raw(), sql.c_str())};
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || common::rowCount(r) < 1) {
    ADD_FAILURE() << sql << ": " << PQresultErrorMessage(r.get());
    return "";
  }
  return common::cell(r, 0, 0);
}

// The test's own connection: server defaults, never stampmover's pinned settings.
PgConnection rawConnection(const std::string& dsn) {
  auto c = PgConnection::connect(dsn, "test", {}, common::SessionSettings::kServerDefaults);
  if (!c) {
    ADD_FAILURE() << c.status().message();
    throw std::runtime_error("connect failed");
  }
  return std::move(*c);
}

// Every row of `tenant` in one fixed display form: the same SETs on both sides, and floats as
// their IEEE bytes.
std::vector<std::string> dump(const std::string& dsn, const std::string& table,
                              const std::string& tenant) {
  PgConnection c = rawConnection(dsn);
  execOrDie(c, "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET TimeZone = 'UTC'; "
               "SET extra_float_digits = 3; SET bytea_output = 'hex'; SET lc_monetary = 'C'");
  const std::string extra = table == "vals_text" ? ", dd" : "";
  auto r = c.query("SELECT concat_ws('|', id, d, ts, tstz, iv, float8send(f8), float4send(f4), n, "
                   "m, b, j" + extra + ") FROM " + table + " WHERE tenant_id = $1 ORDER BY id",
                   {tenant});
  if (!r) {
    ADD_FAILURE() << r.status().message();
    return {};
  }
  std::vector<std::string> out;
  for (int i = 0; i < common::rowCount(*r); ++i) out.push_back(common::cell(*r, i, 0));
  return out;
}

void expectSidesEqual(const std::string& src_dsn, const std::string& dst_dsn) {
  for (const char* table : kTables) {
    SCOPED_TRACE(table);
    auto a = dump(src_dsn, table, "42");
    auto b = dump(dst_dsn, table, "42");
    ASSERT_FALSE(a.empty());
    ASSERT_EQ(a.size(), b.size());
    int shown = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i] != b[i] && shown++ < 5) ADD_FAILURE() << "source " << a[i] << "\ndest   " << b[i];
    }
    EXPECT_EQ(shown, 0) << shown << " rows differ";
    EXPECT_TRUE(dump(dst_dsn, table, "7").empty()) << "another tenant's rows reached the destination";
  }
}

struct Env {
  std::string db;
  std::string src_dsn;
  std::string dst_dsn;
  TempDir state;
};

std::vector<std::string> migrateArgs(const Env& e) {
  return {"migrate", "--tenant", "42", "--source-dsn", e.src_dsn, "--dest-dsn", e.dst_dsn,
          "--state-dir", e.state.path(), "--progress", "log", "--until-caught-up"};
}

// One end-to-end move between a source and a destination configured as described at the top;
// the destination's DateStyle is `dst_datestyle`.
void moveAndCompare(const std::string& dst_datestyle) {
  Env e;
  e.db = freshDatabase();
  e.src_dsn = sourceCluster().dsn(e.db);
  e.dst_dsn = destCluster().dsn(e.db);
  {
    PgConnection admin = rawConnection(sourceCluster().dsn());
    execOrDie(admin, "ALTER DATABASE " + common::quoteIdent(e.db) +
                         " SET DateStyle = 'SQL, DMY'; ALTER DATABASE " + common::quoteIdent(e.db) +
                         " SET IntervalStyle = 'sql_standard'; ALTER DATABASE " +
                         common::quoteIdent(e.db) + " SET extra_float_digits = 0; ALTER DATABASE " +
                         common::quoteIdent(e.db) + " SET TimeZone = 'Pacific/Chatham'; ALTER DATABASE " +
                         common::quoteIdent(e.db) + " SET bytea_output = 'escape'");
    PgConnection dadmin = rawConnection(destCluster().dsn());
    execOrDie(dadmin, "ALTER DATABASE " + common::quoteIdent(e.db) +
                          " SET DateStyle = '" + dst_datestyle + "'; ALTER DATABASE " +
                          common::quoteIdent(e.db) + " SET IntervalStyle = 'iso_8601'; ALTER DATABASE " +
                          common::quoteIdent(e.db) + " SET extra_float_digits = 1; ALTER DATABASE " +
                          common::quoteIdent(e.db) + " SET TimeZone = 'America/St_Johns'; ALTER DATABASE " +
                          common::quoteIdent(e.db) + " SET lc_monetary = 'C.UTF-8'");
  }
  PgConnection src = rawConnection(e.src_dsn);
  PgConnection dst = rawConnection(e.dst_dsn);
  // The fixture took: each side prints the same values its own way.
  ASSERT_EQ(scalar(src, "SHOW DateStyle"), "SQL, DMY");
  ASSERT_EQ(scalar(dst, "SHOW DateStyle"), dst_datestyle);
  ASSERT_EQ(scalar(src, "SELECT make_date(2024, 1, 13)::text"), "13/01/2024");
  ASSERT_EQ(scalar(src, "SELECT make_interval(days => -1, secs => -7384)::text"), "-1 2:03:04");
  ASSERT_EQ(scalar(src, "SELECT (1::float8 / 7 + 0.1)::text"), "0.242857142857143");
  execOrDie(src, kSchema);
  execOrDie(dst, kSchema);
  // Before the copy: tenant 42 and another tenant.
  for (const char* t : kTables) {
    execOrDie(src, rowsSql(t, "42", "1", "400"));
    execOrDie(src, rowsSql(t, "7", "1", "50"));
  }

  // While migrate copies and follows: a writer inserts and updates tenant 42, one row per
  // transaction.
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::string writer_error;
  std::thread writer([&] {
    try {
      PgConnection w = rawConnection(e.src_dsn);
      for (int k = 0; !stop.load(); ++k) {
        std::string id = std::to_string(100000 + k);
        const std::string table = kTables[k % 2];
        Status st = w.exec(rowsSql(table, "42", id, id));
        if (st.isOk()) {
          st = w.exec("UPDATE " + table + " SET f8 = f8 * 3 + 1e-9, iv = iv - interval '1 day 1 second', "
                      "d = d + 1 WHERE tenant_id = 42 AND id = " + std::to_string(1 + k % 400));
        }
        if (!st.isOk()) {
          writer_error = st.message();
          return;
        }
        written++;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    } catch (const std::exception& ex) {
      writer_error = ex.what();
    }
  });
  auto r = runStampmover(migrateArgs(e));
  stop = true;
  writer.join();
  EXPECT_EQ(writer_error, "");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GT(written.load(), 0);

  // Between runs: only the stream can carry these (the copy is done; the second run says so).
  for (const std::string t : kTables) {
    execOrDie(src, rowsSql(t, "42", "5000", "5100"));
    execOrDie(src, "UPDATE " + t + " SET tstz = tstz + interval '13 days 1 hour', j = j || '{\"u\": 1}', "
                   "b = b || '\\x5c00'::bytea WHERE tenant_id = 42 AND id % 3 = 0");
    execOrDie(src, "DELETE FROM " + t + " WHERE tenant_id = 42 AND id % 10 = 5");
  }
  execOrDie(src, "UPDATE vals_text SET dd = dd + 40 WHERE tenant_id = 42 AND id % 7 = 0");
  auto r2 = runStampmover(migrateArgs(e));
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_NE(r2.out.find("already copied"), std::string::npos) << r2.out;

  ASSERT_NO_FATAL_FAILURE(expectSidesEqual(e.src_dsn, e.dst_dsn));
  // And the destination holds the values the numbers say, not merely what the source printed.
  for (const std::string t : kTables) {
    EXPECT_EQ(scalar(dst, "SELECT count(*) FROM " + t + " WHERE tenant_id = 42 AND id BETWEEN 5000 AND 5100 "
                          "AND id % 10 <> 5 AND d = make_date(2000 + id % 30, 1 + id % 12, 1 + id % 28) "
                          "AND f8 = id::float8 / 7 + 0.1 AND f4 = id::float4 / 7::float4 "
                          "AND iv = make_interval(months => id % 30, days => -(id % 40), "
                          "secs => -(id * 3661.25))"),
              "91")
        << t;
  }
  EXPECT_EQ(scalar(dst, "SELECT count(*) FROM vals_text WHERE tenant_id = 42 AND id <= 400 AND id % 7 <> 0 "
                        "AND id % 10 <> 5 AND dd = make_date(1999, 1 + (id * 5) % 12, 1 + (id * 11) % 28)"),
            scalar(src, "SELECT count(*) FROM vals_text WHERE tenant_id = 42 AND id <= 400 AND id % 7 <> 0 "
                        "AND id % 10 <> 5"));
}

}  // namespace

// Unpinned, day-month order disagrees: days > 12 stop the move ("date/time field value out of
// range"), the others swap.
TEST(SessionSettings, StampsWithDifferentDefaultsMoveExactly) {
  moveAndCompare("Postgres, MDY");
}

// Unpinned, nothing stops the move here (both sides read dates day first): float8 digits and
// interval signs are lost silently, which only a comparison shows.
TEST(SessionSettings, StampsThatParseEachOthersDatesStillMoveExactly) {
  moveAndCompare("German, DMY");
}

// The pinned settings arrive on plain and replication connections, over the database's and
// the role's own defaults, for a role that is neither superuser nor owner.
TEST(SessionSettings, PinnedOnEveryConnectionForAnOrdinaryRole) {
  const std::string db = freshDatabase();
  PgConnection admin = rawConnection(sourceCluster().dsn());
  execOrDie(admin, "DO $$ BEGIN CREATE ROLE sm_settings_role LOGIN REPLICATION; "
                   "EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  execOrDie(admin, "ALTER ROLE sm_settings_role SET IntervalStyle = 'sql_standard'");
  execOrDie(admin, "ALTER DATABASE " + common::quoteIdent(db) +
                       " SET DateStyle = 'SQL, DMY'; ALTER DATABASE " + common::quoteIdent(db) +
                       " SET extra_float_digits = 0; ALTER DATABASE " + common::quoteIdent(db) +
                       " SET lc_monetary = 'C.UTF-8'; ALTER DATABASE " + common::quoteIdent(db) +
                       " SET TimeZone = 'Pacific/Chatham'");
  const std::string dsn = sourceCluster().dsn(db) + " user=sm_settings_role options='-c search_path=pg_catalog'";
  for (bool replication : {false, true}) {
    SCOPED_TRACE(replication ? "replication" : "plain");
    std::vector<std::pair<std::string, std::string>> extra;
    if (replication) extra = {{"replication", "database"}};
    auto c = PgConnection::connect(dsn, "ordinary role", extra);
    ASSERT_TRUE(c) << c.status().message();
    for (const common::PinnedSetting& s : common::kPinnedSessionSettings) {
      EXPECT_EQ(simpleScalar(*c, std::string("SHOW ") + s.name), s.value) << s.name;
    }
    // The DSN's own options are kept.
    EXPECT_EQ(simpleScalar(*c, "SHOW search_path"), "pg_catalog");
  }
  // And kServerDefaults leaves the server's defaults alone.
  auto raw = PgConnection::connect(dsn, "ordinary role", {}, common::SessionSettings::kServerDefaults);
  ASSERT_TRUE(raw) << raw.status().message();
  EXPECT_EQ(scalar(*raw, "SHOW DateStyle"), "SQL, DMY");
  EXPECT_EQ(scalar(*raw, "SHOW IntervalStyle"), "sql_standard");
}
