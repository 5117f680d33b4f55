// The project's one row equality without a server: tables prepared from catalog types for the
// re-check and purge, the COPY text escaping keyed reads rebuild the verifier's lines with, and
// how the verify report keeps other tenants' rows apart from the tenant's differences.
#include <gtest/gtest.h>

#include "orchestrator/verify_job.h"
#include "verify/canonical.h"
#include "verify/row_equality.h"

using namespace stampmover;
using namespace stampmover::verify;

namespace {

VerifyTable kvSpec() {
  VerifyTable t;
  t.schema = "public";
  t.name = "kv";
  t.tenant_column = "tenant_id";
  t.primary_key = {"tenant_id", "k"};
  t.columns = {{"note", "text"},        {"k", "integer"},          {"n", "numeric"},
               {"tenant_id", "bigint"}, {"f", "double precision"}, {"iv", "interval"}};
  return t;
}

std::string copyField(std::string_view v, bool is_null = false) {
  std::string out;
  appendCopyField(&out, v.data(), v.size(), is_null);
  return out;
}

}  // namespace

TEST(RowEquality, PreparesFromCatalogTypesWithoutAServer) {
  auto t = prepareTable(kvSpec(), {25, 23, 1700, 20, 701, 1186});
  ASSERT_TRUE(t.isOk()) << t.status().message();
  EXPECT_EQ(t->quoted, "\"public\".\"kv\"");
  EXPECT_EQ(t->tenant_position, 3u);
  EXPECT_EQ(t->pk_positions, (std::vector<size_t>{3, 1}));
  EXPECT_EQ(t->key_positions, (std::vector<size_t>{1}));
  // Columns by name, in the spec's order: the other side's column order does not matter.
  EXPECT_EQ(canonicalSelectList(*t, "sm_t"),
            "sm_t.\"note\", sm_t.\"k\", pg_catalog.trim_scale(sm_t.\"n\"), sm_t.\"tenant_id\", "
            "(sm_t.\"f\" OPERATOR(pg_catalog.+) 0::pg_catalog.float8), "
            "pg_catalog.justify_interval(sm_t.\"iv\")");
  EXPECT_EQ(canonicalSelectList(*t).rfind("\"note\", \"k\", pg_catalog.trim_scale(\"n\"), ", 0), 0u)
      << "unqualified without an alias";
}

TEST(RowEquality, RefusesTablesItCannotMatchByKey) {
  EXPECT_FALSE(prepareTable(kvSpec(), {25, 23}).isOk()) << "one type per column";
  VerifyTable no_pk = kvSpec();
  no_pk.primary_key.clear();
  auto r = prepareTable(no_pk, {25, 23, 1700, 20, 701, 1186});
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().errorClass(), common::ErrorClass::kRefused);
  VerifyTable bad_tenant = kvSpec();
  bad_tenant.tenant_column = "account";
  EXPECT_FALSE(prepareTable(bad_tenant, {25, 23, 1700, 20, 701, 1186}).isOk());
}

TEST(RowEquality, BuiltInTypesNeedNoRoundTrip) {
  common::PgConnection none;  // not connected: asking it anything would fail
  auto base = baseTypes(none, {1700, 23, 701, 1700});
  ASSERT_TRUE(base.isOk()) << base.status().message();
  EXPECT_EQ(base->at(1700), 1700u);
  EXPECT_EQ(base->at(701), 701u);
  EXPECT_EQ(base->size(), 3u);
}

TEST(RowEquality, CopyFieldsAreEscapedAsCopyWritesThem) {
  EXPECT_EQ(copyField("", true), "\\N");
  EXPECT_EQ(copyField(""), "");
  EXPECT_EQ(copyField("\\N"), "\\\\N") << "the text \\N is not NULL";
  EXPECT_EQ(copyField("a\tb\nc\rd\\e\bf\fg\vh"), "a\\tb\\nc\\rd\\\\e\\bf\\fg\\vh");
  EXPECT_EQ(copyField(std::string_view("x\x01y", 3)), "x\x01y") << "other control bytes as is";
  EXPECT_EQ(copyField("ünï ☃"), "ünï ☃");
  // What the verifier's narrowing unescapes is what was escaped.
  for (std::string v : {"plain", "tab\there", "back\\slash", "nl\n", "\x7f", "\\x41", "\\101"}) {
    EXPECT_EQ(unescapeCopyField(copyField(v)), v) << v;
  }
}

TEST(RowEquality, OtherTenantsAreReportedApartAndNeverAsDifferences) {
  orch::VerifyJobResult res;
  res.report.other_tenants_checked = true;
  TableVerifyResult t;
  t.table = "public.orders";
  t.source_rows = t.dest_rows = 10;
  t.chunks = 1;
  t.other_tenant_rows = 3;
  t.other_tenants_listed.push_back({"7", {{"tenant_id", "7"}, {"order_id", "1"}}});
  res.report.tables.push_back(t);
  orch::VerifyJobOptions o;
  o.tenant = "42";
  o.source.label = "source";
  o.destination.label = "destination";
  EXPECT_EQ(res.report.differences(), 0u);
  EXPECT_FALSE(orch::verifyFailed(res, o));
  std::string text = orch::formatVerifyReport(res, o);
  EXPECT_NE(text.find("result: IDENTICAL"), std::string::npos) << text;
  EXPECT_NE(text.find("other tenants: 3 rows of other tenants present on both stamps (an earlier "
                      "move not purged, or a leak); not differences of tenant 42"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("tenant 7 public.orders (tenant_id=7, order_id=1)"), std::string::npos);
  EXPECT_EQ(text.find("FAILED"), std::string::npos) << text;
  std::string json = orch::verifyReportJson(res, o);
  EXPECT_NE(json.find("\"identical\": true"), std::string::npos) << json;
  EXPECT_NE(json.find("\"other_tenant_rows\": 3"), std::string::npos) << json;

  o.fail_on_other_tenants = true;
  EXPECT_TRUE(orch::verifyFailed(res, o));
  EXPECT_NE(orch::formatVerifyReport(res, o).find("other-tenants check: FAILED"),
            std::string::npos);
}
