// The cutover's re-check (by key and whole-table), its pruning pass, and purge compare rows
// with the verifier's one definition of equal (verify/row_equality.h), against real clusters:
// a destination whose columns are in another order (which preflight allows) and whose values
// PostgreSQL's `=` calls equal to the source's but print differently (numeric 1.50 vs 1.5, also
// through a domain, float -0 vs 0, interval '1 day' vs '24 hours') is equal; a real difference
// next to them is still found, alone; purge deletes only after such a comparison passes. And
// the keyed reads rebuild byte for byte the COPY lines the verifier hashes.
#include "orchestrator/recheck.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "mover/catalog.h"
#include "orchestrator/purge.h"
#include "orchestrator/verify_job.h"
#include "tests/support/test_support.h"
#include "verify/narrow.h"
#include "verify/row_equality.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;
namespace mover = stampmover::mover;
namespace orch = stampmover::orch;
namespace verify = stampmover::verify;

namespace {

// The source's column order, and the destination's: the same columns, another order.
const char* kDomain = "CREATE DOMAIN amount AS numeric";
const char* kSourceTable =
    "CREATE TABLE kv (tenant_id bigint NOT NULL, k int NOT NULL, n numeric, a amount, f float8, "
    "iv interval, note text, PRIMARY KEY (tenant_id, k))";
const char* kDestTable =
    "CREATE TABLE kv (note text, iv interval, k int NOT NULL, f float8, a amount, "
    "tenant_id bigint NOT NULL, n numeric, PRIMARY KEY (tenant_id, k))";
// Rows 1..3 of tenant 42 print differently on the two sides but are equal by PostgreSQL's `=`;
// row 4 prints alike; tenant 7 is another tenant.
const char* kSourceRows =
    "INSERT INTO kv (tenant_id, k, n, a, f, iv, note) VALUES "
    "(42, 1, 1.50, 2.50, 1, '1 day', 'scale'), (42, 2, 1, 1, '-0', '0', 'minus zero'), "
    "(42, 3, 1, 1, 1, '1 day', E'tab\\there'), (42, 4, 7, 7, 7, '1 hour', NULL), "
    "(7, 1, 1, 1, 1, '1 day', 'other tenant')";
const char* kDestRows =
    "INSERT INTO kv (tenant_id, k, n, a, f, iv, note) VALUES "
    "(42, 1, 1.5, 2.5, 1, '1 day', 'scale'), (42, 2, 1, 1, 0, '0', 'minus zero'), "
    "(42, 3, 1, 1, 1, '24 hours', E'tab\\there'), (42, 4, 7, 7, 7, '1 hour', NULL), "
    "(7, 1, 1, 1, 1, '1 day', 'other tenant')";

struct Env {
  PgConnection src;
  PgConnection dst;
  std::vector<mover::TableInfo> tables;  // as discovered on the source
};

std::unique_ptr<Env> setUp() {
  auto e = std::make_unique<Env>();
  const std::string db = freshDatabase();
  e->src = connectOrDie(sourceCluster().dsn(db));
  e->dst = connectOrDie(destCluster().dsn(db));
  execOrDie(e->src, kDomain);
  execOrDie(e->dst, kDomain);
  execOrDie(e->src, kSourceTable);
  execOrDie(e->dst, kDestTable);
  execOrDie(e->src, kSourceRows);
  execOrDie(e->dst, kDestRows);
  auto tables = mover::discoverTenantTables(e->src, {});
  EXPECT_TRUE(tables.isOk()) << tables.status().message();
  if (tables.isOk()) e->tables = *tables;
  return e;
}

// Every key of tenant 42 (1..4, and 5, on neither side), as the applier records them.
mover::TouchedKeys allKeys() {
  mover::TouchedKeys touched;
  auto& keys = touched.keys["public.kv"];
  for (int k = 1; k <= 5; ++k) {
    keys["42/" + std::to_string(k)] = {std::string("42"), std::to_string(k)};
  }
  touched.count = keys.size();
  return touched;
}

// What the old comparisons looked at: the record text differs on every row of tenant 42
// (column order alone), and the values' own text differs on rows 1..3.
void expectTextDiffers(Env& e) {
  for (int k = 1; k <= 4; ++k) {
    const std::string q =
        "SELECT t::text FROM kv t WHERE tenant_id = 42 AND k = " + std::to_string(k);
    ASSERT_NE(scalar(e.src, q), scalar(e.dst, q)) << "row " << k;
  }
  ASSERT_EQ(
      scalar(e.src, "SELECT n::text || ' ' || a::text FROM kv WHERE tenant_id = 42 AND k = 1"),
      "1.50 2.50");
  ASSERT_EQ(
      scalar(e.dst, "SELECT n::text || ' ' || a::text FROM kv WHERE tenant_id = 42 AND k = 1"),
      "1.5 2.5");
}

}  // namespace

TEST(Recheck, EqualRowsInAnotherColumnOrderAndSpellingAreEqual) {
  auto e = setUp();
  ASSERT_EQ(e->tables.size(), 1u);
  ASSERT_NO_FATAL_FAILURE(expectTextDiffers(*e));

  uint64_t checked = 0;
  auto diffs = orch::recheckTouchedRows(e->src, e->dst, e->tables, allKeys(), "42", &checked);
  ASSERT_TRUE(diffs.isOk()) << diffs.status().message();
  EXPECT_TRUE(diffs->empty()) << (*diffs)[0];
  EXPECT_EQ(checked, 5u);

  orch::PruneStats stats;
  auto kept = orch::pruneTouched(e->src, e->dst, e->tables, allKeys(), "42", &stats);
  ASSERT_TRUE(kept.isOk()) << kept.status().message();
  EXPECT_EQ(stats.checked, 5u);
  EXPECT_EQ(kept->count, 0u) << "every key's rows are equal";

  // A real difference beside them is found, alone, by key.
  execOrDie(e->dst, "UPDATE kv SET note = 'changed' WHERE tenant_id = 42 AND k = 4");
  checked = 0;
  diffs = orch::recheckTouchedRows(e->src, e->dst, e->tables, allKeys(), "42", &checked);
  ASSERT_TRUE(diffs.isOk()) << diffs.status().message();
  EXPECT_EQ(*diffs, std::vector<std::string>{"public.kv (42,4): different"});
  kept = orch::pruneTouched(e->src, e->dst, e->tables, allKeys(), "42", &stats);
  ASSERT_TRUE(kept.isOk()) << kept.status().message();
  ASSERT_EQ(kept->count, 1u);
  EXPECT_TRUE(kept->keys["public.kv"].count("42/4"));
  // So is a numeric that is not equal, only close.
  execOrDie(e->dst, "UPDATE kv SET note = NULL, n = 1.51 WHERE tenant_id = 42 AND k = 4");
  diffs = orch::recheckTouchedRows(e->src, e->dst, e->tables, allKeys(), "42", &checked);
  ASSERT_TRUE(diffs.isOk()) << diffs.status().message();
  EXPECT_EQ(*diffs, std::vector<std::string>{"public.kv (42,4): different"});
}

// A TRUNCATE (or an overflowed key set) makes the window compare the tenant's whole table.
TEST(Recheck, WholeTableComparisonUsesTheSameEquality) {
  auto e = setUp();
  ASSERT_EQ(e->tables.size(), 1u);
  ASSERT_NO_FATAL_FAILURE(expectTextDiffers(*e));
  mover::TouchedKeys touched;
  touched.whole_table["public.kv"] = true;
  uint64_t checked = 0;
  auto diffs = orch::recheckTouchedRows(e->src, e->dst, e->tables, touched, "42", &checked);
  ASSERT_TRUE(diffs.isOk()) << diffs.status().message();
  EXPECT_TRUE(diffs->empty()) << (*diffs)[0];
  EXPECT_EQ(checked, 4u);

  execOrDie(e->dst, "UPDATE kv SET f = 2 WHERE tenant_id = 42 AND k = 2");
  diffs = orch::recheckTouchedRows(e->src, e->dst, e->tables, touched, "42", &checked);
  ASSERT_TRUE(diffs.isOk()) << diffs.status().message();
  ASSERT_EQ(diffs->size(), 1u);
  EXPECT_NE((*diffs)[0].find("public.kv: tenant rows differ"), std::string::npos) << (*diffs)[0];
}

// Purge compares the stamps with the same equality, then deletes the tenant (only it).
TEST(Recheck, PurgeComparesWithTheSameEquality) {
  auto e = setUp();
  ASSERT_EQ(e->tables.size(), 1u);
  ASSERT_NO_FATAL_FAILURE(expectTextDiffers(*e));

  // A real difference first: refused, nothing deleted.
  execOrDie(e->dst, "UPDATE kv SET iv = '25 hours' WHERE tenant_id = 42 AND k = 3");
  auto refused = orch::purgeTenant(e->src, e->dst, e->tables, "42");
  ASSERT_FALSE(refused.isOk());
  EXPECT_EQ(refused.status().errorClass(), stampmover::common::ErrorClass::kDataLoss)
      << refused.status().message();
  EXPECT_EQ(scalar(e->src, "SELECT count(*) FROM kv WHERE tenant_id = 42"), "4");

  execOrDie(e->dst, "UPDATE kv SET iv = '1 day' WHERE tenant_id = 42 AND k = 3");
  auto purged = orch::purgeTenant(e->src, e->dst, e->tables, "42");
  ASSERT_TRUE(purged.isOk()) << purged.status().message();
  EXPECT_EQ(*purged, 4u);
  EXPECT_EQ(scalar(e->src, "SELECT count(*) FROM kv WHERE tenant_id = 42"), "0");
  EXPECT_EQ(scalar(e->src, "SELECT count(*) FROM kv WHERE tenant_id = 7"), "1");
  EXPECT_EQ(scalar(e->dst, "SELECT count(*) FROM kv"), "5") << "the serving stamp is only read";
}

// The keyed reads (a query with parameters, no COPY) give the bytes the verifier hashes from
// COPY, for awkward text too: one encoding, not two that agree most of the time.
TEST(Recheck, KeyedReadsRebuildTheVerifiersCopyLines) {
  auto e = setUp();
  ASSERT_EQ(e->tables.size(), 1u);
  execOrDie(
      e->src,
      "INSERT INTO kv (tenant_id, k, n, a, f, iv, note) VALUES "
      "(42, 10, -0.000, 1e-20, 'NaN', '-1 year 2 days -03:00', 'a\\b' || chr(10) || 'c' || "
      "chr(13) || 'd' || chr(8) || 'e' || chr(12) || 'f' || chr(11) || 'g' || chr(1) || 'h'), "
      "(42, 11, NULL, NULL, 'Infinity', NULL, ''), (42, 12, 1, 1, 1.0000001, '1 mon', 'ünï ☃')");
  ASSERT_TRUE(e->src.exec(stampmover::common::pinnedSettingsSql()).isOk());
  auto enc = orch::rowEncodingsFor(e->src, e->tables);
  ASSERT_TRUE(enc.isOk()) << enc.status().message();
  const verify::PreparedTable& t = (*enc)[0];
  std::vector<std::string> copied;
  ASSERT_TRUE(verify::copyOut(e->src,
                              "COPY (SELECT " + verify::canonicalSelectList(t) +
                                  " FROM kv WHERE tenant_id = 42 ORDER BY k) TO STDOUT",
                              [&](std::string_view line) {
                                if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
                                copied.emplace_back(line);
                              })
                  .isOk());
  auto res = e->src.query("SELECT k, " + verify::canonicalSelectList(t, "sm_t") +
                              " FROM kv AS sm_t WHERE tenant_id = $1 ORDER BY k",
                          {std::string("42")});
  ASSERT_TRUE(res.isOk()) << res.status().message();
  ASSERT_EQ(static_cast<size_t>(stampmover::common::rowCount(*res)), copied.size());
  ASSERT_EQ(copied.size(), 7u);
  for (int r = 0; r < stampmover::common::rowCount(*res); ++r) {
    EXPECT_EQ(verify::canonicalLine(res->get(), r, 1, static_cast<int>(t.columns.size())),
              copied[static_cast<size_t>(r)])
        << "row " << r;
  }
  EXPECT_NE(copied[4].find("a\\\\b\\nc\\rd\\be\\ff\\vg\x01h"), std::string::npos) << copied[4];
}
