// The routing client's cache, frozen-as-retry and stale-epoch checks, against the in-memory
// directory with a ManualClock: no server, no sleeps. Also the pure pieces of the directory
// (state names, change validation, compare-and-set semantics of the in-memory implementation).
#include "routing/routing_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "routing/clock.h"
#include "routing/memory_routing_directory.h"

namespace stampmover::routing {
namespace {

using namespace std::chrono_literals;
using common::ErrorClass;
using common::Status;

TEST(RoutingTypesTest, StateNamesRoundTrip) {
  for (RouteState s : {RouteState::kActive, RouteState::kFrozen, RouteState::kDualWrite}) {
    auto parsed = parseRouteState(routeStateName(s));
    ASSERT_TRUE(parsed) << parsed.status().message();
    EXPECT_EQ(*parsed, s);
  }
  EXPECT_STREQ(routeStateName(RouteState::kDualWrite), "dual_write");
  auto bad = parseRouteState("thawed");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().errorClass(), ErrorClass::kRefused);
  EXPECT_NE(bad.status().message().find("thawed"), std::string::npos);
}

TEST(RoutingTypesTest, ValidatesChanges) {
  EXPECT_TRUE(validateRouteChange("42", {"b", RouteState::kActive, {}, {}}).isOk());
  EXPECT_TRUE(validateRouteChange("42", {"b", RouteState::kDualWrite, "a", {}}).isOk());
  Status st = validateRouteChange("42", {"b", RouteState::kDualWrite, {}, {}});
  EXPECT_EQ(st.errorClass(), ErrorClass::kRefused);
  EXPECT_NE(st.message().find("shadow"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("42"), std::string::npos) << st.message();
  EXPECT_FALSE(validateRouteChange("42", {"", RouteState::kActive, {}, {}}).isOk());
  EXPECT_FALSE(validateRouteChange("42", {"b", RouteState::kFrozen, "b", {}}).isOk());
  EXPECT_FALSE(validateRouteChange("", {"b", RouteState::kActive, {}, {}}).isOk());
}

TEST(RoutingDirectoryTest, MemoryCompareAndSetFencesStaleEpochs) {
  MemoryRoutingDirectory dir;
  auto created = dir.put("42", "stamp-a");
  ASSERT_TRUE(created) << created.status().message();
  EXPECT_EQ(created->epoch, 1u);
  EXPECT_EQ(created->state, RouteState::kActive);
  auto again = dir.put("42", "stamp-b");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.status().errorClass(), ErrorClass::kRefused);

  auto frozen = dir.compareAndSet("42", 1, {"stamp-a", RouteState::kFrozen, {}, "freeze"});
  ASSERT_TRUE(frozen) << frozen.status().message();
  EXPECT_EQ(frozen->epoch, 2u);

  auto stale = dir.compareAndSet("42", 1, {"stamp-b", RouteState::kActive, {}, {}});
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.status().errorClass(), ErrorClass::kRefused);
  const std::string& m = stale.status().message();
  EXPECT_NE(m.find("tenant 42"), std::string::npos) << m;
  EXPECT_NE(m.find("expected epoch 1"), std::string::npos) << m;
  EXPECT_NE(m.find("actual epoch 2"), std::string::npos) << m;
  auto now = dir.get("42");
  ASSERT_TRUE(now && *now);
  EXPECT_EQ((*now)->stamp, "stamp-a");
  EXPECT_EQ((*now)->state, RouteState::kFrozen);
  EXPECT_EQ(dir.history().size(), 2u);

  auto unknown = dir.compareAndSet("7", 1, {"stamp-b", RouteState::kActive, {}, {}});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.status().errorClass(), ErrorClass::kRefused);
}

TEST(RoutingDirectoryTest, MemoryInjectedErrorsComeFirst) {
  MemoryRoutingDirectory dir;
  dir.injectErrors({Status::retryable("control plane down")});
  auto r = dir.put("42", "stamp-a");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().errorClass(), ErrorClass::kRetryable);
  EXPECT_TRUE(dir.put("42", "stamp-a").isOk());
}

TEST(RoutingWriteEpochTest, JudgesStaleFutureFrozenAndStamp) {
  RouteEntry e{"42", "stamp-b", 5, RouteState::kActive, std::nullopt, ""};
  EXPECT_TRUE(checkWriteEpoch(e, 5, "", 50ms).isOk());
  EXPECT_TRUE(checkWriteEpoch(e, 5, "stamp-b", 50ms).isOk());
  Status stale = checkWriteEpoch(e, 4, "", 50ms);
  EXPECT_EQ(stale.errorClass(), ErrorClass::kRefused);
  EXPECT_NE(stale.message().find("stale routing epoch 4"), std::string::npos) << stale.message();
  EXPECT_EQ(checkWriteEpoch(e, 6, "", 50ms).errorClass(), ErrorClass::kRefused);
  EXPECT_EQ(checkWriteEpoch(e, 5, "stamp-a", 50ms).errorClass(), ErrorClass::kRefused);
  e.state = RouteState::kFrozen;
  Status frozen = checkWriteEpoch(e, 5, "", 50ms);
  EXPECT_EQ(frozen.errorClass(), ErrorClass::kRetryable);
  EXPECT_NE(frozen.message().find("50 ms"), std::string::npos) << frozen.message();
}

class RoutingClientTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(dir_.put("42", "stamp-a").isOk()); }

  // Resolves and expects a Route; returns it.
  Route route(const std::string& tenant = "42") {
    auto r = client_.resolve(tenant);
    EXPECT_TRUE(r) << r.status().message();
    if (!r) return {};
    EXPECT_TRUE(std::holds_alternative<Route>(*r));
    return std::holds_alternative<Route>(*r) ? std::get<Route>(*r) : Route{};
  }
  Epoch cas(Epoch expected, RouteChange change) {
    auto r = dir_.compareAndSet("42", expected, change);
    EXPECT_TRUE(r) << r.status().message();
    return r ? r->epoch : 0;
  }

  MemoryRoutingDirectory dir_;
  ManualClock clock_;
  RoutingClientOptions options_;  // 1 s ttl, 50 ms retry-after
  RoutingClient client_{dir_, options_, clock_};
};

TEST_F(RoutingClientTest, ServesFromCacheUntilTtlThenRefreshes) {
  Route r = route();
  EXPECT_EQ(r.stamp, "stamp-a");
  EXPECT_EQ(r.epoch, 1u);
  EXPECT_EQ(r.state, RouteState::kActive);
  EXPECT_FALSE(r.shadow_stamp);
  const uint64_t calls = dir_.calls();

  cas(1, {"stamp-b", RouteState::kDualWrite, "stamp-a", "flip"});
  clock_.advance(999ms);
  EXPECT_EQ(route().stamp, "stamp-a");  // still cached
  EXPECT_EQ(dir_.calls(), calls + 1);   // only the CAS above reached the directory

  clock_.advance(1ms);  // ttl reached
  r = route();
  EXPECT_EQ(r.stamp, "stamp-b");
  EXPECT_EQ(r.epoch, 2u);
  EXPECT_EQ(r.state, RouteState::kDualWrite);
  EXPECT_EQ(r.shadow_stamp, "stamp-a");
  EXPECT_EQ(dir_.calls(), calls + 2);
}

TEST_F(RoutingClientTest, FrozenIsRetryAfterAndCachedOnlyThatLong) {
  cas(1, {"stamp-a", RouteState::kFrozen, {}, "freeze"});
  auto r = client_.resolve("42");
  ASSERT_TRUE(r) << r.status().message();
  ASSERT_TRUE(std::holds_alternative<Retry>(*r));
  EXPECT_EQ(std::get<Retry>(*r).after, 50ms);
  EXPECT_EQ(std::get<Retry>(*r).epoch, 2u);

  // The flip lands inside the window; a retry after retry_after (not after the 1 s ttl) sees it.
  cas(2, {"stamp-b", RouteState::kDualWrite, "stamp-a", "flip"});
  clock_.advance(49ms);
  r = client_.resolve("42");
  ASSERT_TRUE(r);
  EXPECT_TRUE(std::holds_alternative<Retry>(*r));
  clock_.advance(1ms);
  Route flipped = route();
  EXPECT_EQ(flipped.stamp, "stamp-b");
  EXPECT_EQ(flipped.epoch, 3u);
}

TEST_F(RoutingClientTest, InvalidateForcesARead) {
  EXPECT_EQ(route().stamp, "stamp-a");
  cas(1, {"stamp-b", RouteState::kActive, {}, {}});
  EXPECT_EQ(route().stamp, "stamp-a");
  client_.invalidate("42");
  EXPECT_EQ(route().stamp, "stamp-b");
  cas(2, {"stamp-c", RouteState::kActive, {}, {}});
  client_.invalidateAll();
  EXPECT_EQ(route().stamp, "stamp-c");
}

TEST_F(RoutingClientTest, UnknownTenantIsRefusedAndCachedForTtl) {
  auto r = client_.resolve("7");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().errorClass(), ErrorClass::kRefused);
  EXPECT_NE(r.status().message().find("tenant 7"), std::string::npos);
  const uint64_t calls = dir_.calls();
  EXPECT_FALSE(client_.resolve("7"));
  EXPECT_EQ(dir_.calls(), calls);
  ASSERT_TRUE(dir_.put("7", "stamp-b").isOk());
  clock_.advance(1s);
  EXPECT_EQ(route("7").stamp, "stamp-b");
}

TEST_F(RoutingClientTest, DirectoryErrorsPropagateAndAreNotCached) {
  dir_.injectErrors({Status::retryable("control plane unreachable")});
  auto r = client_.resolve("42");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().errorClass(), ErrorClass::kRetryable);
  EXPECT_EQ(route().stamp, "stamp-a");  // the next call asks again and succeeds
}

TEST_F(RoutingClientTest, CheckEpochRejectsStaleWrites) {
  EXPECT_TRUE(client_.checkEpoch("42", 1).isOk());
  EXPECT_TRUE(client_.checkEpoch("42", 1, "stamp-a").isOk());
  EXPECT_EQ(client_.checkEpoch("42", 1, "stamp-b").errorClass(), ErrorClass::kRefused);

  // The writer saw epoch 2 before the cache did: the cache is refreshed, not the write refused.
  cas(1, {"stamp-b", RouteState::kDualWrite, "stamp-a", "flip"});
  EXPECT_TRUE(client_.checkEpoch("42", 2, "stamp-b").isOk());
  // Now the cache holds epoch 2: a write still carrying epoch 1 is stale, without a round trip.
  const uint64_t calls = dir_.calls();
  Status stale = client_.checkEpoch("42", 1);
  EXPECT_EQ(stale.errorClass(), ErrorClass::kRefused);
  EXPECT_NE(stale.message().find("stale"), std::string::npos) << stale.message();
  EXPECT_EQ(dir_.calls(), calls);

  // A freeze the cache has not seen yet: kCached accepts epoch 2, kLatest reads and refuses.
  cas(2, {"stamp-b", RouteState::kFrozen, "stamp-a", "freeze back"});
  EXPECT_TRUE(client_.checkEpoch("42", 2).isOk());
  Status latest = client_.checkEpoch("42", 2, "", Consistency::kLatest);
  EXPECT_EQ(latest.errorClass(), ErrorClass::kRefused);  // 2 is stale now: the entry is at 3
  EXPECT_EQ(client_.checkEpoch("42", 3).errorClass(), ErrorClass::kRetryable);  // frozen
  EXPECT_EQ(client_.checkEpoch("42", 9).errorClass(), ErrorClass::kRefused);    // never issued
  EXPECT_EQ(client_.checkEpoch("7", 1).errorClass(), ErrorClass::kRefused);     // no entry
}

TEST_F(RoutingClientTest, ConcurrentResolvesShareTheCache) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        auto r = client_.resolve("42");
        if (r && std::holds_alternative<Route>(*r) && std::get<Route>(*r).stamp == "stamp-a") ++ok;
        if (i % 100 == 0) client_.invalidate("42");
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 8000);
  // Far fewer reads than resolves: the cache served the rest (invalidations force some).
  EXPECT_LT(dir_.calls(), 8000u);
}

}  // namespace
}  // namespace stampmover::routing

// A freeze left behind by a worker that died inside the window expires for routers.
TEST(RoutingClientFrozenExpiry, StaleFreezeResolvesToItsStampAgain) {
  stampmover::routing::MemoryRoutingDirectory dir;
  stampmover::routing::ManualClock clock;
  ASSERT_TRUE(dir.put("t", "stamp-a"));
  auto frozen = dir.compareAndSet("t", 1, {"stamp-a", stampmover::routing::RouteState::kFrozen, std::nullopt, ""});
  ASSERT_TRUE(frozen);
  stampmover::routing::RoutingClient client(dir, {}, clock);
  auto r = client.resolve("t");
  ASSERT_TRUE(r);
  EXPECT_TRUE(std::holds_alternative<stampmover::routing::Retry>(*r));
  clock.advance(std::chrono::seconds(5));
  r = client.resolve("t");
  ASSERT_TRUE(r);
  EXPECT_TRUE(std::holds_alternative<stampmover::routing::Retry>(*r)) << "still inside the bound";
  clock.advance(std::chrono::seconds(6));
  r = client.resolve("t");
  ASSERT_TRUE(r);
  ASSERT_TRUE(std::holds_alternative<stampmover::routing::Route>(*r));
  EXPECT_EQ(std::get<stampmover::routing::Route>(*r).stamp, "stamp-a");
  // A new freeze (new epoch) starts its own bound.
  ASSERT_TRUE(dir.compareAndSet("t", 2, {"stamp-a", stampmover::routing::RouteState::kFrozen, std::nullopt, ""}));
  client.invalidate("t");
  r = client.resolve("t");
  ASSERT_TRUE(r);
  EXPECT_TRUE(std::holds_alternative<stampmover::routing::Retry>(*r));
}
