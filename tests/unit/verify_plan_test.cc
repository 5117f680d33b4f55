// The SQL the verifier builds, without a server: literal quoting for COPY, chunk-number
// expressions over primary-key bounds (prefix and whole-key plans), chunk range predicates,
// keyset comparisons, the bulk-pass COPY with its block-range and key-range pieces.
#include <gtest/gtest.h>

#include "verify/table_plan.h"

using namespace stampmover::verify;

namespace {

PreparedColumn col(const std::string& name, const std::string& type,
                   Normalization n = Normalization::kNone) {
  PreparedColumn c;
  c.name = name;
  c.quoted = "\"" + name + "\"";
  c.cast_type = type;
  c.normalization = n;
  return c;
}

// orders(tenant_id, order_id, line, price numeric), PK (tenant_id, order_id, line).
PreparedTable table() {
  PreparedTable t;
  t.spec.schema = "public";
  t.spec.name = "order_items";
  t.spec.tenant_column = "tenant_id";
  t.quoted = "\"public\".\"order_items\"";
  t.columns = {col("tenant_id", "bigint"), col("order_id", "bigint"), col("line", "integer"),
               col("price", "numeric", Normalization::kTrimScale)};
  t.tenant_position = 0;
  t.pk_positions = {0, 1, 2};
  t.key_positions = {1, 2};
  return t;
}

}  // namespace

TEST(VerifyPlan, LiteralsDoubleQuotesOnly) {
  EXPECT_EQ(sqlLiteral("42"), "'42'");
  EXPECT_EQ(sqlLiteral("acme's \"co\""), "'acme''s \"co\"'");
  EXPECT_EQ(sqlLiteral("back\\slash"),
            "'back\\slash'");  // standard_conforming_strings is pinned on
  EXPECT_EQ(sqlLiteral("'); DROP TABLE t; --"), "'''); DROP TABLE t; --'");
}

TEST(VerifyPlan, CanonicalSelectListNormalises) {
  EXPECT_EQ(canonicalSelectList(table()),
            "\"tenant_id\", \"order_id\", \"line\", pg_catalog.trim_scale(\"price\")");
}

TEST(VerifyPlan, PrefixPlanBucketsOnTheFirstKeyColumn) {
  ChunkPlan p;
  p.prefix = true;
  p.bounds = {{"100"}, {"200"}};
  EXPECT_EQ(p.chunks(), 3u);
  EXPECT_EQ(bucketExpr(table(), p),
            "pg_catalog.width_bucket(\"order_id\", '{\"100\",\"200\"}'::bigint[])");
  EXPECT_EQ(chunkPredicate(table(), p, 0), "\"order_id\" < '100'::bigint");
  EXPECT_EQ(chunkPredicate(table(), p, 1),
            "\"order_id\" >= '100'::bigint AND \"order_id\" < '200'::bigint");
  EXPECT_EQ(chunkPredicate(table(), p, 2), "\"order_id\" >= '200'::bigint");
}

TEST(VerifyPlan, WholeKeyPlanComparesRecords) {
  ChunkPlan p;
  p.prefix = false;
  p.bounds = {{"5", "1"}, {"9", "3"}};
  EXPECT_EQ(
      bucketExpr(table(), p),
      "pg_catalog.width_bucket(ROW(\"order_id\", \"line\"), ARRAY[ROW('5'::bigint, '1'::integer), "
      "ROW('9'::bigint, '3'::integer)])");
  EXPECT_EQ(
      chunkPredicate(table(), p, 1),
      "(\"order_id\", \"line\") >= ('5'::bigint, '1'::integer) AND (\"order_id\", \"line\") < "
      "('9'::bigint, '3'::integer)");
}

TEST(VerifyPlan, OneChunkWithoutBoundsHasNoPredicate) {
  ChunkPlan p;
  EXPECT_EQ(p.chunks(), 1u);
  EXPECT_EQ(bucketExpr(table(), p), "0");
  EXPECT_EQ(chunkPredicate(table(), p, 0), "");
}

TEST(VerifyPlan, ArrayBoundsEscapeQuotesAndBackslashes) {
  PreparedTable t = table();
  t.columns[1] = col("order_id", "text");
  ChunkPlan p;
  p.bounds = {{"a\"b"}, {"c\\d,e'f"}};
  EXPECT_EQ(bucketExpr(t, p),
            "pg_catalog.width_bucket(\"order_id\", '{\"a\\\"b\",\"c\\\\d,e''f\"}'::text[])");
}

TEST(VerifyPlan, KeysetComparisonsUseTypedLiterals) {
  EXPECT_EQ(keyComparison(table(), ">", {"7", "2"}),
            "(\"order_id\", \"line\") > ('7'::bigint, '2'::integer)");
  EXPECT_EQ(keyOrder(table()), "\"order_id\", \"line\"");
  EXPECT_EQ(keyOrder(table(), "sm_t"), "sm_t.\"order_id\", sm_t.\"line\"");
}

TEST(VerifyPlan, PiecesCoverTheHeapWithoutGapsAndTheLastIsOpen) {
  ChunkPlan p;
  p.blocks[0] = 1000;
  p.scan_tasks[0] = 3;
  auto a = pieceBlocks(p, 0, 0), b = pieceBlocks(p, 0, 1), c = pieceBlocks(p, 0, 2);
  EXPECT_EQ(a.first, 0u);
  EXPECT_EQ(a.second, b.first);
  EXPECT_EQ(b.second, c.first);
  EXPECT_EQ(c.second, 0u);  // unbounded: rows that moved past the planned end are still read
}

TEST(VerifyPlan, BulkCopyFiltersTheTenantAndThePiece) {
  ChunkPlan p;
  p.bounds = {{"100"}};
  p.blocks[1] = 900;
  p.scan_tasks[1] = 3;
  std::string sql = scanCopySql(table(), p, 1, 1, "4'2");
  EXPECT_EQ(
      sql,
      "COPY (SELECT pg_catalog.width_bucket(\"order_id\", '{\"100\"}'::bigint[]), \"tenant_id\", "
      "\"order_id\", \"line\", pg_catalog.trim_scale(\"price\") FROM \"public\".\"order_items\" "
      "WHERE \"tenant_id\" = '4''2' AND ctid >= '(300,0)'::pg_catalog.tid AND ctid < "
      "'(600,0)'::pg_catalog.tid) TO STDOUT");
  EXPECT_EQ(scanCopySql(table(), p, 0, 0, "42").find("ctid"), std::string::npos);  // one piece
}

TEST(VerifyPlan, KeyRangePiecesCoverEveryChunkOnce) {
  ChunkPlan p;
  p.bounds = {{"100"}, {"200"}, {"300"}, {"400"}};  // 5 chunks
  p.scan_tasks[0] = 2;
  p.key_pieces[0] = true;
  auto a = pieceChunks(p, 0, 0), b = pieceChunks(p, 0, 1);
  EXPECT_EQ(a.first, 0u);
  EXPECT_EQ(a.second, b.first);
  EXPECT_EQ(b.second, 5u);
  EXPECT_EQ(chunkRangePredicate(table(), p, 0, 2), "\"order_id\" < '200'::bigint");
  EXPECT_EQ(chunkRangePredicate(table(), p, 2, 5), "\"order_id\" >= '200'::bigint");
  EXPECT_EQ(chunkRangePredicate(table(), p, 1, 3),
            "\"order_id\" >= '100'::bigint AND \"order_id\" < '300'::bigint");
  EXPECT_EQ(chunkRangePredicate(table(), p, 0, 5), "");
  std::string sql = scanCopySql(table(), p, 0, 1, "42");
  EXPECT_NE(sql.find("WHERE \"tenant_id\" = '42' AND \"order_id\" >= '200'::bigint)"), std::string::npos) << sql;
  EXPECT_EQ(sql.find("ctid"), std::string::npos) << "key pieces never filter on ctid";
}
