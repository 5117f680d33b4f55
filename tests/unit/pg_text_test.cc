// Text helpers that guard secrets and SQL: DSN redaction, identifier quoting, SQLSTATE
// classification and the replication object names derived from a tenant key.
#include <gtest/gtest.h>

#include "common/pg.h"
#include "mover/source_setup.h"

using namespace stampmover;

TEST(RedactDsn, HidesPasswordInBothForms) {
  std::string kv = common::redactDsn("host=db1 port=5433 user=mover password=s3cr3t dbname=app");
  EXPECT_EQ(kv.find("s3cr3t"), std::string::npos);
  EXPECT_NE(kv.find("password=****"), std::string::npos);
  EXPECT_NE(kv.find("host=db1"), std::string::npos);
  std::string uri = common::redactDsn("postgresql://mover:s3cr3t@db1:5433/app");
  EXPECT_EQ(uri.find("s3cr3t"), std::string::npos);
  EXPECT_NE(uri.find("dbname=app"), std::string::npos);
  EXPECT_EQ(common::redactDsn("host='unterminated password=s3cr3t"), "<unparseable dsn>");
}

TEST(QuoteIdent, DoublesQuotes) {
  EXPECT_EQ(common::quoteIdent("orders"), "\"orders\"");
  EXPECT_EQ(common::quoteIdent("we\"ird"), "\"we\"\"ird\"");
  EXPECT_EQ(common::qualifiedName("public", "a b"), "\"public\".\"a b\"");
}

TEST(ClassifySqlState, MapsToCallerActions) {
  using common::ErrorClass;
  EXPECT_EQ(common::classifySqlState("08006"), ErrorClass::kRetryable);
  EXPECT_EQ(common::classifySqlState("40001"), ErrorClass::kRetryable);
  EXPECT_EQ(common::classifySqlState("40P01"), ErrorClass::kRetryable);
  EXPECT_EQ(common::classifySqlState("57P01"), ErrorClass::kRetryable);
  EXPECT_EQ(common::classifySqlState("42P01"), ErrorClass::kRefused);
  EXPECT_EQ(common::classifySqlState("57014"), ErrorClass::kCancelled);
  EXPECT_EQ(common::classifySqlState("XX000"), ErrorClass::kInternal);
  EXPECT_EQ(common::classifySqlState("bad"), ErrorClass::kInternal);
}

TEST(ReplicationName, ValidForAnyTenantText) {
  for (const std::string& t : std::vector<std::string>{"42", "Acme Corp; DROP TABLE x", "0f8fad5b-d9cb-469f-a165-70867728950e",
                        std::string(200, 'z'), "ünïcødé"}) {
    std::string n = mover::replicationNameForTenant(t);
    EXPECT_LE(n.size(), 63u) << t;
    for (char c : n) {
      EXPECT_TRUE((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') << n;
    }
    EXPECT_EQ(n, mover::replicationNameForTenant(t));  // deterministic: cleanup finds it
  }
  EXPECT_NE(mover::replicationNameForTenant("a b"), mover::replicationNameForTenant("a_b"));
}
