// A rebuilt stamp is never trusted from stale checkpoints (issue 10, item 4): the state
// directory's migration record is bound to the stamps' system identifier and database oid, and
// to the objects it recorded. After a finished copy, a stamp recreated at the same address (a
// new cluster on the same port, or the database dropped and recreated) or a slot dropped behind
// our back makes `copy` refuse with exit 2, one line naming what changed and the command that
// starts over, and nothing changed anywhere — instead of "already copied; nothing to do" over an
// empty destination. Checked independently: rows, slots and publications read with SQL.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "harness/local_cluster.h"
#include "tests/support/test_support.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;
namespace harness = stampmover::harness;

namespace {

constexpr const char* kItems =
    "CREATE TABLE items (tenant_id bigint NOT NULL, id bigint NOT NULL, v text, "
    "PRIMARY KEY (tenant_id, id));";
constexpr const char* kItemsRows =
    "INSERT INTO items SELECT t, g, 'v' || g FROM unnest(ARRAY[7, 42]) t, generate_series(1, 500) g;";

std::vector<std::string> copyArgs(const std::string& src_dsn, const std::string& dst_dsn,
                                  const std::string& state) {
  return {"copy", "--tenant", "42", "--source-dsn", src_dsn, "--dest-dsn", dst_dsn,
          "--state-dir", state, "--progress", "log"};
}

// The CLI contract of a refusal: exit 2 and exactly one line on stderr holding every part.
void expectOneLineRefusal(const ProcessResult& r, const std::vector<std::string>& parts) {
  if (getenv("SM_SHOW_LOG")) std::fputs(r.err.c_str(), stderr);
  EXPECT_EQ(r.exit_code, 2) << "stderr: " << r.err << "\nstdout: " << r.out;
  EXPECT_EQ(r.err.rfind("stampmover: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "not one line: " << r.err;
  for (const auto& p : parts) {
    EXPECT_NE(r.err.find(p), std::string::npos) << "missing \"" << p << "\" in: " << r.err;
  }
}

std::string slotsOf(PgConnection& c) {
  return scalar(c, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()");
}

}  // namespace

// Both databases dropped and recreated under the same names (new oids), schema back, source
// rows back: the old record describes databases that no longer exist.
TEST(Identity, RecreatedDatabasesAreNotTrustedFromTheOldRecord) {
  const std::string db = freshDatabase();
  TempDir state;
  const std::string src_dsn = sourceCluster().dsn(db);
  const std::string dst_dsn = destCluster().dsn(db);
  {
    auto src = connectOrDie(src_dsn);
    auto dst = connectOrDie(dst_dsn);
    execOrDie(src, std::string(kItems) + kItemsRows);
    execOrDie(dst, kItems);
  }
  auto first = runStampmover(copyArgs(src_dsn, dst_dsn, state.path()));
  ASSERT_EQ(first.exit_code, 0) << first.err;

  for (auto* cluster : {&sourceCluster(), &destCluster()}) {
    auto admin = connectOrDie(cluster->dsn("postgres"));
    // A database with a logical slot cannot be dropped; the rebuild takes it along.
    execOrDie(admin, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     "WHERE database = '" + db + "'");
    execOrDie(admin, "DROP DATABASE \"" + db + "\" WITH (FORCE)");
    execOrDie(admin, "CREATE DATABASE \"" + db + "\"");
  }
  auto src = connectOrDie(src_dsn);
  auto dst = connectOrDie(dst_dsn);
  execOrDie(src, std::string(kItems) + kItemsRows);
  execOrDie(dst, kItems);

  auto again = runStampmover(copyArgs(src_dsn, dst_dsn, state.path()));
  expectOneLineRefusal(again, {"database oid", "source", "destination",
                               "Start over: `stampmover cleanup --tenant 42 --source-dsn",
                               "--state-dir " + state.path()});
  EXPECT_EQ(again.out.find("nothing to do"), std::string::npos) << again.out;
  EXPECT_EQ(scalar(dst, "SELECT count(*) FROM items"), "0") << "nothing changed";
  EXPECT_EQ(slotsOf(src), "0") << "nothing changed";
  EXPECT_EQ(scalar(src, "SELECT count(*) FROM pg_publication"), "0") << "nothing changed";

  // The way out it names: cleanup forgets the migration, and a new copy moves the tenant.
  auto cleanup = runStampmover({"cleanup", "--tenant", "42", "--source-dsn", src_dsn,
                                "--state-dir", state.path()});
  ASSERT_EQ(cleanup.exit_code, 0) << cleanup.err;
  auto fresh = runStampmover(copyArgs(src_dsn, dst_dsn, state.path()));
  ASSERT_EQ(fresh.exit_code, 0) << fresh.err;
  const auto rows = tenantRows(src, "items", "42", "id");
  EXPECT_EQ(rows.size(), 500u);
  EXPECT_EQ(rows, tenantRows(dst, "items", "42", "id"));
}

// Two new clusters started on the ports of the old ones: same addresses, same database names
// (and, on fresh clusters, probably the same oids), other system identifiers.
TEST(Identity, ClustersRebuiltAtTheSameAddressesAreNotTrusted) {
  TempDir state;
  auto start = [](const std::string& name, int port) {
    harness::ClusterOptions o;
    o.name = name;
    if (port != 0) o.settings.push_back({"port", std::to_string(port)});  // last one wins
    auto c = harness::LocalCluster::start(o);
    EXPECT_TRUE(c) << c.status().message();
    return c ? std::move(*c) : nullptr;
  };
  auto dsn = [](int port) {
    return "host=127.0.0.1 port=" + std::to_string(port) + " user=postgres dbname=app";
  };
  auto prepare = [&](int src_port, int dst_port) {
    for (int port : {src_port, dst_port}) {
      auto admin = connectOrDie("host=127.0.0.1 port=" + std::to_string(port) +
                                " user=postgres dbname=postgres");
      execOrDie(admin, "CREATE DATABASE app");
    }
    auto s = connectOrDie(dsn(src_port));
    auto d = connectOrDie(dsn(dst_port));
    execOrDie(s, std::string(kItems) + kItemsRows);
    execOrDie(d, kItems);
  };

  auto src1 = start("idsrc1", 0);
  auto dst1 = start("iddst1", 0);
  ASSERT_TRUE(src1 && dst1);
  const int src_port = src1->port();
  const int dst_port = dst1->port();
  prepare(src_port, dst_port);
  auto first = runStampmover(copyArgs(dsn(src_port), dsn(dst_port), state.path()));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_TRUE(src1->stop().isOk());
  ASSERT_TRUE(dst1->stop().isOk());

  auto src2 = start("idsrc2", src_port);
  auto dst2 = start("iddst2", dst_port);
  ASSERT_TRUE(src2 && dst2);
  prepare(src_port, dst_port);
  auto again = runStampmover(copyArgs(dsn(src_port), dsn(dst_port), state.path()));
  expectOneLineRefusal(again, {"system identifier", "source 127.0.0.1:" + std::to_string(src_port),
                               "destination 127.0.0.1:" + std::to_string(dst_port),
                               "stampmover cleanup --tenant 42"});
  auto s = connectOrDie(dsn(src_port));
  auto d = connectOrDie(dsn(dst_port));
  EXPECT_EQ(scalar(d, "SELECT count(*) FROM items"), "0") << "nothing changed";
  EXPECT_EQ(slotsOf(s), "0") << "nothing changed";
  s = PgConnection();
  d = PgConnection();
  EXPECT_TRUE(src2->stop().isOk());
  EXPECT_TRUE(dst2->stop().isOk());
}

// The record says the slot exists (the copy finished and catch-up has not begun); it was
// dropped behind our back: the changes since the snapshot are gone, so "already copied" would
// be a lie.
TEST(Identity, SlotDroppedAfterTheCopyIsRefused) {
  const std::string db = freshDatabase();
  TempDir state;
  const std::string src_dsn = sourceCluster().dsn(db);
  const std::string dst_dsn = destCluster().dsn(db);
  auto src = connectOrDie(src_dsn);
  auto dst = connectOrDie(dst_dsn);
  execOrDie(src, std::string(kItems) + kItemsRows);
  execOrDie(dst, kItems);
  auto first = runStampmover(copyArgs(src_dsn, dst_dsn, state.path()));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  execOrDie(src, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                 "WHERE database = current_database()");
  const std::string dst_before = scalar(dst, "SELECT count(*) FROM items");

  auto again = runStampmover(copyArgs(src_dsn, dst_dsn, state.path()));
  expectOneLineRefusal(again, {"replication slot", "no longer exists on source", "phase copied",
                               "--purge-destination"});
  EXPECT_EQ(scalar(dst, "SELECT count(*) FROM items"), dst_before);
  EXPECT_EQ(slotsOf(src), "0");
}

// A stream position was checkpointed, so the destination's replication origin (committed with
// the data) must exist; dropped, the destination no longer remembers what it applied.
TEST(Identity, OriginDroppedAfterACheckpointIsRefused) {
  const std::string db = freshDatabase();
  TempDir state;
  const std::string src_dsn = sourceCluster().dsn(db);
  const std::string dst_dsn = destCluster().dsn(db);
  auto src = connectOrDie(src_dsn);
  auto dst = connectOrDie(dst_dsn);
  execOrDie(src, std::string(kItems) + kItemsRows);
  execOrDie(dst, kItems);
  std::vector<std::string> follow = {"migrate", "--tenant", "42", "--source-dsn", src_dsn,
                                     "--dest-dsn", dst_dsn, "--state-dir", state.path(),
                                     "--progress", "log", "--until-caught-up"};
  auto first = runStampmover(follow);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const std::string origin = scalar(
      dst, "SELECT roname FROM pg_replication_origin WHERE roname LIKE 'stampmover\\_42\\_%'");
  ASSERT_FALSE(origin.empty());
  scalar(dst, "SELECT pg_replication_origin_drop($1)", {origin});
  const std::string dst_before = scalar(dst, "SELECT count(*) FROM items");

  auto again = runStampmover(follow);
  expectOneLineRefusal(again, {"replication origin \"" + origin + "\"", "no longer exists on destination",
                               "stampmover cleanup --tenant 42"});
  EXPECT_EQ(scalar(dst, "SELECT count(*) FROM items"), dst_before);
  EXPECT_EQ(scalar(dst, "SELECT count(*) FROM pg_replication_origin WHERE roname = $1", {origin}), "0");
}
