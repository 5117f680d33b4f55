// The applier's statements for a relation: tenant scoping when the primary key lacks the
// tenant column (every write carries the tenant predicate; upserts fail on another tenant's
// key), and none of it when the key holds the tenant.
#include "mover/apply_sql.h"

#include <gtest/gtest.h>

namespace mover = stampmover::mover;

namespace {

mover::ApplyShape shape(bool tenant_in_pk) {
  mover::ApplyShape s;
  s.table = "\"public\".\"t\"";
  s.columns = {"id", "tenant_id", "v"};
  s.pk = tenant_in_pk ? std::vector<size_t>{1, 0} : std::vector<size_t>{0};
  s.key = s.pk;
  s.tenant = 1;
  s.casts = {{"integer[]", ""}, {"bigint[]", ""}, {"text[]", "::text"}};
  return s;
}

TEST(ApplySql, TenantInTheKeyNeedsNoPredicate) {
  auto sql = mover::buildApplyStatements(shape(true));
  EXPECT_EQ(sql.delete_pk, "DELETE FROM \"public\".\"t\" WHERE \"tenant_id\" = $1 AND \"id\" = $2");
  EXPECT_EQ(sql.upsert,
            "INSERT INTO \"public\".\"t\" AS x (\"id\", \"tenant_id\", \"v\") VALUES ($1, $2, $3) "
            "ON CONFLICT (\"tenant_id\", \"id\") DO UPDATE SET \"v\" = EXCLUDED.\"v\"");
  EXPECT_EQ(sql.delete_tenant, "DELETE FROM \"public\".\"t\" WHERE \"tenant_id\" = $1");
  EXPECT_EQ(sql.upsert_many.find("WITH"), std::string::npos);
}

TEST(ApplySql, KeyWithoutTenantScopesEveryWrite) {
  auto sql = mover::buildApplyStatements(shape(false));
  EXPECT_EQ(sql.delete_pk, "DELETE FROM \"public\".\"t\" WHERE \"id\" = $1 AND \"tenant_id\" = $2");
  EXPECT_EQ(sql.upsert,
            "WITH w AS (INSERT INTO \"public\".\"t\" AS x (\"id\", \"tenant_id\", \"v\") VALUES "
            "($1, $2, $3) ON CONFLICT (\"id\") DO UPDATE SET \"tenant_id\" = "
            "EXCLUDED.\"tenant_id\", \"v\" = EXCLUDED.\"v\" WHERE x.\"tenant_id\" = "
            "EXCLUDED.\"tenant_id\" RETURNING 1) SELECT 1 / (count(*) = 1)::int FROM w");
  EXPECT_NE(sql.upsert_many.find("SELECT 1 / (count(*) = $4::bigint)::int FROM w"),
            std::string::npos)
      << sql.upsert_many;
  EXPECT_NE(sql.delete_many.find("AND x.\"tenant_id\" = $2"), std::string::npos) << sql.delete_many;
  EXPECT_EQ(mover::toastUpdateSql(shape(false), "..u"),
            "UPDATE \"public\".\"t\" SET \"tenant_id\" = $2 WHERE \"id\" = $1 AND \"tenant_id\" = $3");
}

}  // namespace
