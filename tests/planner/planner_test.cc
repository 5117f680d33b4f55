// Planner unit tests on synthetic fleets (hundreds of stamps, thousands of tenants): every hard
// constraint holds, the plan converges within the threshold, every move improves balance, any
// prefix of a plan leaves the fleet no worse balanced, plans are deterministic under a seed, and
// a drain places everything placeable and explains the rest. Balance is recomputed here from the
// fleet, independently of the planner's own bookkeeping.
#include "planner/planner.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "planner/inventory.h"
#include "planner/plan_json.h"

namespace stampmover::planner {
namespace {

struct Shape {
  int stamps = 200;
  int tenants = 4000;
  int regions = 3;
  uint64_t seed = 7;
  double pinned = 0.05;
  double excluded = 0.02;
  double restricted = 0.1;  // tenants with allowed_regions = their own region
};

// A skewed fleet: tenant sizes log-normal, placement biased toward low-numbered stamps so some
// stamps start far above the mean; a few stamps are nearly empty.
Fleet syntheticFleet(const Shape& shape) {
  std::mt19937_64 rng(shape.seed);  // test data only: the planner does its own randomness
  Fleet f;
  for (int i = 0; i < shape.stamps; ++i) {
    Stamp s;
    s.name = "stamp-" + std::to_string(1000 + i);
    s.region = "r" + std::to_string(i % shape.regions);
    s.capacity_bytes = (i % 4 == 0 ? 2'000 : 1'000) * 1'000'000'000ULL;  // 1 or 2 TB
    s.capacity_tenants = 200;
    f.stamps.push_back(s);
  }
  std::lognormal_distribution<double> size(0, 1.0);
  std::uniform_real_distribution<double> u(0, 1);
  for (int i = 0; i < shape.tenants; ++i) {
    Tenant t;
    t.key = std::to_string(100000 + i);
    // Bias: square of a uniform picks low indices more often.
    const double r = u(rng);
    const int s = static_cast<int>(r * r * shape.stamps) % shape.stamps;
    t.stamp = f.stamps[s].name;
    t.bytes = static_cast<uint64_t>(std::min(40.0, size(rng) * 3.0) * 1e9) + 1'000'000;
    const double c = u(rng);
    t.pinned = c < shape.pinned;
    t.excluded = !t.pinned && c < shape.pinned + shape.excluded;
    if (u(rng) < shape.restricted) t.allowed_regions = {f.stamps[s].region};
    f.tenants.push_back(t);
  }
  return f;
}

struct Balance {
  double max_dev = 0;   // max |u-m|/m over groups
  double variance = 0;  // sum c*(u-m)^2
  double spread = 0;    // max over groups of max u - min u
  int outside = 0;
};

// Independent balance measure: per region, capacity-weighted mean; draining stamps excluded.
Balance measure(const Fleet& f, double threshold) {
  std::map<std::string, uint64_t> bytes;
  for (const Tenant& t : f.tenants) bytes[t.stamp] += t.bytes;
  std::map<std::string, std::pair<double, double>> group;  // region -> bytes, cap
  for (const Stamp& s : f.stamps) {
    if (s.draining) continue;
    group[s.region].first += static_cast<double>(bytes[s.name]);
    group[s.region].second += static_cast<double>(s.capacity_bytes);
  }
  Balance b;
  std::map<std::string, std::pair<double, double>> minmax;
  for (const Stamp& s : f.stamps) {
    if (s.draining) continue;
    const double m = group[s.region].first / group[s.region].second;
    const double u = static_cast<double>(bytes[s.name]) / static_cast<double>(s.capacity_bytes);
    b.max_dev = std::max(b.max_dev, std::fabs(u - m) / m);
    b.variance += static_cast<double>(s.capacity_bytes) * (u - m) * (u - m);
    if (std::fabs(u - m) > threshold * m + 1e-12) ++b.outside;
    auto [it, added] = minmax.emplace(s.region, std::make_pair(u, u));
    it->second.first = std::min(it->second.first, u);
    it->second.second = std::max(it->second.second, u);
  }
  for (const auto& [_, mm] : minmax) b.spread = std::max(b.spread, mm.second - mm.first);
  return b;
}

const Stamp& stampOf(const Fleet& f, const std::string& name) {
  for (const Stamp& s : f.stamps) {
    if (s.name == name) return s;
  }
  throw std::runtime_error("no stamp " + name);
}

const Tenant& tenantOf(const Fleet& f, const std::string& key) {
  for (const Tenant& t : f.tenants) {
    if (t.key == key) return t;
  }
  throw std::runtime_error("no tenant " + key);
}

// Checks every hard constraint of each move against the fleet as it is just before that move.
void expectConstraints(const Fleet& fleet, const Plan& plan, const PlannerOptions& o) {
  std::set<std::string> moved;
  for (size_t i = 0; i < plan.moves.size(); ++i) {
    const Move& m = plan.moves[i];
    const Fleet before = applyMoves(fleet, plan.moves, i);
    const Tenant& t = tenantOf(before, m.tenant);
    EXPECT_EQ(t.stamp, m.from) << m.tenant;
    EXPECT_FALSE(t.pinned) << m.tenant;
    EXPECT_FALSE(t.excluded) << m.tenant;
    EXPECT_TRUE(moved.insert(m.tenant).second) << "moved twice: " << m.tenant;
    const Stamp& from = stampOf(fleet, m.from);
    const Stamp& to = stampOf(fleet, m.to);
    EXPECT_FALSE(to.draining) << m.to;
    EXPECT_NE(m.from, m.to);
    if (!o.cross_region) {
      EXPECT_EQ(from.region, to.region) << m.tenant;
    }
    if (!t.allowed_regions.empty()) {
      EXPECT_NE(std::find(t.allowed_regions.begin(), t.allowed_regions.end(), to.region),
                t.allowed_regions.end())
          << m.tenant;
    }
    uint64_t to_bytes = 0;
    uint32_t to_tenants = 0;
    for (const Tenant& x : before.tenants) {
      if (x.stamp == m.to) {
        to_bytes += x.bytes;
        ++to_tenants;
      }
    }
    EXPECT_LE(static_cast<double>(to_bytes + t.bytes),
              static_cast<double>(to.capacity_bytes) * (o.evacuation_limit - o.safety_margin) + 1)
        << m.tenant << " -> " << m.to;
    if (to.capacity_tenants > 0) {
      EXPECT_LE(to_tenants + 1, to.capacity_tenants);
    }
    if (to.load) {
      EXPECT_LT(*to.load, o.max_target_load);
    }
    EXPECT_FALSE(m.reason.empty());
  }
}

TEST(PlannerRebalance, RespectsConstraintsAndConverges) {
  const Fleet fleet = syntheticFleet({});
  PlannerOptions o;
  o.max_moves = 5000;
  o.seed = 1;
  auto plan = planRebalance(fleet, o);
  ASSERT_TRUE(plan.isOk()) << plan.status().message();
  const Balance before = measure(fleet, o.threshold);
  const Fleet moved = applyMoves(fleet, plan->moves, plan->moves.size());
  const Balance after = measure(moved, o.threshold);
  EXPECT_GT(before.outside, 50);  // the fleet really was unbalanced
  EXPECT_GT(plan->moves.size(), 100u);
  EXPECT_NEAR(plan->max_deviation_after, after.max_dev, 1e-9);
  EXPECT_NEAR(plan->max_deviation_before, before.max_dev, 1e-9);
  // With pinned and excluded tenants a stamp may stay above the band, but only one whose
  // immovable tenants alone put it there; every other stamp ends within the band.
  int unexplained = 0;
  for (const StampSummary& s : plan->stamps) {
    if (std::fabs(s.util_after - s.mean) <= o.threshold * s.mean + 1e-12) continue;
    uint64_t fixed = 0;
    for (const Tenant& t : moved.tenants) {
      if (t.stamp == s.name && (t.pinned || t.excluded)) fixed += t.bytes;
    }
    const double fixed_u = static_cast<double>(fixed) / static_cast<double>(s.capacity_bytes);
    if (fixed_u <= (1 + o.threshold) * s.mean) {
      ++unexplained;
      ADD_FAILURE() << s.name << " ends at " << s.util_after << " (mean " << s.mean
                    << ") with only " << fixed_u << " immovable";
    }
  }
  EXPECT_EQ(unexplained, 0) << plan->stop_reason;
  expectConstraints(fleet, *plan, o);

  // Without pinned or excluded tenants the same shape of fleet converges completely.
  const Fleet free_fleet = syntheticFleet({.pinned = 0, .excluded = 0});
  auto free_plan = planRebalance(free_fleet, o);
  ASSERT_TRUE(free_plan.isOk());
  EXPECT_TRUE(free_plan->converged) << free_plan->stop_reason;
  const Balance free_after =
      measure(applyMoves(free_fleet, free_plan->moves, free_plan->moves.size()), o.threshold);
  EXPECT_EQ(free_after.outside, 0) << free_plan->stop_reason;
  EXPECT_LE(free_after.max_dev, o.threshold + 1e-9);
  expectConstraints(free_fleet, *free_plan, o);
}

TEST(PlannerRebalance, EveryMoveImprovesBalanceByItsFraction) {
  const Fleet fleet = syntheticFleet({.stamps = 100, .tenants = 2000});
  PlannerOptions o;
  o.max_moves = 2000;
  auto plan = planRebalance(fleet, o);
  ASSERT_TRUE(plan.isOk());
  ASSERT_FALSE(plan->moves.empty());
  for (size_t i = 0; i < plan->moves.size(); ++i) {
    const Move& m = plan->moves[i];
    const Fleet f = applyMoves(fleet, plan->moves, i);
    uint64_t fb = 0, tb = 0;
    for (const Tenant& t : f.tenants) {
      fb += t.stamp == m.from ? t.bytes : 0;
      tb += t.stamp == m.to ? t.bytes : 0;
    }
    const double cs = static_cast<double>(stampOf(f, m.from).capacity_bytes);
    const double ct = static_cast<double>(stampOf(f, m.to).capacity_bytes);
    const double us = fb / cs, ut = tb / ct;
    EXPECT_NEAR(us, m.from_before, 1e-12);
    EXPECT_NEAR(ut, m.to_before, 1e-12);
    const double x = static_cast<double>(m.bytes);
    const double gain = (us - ut) - std::fabs((us - x / cs) - (ut + x / ct));
    EXPECT_GE(gain + 1e-12, o.improvement_fraction * (x / cs + x / ct)) << "move " << m.seq;
    EXPECT_GT(measure(f, o.threshold).variance,
              measure(applyMoves(fleet, plan->moves, i + 1), o.threshold).variance)
        << "move " << m.seq;
  }
}

TEST(PlannerRebalance, AnyPrefixIsNoWorseThanBefore) {
  const Fleet fleet = syntheticFleet({.stamps = 150, .tenants = 3000, .seed = 11});
  PlannerOptions o;
  o.max_moves = 3000;
  auto plan = planRebalance(fleet, o);
  ASSERT_TRUE(plan.isOk());
  ASSERT_GT(plan->moves.size(), 10u);
  Balance prev = measure(fleet, o.threshold);
  const Balance start = prev;
  for (size_t k = 1; k <= plan->moves.size(); ++k) {
    const Balance b = measure(applyMoves(fleet, plan->moves, k), o.threshold);
    // Monotone at every step, hence every prefix is no worse than the start.
    EXPECT_LE(b.max_dev, prev.max_dev + 1e-12) << "prefix " << k;
    EXPECT_LE(b.spread, prev.spread + 1e-12) << "prefix " << k;
    EXPECT_LT(b.variance, prev.variance) << "prefix " << k;
    EXPECT_LE(b.max_dev, start.max_dev + 1e-12);
    prev = b;
  }
}

TEST(PlannerRebalance, DeterministicUnderSeedAndInputOrder) {
  Fleet fleet = syntheticFleet({.stamps = 120, .tenants = 2500});
  PlannerOptions o;
  o.max_moves = 300;
  o.seed = 42;
  auto a = planRebalance(fleet, o);
  Fleet shuffled = fleet;
  std::mt19937_64 rng(3);
  std::shuffle(shuffled.stamps.begin(), shuffled.stamps.end(), rng);
  std::shuffle(shuffled.tenants.begin(), shuffled.tenants.end(), rng);
  auto b = planRebalance(shuffled, o);
  ASSERT_TRUE(a.isOk());
  ASSERT_TRUE(b.isOk());
  EXPECT_EQ(a->id, b->id);
  EXPECT_EQ(planToJson(*a).dump(), planToJson(*b).dump());
  // Another seed: another id, and (with near-equal targets) other choices.
  o.seed = 43;
  auto c = planRebalance(fleet, o);
  ASSERT_TRUE(c.isOk());
  EXPECT_NE(a->id, c->id);
  bool differs = a->moves.size() != c->moves.size();
  for (size_t i = 0; !differs && i < a->moves.size(); ++i)
    differs = a->moves[i].to != c->moves[i].to;
  EXPECT_TRUE(differs) << "the seed should change some near-equal target choice";
}

TEST(PlannerRebalance, NearEqualTargetsAreSpreadByTwoChoices) {
  // One hot stamp and ten empty identical ones: the first move's target must vary with the
  // seed instead of always being the first by name (herding).
  Fleet f;
  f.stamps.push_back({"hot", "r", 1'000'000, 0, std::nullopt, false});
  for (int i = 0; i < 10; ++i)
    f.stamps.push_back({"cold-" + std::to_string(i), "r", 1'000'000, 0, std::nullopt, false});
  for (int i = 0; i < 50; ++i) f.tenants.push_back({"t" + std::to_string(i), "hot", 10'000});
  std::set<std::string> first_targets;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    PlannerOptions o;
    o.seed = seed;
    auto p = planRebalance(f, o);
    ASSERT_TRUE(p.isOk());
    ASSERT_FALSE(p->moves.empty());
    first_targets.insert(p->moves[0].to);
    EXPECT_NE(p->moves[0].reason.find("two random picks"), std::string::npos) << p->moves[0].reason;
  }
  EXPECT_GE(first_targets.size(), 5u);
}

TEST(PlannerRebalance, RefusesMovesThatGainLessThanTheirSize) {
  // Two stamps 10 points apart with one huge tenant each: moving either would swap them (a big
  // move for a small gain), so nothing is planned and the plan says why.
  Fleet f;
  f.stamps.push_back({"a", "r", 1000, 0, std::nullopt, false});
  f.stamps.push_back({"b", "r", 1000, 0, std::nullopt, false});
  f.tenants.push_back({"big-a", "a", 450});
  f.tenants.push_back({"big-b", "b", 350});
  PlannerOptions o;
  o.threshold = 0.05;
  auto p = planRebalance(f, o);
  ASSERT_TRUE(p.isOk());
  EXPECT_TRUE(p->moves.empty());
  EXPECT_FALSE(p->converged);
  EXPECT_NE(p->stop_reason.find("no move"), std::string::npos) << p->stop_reason;
}

TEST(PlannerRebalance, HardFiltersAndInFlight) {
  Fleet f;
  f.stamps.push_back({"full", "eu", 1000, 0, std::nullopt, false});
  f.stamps.push_back({"busy", "eu", 1000, 0, 0.95, false});
  f.stamps.push_back({"draining", "eu", 1000, 0, std::nullopt, true});
  f.stamps.push_back({"us", "us", 1000, 0, std::nullopt, false});
  f.stamps.push_back({"ok", "eu", 1000, 1, std::nullopt, false});  // room for one tenant
  for (int i = 0; i < 8; ++i) f.tenants.push_back({"t" + std::to_string(i), "full", 100});
  f.tenants[0].pinned = true;
  f.tenants[1].excluded = true;
  f.in_flight.push_back({"t2", "full", "ok"});  // counts at "ok": it has no tenant slot left
  PlannerOptions o;
  auto p = planRebalance(f, o);
  ASSERT_TRUE(p.isOk()) << p.status().message();
  EXPECT_TRUE(p->moves.empty()) << p->moves.size() << " "
                                << (p->moves.empty() ? "" : p->moves[0].to);
  // With room for two at "ok", exactly one more tenant goes there, and never t0, t1, t2.
  f.stamps[4].capacity_tenants = 2;
  p = planRebalance(f, o);
  ASSERT_TRUE(p.isOk());
  ASSERT_EQ(p->moves.size(), 1u);
  EXPECT_EQ(p->moves[0].to, "ok");
  EXPECT_TRUE(p->moves[0].tenant != "t0" && p->moves[0].tenant != "t1" &&
              p->moves[0].tenant != "t2");
  // Cross-region allowed: "us" becomes a target too.
  o.cross_region = true;
  o.max_moves = 10;
  p = planRebalance(f, o);
  ASSERT_TRUE(p.isOk());
  bool to_us = false;
  for (const Move& m : p->moves) to_us = to_us || m.to == "us";
  EXPECT_TRUE(to_us);
  for (const Move& m : p->moves) EXPECT_TRUE(m.to == "us" || m.to == "ok") << m.to;
}

TEST(PlannerRebalance, DrainingStampTakesNothingAndKeepsItsTenants) {
  // An empty draining stamp beside a hot one: the rebalance never targets it, and it does not
  // count toward the group's mean (else the others would look under-used).
  Fleet f;
  f.stamps.push_back({"hot", "r", 1000, 0, std::nullopt, false});
  f.stamps.push_back({"cold", "r", 1000, 0, std::nullopt, false});
  f.stamps.push_back({"leaving", "r", 1000, 0, std::nullopt, true});
  for (int i = 0; i < 10; ++i) f.tenants.push_back({"t" + std::to_string(i), "hot", 50});
  f.tenants.push_back({"on-leaving", "leaving", 10});
  PlannerOptions o;
  o.max_moves = 100;
  auto p = planRebalance(f, o);
  ASSERT_TRUE(p.isOk());
  ASSERT_FALSE(p->moves.empty());
  for (const Move& m : p->moves) {
    EXPECT_EQ(m.to, "cold") << m.reason;
    EXPECT_NE(m.from, "leaving");  // a rebalance leaves a drain's tenants to the drain
  }
  EXPECT_TRUE(p->converged) << p->stop_reason;
  for (const StampSummary& s : p->stamps) {
    if (s.name == "leaving") {
      EXPECT_TRUE(s.draining);
    }
  }
}

TEST(PlannerRebalance, CapacityAfterTheMoveKeepsTheSafetyMargin) {
  // Two stamps far apart; the target may end at most at evacuation_limit - safety_margin of its
  // capacity even when the gap would invite more.
  Fleet f;
  f.stamps.push_back({"a", "r", 1000, 0, std::nullopt, false});
  f.stamps.push_back({"b", "r", 10000, 0, std::nullopt, false});
  f.stamps.push_back({"small", "r", 100, 0, std::nullopt, false});
  for (int i = 0; i < 40; ++i) f.tenants.push_back({"t" + std::to_string(i), "b", 200});
  f.tenants.push_back({"s1", "small", 10});
  PlannerOptions o;
  o.max_moves = 1000;
  o.evacuation_limit = 0.9;
  o.safety_margin = 0.1;
  auto p = planRebalance(f, o);
  ASSERT_TRUE(p.isOk());
  ASSERT_FALSE(p->moves.empty());
  const Fleet after = applyMoves(f, p->moves, p->moves.size());
  uint64_t a = 0, small = 0;
  for (const Tenant& t : after.tenants) {
    a += t.stamp == "a" ? t.bytes : 0;
    small += t.stamp == "small" ? t.bytes : 0;
  }
  EXPECT_LE(a, 800u);
  EXPECT_LE(small, 80u);  // no 200-byte tenant fits under 80% of 100
  expectConstraints(f, *p, o);
}

TEST(PlannerRebalance, PlansTenThousandTenantsOnHundredStampsUnderOneSecond) {
  const Fleet fleet = syntheticFleet({.stamps = 100, .tenants = 10000, .seed = 3});
  PlannerOptions o;
  o.max_moves = 100000;  // no cap: the whole rebalance
  o.seed = 5;
  const auto start = std::chrono::steady_clock::now();
  auto plan = planRebalance(fleet, o);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(plan.isOk()) << plan.status().message();
  EXPECT_GT(plan->moves.size(), 100u);
  EXPECT_TRUE(plan->converged) << plan->stop_reason;
  EXPECT_LT(std::chrono::duration<double>(took).count(), 1.0)
      << plan->moves.size() << " moves took " << std::chrono::duration<double>(took).count()
      << " s";
  // And a drain of the fullest stamp of the same fleet.
  const auto start2 = std::chrono::steady_clock::now();
  auto drain = planDrain(fleet, fleet.stamps[0].name, o);
  const auto took2 = std::chrono::steady_clock::now() - start2;
  ASSERT_TRUE(drain.isOk());
  EXPECT_GT(drain->moves.size(), 10u);
  EXPECT_LT(std::chrono::duration<double>(took2).count(), 1.0);
}

TEST(PlannerRebalance, RefusesInconsistentFleet) {
  Fleet f;
  f.stamps.push_back({"a", "r", 1000});
  f.tenants.push_back({"t", "nowhere", 1});
  auto p = planRebalance(f, {});
  ASSERT_FALSE(p.isOk());
  EXPECT_EQ(p.status().errorClass(), common::ErrorClass::kRefused);
  EXPECT_NE(p.status().message().find("nowhere"), std::string::npos);
}

TEST(PlannerDrain, PlacesEverythingPlaceableAndExplainsTheRest) {
  Fleet fleet = syntheticFleet({.stamps = 150, .tenants = 3000, .seed = 5});
  // Make the drained stamp's region tight: "only-here" tenants allow a region with no stamp.
  const std::string drained = fleet.stamps[3].name;
  int extra = 0;
  for (Tenant& t : fleet.tenants) {
    if (t.stamp == drained && !t.pinned && !t.excluded && extra < 2) {
      t.allowed_regions = {"mars"};
      ++extra;
    }
  }
  PlannerOptions o;
  o.seed = 9;
  auto p = planDrain(fleet, drained, o);
  ASSERT_TRUE(p.isOk()) << p.status().message();
  const Fleet after = applyMoves(fleet, p->moves, p->moves.size());
  std::set<std::string> unplaced;
  for (const Unplaced& u : p->unplaced) {
    unplaced.insert(u.tenant);
    EXPECT_FALSE(u.reason.empty());
    const Tenant& t = tenantOf(fleet, u.tenant);
    if (t.pinned) {
      EXPECT_NE(u.reason.find("pinned"), std::string::npos) << u.reason;
    } else if (t.excluded) {
      EXPECT_NE(u.reason.find("excluded"), std::string::npos) << u.reason;
    } else if (t.allowed_regions == std::vector<std::string>{"mars"}) {
      EXPECT_NE(u.reason.find("no other stamp"), std::string::npos) << u.reason;
    } else {
      ADD_FAILURE() << "placeable tenant left: " << u.tenant << ": " << u.reason;
    }
  }
  int on_drained = 0;
  for (const Tenant& t : after.tenants) {
    if (t.stamp != drained) continue;
    ++on_drained;
    EXPECT_TRUE(unplaced.count(t.key)) << t.key << " still on the drained stamp, unexplained";
  }
  EXPECT_EQ(on_drained, static_cast<int>(unplaced.size()));
  EXPECT_GE(unplaced.size(), 2u);
  EXPECT_GT(p->moves.size(), 0u);
  Fleet marked = fleet;
  for (Stamp& s : marked.stamps) s.draining = s.draining || s.name == drained;
  expectConstraints(marked, *p, o);
}

TEST(PlannerDrain, NoRoomIsExplained) {
  Fleet f;
  f.stamps.push_back({"c", "eu", 1000});
  f.stamps.push_back({"a", "eu", 1000});
  f.stamps.push_back({"b", "us", 100000});
  f.tenants.push_back({"resident", "a", 200});
  f.tenants.push_back({"big", "c", 700});
  f.tenants.push_back({"small", "c", 100});
  f.tenants.push_back({"pin", "c", 10, 0, {}, true});
  auto p = planDrain(f, "c", {});
  ASSERT_TRUE(p.isOk());
  ASSERT_EQ(p->moves.size(), 1u);
  EXPECT_EQ(p->moves[0].tenant, "small");
  ASSERT_EQ(p->unplaced.size(), 2u);
  EXPECT_EQ(p->unplaced[0].tenant, "big");
  EXPECT_NE(p->unplaced[0].reason.find("no stamp in region 'eu' with room"), std::string::npos)
      << p->unplaced[0].reason;
  EXPECT_NE(p->unplaced[0].reason.find("a would reach 90.0%"), std::string::npos)
      << p->unplaced[0].reason;
  EXPECT_EQ(p->unplaced[1].tenant, "pin");
  EXPECT_NE(p->unplaced[1].reason.find("pinned"), std::string::npos);
  EXPECT_FALSE(p->converged);
  auto unknown = planDrain(f, "zzz", {});
  EXPECT_FALSE(unknown.isOk());
}

std::string writeTemp(const std::string& text) {
  char path[] = "/tmp/planner-test-XXXXXX";
  const int fd = mkstemp(path);
  if (fd >= 0) close(fd);
  std::ofstream(path) << text;
  return path;
}

TEST(Inventory, PlannerSectionAndFleet) {
  const std::string path = writeTemp(R"(
stamps:
  a: {dsn: "host=127.0.0.1 dbname=x", region: eu, capacity_bytes: 1000}
  b: {dsn: "host=127.0.0.1 dbname=y", region: eu, capacity_bytes: 2000, capacity_tenants: 5}
planner:
  threshold: 0.2
  max_moves: 7
  seed: 3
  tenants:
    "1": {pinned: true}
    "2": {allowed_regions: [eu, us], excluded: true}
)");
  auto cfg = orch::loadConfig(path);  // the stamps loader accepts the planner section
  ASSERT_TRUE(cfg.isOk()) << cfg.status().message();
  auto pc = loadPlannerConfig(path);
  ASSERT_TRUE(pc.isOk()) << pc.status().message();
  EXPECT_DOUBLE_EQ(pc->options.threshold, 0.2);
  EXPECT_EQ(pc->options.max_moves, 7u);
  EXPECT_EQ(pc->options.seed, 3u);
  EXPECT_TRUE(pc->tenants.at("1").pinned);
  EXPECT_TRUE(pc->tenants.at("2").excluded);
  EXPECT_EQ(pc->tenants.at("2").allowed_regions, (std::vector<std::string>{"eu", "us"}));

  // Tenant 3 has rows on both stamps (a leftover of a finished move) and is routed to b: it
  // counts on b with b's size. Tenant 4 has no routing entry: it counts where most rows are.
  std::map<std::string, StampMeasure> m;
  m["a"].tenants["1"] = {100, 10, 0};
  m["a"].tenants["3"] = {500, 50, 0};
  m["b"].tenants["3"] = {450, 45, 0};
  m["a"].tenants["4"] = {10, 1, 0};
  m["b"].tenants["4"] = {20, 2, 5};
  m["b"].tenants["2"] = {30, 3, 0};
  const Fleet f = buildFleet(*cfg, *pc, m, {{"1", "a"}, {"3", "b"}, {"2", "b"}},
                             {{"b", "decommission"}}, {{"4", "b", "a"}});
  ASSERT_EQ(f.stamps.size(), 2u);
  EXPECT_FALSE(f.stamps[0].draining);
  EXPECT_TRUE(f.stamps[1].draining);
  EXPECT_EQ(f.stamps[1].capacity_tenants, 5u);
  std::map<std::string, Tenant> by;
  for (const Tenant& t : f.tenants) by[t.key] = t;
  EXPECT_EQ(by.at("3").stamp, "b");
  EXPECT_EQ(by.at("3").bytes, 450u);
  EXPECT_EQ(by.at("4").stamp, "b");
  EXPECT_EQ(by.at("4").bytes_error, 5u);
  EXPECT_TRUE(by.at("1").pinned);
  EXPECT_TRUE(by.at("2").excluded);
  ASSERT_EQ(f.in_flight.size(), 1u);

  // Bad values are refused naming the file and the key.
  const std::string bad = writeTemp(
      "stamps:\n  a: {dsn: \"host=x\"}\nplanner:\n  tenants:\n    \"9\": {pinned: maybe}\n");
  auto r = loadPlannerConfig(bad);
  ASSERT_FALSE(r.isOk());
  EXPECT_NE(r.status().message().find("planner.tenants.9.pinned"), std::string::npos)
      << r.status().message();
  std::remove(path.c_str());
  std::remove(bad.c_str());
}

TEST(PlanJson, RoundTripsAndIdIsStable) {
  const Fleet fleet = syntheticFleet({.stamps = 30, .tenants = 400});
  PlannerOptions o;
  auto p = planRebalance(fleet, o);
  ASSERT_TRUE(p.isOk());
  const nlohmann::json j = planToJson(*p);
  auto back = planFromJson(nlohmann::json::parse(j.dump()));
  ASSERT_TRUE(back.isOk()) << back.status().message();
  EXPECT_EQ(planToJson(*back).dump(), j.dump());
  EXPECT_EQ(p->id.rfind("plan-", 0), 0u);
  EXPECT_EQ(p->id.size(), 21u);
  // A changed input changes the id.
  Fleet other = fleet;
  other.tenants[0].bytes += 1;
  EXPECT_NE(planId(other, o, PlanKind::kRebalance, ""), p->id);
  EXPECT_FALSE(planFromJson(nlohmann::json::parse(R"({"id":"x"})")).isOk());
}

}  // namespace
}  // namespace stampmover::planner
