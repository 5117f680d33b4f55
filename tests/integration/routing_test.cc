// The routing directory and client against a real PostgreSQL control plane: versioned,
// idempotent schema creation (also from concurrent workers), put/get/list, compare-and-set
// with history and stale-epoch refusal, a CAS race won by exactly one worker, the client's
// cache, frozen and retry behaviour with a ManualClock, and `stampmover routes`.
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <thread>
#include <vector>

#include "routing/clock.h"
#include "routing/routing_client.h"
#include "routing/routing_directory.h"
#include "tests/support/test_support.h"

namespace stampmover::testing {
namespace {

using namespace std::chrono_literals;
using common::ErrorClass;
using common::PgConnection;
using common::Status;
using routing::Epoch;
using routing::PgRoutingDirectory;
using routing::RouteChange;
using routing::RouteState;

class RoutingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = freshDatabase();
    dsn_ = sourceCluster().dsn(db_);
    check_ = connectOrDie(dsn_, "check");
  }
  // A directory with its schema in place.
  std::unique_ptr<PgRoutingDirectory> directory() {
    auto d = std::make_unique<PgRoutingDirectory>(dsn_);
    auto st = d->ensureSchema();
    EXPECT_TRUE(st.isOk()) << st.message();
    return d;
  }
  // The history of a tenant, read independently: "epoch:stamp:state:shadow:reason" per row.
  std::string history(const std::string& tenant) {
    return scalar(check_,
                  "SELECT string_agg(format('%s:%s:%s:%s:%s', epoch, stamp, state, "
                  "coalesce(shadow_stamp, '-'), reason), ' ' ORDER BY epoch) "
                  "FROM stampmover_routing.route_history WHERE tenant = $1",
                  {tenant});
  }
  std::string row(const std::string& tenant) {
    return scalar(check_,
                  "SELECT format('%s:%s:%s:%s', epoch, stamp, state, coalesce(shadow_stamp, '-')) "
                  "FROM stampmover_routing.routes WHERE tenant = $1",
                  {tenant});
  }

  std::string db_;
  std::string dsn_;
  PgConnection check_;
};

TEST_F(RoutingTest, SchemaIsCreatedOnceAndVersioned) {
  PgRoutingDirectory dir(dsn_);
  auto v0 = dir.schemaVersion();
  ASSERT_TRUE(v0) << v0.status().message();
  EXPECT_EQ(*v0, 0);
  ASSERT_TRUE(dir.ensureSchema().isOk());
  ASSERT_TRUE(dir.ensureSchema().isOk());
  ASSERT_TRUE(PgRoutingDirectory(dsn_).ensureSchema().isOk());
  EXPECT_EQ(*dir.schemaVersion(), PgRoutingDirectory::latestSchemaVersion());
  EXPECT_EQ(scalar(check_,
                   "SELECT string_agg(version::text, ',' ORDER BY version) "
                   "FROM stampmover_routing.schema_version"),
            "1,2,3");
  EXPECT_EQ(scalar(check_,
                   "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) "
                   "FROM information_schema.columns WHERE table_schema = "
                   "'stampmover_routing' AND table_name = 'routes'"),
            "tenant,stamp,epoch,state,shadow_stamp,updated_at");
  // The state CHECK holds for writers that bypass the library, too.
  EXPECT_FALSE(check_
                   .exec("INSERT INTO stampmover_routing.routes (tenant, stamp, epoch, state) "
                         "VALUES ('x', 's', 1, 'thawed')")
                   .isOk());

  // A directory written by a newer stampmover is refused, not downgraded.
  execOrDie(check_,
            "INSERT INTO stampmover_routing.schema_version (version, description) "
            "VALUES (99, 'from the future')");
  Status st = PgRoutingDirectory(dsn_).ensureSchema();
  EXPECT_EQ(st.errorClass(), ErrorClass::kRefused);
  EXPECT_NE(st.message().find("upgrade stampmover"), std::string::npos) << st.message();
}

TEST_F(RoutingTest, ConcurrentWorkersCreateTheSchemaOnce) {
  constexpr int kWorkers = 6;
  std::latch start(kWorkers);
  std::vector<Status> results(kWorkers);
  std::vector<std::thread> threads;
  for (int i = 0; i < kWorkers; ++i) {
    threads.emplace_back([&, i] {
      PgRoutingDirectory dir(dsn_);
      start.arrive_and_wait();
      results[i] = dir.ensureSchema();
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& st : results) EXPECT_TRUE(st.isOk()) << st.message();
  EXPECT_EQ(scalar(check_, "SELECT count(*) FROM stampmover_routing.schema_version"),
            std::to_string(PgRoutingDirectory::latestSchemaVersion()));
  EXPECT_EQ(scalar(check_,
                   "SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                   "'stampmover_routing.route_history'::regclass"),
            "2");
}

TEST_F(RoutingTest, ReadsWithoutADirectoryAreRefusedWithTheFix) {
  PgRoutingDirectory dir(dsn_);
  auto r = dir.get("42");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().errorClass(), ErrorClass::kRefused);
  EXPECT_NE(r.status().message().find("no routing directory"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find(db_), std::string::npos) << r.status().message();
  EXPECT_EQ(
      scalar(check_, "SELECT count(*) FROM pg_namespace WHERE nspname = 'stampmover_routing'"), "0")
      << "reads never create the directory";
}

TEST_F(RoutingTest, PutGetAndList) {
  auto dir = directory();
  auto a = dir->put("42", "stamp-a");
  ASSERT_TRUE(a) << a.status().message();
  EXPECT_EQ(a->tenant, "42");
  EXPECT_EQ(a->stamp, "stamp-a");
  EXPECT_EQ(a->epoch, 1u);
  EXPECT_EQ(a->state, RouteState::kActive);
  EXPECT_FALSE(a->shadow_stamp);
  EXPECT_EQ(a->updated_at.size(), std::string("2026-01-31T12:00:00.123456Z").size())
      << a->updated_at;
  // Values are parameters: a hostile tenant key is stored as is.
  const std::string odd = "o'brien\"; DROP TABLE stampmover_routing.routes; --";
  ASSERT_TRUE(dir->put(odd, "stamp-b").isOk());

  auto again = dir->put("42", "stamp-c");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.status().errorClass(), ErrorClass::kRefused);
  EXPECT_NE(again.status().message().find("tenant 42 already has a routing entry (stamp stamp-a, "
                                          "epoch 1)"),
            std::string::npos)
      << again.status().message();

  auto got = dir->get("42");
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(**got, *a);
  auto none = dir->get("7");
  ASSERT_TRUE(none) << none.status().message();
  EXPECT_FALSE(*none);

  auto all = dir->list();
  ASSERT_TRUE(all) << all.status().message();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].tenant, "42");
  EXPECT_EQ((*all)[1].tenant, odd);
  EXPECT_EQ((*all)[1].stamp, "stamp-b");
  EXPECT_EQ(history("42"), "1:stamp-a:active:-:created");
  EXPECT_EQ(history(odd), "1:stamp-b:active:-:created");
}

TEST_F(RoutingTest, DrainingStampTakesNoNewTenantButKeepsItsMoves) {
  auto dir = directory();
  ASSERT_TRUE(dir->put("42", "stamp-c").isOk());
  ASSERT_TRUE(dir->setDraining("stamp-c", true, "decommission").isOk());
  auto draining = dir->drainingStamps();
  ASSERT_TRUE(draining.isOk());
  EXPECT_EQ(draining->size(), 1u);
  EXPECT_EQ(draining->at("stamp-c"), "decommission");
  auto refused = dir->put("43", "stamp-c");
  ASSERT_FALSE(refused.isOk());
  EXPECT_EQ(refused.status().errorClass(), stampmover::common::ErrorClass::kRefused);
  EXPECT_NE(refused.status().message().find("stamp-c"), std::string::npos);
  EXPECT_NE(refused.status().message().find("draining"), std::string::npos);
  EXPECT_FALSE(dir->get("43")->has_value());
  // Tenants already there move and roll back as before (a rollback lands on the draining stamp).
  ASSERT_TRUE(dir->compareAndSet("42", 1, {"stamp-a", RouteState::kActive, {}, "move"}).isOk());
  ASSERT_TRUE(dir->compareAndSet("42", 2, {"stamp-c", RouteState::kActive, {}, "rollback"}).isOk());
  ASSERT_TRUE(dir->setDraining("stamp-c", false, "").isOk());
  EXPECT_TRUE(dir->put("43", "stamp-c").isOk());
  EXPECT_TRUE(dir->drainingStamps()->empty());
}

TEST_F(RoutingTest, CompareAndSetIncrementsEpochAndWritesHistory) {
  auto dir = directory();
  ASSERT_TRUE(dir->put("42", "stamp-a").isOk());
  execOrDie(check_, "SELECT pg_sleep(0.01)");  // updated_at must visibly move
  auto frozen = dir->compareAndSet("42", 1, {"stamp-a", RouteState::kFrozen, {}, "freeze"});
  ASSERT_TRUE(frozen) << frozen.status().message();
  EXPECT_EQ(frozen->epoch, 2u);
  EXPECT_EQ(frozen->state, RouteState::kFrozen);
  auto flipped =
      dir->compareAndSet("42", 2, {"stamp-b", RouteState::kDualWrite, "stamp-a", "flip"});
  ASSERT_TRUE(flipped) << flipped.status().message();
  EXPECT_EQ(flipped->epoch, 3u);
  EXPECT_EQ(flipped->stamp, "stamp-b");
  EXPECT_EQ(flipped->shadow_stamp, "stamp-a");
  EXPECT_EQ(row("42"), "3:stamp-b:dual_write:stamp-a");
  EXPECT_EQ(history("42"),
            "1:stamp-a:active:-:created 2:stamp-a:frozen:-:freeze "
            "3:stamp-b:dual_write:stamp-a:flip");
  EXPECT_EQ(
      scalar(check_, "SELECT count(DISTINCT changed_at) FROM stampmover_routing.route_history"),
      "3");
  EXPECT_EQ(scalar(check_,
                   "SELECT bool_and(changed_at = (SELECT updated_at FROM "
                   "stampmover_routing.routes)) FROM stampmover_routing.route_history "
                   "WHERE epoch = 3"),
            "t");
  EXPECT_EQ(*dir->get("42"), flipped.value());
}

TEST_F(RoutingTest, StaleOrInvalidCompareAndSetChangesNothing) {
  auto dir = directory();
  ASSERT_TRUE(dir->put("42", "stamp-a").isOk());
  ASSERT_TRUE(dir->compareAndSet("42", 1, {"stamp-a", RouteState::kFrozen, {}, "freeze"}).isOk());
  const std::string before_row = row("42");
  const std::string before_history = history("42");

  auto stale = dir->compareAndSet("42", 1, {"stamp-b", RouteState::kActive, {}, "stale worker"});
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.status().errorClass(), ErrorClass::kRefused);
  const std::string& m = stale.status().message();
  EXPECT_NE(m.find("tenant 42"), std::string::npos) << m;
  EXPECT_NE(m.find("expected epoch 1"), std::string::npos) << m;
  EXPECT_NE(m.find("actual epoch 2"), std::string::npos) << m;
  auto ahead = dir->compareAndSet("42", 5, {"stamp-b", RouteState::kActive, {}, {}});
  ASSERT_FALSE(ahead);
  EXPECT_NE(ahead.status().message().find("actual epoch 2"), std::string::npos);

  auto invalid = dir->compareAndSet("42", 2, {"stamp-b", RouteState::kDualWrite, {}, {}});
  ASSERT_FALSE(invalid);
  EXPECT_EQ(invalid.status().errorClass(), ErrorClass::kRefused);
  auto unknown = dir->compareAndSet("7", 1, {"stamp-b", RouteState::kActive, {}, {}});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.status().errorClass(), ErrorClass::kRefused);
  EXPECT_NE(unknown.status().message().find("tenant 7 has no routing entry"), std::string::npos);

  EXPECT_EQ(row("42"), before_row);
  EXPECT_EQ(history("42"), before_history);
  EXPECT_EQ(scalar(check_, "SELECT count(*) FROM stampmover_routing.routes"), "1");
}

TEST_F(RoutingTest, ConcurrentCompareAndSetHasExactlyOneWinner) {
  auto setup = directory();
  ASSERT_TRUE(setup->put("42", "stamp-a").isOk());
  constexpr int kWorkers = 8;
  std::vector<std::unique_ptr<PgRoutingDirectory>> dirs;
  for (int i = 0; i < kWorkers; ++i) {
    dirs.push_back(std::make_unique<PgRoutingDirectory>(dsn_));
    ASSERT_TRUE(dirs.back()->get("42").isOk());  // connected before the race
  }
  for (Epoch round = 1; round <= 5; ++round) {
    std::latch start(kWorkers);
    std::vector<common::Result<routing::RouteEntry>> results(kWorkers, Status::internal("not run"));
    std::vector<std::thread> threads;
    for (int i = 0; i < kWorkers; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        results[i] = dirs[i]->compareAndSet(
            "42", round, {"stamp-" + std::to_string(i), RouteState::kActive, {}, "race"});
      });
    }
    for (auto& t : threads) t.join();
    int winners = 0;
    std::string winner_stamp;
    for (const auto& r : results) {
      if (r.isOk()) {
        ++winners;
        winner_stamp = r->stamp;
        EXPECT_EQ(r->epoch, round + 1);
      } else {
        EXPECT_EQ(r.status().errorClass(), ErrorClass::kRefused) << r.status().message();
        EXPECT_NE(r.status().message().find("expected epoch " + std::to_string(round) +
                                            ", actual epoch " + std::to_string(round + 1)),
                  std::string::npos)
            << r.status().message();
      }
    }
    EXPECT_EQ(winners, 1) << "round " << round;
    EXPECT_EQ(row("42"), std::to_string(round + 1) + ":" + winner_stamp + ":active:-");
  }
  EXPECT_EQ(scalar(check_,
                   "SELECT count(*) || ':' || max(epoch) FROM "
                   "stampmover_routing.route_history WHERE tenant = '42'"),
            "6:6");
}

TEST_F(RoutingTest, HistoryIsAppendOnly) {
  auto dir = directory();
  ASSERT_TRUE(dir->put("42", "stamp-a").isOk());
  for (const char* sql : {"UPDATE stampmover_routing.route_history SET stamp = 'x'",
                          "DELETE FROM stampmover_routing.route_history",
                          "TRUNCATE stampmover_routing.route_history"}) {
    Status st = check_.exec(sql);
    EXPECT_FALSE(st.isOk()) << sql;
    EXPECT_NE(st.message().find("append-only"), std::string::npos) << st.message();
  }
  EXPECT_EQ(history("42"), "1:stamp-a:active:-:created");
}

TEST_F(RoutingTest, ReadsSurviveALostConnection) {
  auto dir = directory();
  ASSERT_TRUE(dir->put("42", "stamp-a").isOk());
  EXPECT_EQ(scalar(check_,
                   "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                   "WHERE datname = $1 AND pid <> pg_backend_pid()",
                   {db_}),
            "1");
  auto got = dir->get("42");
  ASSERT_TRUE(got) << got.status().message();
  ASSERT_TRUE(*got);
  EXPECT_EQ((*got)->stamp, "stamp-a");
}

TEST_F(RoutingTest, ClientCachesTreatsFrozenAsRetryAndFollowsTheFlip) {
  auto worker = directory();
  ASSERT_TRUE(worker->put("42", "stamp-a").isOk());
  routing::ManualClock clock;
  routing::RoutingClient client(dsn_, {}, clock);  // 1 s ttl, 50 ms retry-after

  auto resolved = [&]() -> routing::Resolution {
    auto r = client.resolve("42");
    EXPECT_TRUE(r) << r.status().message();
    return r ? *r : routing::Resolution(routing::Retry{});
  };
  auto r = resolved();
  ASSERT_TRUE(std::holds_alternative<routing::Route>(r));
  EXPECT_EQ(std::get<routing::Route>(r).stamp, "stamp-a");
  EXPECT_EQ(std::get<routing::Route>(r).epoch, 1u);

  // The worker freezes the tenant; the cache is allowed to lag by up to the ttl.
  ASSERT_TRUE(
      worker->compareAndSet("42", 1, {"stamp-a", RouteState::kFrozen, {}, "freeze"}).isOk());
  clock.advance(500ms);
  r = resolved();
  ASSERT_TRUE(std::holds_alternative<routing::Route>(r));
  EXPECT_EQ(std::get<routing::Route>(r).epoch, 1u);
  // A writer that carries epoch 1 passes a cached check but not a latest one.
  EXPECT_TRUE(client.checkEpoch("42", 1, "stamp-a").isOk());
  EXPECT_EQ(client.checkEpoch("42", 1, "stamp-a", routing::Consistency::kLatest).errorClass(),
            ErrorClass::kRefused);

  // kLatest refreshed the cache: resolve now says retry shortly.
  r = resolved();
  ASSERT_TRUE(std::holds_alternative<routing::Retry>(r));
  EXPECT_EQ(std::get<routing::Retry>(r).after, 50ms);
  EXPECT_EQ(std::get<routing::Retry>(r).epoch, 2u);

  // The flip; the client sees it one retry-after later, not one ttl later.
  ASSERT_TRUE(worker->compareAndSet("42", 2, {"stamp-b", RouteState::kDualWrite, "stamp-a", "flip"})
                  .isOk());
  clock.advance(50ms);
  r = resolved();
  ASSERT_TRUE(std::holds_alternative<routing::Route>(r));
  const auto& route = std::get<routing::Route>(r);
  EXPECT_EQ(route.stamp, "stamp-b");
  EXPECT_EQ(route.epoch, 3u);
  EXPECT_EQ(route.state, RouteState::kDualWrite);
  EXPECT_EQ(route.shadow_stamp, "stamp-a");
  EXPECT_TRUE(client.checkEpoch("42", 3, "stamp-b").isOk());
  EXPECT_EQ(client.checkEpoch("42", 1, "stamp-a").errorClass(), ErrorClass::kRefused);

  // Finalize, then an explicit invalidate is seen at once.
  ASSERT_TRUE(
      worker->compareAndSet("42", 3, {"stamp-b", RouteState::kActive, {}, "finalize"}).isOk());
  r = resolved();
  EXPECT_EQ(std::get<routing::Route>(r).epoch, 3u);
  client.invalidate("42");
  r = resolved();
  EXPECT_EQ(std::get<routing::Route>(r).epoch, 4u);
  EXPECT_EQ(std::get<routing::Route>(r).state, RouteState::kActive);

  auto unknown = client.resolve("7");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.status().errorClass(), ErrorClass::kRefused);
}

TEST_F(RoutingTest, ClientReportsAnUnreachableControlPlaneAsRetryable) {
  routing::ManualClock clock;
  routing::RoutingClient client(
      "host=127.0.0.1 port=1 dbname=x user=postgres password=sekrit "
      "connect_timeout=2",
      {}, clock);
  auto r = client.resolve("42");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().errorClass(), ErrorClass::kRetryable) << r.status().message();
  EXPECT_EQ(r.status().message().find("sekrit"), std::string::npos) << r.status().message();
}

TEST_F(RoutingTest, RoutesCommandPrintsTheTable) {
  auto dir = directory();
  ASSERT_TRUE(dir->put("42", "stamp-a").isOk());
  ASSERT_TRUE(dir->put("7", "stamp-c").isOk());
  ASSERT_TRUE(
      dir->compareAndSet("42", 1, {"stamp-b", RouteState::kDualWrite, "stamp-a", "flip"}).isOk());
  auto updated = scalar(check_,
                        "SELECT to_char(updated_at AT TIME ZONE 'UTC', "
                        "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM "
                        "stampmover_routing.routes WHERE tenant = '42'");

  auto all = runStampmover({"routes", "--control-plane-dsn", dsn_});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  std::vector<std::string> lines;
  for (size_t at = 0, nl; (nl = all.out.find('\n', at)) != std::string::npos; at = nl + 1) {
    lines.push_back(all.out.substr(at, nl - at));
  }
  ASSERT_EQ(lines.size(), 3u) << all.out;
  EXPECT_EQ(lines[0].rfind("TENANT  STAMP    EPOCH  STATE       SHADOW   UPDATED_AT", 0), 0u)
      << lines[0];
  EXPECT_EQ(lines[1], "42      stamp-b  2      dual_write  stamp-a  " + updated) << all.out;
  EXPECT_EQ(lines[2].rfind("7       stamp-c  1      active      -        ", 0), 0u) << all.out;

  auto one = runStampmover({"routes", "--tenant", "7", "--control-plane-dsn", dsn_});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.out.find("stamp-b"), std::string::npos) << one.out;
  EXPECT_NE(one.out.find("stamp-c"), std::string::npos) << one.out;

  auto missing = runStampmover({"routes", "--tenant", "9", "--control-plane-dsn", dsn_});
  EXPECT_EQ(missing.exit_code, 2) << missing.err;
  EXPECT_NE(missing.err.find("stampmover: error: tenant 9 has no routing entry"), std::string::npos)
      << missing.err;

  auto none = runStampmover({"routes"});
  EXPECT_EQ(none.exit_code, 2) << none.err;
  EXPECT_NE(none.err.find("--control-plane-dsn"), std::string::npos) << none.err;
}

TEST_F(RoutingTest, RoutesCommandRefusesADatabaseWithoutADirectory) {
  auto r = runStampmover({"routes", "--control-plane-dsn", dsn_});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("no routing directory"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");

  auto down = runStampmover({"routes", "--control-plane-dsn",
                             "host=127.0.0.1 port=1 dbname=x password=sekrit connect_timeout=2"});
  EXPECT_EQ(down.exit_code, 3) << down.err;
  EXPECT_EQ(down.err.find("sekrit"), std::string::npos) << down.err;
}

}  // namespace
}  // namespace stampmover::testing
