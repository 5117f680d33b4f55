// Canonical row encoding pieces without a server: the per-type normalising expressions, COPY
// text splitting and unescaping, and the display of values in reports.
#include <gtest/gtest.h>

#include "verify/canonical.h"

using namespace stampmover::verify;

TEST(VerifyCanonical, NormalisesExactlyTheTypesWhoseEqualityIgnoresRepresentation) {
  EXPECT_EQ(normalizationFor(1700), Normalization::kTrimScale);        // numeric: 1.50 = 1.5
  EXPECT_EQ(normalizationFor(700), Normalization::kFloat4);            // real: -0 = 0
  EXPECT_EQ(normalizationFor(701), Normalization::kFloat8);            // double: -0 = 0
  EXPECT_EQ(normalizationFor(1186), Normalization::kJustifyInterval);  // '1 day' = '24 hours'
  for (uint32_t oid : {16u, 20u, 23u, 25u, 17u, 114u, 3802u, 1184u, 2950u}) {
    EXPECT_EQ(normalizationFor(oid), Normalization::kNone) << oid;  // bool..uuid: text is exact
  }
}

TEST(VerifyCanonical, ExpressionsAreSchemaQualified) {
  EXPECT_EQ(canonicalExpr("\"price\"", Normalization::kTrimScale),
            "pg_catalog.trim_scale(\"price\")");
  EXPECT_EQ(canonicalExpr("\"f\"", Normalization::kFloat8),
            "(\"f\" OPERATOR(pg_catalog.+) 0::pg_catalog.float8)");
  EXPECT_EQ(canonicalExpr("\"r\"", Normalization::kFloat4),
            "(\"r\" OPERATOR(pg_catalog.+) 0::pg_catalog.float4)");
  EXPECT_EQ(canonicalExpr("\"iv\"", Normalization::kJustifyInterval),
            "pg_catalog.justify_interval(\"iv\")");
  EXPECT_EQ(canonicalExpr("\"a\"\"b\"", Normalization::kNone), "\"a\"\"b\"");
}

TEST(VerifyCanonical, PinnedSettingsCoverEverySessionDependentOutput) {
  std::string sql = pinnedSessionSql();
  for (const char* s : {"TimeZone = 'UTC'", "DateStyle = 'ISO, YMD'", "IntervalStyle = 'postgres'",
                        "extra_float_digits = 3", "bytea_output = 'hex'", "lc_monetary = 'C'",
                        "standard_conforming_strings = on", "default_transaction_read_only = on"}) {
    EXPECT_NE(sql.find(s), std::string::npos) << s;
  }
}

TEST(VerifyCanonical, SplitsCopyRowsKeepingEmptyFields) {
  std::vector<std::string_view> f;
  splitCopyRow("42\t\t\\N\tnull\n", &f);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_EQ(f[0], "42");
  EXPECT_EQ(f[1], "");
  EXPECT_EQ(f[2], "\\N");
  EXPECT_EQ(f[3], "null");
  splitCopyRow("single", &f);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0], "single");
  splitCopyRow("", &f);
  ASSERT_EQ(f.size(), 1u);
}

TEST(VerifyCanonical, NullEmptyAndTheTextNullStayDistinct) {
  EXPECT_FALSE(unescapeCopyField("\\N").has_value());
  EXPECT_EQ(unescapeCopyField("").value(), "");
  EXPECT_EQ(unescapeCopyField("null").value(), "null");
  EXPECT_EQ(unescapeCopyField("\\\\N").value(), "\\N");  // the two characters \N, not NULL
}

TEST(VerifyCanonical, UndoesCopyEscapes) {
  EXPECT_EQ(unescapeCopyField("a\\tb\\nc\\\\d\\re").value(), "a\tb\nc\\d\re");
  EXPECT_EQ(unescapeCopyField("\\b\\f\\v").value(), "\b\f\v");
  EXPECT_EQ(unescapeCopyField("\\101\\x42\\x4").value(), "AB\x04");
  EXPECT_EQ(unescapeCopyField("trailing\\").value(), "trailing\\");
}

TEST(VerifyCanonical, DisplaysValuesOnOneLine) {
  EXPECT_EQ(displayValue(std::nullopt), "NULL");
  EXPECT_EQ(displayValue(std::string("")), "");
  EXPECT_EQ(displayValue(std::string("a\nb\tc\\")), "a\\nb\\tc\\\\");
  EXPECT_EQ(displayValue(std::string("\x01")), "\\x01");
  EXPECT_EQ(displayValue(std::string("ünï ☃")), "ünï ☃");
}
