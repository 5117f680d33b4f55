// Secrets never leave through DSN handling (redactDsn, describeDsnParseError, connect's parse
// errors), Status carries the server's SQLSTATE through context, and the pinned session settings
// are spelled consistently for the startup packet and for SET. No network: every connect() here
// fails while parsing, before libpq opens a socket.
#include <gtest/gtest.h>

#include <string>

#include "common/pg.h"
#include "common/session_settings.h"
#include "common/status.h"

namespace stampmover::common {
namespace {

constexpr const char* kSecret = "Zq7secretPW";

void expectNoSecret(const std::string& text, const std::string& secret = kSecret) {
  EXPECT_EQ(text.find(secret), std::string::npos) << text;
}

TEST(PgRedact, RedactsEverySecretKeyword) {
  for (const char* key : {"password", "sslpassword"}) {
    SCOPED_TRACE(key);
    EXPECT_TRUE(isSecretDsnKeyword(key));
    std::string kv = redactDsn(std::string("host=db1 user=mover ") + key + "=" + kSecret + " dbname=app");
    expectNoSecret(kv);
    EXPECT_NE(kv.find(std::string(key) + "=****"), std::string::npos) << kv;
    EXPECT_NE(kv.find("host=db1"), std::string::npos) << kv;
    std::string uri = redactDsn(std::string("postgresql://mover@db1:5433/app?") + key + "=" + kSecret);
    expectNoSecret(uri);
    EXPECT_NE(uri.find(std::string(key) + "=****"), std::string::npos) << uri;
  }
  EXPECT_FALSE(isSecretDsnKeyword("host"));
  EXPECT_FALSE(isSecretDsnKeyword("sslkey"));  // a path, not the key itself
}

TEST(PgRedact, RedactsUriUserInfoPasswordAndQuotedValues) {
  std::string uri = redactDsn(std::string("postgresql://mover:") + kSecret + "@db1:5433/app");
  expectNoSecret(uri);
  EXPECT_NE(uri.find("password=****"), std::string::npos) << uri;
  // A quoted value with a space and an escaped quote: parsed, then redacted as a whole.
  std::string kv = redactDsn("host=db1 password='a b\\'c" + std::string(kSecret) + "'");
  expectNoSecret(kv);
  expectNoSecret(kv, "a b");
}

TEST(PgRedact, RedactsConnectionStringHiddenInDbname) {
  std::string s = redactDsn(std::string("host=db1 dbname='host=db2 password=") + kSecret + "'");
  expectNoSecret(s);
  EXPECT_NE(s.find("password=****"), std::string::npos) << s;
  s = redactDsn(std::string("dbname=postgresql://u:") + kSecret + "@db2/app");
  expectNoSecret(s);
}

TEST(PgRedact, UnparseableDsnIsNeverEchoed) {
  EXPECT_EQ(redactDsn(std::string("host='unterminated password=") + kSecret), "<unparseable dsn>");
  EXPECT_EQ(describeDsnParseError("host=db1 password=x"), "");
}

// libpq's own messages for these quote the fragment: `missing "=" after "Zq7secretPW"`,
// `invalid percent-encoded token: "Zq7%zzsecretPW"`, `unterminated quoted string`.
TEST(PgRedact, ParseErrorsSayWhereWithoutEchoing) {
  struct Case {
    std::string dsn;
    std::string expect;   // in the description
    std::string secret;   // must not be in it
  };
  const Case cases[] = {
      // An unquoted password with a space: the second word is not key=value.
      {"host=db1 user=u password=first " + std::string(kSecret) + " dbname=app",
       "character 32 is not a keyword=value pair (it follows the value of \"password\"", kSecret},
      // The same where the second word has an '=' in it: an unknown keyword.
      {"host=db1 password=first " + std::string(kSecret) + "=x dbname=app",
       "keyword at character 25 is not a libpq keyword (it follows the value of \"password\"",
       kSecret},
      {"host=db1 password='" + std::string(kSecret) + " dbname=app",
       "quoted value of \"password\" starting at character 19 has no closing quote", kSecret},
      {"postgresql://mover:Zq7%zzsecretPW@db1/app", "percent-encoding at character 23 in the password",
       "secretPW"},
      {"postgresql://mover:Zq7%00secretPW@db1/app", "percent-encoding at character 23 in the password",
       "secretPW"},
      {"postgresql://mover@db1/app?sslpassword=Zq7%zzsecretPW",
       "percent-encoding at character 43 in the query parameter \"sslpassword\"", "secretPW"},
      {"postgresql://mover@db1/app?password=a=Zq7secretPW", "second \"=\" at character 38",
       kSecret},
      {"postgresql://mover@db1/app?Zq7secretPW=1", "is not a libpq keyword", kSecret},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.expect);
    std::string why = describeDsnParseError(c.dsn);
    EXPECT_NE(why.find(c.expect), std::string::npos) << why;
    expectNoSecret(why, c.secret);
    EXPECT_NE(why.find("not shown"), std::string::npos) << why;

    auto conn = PgConnection::connect(c.dsn, "source stamp 'a'");
    ASSERT_FALSE(conn.isOk());
    EXPECT_EQ(conn.status().errorClass(), ErrorClass::kRefused);
    EXPECT_NE(conn.status().message().find("invalid DSN"), std::string::npos)
        << conn.status().message();
    expectNoSecret(conn.status().message(), c.secret);
  }
}

TEST(PgStatus, SqlStateSurvivesContextAndReclassification) {
  Status st = Status::refused("source: query failed: replication slot missing").withSqlState("42704");
  EXPECT_EQ(st.sqlState(), "42704");
  Status ctx = st.withContext("start stream");
  EXPECT_EQ(ctx.sqlState(), "42704");
  EXPECT_EQ(ctx.errorClass(), ErrorClass::kRefused);
  EXPECT_EQ(ctx.message(), "start stream: source: query failed: replication slot missing");
  Status retry = ctx.withClass(ErrorClass::kRetryable);
  EXPECT_EQ(retry.errorClass(), ErrorClass::kRetryable);
  EXPECT_EQ(retry.sqlState(), "42704");
  EXPECT_EQ(retry.message(), ctx.message());
  EXPECT_EQ(Status::internal("no server").sqlState(), "");
  EXPECT_EQ(Status::ok().withSqlState("42704").sqlState(), "");
  EXPECT_TRUE(Status::ok().withClass(ErrorClass::kRefused).isOk());
  Result<int> r(ctx);
  EXPECT_EQ(r.status().sqlState(), "42704");
}

TEST(SessionSettings, OneListInBothSpellings) {
  const std::string opts = pinnedStartupOptions();
  const std::string sql = pinnedSettingsSql();
  for (const PinnedSetting& s : kPinnedSessionSettings) {
    SCOPED_TRACE(s.name);
    EXPECT_NE(opts.find(std::string("-c ") + s.name + "="), std::string::npos) << opts;
    EXPECT_NE(sql.find(std::string("SET ") + s.name + " = "), std::string::npos) << sql;
  }
  // The space inside a value is escaped for libpq's options syntax.
  EXPECT_NE(opts.find("-c DateStyle=ISO,\\ YMD"), std::string::npos) << opts;
  EXPECT_NE(sql.find("SET DateStyle = 'ISO, YMD'"), std::string::npos) << sql;
  EXPECT_NE(sql.find("SET extra_float_digits = 3"), std::string::npos) << sql;
  for (const char* name : {"DateStyle", "IntervalStyle", "extra_float_digits", "TimeZone",
                           "bytea_output", "lc_monetary", "standard_conforming_strings"}) {
    EXPECT_NE(opts.find(std::string("-c ") + name + "="), std::string::npos) << name;
  }
}

TEST(SessionSettings, UserOptionsComeFirstSoThePinnedOnesWin) {
  EXPECT_EQ(mergeStartupOptions(""), pinnedStartupOptions());
  EXPECT_EQ(mergeStartupOptions("  "), pinnedStartupOptions());
  EXPECT_EQ(mergeStartupOptions("-c search_path=app -c DateStyle=German "),
            "-c search_path=app -c DateStyle=German " + pinnedStartupOptions());
  // A trailing lone backslash would otherwise escape the separating space.
  EXPECT_EQ(mergeStartupOptions("-c a=b\\"), "-c a=b\\\\ " + pinnedStartupOptions());
}

}  // namespace
}  // namespace stampmover::common
