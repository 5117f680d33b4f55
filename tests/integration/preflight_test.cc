// Preflight refusals (DESIGN.md phase 1) against real PostgreSQL, through the stampmover binary:
// one scenario per refusal, each checking the exit code, a one-line error that names the object
// and the fix, and that `copy` stops before changing anything on either server.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "harness/local_cluster.h"
#include "tests/support/test_support.h"

namespace stampmover::testing {
namespace {

// A tenant table in the common shape: tenant column leading a composite primary key.
constexpr const char* kItems =
    "CREATE TABLE items (tenant_id bigint NOT NULL, id bigint NOT NULL, qty integer, "
    "note text, PRIMARY KEY (tenant_id, id));";
constexpr const char* kItemsRows =
    "INSERT INTO items SELECT t, g, g, 'n' || g FROM unnest(ARRAY[1, 42, 7]) t, "
    "generate_series(1, 5) g;";

// Everything a migration could leave behind on one database, read independently of stampmover:
// slots (cluster-wide), publications, user triggers, and every user table with its exact row
// count (so a new table, e.g. a fence table in a new schema, shows up too).
constexpr const char* kStateSql = R"sql(
SELECT format('slots=%s pubs=%s triggers=%s tables=[%s]',
  (SELECT count(*) FROM pg_replication_slots),
  (SELECT count(*) FROM pg_publication),
  (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal),
  (SELECT string_agg(format('%I.%I:%s', schemaname, relname,
            (xpath('/row/c/text()', query_to_xml(
                format('SELECT count(*) AS c FROM %I.%I', schemaname, relname),
                false, true, '')))[1]), ',' ORDER BY schemaname, relname)
     FROM pg_stat_user_tables))
)sql";

// A loopback TCP port nothing listens on: bound by us, then released.
int closedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) close(fd);
    return 1;  // privileged and unused on a test machine
  }
  close(fd);
  return ntohs(a.sin_port);
}

// Asserts the CLI contract of a failure: exit code, and stderr exactly one line
// "stampmover: error: ..." containing every one of `parts`.
void expectOneLineError(const ProcessResult& r, int code, const std::vector<std::string>& parts) {
  EXPECT_EQ(r.exit_code, code) << "stderr: " << r.err << "\nstdout: " << r.out;
  EXPECT_EQ(r.err.rfind("stampmover: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "not one line: " << r.err;
  EXPECT_TRUE(!r.err.empty() && r.err.back() == '\n') << r.err;
  for (const auto& p : parts) {
    EXPECT_NE(r.err.find(p), std::string::npos) << "missing \"" << p << "\" in: " << r.err;
  }
}

class PreflightTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = freshDatabase();
    src_dsn_ = sourceCluster().dsn(db_);
    dst_dsn_ = destCluster().dsn(db_);
    src_ = connectOrDie(src_dsn_, "source");
    dst_ = connectOrDie(dst_dsn_, "destination");
  }

  // Runs `preflight` or `copy` for `tenant` with a throwaway state directory.
  ProcessResult run(const std::string& cmd, const std::string& tenant = "42") {
    return runStampmover({"--state-dir", state_.path(), cmd, "--tenant", tenant, "--source-dsn",
                          src_dsn_, "--dest-dsn", dst_dsn_});
  }

  struct State {
    std::string src;
    std::string dst;
  };
  State state() { return {scalar(src_, kStateSql), scalar(dst_, kStateSql)}; }

  // Runs preflight and then copy; both must refuse with `code` and name `parts`; afterwards
  // neither server may differ from before (no slot, no publication, same tables and rows).
  void expectRefusedUnchanged(int code, const std::vector<std::string>& parts,
                              const std::string& tenant = "42") {
    State before = state();
    {
      SCOPED_TRACE("preflight");
      expectOneLineError(run("preflight", tenant), code, parts);
    }
    {
      SCOPED_TRACE("copy");
      expectOneLineError(run("copy", tenant), code, parts);
    }
    expectNothingCreated(src_, dst_);
    State after = state();
    EXPECT_EQ(before.src, after.src);
    EXPECT_EQ(before.dst, after.dst);
  }

  static void expectNothingCreated(common::PgConnection& src, common::PgConnection& dst) {
    for (auto* c : {&src, &dst}) {
      EXPECT_EQ(scalar(*c, "SELECT count(*) FROM pg_replication_slots"), "0") << c->label();
      EXPECT_EQ(scalar(*c, "SELECT count(*) FROM pg_publication"), "0") << c->label();
    }
  }

  std::string db_;
  std::string src_dsn_;
  std::string dst_dsn_;
  common::PgConnection src_;
  common::PgConnection dst_;
  TempDir state_;
};

TEST_F(PreflightTest, ValidSchemaPassesAndCreatesNothing) {
  const std::string schema =
      "CREATE TABLE accounts (tenant_id bigint, id bigint, name text, PRIMARY KEY (tenant_id, id));"
      "CREATE TABLE orders (tenant_id bigint, id bigint, account_id bigint, total numeric(12,2),"
      "  PRIMARY KEY (tenant_id, id),"
      "  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id));"
      "CREATE TABLE currencies (code text PRIMARY KEY, name text);";  // global: not a tenant table
  execOrDie(src_, schema);
  execOrDie(dst_, schema);
  execOrDie(
      src_,
      "INSERT INTO accounts SELECT t, g, 'a' FROM unnest(ARRAY[1, 42]) t, generate_series(1, 3) g;"
      "INSERT INTO orders SELECT tenant_id, id, id, 9.5 FROM accounts;"
      "INSERT INTO currencies VALUES ('EUR', 'euro');");
  execOrDie(dst_,
            "INSERT INTO accounts VALUES (1, 1, 'other tenant'); "
            "INSERT INTO currencies VALUES ('EUR', 'euro');");
  State before = state();

  ProcessResult r = run("preflight");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("preflight passed for tenant 42"), std::string::npos) << r.out;
  auto accounts = r.out.find("public.accounts");
  auto orders = r.out.find("public.orders");
  ASSERT_NE(accounts, std::string::npos) << r.out;
  ASSERT_NE(orders, std::string::npos) << r.out;
  EXPECT_LT(accounts, orders) << "parents must come before children:\n" << r.out;
  EXPECT_EQ(r.out.find("currencies"), std::string::npos) << "global table listed:\n" << r.out;

  expectNothingCreated(src_, dst_);
  State after = state();
  EXPECT_EQ(before.src, after.src);
  EXPECT_EQ(before.dst, after.dst);
}

TEST_F(PreflightTest, RefusesTableWithoutPrimaryKey) {
  const std::string schema =
      std::string(kItems) + "CREATE TABLE audit_log (tenant_id bigint NOT NULL, msg text);";
  execOrDie(src_, schema + kItemsRows + "INSERT INTO audit_log VALUES (42, 'x');");
  execOrDie(dst_, schema);
  expectRefusedUnchanged(2, {"public.audit_log", "has no primary key",
                             "ALTER TABLE \"public\".\"audit_log\" ADD PRIMARY KEY"});
}

TEST_F(PreflightTest, RefusesTenantColumnOutsideReplicaIdentity) {
  const std::string schema =
      std::string(kItems) +
      "CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id bigint NOT NULL, body text);";
  execOrDie(src_, schema + kItemsRows + "INSERT INTO notes VALUES (1, 42, 'b'), (2, 1, 'c');");
  execOrDie(dst_, schema);
  expectRefusedUnchanged(2, {"public.notes", "tenant column \"tenant_id\"",
                             "not part of its replica identity (id)", "REPLICA IDENTITY FULL"});

  // Either fix the message offers is accepted: REPLICA IDENTITY FULL ...
  execOrDie(src_, "ALTER TABLE notes REPLICA IDENTITY FULL");
  ProcessResult full = run("preflight");
  EXPECT_EQ(full.exit_code, 0) << full.err;
  EXPECT_NE(full.out.find("public.notes"), std::string::npos) << full.out;

  // ... and so is an identity index that carries the tenant column.
  execOrDie(src_,
            "CREATE UNIQUE INDEX notes_ident ON notes (tenant_id, id);"
            "ALTER TABLE notes REPLICA IDENTITY USING INDEX notes_ident;");
  ProcessResult ident = run("preflight");
  EXPECT_EQ(ident.exit_code, 0) << ident.err;
  expectNothingCreated(src_, dst_);
}

TEST_F(PreflightTest, RefusesDestinationMissingTable) {
  execOrDie(src_, std::string(kItems) + kItemsRows +
                      "CREATE TABLE tags (tenant_id bigint, id int, PRIMARY KEY (tenant_id, id));");
  execOrDie(dst_, kItems);
  expectRefusedUnchanged(2, {"has no table public.tags", "create it", "pg_dump --schema-only"});
}

TEST_F(PreflightTest, RefusesDestinationMissingColumn) {
  execOrDie(src_, std::string(kItems) + kItemsRows);
  execOrDie(dst_,
            "CREATE TABLE items (tenant_id bigint NOT NULL, id bigint NOT NULL, "
            "qty integer, PRIMARY KEY (tenant_id, id));");
  expectRefusedUnchanged(
      2, {"public.items", "lacks column \"note\" (text)", "ADD COLUMN \"note\" text"});
}

TEST_F(PreflightTest, RefusesColumnTypeMismatch) {
  execOrDie(src_, std::string(kItems) + kItemsRows);
  execOrDie(dst_,
            "CREATE TABLE items (tenant_id bigint NOT NULL, id bigint NOT NULL, "
            "qty bigint, note text, PRIMARY KEY (tenant_id, id));");
  expectRefusedUnchanged(
      2, {"public.items.\"qty\"", "integer on the source but bigint", "make the types equal"});
}

TEST_F(PreflightTest, RefusesWalLevelReplica) {
  harness::ClusterOptions opts;
  opts.name = "walrep";
  opts.wal_level = "replica";
  auto started = harness::LocalCluster::start(opts);
  ASSERT_TRUE(started) << started.status().message();
  std::unique_ptr<harness::LocalCluster> walrep = std::move(*started);
  ASSERT_TRUE(walrep->createDatabase(db_).isOk());
  src_dsn_ = walrep->dsn(db_);
  src_ = connectOrDie(src_dsn_, "walrep source");
  ASSERT_EQ(scalar(src_, "SHOW wal_level"), "replica");
  execOrDie(src_, std::string(kItems) + kItemsRows);
  execOrDie(dst_, kItems);
  expectRefusedUnchanged(
      2, {"wal_level=replica", "needs wal_level=logical", "ALTER SYSTEM SET wal_level = logical"});
  src_ = common::PgConnection();  // disconnect before the cluster stops
  EXPECT_TRUE(walrep->stop().isOk());
}

TEST_F(PreflightTest, RefusesUnknownTenant) {
  execOrDie(src_, std::string(kItems) + kItemsRows);
  execOrDie(dst_, kItems);
  expectRefusedUnchanged(2, {"tenant 4242 has no rows", "1 tenant tables", "check the tenant key"},
                         "4242");
}

TEST_F(PreflightTest, RefusesTenantAlreadyOnDestination) {
  execOrDie(src_, std::string(kItems) + kItemsRows);
  execOrDie(dst_, std::string(kItems) + "INSERT INTO items VALUES (42, 99, 1, 'left over');");
  expectRefusedUnchanged(
      2, {"tenant 42 already has rows on destination", "table public.items", "delete them there"});
  EXPECT_EQ(scalar(dst_, "SELECT count(*) FROM items WHERE tenant_id = 42"), "1");
}

TEST_F(PreflightTest, UnreachableServerIsRetryableAndRedacted) {
  execOrDie(src_, std::string(kItems) + kItemsRows);
  execOrDie(dst_, kItems);
  State before = state();
  const std::string dead = "host=127.0.0.1 port=" + std::to_string(closedPort()) +
                           " user=postgres dbname=x password=sekret123 connect_timeout=3";
  const std::string real_src = src_dsn_;
  const std::string real_dst = dst_dsn_;
  for (const char* side : {"source", "destination"}) {
    SCOPED_TRACE(side);
    src_dsn_ = std::string(side) == "source" ? dead : real_src;
    dst_dsn_ = std::string(side) == "source" ? real_dst : dead;
    for (const char* cmd : {"preflight", "copy"}) {
      SCOPED_TRACE(cmd);
      ProcessResult r = run(cmd);
      expectOneLineError(r, 3, {"cannot connect to " + std::string(side), "password=****"});
      EXPECT_EQ(r.err.find("sekret123"), std::string::npos) << r.err;
      EXPECT_EQ(r.out.find("sekret123"), std::string::npos) << r.out;
    }
  }
  expectNothingCreated(src_, dst_);
  State after = state();
  EXPECT_EQ(before.src, after.src);
  EXPECT_EQ(before.dst, after.dst);
}

TEST_F(PreflightTest, RefusesTenantKeyInvalidForColumnType) {
  execOrDie(src_, std::string(kItems) + kItemsRows);
  execOrDie(dst_, kItems);
  expectRefusedUnchanged(
      2, {"tenant key 'abc' is not a valid bigint", "public.items.\"tenant_id\""}, "abc");
}

// The key is canonicalized once, on the source, and reported in that form: `042` on a bigint
// column is tenant 42.
TEST_F(PreflightTest, ReportsTheCanonicalTenantKey) {
  execOrDie(src_, std::string(kItems) + kItemsRows);
  execOrDie(dst_, kItems);
  ProcessResult r = run("preflight", " +042");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("preflight passed for tenant 42 ("), std::string::npos) << r.out;
}

// A key that means different tenants in different tables (bigint reads 042 as 42, text keeps
// 042) cannot be moved as one tenant: refused, naming the tables and types, nothing created.
TEST_F(PreflightTest, RefusesTenantKeyThatTablesReadDifferently) {
  const std::string schema = std::string(kItems) +
                             "CREATE TABLE notes (tenant_id text NOT NULL, id bigint NOT NULL, "
                             "PRIMARY KEY (tenant_id, id));";
  execOrDie(src_, schema + kItemsRows + "INSERT INTO notes VALUES ('042', 1), ('42', 2);");
  execOrDie(dst_, schema);
  expectRefusedUnchanged(2,
                         {"tenant key '042' names different tenants", "bigint '42' (public.items)",
                          "text '042' (public.notes)"},
                         "042");
}

}  // namespace
}  // namespace stampmover::testing
