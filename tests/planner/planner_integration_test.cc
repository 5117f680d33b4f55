// End to end on harness stamps (issue 13): three local stamps with 14 small tenants placed
// unevenly; `stampmover rebalance plan` (nothing moves), `rebalance apply` into the queue and a
// real `stampmover serve` running the moves under a per-stamp limit; every moved tenant compared
// row by row (SELECT ... ORDER BY pk, independent of stampmover) with what it was before, and
// routed to its new stamp. Then `stampmover drain` of one stamp while its tenants keep writing
// through the routing client: every acknowledged write is on the serving stamp, the drained
// stamp holds no tenant row (counted by SQL), and the routing directory refuses new tenants there.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>
#include <tuple>

#include "harness/load_writer.h"
#include "harness/loadgen.h"
#include "harness/local_cluster.h"
#include "harness/seed.h"
#include "queue/move_queue.h"
#include "routing/routing_directory.h"
#include "tests/support/test_support.h"

namespace stampmover::testing {
namespace {

using namespace std::chrono_literals;

struct Fleet3 {
  std::vector<std::unique_ptr<harness::LocalCluster>> clusters;  // a, b, c
  std::vector<std::string> names = {"stamp-a", "stamp-b", "stamp-c"};
  std::map<std::string, std::string> dsn;  // stamp -> DSN of its "app" database
  std::string cp_dsn;
};

std::string writeConfig(const std::string& dir, const Fleet3& f, uint64_t capacity) {
  const std::string path = dir + "/stamps.yaml";
  std::ofstream out(path);
  out << "state_dir: " << dir << "/state\nstamps:\n";
  // The stamps differ: c has a capacity of its own and a tenant cap (checked by the planner).
  for (const auto& n : f.names) {
    out << "  " << n << ":\n    dsn: \"" << f.dsn.at(n) << "\"\n    region: local\n";
    if (capacity) out << "    capacity_bytes: " << capacity << "\n";
    if (n == "stamp-c") out << "    capacity_tenants: 12\n";
  }
  out << "planner:\n  seed: 7\nserve:\n  soak_seconds: 1\n";
  return path;
}

// Both sides rendered alike whatever the stamp's defaults (stamp-b runs in Asia/Tokyo).
std::vector<std::string> dumpTenant(common::PgConnection& c, const std::string& tenant) {
  execOrDie(c, "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET extra_float_digits = 3");
  std::vector<std::string> all;
  for (const auto& [table, order] : kDemoTenantTables) {
    for (auto& r : tenantRows(c, table, tenant, order)) all.push_back(std::string(table) + ":" + r);
  }
  return all;
}

uint64_t tenantRowsLeft(common::PgConnection& c) {
  uint64_t n = 0;
  for (const auto& [table, _] : kDemoTenantTables) {
    n += std::stoull(scalar(c, std::string("SELECT count(*) FROM ") + table));
  }
  return n;
}

class PlannerE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const auto& n : f_.names) {
      harness::ClusterOptions o;
      o.name = n;
      if (n == "stamp-b") o.timezone = "Asia/Tokyo";  // stamps differ
      auto c = harness::LocalCluster::start(o);
      ASSERT_TRUE(c.isOk()) << c.status().message();
      ASSERT_TRUE((*c)->createDatabase("app").isOk());
      f_.dsn[n] = (*c)->dsn("app");
      f_.clusters.push_back(std::move(*c));
    }
    ASSERT_TRUE(f_.clusters[0]->createDatabase("control").isOk());
    f_.cp_dsn = f_.clusters[0]->dsn("control");
  }
  void TearDown() override {
    for (auto& c : f_.clusters) c->stop().ignore();  // best effort: the destructor retries
  }
  Fleet3 f_;
};

TEST_F(PlannerE2E, RebalanceThroughServeThenDrainUnderWrites) {
  // 14 tenants of different sizes: 11 on a, 3 on b, none on c.
  std::map<std::string, std::string> home;
  routing::PgRoutingDirectory dir(f_.cp_dsn);
  ASSERT_TRUE(dir.ensureSchema().isOk());
  for (const auto& n : f_.names) {
    auto c = connectOrDie(f_.dsn[n]);
    ASSERT_TRUE(harness::createDemoSchema(c).isOk());
    harness::createScratchTable(f_.dsn[n]);
  }
  for (int t = 1; t <= 14; ++t) {
    const std::string stamp = (t >= 10 && t <= 12) ? "stamp-b" : "stamp-a";
    auto c = connectOrDie(f_.dsn[stamp]);
    harness::SeedOptions so;
    so.tenant = t;
    so.tenant_items = 60 + 25 * static_cast<uint64_t>(t);
    so.others = {};
    so.other_items = 0;
    ASSERT_TRUE(harness::seedTenants(c, so).isOk());
    execOrDie(c, "ANALYZE");
    ASSERT_TRUE(dir.put(std::to_string(t), stamp).isOk());
    home[std::to_string(t)] = stamp;
  }
  TempDir tmp;
  {
    std::ofstream tok(tmp.path() + "/tokens");
    tok << "operate-token-0123456789 operate\n";
  }
  // Capacity from the measured total: `stamps --json` with unlimited stamps first.
  std::string cfg = writeConfig(tmp.path(), f_, 0);
  auto st = runStampmover({"stamps", "--config", cfg, "--control-plane-dsn", f_.cp_dsn, "--json"});
  ASSERT_EQ(st.exit_code, 0) << st.err;
  uint64_t total = 0;
  for (const auto& s : nlohmann::json::parse(st.out)) total += s.at("bytes").get<uint64_t>();
  ASSERT_GT(total, 100'000u);
  const uint64_t capacity = total * 8 / 10;  // mean ~42%; after draining one stamp ~62%
  cfg = writeConfig(tmp.path(), f_, capacity);

  // Bad input: unknown stamp and unknown plan are refused, naming them.
  auto bad =
      runStampmover({"drain", "stamp-zz", "--config", cfg, "--control-plane-dsn", f_.cp_dsn});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("stamp-zz"), std::string::npos) << bad.err;
  bad = runStampmover({"rebalance", "apply", "plan-0000000000000000", "--config", cfg,
                       "--control-plane-dsn", f_.cp_dsn});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("plan-0000000000000000"), std::string::npos) << bad.err;

  // Plan: nothing moves, the id is stable.
  auto plan = runStampmover({"rebalance", "plan", "--config", cfg, "--control-plane-dsn", f_.cp_dsn,
                             "--json", "--max-moves", "8"});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  const auto pj = nlohmann::json::parse(plan.out);
  const std::string plan_id = pj.at("id");
  ASSERT_FALSE(pj.at("moves").empty()) << plan.out;
  auto again = runStampmover({"rebalance", "plan", "--config", cfg, "--control-plane-dsn",
                              f_.cp_dsn, "--json", "--max-moves", "8"});
  ASSERT_EQ(again.exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(again.out).at("id"), plan_id);
  auto human = runStampmover(
      {"rebalance", "plan", "--config", cfg, "--control-plane-dsn", f_.cp_dsn, "--max-moves", "8"});
  std::printf("%s", human.out.c_str());
  for (const auto& [t, s] : home) EXPECT_EQ((*dir.get(t))->stamp, s) << "plan moved " << t;

  std::map<std::string, std::vector<std::string>> before;
  for (const auto& [t, s] : home) {
    auto c = connectOrDie(f_.dsn[s]);
    before[t] = dumpTenant(c, t);
    ASSERT_FALSE(before[t].empty());
  }

  // Apply, then serve runs the moves with at most 2 running moves per stamp.
  auto apply = runStampmover(
      {"rebalance", "apply", plan_id, "--config", cfg, "--control-plane-dsn", f_.cp_dsn});
  ASSERT_EQ(apply.exit_code, 0) << apply.err;
  std::printf("%s", apply.out.c_str());
  // Three serve processes (one move at a time each: moves running in one process share its
  // state directory, which only one move can open at a time), limited to 2 running moves per
  // stamp across all of them by the queue.
  std::vector<std::unique_ptr<ChildProcess>> serves;
  for (int i = 0; i < 3; ++i) {
    const std::string sdir = tmp.path() + "/state" + std::to_string(i);
    serves.push_back(std::make_unique<ChildProcess>(spawnStampmover(
        {"serve", "--config", cfg, "--control-plane-dsn", f_.cp_dsn, "--listen", "127.0.0.1:0",
         "--tokens-file", tmp.path() + "/tokens", "--workers", "1", "--max-per-stamp", "2",
         "--soak", "1", "--state-dir", sdir, "--owner", "serve-" + std::to_string(i)},
        tmp.path() + "/serve" + std::to_string(i) + ".log")));
  }
  auto serveLogs = [&] {
    std::string all;
    for (int i = 0; i < 3; ++i) all += readFile(tmp.path() + "/serve" + std::to_string(i) + ".log");
    return all;
  };
  auto queue = queue::MoveQueue::open(f_.cp_dsn);
  ASSERT_TRUE(queue.isOk()) << queue.status().message();
  auto waitForMoves = [&](std::chrono::seconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      auto all = (*queue)->list();
      if (!all.isOk()) return false;
      std::map<std::string, int> touching;
      bool open = false;
      for (const auto& m : *all) {
        if (m.state == queue::MoveState::kRunning) {
          touching[m.spec.from_stamp]++;
          touching[m.spec.to_stamp]++;
        }
        open =
            open || m.state == queue::MoveState::kQueued || m.state == queue::MoveState::kRunning;
        if (m.state == queue::MoveState::kFailed) {
          ADD_FAILURE() << "move of tenant " << m.spec.tenant << " failed: " << m.last_error;
          return false;
        }
      }
      for (const auto& [s, n] : touching) EXPECT_LE(n, 2) << s;
      if (!open) return true;
      if (serveLogs().find("stampmover: error") != std::string::npos) return false;
      std::this_thread::sleep_for(500ms);
    }
    return false;
  };
  ASSERT_TRUE(waitForMoves(240s)) << serveLogs();

  auto moved = (*queue)->list();
  ASSERT_TRUE(moved.isOk());
  size_t n_moved = 0;
  for (const auto& m : *moved) {
    if (m.spec.plan_id != plan_id) continue;
    ASSERT_EQ(m.state, queue::MoveState::kSucceeded) << m.spec.tenant << ": " << m.last_error;
    ++n_moved;
    const std::string& t = m.spec.tenant;
    auto route = dir.get(t);
    ASSERT_TRUE(route.isOk() && route->has_value());
    EXPECT_EQ((*route)->stamp, m.spec.to_stamp) << t;
    EXPECT_EQ((*route)->state, routing::RouteState::kActive) << t;
    auto c = connectOrDie(f_.dsn[m.spec.to_stamp]);
    const auto after = dumpTenant(c, t);
    EXPECT_EQ(after.size(), before[t].size()) << "tenant " << t << " on " << m.spec.to_stamp;
    EXPECT_TRUE(after == before[t]) << "tenant " << t << " differs on " << m.spec.to_stamp;
    home[t] = m.spec.to_stamp;
  }
  EXPECT_EQ(n_moved, pj.at("moves").size());
  // The plan's progress as the queue saw it; plan-level actions on an unknown plan are refused.
  auto show = runStampmover(
      {"rebalance", "show", plan_id, "--json", "--config", cfg, "--control-plane-dsn", f_.cp_dsn});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  const auto sj = nlohmann::json::parse(show.out);
  ASSERT_EQ(sj.at("queued_moves").size(), pj.at("moves").size());
  for (const auto& m : sj.at("queued_moves")) EXPECT_EQ(m.at("state"), "succeeded") << m.dump();
  EXPECT_FALSE(sj.at("applied_at").get<std::string>().empty());
  auto nopause = runStampmover({"rebalance", "pause", "plan-00000000000000ff", "--config", cfg,
                                "--control-plane-dsn", f_.cp_dsn});
  EXPECT_EQ(nopause.exit_code, 2);
  EXPECT_NE(nopause.err.find("plan-00000000000000ff"), std::string::npos) << nopause.err;
  auto stamps = runStampmover({"stamps", "--config", cfg, "--control-plane-dsn", f_.cp_dsn});
  std::printf("after the rebalance:\n%s", stamps.out.c_str());

  // A dry run marks and moves nothing; with tenant 13 pinned it is listed as unplaceable.
  {
    std::string pinned_cfg = readFile(cfg);
    pinned_cfg.replace(pinned_cfg.find("planner:\n"), 9,
                       "planner:\n  tenants:\n    \"13\": {pinned: true}\n");
    const std::string pinned_path = tmp.path() + "/pinned.yaml";
    std::ofstream(pinned_path) << pinned_cfg;
    auto count = (*queue)->list();
    ASSERT_TRUE(count.isOk());
    auto dry = runStampmover({"drain", "stamp-c", "--dry-run", "--json", "--config", pinned_path,
                              "--control-plane-dsn", f_.cp_dsn});
    ASSERT_EQ(dry.exit_code, 0) << dry.err;
    const auto dj = nlohmann::json::parse(dry.out);
    bool pinned_listed = false;
    for (const auto& u : dj.at("unplaced")) {
      pinned_listed =
          pinned_listed || (u.at("tenant") == "13" &&
                            u.at("reason").get<std::string>().find("pinned") != std::string::npos);
    }
    EXPECT_EQ(pinned_listed, home["13"] == "stamp-c") << dry.out;
    auto draining = dir.drainingStamps();
    ASSERT_TRUE(draining.isOk());
    EXPECT_TRUE(draining->empty()) << "a dry run marked a stamp draining";
    EXPECT_EQ((*queue)->list()->size(), count->size()) << "a dry run queued moves";
  }

  // Drain stamp-c while its tenants write through the routing client.
  const std::string drained = "stamp-c";
  std::vector<std::pair<std::string, std::unique_ptr<harness::Loadgen>>> writers;
  for (const auto& [t, s] : home) {
    if (s != drained || writers.size() >= 3) continue;
    harness::LoadgenOptions lo;
    lo.control_plane_dsn = f_.cp_dsn;
    lo.stamp_dsns = f_.dsn;
    lo.tenant = t;
    lo.rate = 20;
    lo.duration = 280s;
    lo.first_id = 900'000'000 + std::stoll(t) * 1'000'000;
    writers.emplace_back(t, std::make_unique<harness::Loadgen>(lo));
    writers.back().second->start();
  }
  ASSERT_FALSE(writers.empty()) << "no tenant on " << drained << " after the rebalance";
  std::this_thread::sleep_for(2s);
  auto drain = runStampmover({"drain", drained, "--config", cfg, "--control-plane-dsn", f_.cp_dsn,
                              "--wait", "240", "--poll", "3"});
  std::this_thread::sleep_for(1s);
  for (auto& [t, w] : writers) w->stop();
  std::printf("%s", drain.out.c_str());
  ASSERT_EQ(drain.exit_code, 0) << drain.out << drain.err << serveLogs();

  auto routes = dir.list();
  ASSERT_TRUE(routes.isOk());
  std::map<std::string, std::string> serving;
  for (const auto& e : *routes) {
    EXPECT_NE(e.stamp, drained) << e.tenant;
    EXPECT_EQ(e.state, routing::RouteState::kActive) << e.tenant;
    serving[e.tenant] = e.stamp;
  }
  uint64_t acked = 0;
  for (auto& [t, w] : writers) {
    const auto rep = w->report();
    acked += rep.acknowledged;
    // Every acknowledged write is on the stamp that now serves its tenant.
    ASSERT_TRUE(serving.count(t)) << t;
    auto missing = w->missingOn(f_.dsn[serving[t]]);
    ASSERT_TRUE(missing.isOk()) << missing.status().message();
    EXPECT_EQ(*missing, 0u) << "tenant " << t << ": acknowledged writes missing on " << serving[t];
    std::printf("tenant %s: %llu acknowledged writes, %llu retries, max stall %.0f ms\n", t.c_str(),
                static_cast<unsigned long long>(rep.acknowledged),
                static_cast<unsigned long long>(rep.retries), rep.max_stall_ms);
  }
  EXPECT_GT(acked, 0u);
  {
    auto c = connectOrDie(f_.dsn[drained]);
    EXPECT_EQ(tenantRowsLeft(c), 0u) << drained << " still holds tenant rows";
  }
  auto refused = dir.put("999", drained);
  EXPECT_FALSE(refused.isOk());
  EXPECT_NE(refused.status().message().find("draining"), std::string::npos);
  stamps = runStampmover({"stamps", "--config", cfg, "--control-plane-dsn", f_.cp_dsn});
  std::printf("after the drain:\n%s", stamps.out.c_str());
  for (auto& s : serves) {
    kill(s->pid(), SIGTERM);
    s->wait();
  }
}

// ClaimLimits::per_stamp counts a running move against both of its stamps (as Citus does), which
// per_source and per_destination alone do not: with a -> b running, c -> a and b -> c wait.
TEST(PerStampLimit, AMoveCountsAgainstBothItsStamps) {
  harness::ClusterOptions o;
  o.name = "control";
  auto cluster = harness::LocalCluster::start(o);
  ASSERT_TRUE(cluster.isOk()) << cluster.status().message();
  auto q = queue::MoveQueue::open((*cluster)->dsn("postgres"));
  ASSERT_TRUE(q.isOk()) << q.status().message();
  for (auto [t, from, to] : {std::tuple{"1", "a", "b"}, {"2", "c", "a"}, {"3", "b", "c"}}) {
    queue::MoveSpec spec;
    spec.tenant = t;
    spec.from_stamp = from;
    spec.to_stamp = to;
    ASSERT_TRUE((*q)->create(spec).isOk());
  }
  queue::ClaimLimits both;
  both.per_source = 1;
  both.per_destination = 1;
  both.per_stamp = 1;
  auto first = (*q)->claim("w1", both);
  ASSERT_TRUE(first.isOk() && first->has_value());
  auto second = (*q)->claim("w2", both);
  ASSERT_TRUE(second.isOk());
  EXPECT_FALSE(second->has_value()) << "move " << (*second)->move_id << " claimed beside a -> b";
  queue::ClaimLimits split = both;
  split.per_stamp = 0;  // per source and per destination only: c -> a fits (a sends, c receives)
  auto third = (*q)->claim("w3", split);
  ASSERT_TRUE(third.isOk());
  EXPECT_TRUE(third->has_value());
  (*cluster)->stop().ignore();  // best effort: the destructor stops it too
}

// A queued move of a plan is re-checked when a worker claims it (issue 13, execution): after
// `rebalance apply`, one tenant is routed elsewhere and a large tenant lands on the destination
// stamp; serve's worker skips both moves instead of running them, each with its reason, shown
// by the queue, `move show` and `rebalance show`. Two stamps (databases of one harness cluster)
// with their own capacities.
TEST(SkipAtWorker, MovesThatNoLongerHelpAreSkippedWithTheirReason) {
  harness::ClusterOptions o;
  o.name = "skip";
  auto cluster = harness::LocalCluster::start(o);
  ASSERT_TRUE(cluster.isOk()) << cluster.status().message();
  for (const char* db : {"a", "b", "control"}) ASSERT_TRUE((*cluster)->createDatabase(db).isOk());
  const std::map<std::string, std::string> dsn = {{"stamp-a", (*cluster)->dsn("a")},
                                                  {"stamp-b", (*cluster)->dsn("b")}};
  const std::string cp = (*cluster)->dsn("control");
  routing::PgRoutingDirectory dir(cp);
  ASSERT_TRUE(dir.ensureSchema().isOk());
  for (const auto& [n, d] : dsn) {
    auto c = connectOrDie(d);
    ASSERT_TRUE(harness::createDemoSchema(c).isOk());
  }
  auto seed = [&](const std::string& stamp, int t, uint64_t items) {
    auto c = connectOrDie(dsn.at(stamp));
    harness::SeedOptions so;
    so.tenant = t;
    so.tenant_items = items;
    so.others = {};
    so.other_items = 0;
    ASSERT_TRUE(harness::seedTenants(c, so).isOk());
    execOrDie(c, "ANALYZE");
    ASSERT_TRUE(dir.put(std::to_string(t), stamp).isOk());
  };
  for (int t = 1; t <= 4; ++t) seed("stamp-a", t, 100 + 20 * static_cast<uint64_t>(t));
  TempDir tmp;
  {
    std::ofstream tok(tmp.path() + "/tokens");
    tok << "operate-token-0123456789 operate\n";
    std::ofstream t2(tmp.path() + "/op.token");
    t2 << "operate-token-0123456789\n";
  }
  auto config = [&](uint64_t cap_a, uint64_t cap_b) {
    const std::string path = tmp.path() + "/stamps.yaml";
    std::ofstream out(path);
    out << "state_dir: " << tmp.path() << "/state\nstamps:\n";
    out << "  stamp-a:\n    dsn: \"" << dsn.at("stamp-a") << "\"\n";
    if (cap_a) out << "    capacity_bytes: " << cap_a << "\n";
    out << "  stamp-b:\n    dsn: \"" << dsn.at("stamp-b") << "\"\n";
    if (cap_b) out << "    capacity_bytes: " << cap_b << "\n";
    out << "planner:\n  seed: 3\nserve:\n  soak_seconds: 1\n";
    return path;
  };
  std::string cfg = config(0, 0);
  auto st = runStampmover({"stamps", "--config", cfg, "--control-plane-dsn", cp, "--json"});
  ASSERT_EQ(st.exit_code, 0) << st.err;
  uint64_t total = 0;
  for (const auto& s : nlohmann::json::parse(st.out)) total += s.at("bytes").get<uint64_t>();
  ASSERT_GT(total, 0u);
  cfg = config(total * 2, total * 3);  // the stamps differ in capacity

  auto plan = runStampmover({"rebalance", "plan", "--config", cfg, "--control-plane-dsn", cp,
                             "--json", "--max-moves", "2"});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  const auto pj = nlohmann::json::parse(plan.out);
  const std::string plan_id = pj.at("id");
  ASSERT_EQ(pj.at("moves").size(), 2u) << plan.out;
  const std::string routed_away = pj["moves"][0].at("tenant");
  const std::string unbalancing = pj["moves"][1].at("tenant");
  auto apply =
      runStampmover({"rebalance", "apply", plan_id, "--config", cfg, "--control-plane-dsn", cp});
  ASSERT_EQ(apply.exit_code, 0) << apply.err;
  auto q = queue::MoveQueue::open(cp);
  ASSERT_TRUE(q.isOk()) << q.status().message();
  auto queued = (*q)->list();
  ASSERT_TRUE(queued.isOk());
  ASSERT_EQ(queued->size(), 2u) << apply.out;

  // The world changes before the moves' turn: the first tenant is now served by stamp-b
  // (as another tool could have done), and stamp-b receives a tenant larger than all of stamp-a.
  {
    auto e = dir.get(routed_away);
    ASSERT_TRUE(e.isOk() && e->has_value());
    routing::RouteChange ch;
    ch.stamp = "stamp-b";
    ch.reason = "test: moved by another tool";
    auto r = dir.compareAndSet(routed_away, (*e)->epoch, ch);
    ASSERT_TRUE(r.isOk()) << r.status().message();
  }
  seed("stamp-b", 9, 3000);

  auto serve = std::make_unique<ChildProcess>(spawnStampmover(
      {"serve", "--config", cfg, "--control-plane-dsn", cp, "--listen", "127.0.0.1:0",
       "--tokens-file", tmp.path() + "/tokens", "--workers", "1", "--state-dir",
       tmp.path() + "/state", "--owner", "skipper"},
      tmp.path() + "/serve.log"));
  std::map<std::string, queue::Move> by_tenant;
  const auto until = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < until) {
    auto all = (*q)->list();
    ASSERT_TRUE(all.isOk());
    by_tenant.clear();
    int ended = 0;
    for (const auto& m : *all) {
      by_tenant[m.spec.tenant] = m;
      if (m.state != queue::MoveState::kQueued && m.state != queue::MoveState::kRunning) ++ended;
    }
    if (ended == 2) break;
    std::this_thread::sleep_for(200ms);
  }
  const std::string log = readFile(tmp.path() + "/serve.log");
  ASSERT_EQ(by_tenant.size(), 2u);
  const auto& a = by_tenant.at(routed_away);
  EXPECT_EQ(a.state, queue::MoveState::kCancelled) << log;
  EXPECT_EQ(a.last_error, "skipped: the tenant is now served by stamp-b, not stamp-a") << log;
  const auto& b = by_tenant.at(unbalancing);
  EXPECT_EQ(b.state, queue::MoveState::kCancelled) << log;
  EXPECT_EQ(b.last_error.rfind("skipped: no longer improves balance enough: stamp-a at ", 0), 0u)
      << b.last_error << "\n" << log;
  // Nothing ran: the tenants' rows are where they were, stamp-b holds none of them.
  auto cb = connectOrDie(dsn.at("stamp-b"));
  EXPECT_EQ(scalar(cb, "SELECT count(*) FROM orders WHERE tenant_id <> 9"), "0");

  // Visible in `rebalance show` and `move show`.
  auto show = runStampmover(
      {"rebalance", "show", plan_id, "--config", cfg, "--control-plane-dsn", cp});
  EXPECT_EQ(show.exit_code, 0) << show.err;
  EXPECT_NE(show.out.find("skipped: the tenant is now served by stamp-b"), std::string::npos)
      << show.out;
  EXPECT_NE(show.out.find("skipped: no longer improves balance enough"), std::string::npos)
      << show.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m, std::regex("listening on 127\\.0\\.0\\.1:([0-9]+)")));
  auto ms = runStampmover({"move", "--api", "http://127.0.0.1:" + m[1].str(), "--token-file",
                           tmp.path() + "/op.token", "show", std::to_string(b.id)});
  EXPECT_EQ(ms.exit_code, 0) << ms.err;
  EXPECT_NE(ms.out.find("last error: skipped: no longer improves balance enough"),
            std::string::npos)
      << ms.out;
  serve.reset();
  (*cluster)->stop().ignore();  // best effort: the destructor stops it too
}

}  // namespace
}  // namespace stampmover::testing
