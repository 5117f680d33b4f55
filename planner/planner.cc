// Rebalance and drain planning: see planner.h for the definitions (utilization, groups, band)
// and the guarantees. Everything here is a pure function of its inputs; the only randomness is a
// splitmix64 stream seeded by the options (std:: distributions differ between standard
// libraries, and a plan must be the same wherever it is computed).
#include "planner/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>

#include "planner/plan_json.h"

namespace stampmover::planner {

using common::Result;
using common::Status;

namespace {

constexpr double kEps = 1e-12;

// splitmix64: a tiny, fully specified generator (same numbers on every platform).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) without modulo bias (rejection), n > 0.
  size_t below(size_t n) {
    const uint64_t limit = std::numeric_limits<uint64_t>::max() -
                           std::numeric_limits<uint64_t>::max() % n;
    uint64_t v;
    do {
      v = next();
    } while (v >= limit);
    return static_cast<size_t>(v % n);
  }

 private:
  uint64_t state_;
};

std::string pct(double u) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", u * 100.0);
  return buf;
}

std::string pts(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f pts", d * 100.0);
  return buf;
}

struct SState {
  const Stamp* stamp = nullptr;
  double cap = 1;                       // capacity used for utilization
  double limit = std::numeric_limits<double>::infinity();  // target bytes limit
  uint64_t bytes = 0;
  uint32_t tenants = 0;
  int group = -1;                       // -1: draining (takes nothing, no mean)
  std::vector<size_t> members;          // tenant indices placed here (projected)
  double util() const { return static_cast<double>(bytes) / cap; }
};

struct TState {
  const Tenant* tenant = nullptr;
  size_t stamp = 0;                     // projected placement
  std::string in_flight_to;             // non-empty: a move is in flight (to this stamp)
  bool moved = false;                   // already moved by this plan
};

struct State {
  std::vector<SState> stamps;           // sorted by name
  std::vector<TState> tenants;          // sorted by key
  std::map<std::string, size_t> stamp_index;
  std::vector<double> group_mean;
  std::vector<std::string> group_name;  // region, or "" for the whole fleet
};

Status validate(const Fleet& fleet, const PlannerOptions& o) {
  if (!(o.threshold > 0) || o.threshold > 10) {
    return Status::refused("threshold must be > 0 (a fraction of the mean, e.g. 0.10)");
  }
  if (!(o.evacuation_limit > 0) || o.evacuation_limit > 1) {
    return Status::refused("evacuation limit must be in (0, 1]");
  }
  if (o.safety_margin < 0 || o.safety_margin >= o.evacuation_limit) {
    return Status::refused("safety margin must be in [0, evacuation limit)");
  }
  if (o.improvement_fraction < 0 || o.improvement_fraction > 1) {
    return Status::refused("improvement fraction must be in [0, 1]");
  }
  if (o.near_equal < 0) return Status::refused("near_equal must be >= 0");
  std::set<std::string> names;
  for (const Stamp& s : fleet.stamps) {
    if (s.name.empty()) return Status::refused("a stamp has no name");
    if (!names.insert(s.name).second) return Status::refused("stamp '" + s.name + "' listed twice");
    if (s.load && (*s.load < 0 || !std::isfinite(*s.load))) {
      return Status::refused("stamp '" + s.name + "': load must be a finite number >= 0");
    }
  }
  std::set<std::string> keys;
  for (const Tenant& t : fleet.tenants) {
    if (!keys.insert(t.key).second) return Status::refused("tenant '" + t.key + "' listed twice");
    if (!names.count(t.stamp)) {
      return Status::refused("tenant '" + t.key + "' is on unknown stamp '" + t.stamp + "'");
    }
  }
  std::set<std::string> moving;
  for (const MoveInFlight& m : fleet.in_flight) {
    if (!keys.count(m.tenant)) {
      return Status::refused("move in flight of unknown tenant '" + m.tenant + "'");
    }
    if (!names.count(m.from) || !names.count(m.to)) {
      return Status::refused("move in flight of tenant '" + m.tenant + "' names an unknown stamp");
    }
    if (!moving.insert(m.tenant).second) {
      return Status::refused("tenant '" + m.tenant + "' has two moves in flight");
    }
  }
  return Status::ok();
}

// Builds the projected state. `drain` (may be empty) is treated as draining.
Result<State> buildState(const Fleet& fleet, const PlannerOptions& o, const std::string& drain) {
  SM_RETURN_IF_ERROR(validate(fleet, o));
  State st;
  std::vector<const Stamp*> stamps;
  for (const Stamp& s : fleet.stamps) stamps.push_back(&s);
  std::sort(stamps.begin(), stamps.end(),
            [](const Stamp* a, const Stamp* b) { return a->name < b->name; });
  double cap_sum = 0;
  size_t cap_n = 0;
  for (const Stamp* s : stamps) {
    if (s->capacity_bytes > 0) {
      cap_sum += static_cast<double>(s->capacity_bytes);
      ++cap_n;
    }
  }
  double total_bytes = 0;
  for (const Tenant& t : fleet.tenants) total_bytes += static_cast<double>(t.bytes);
  const double fallback_cap =
      cap_n > 0 ? cap_sum / static_cast<double>(cap_n) : std::max(total_bytes, 1.0);
  std::map<std::string, int> groups;
  for (const Stamp* s : stamps) {
    SState ss;
    ss.stamp = s;
    ss.cap = s->capacity_bytes > 0 ? static_cast<double>(s->capacity_bytes) : fallback_cap;
    if (s->capacity_bytes > 0) {
      ss.limit = static_cast<double>(s->capacity_bytes) * (o.evacuation_limit - o.safety_margin);
    }
    const bool draining = s->draining || s->name == drain;
    if (!draining) {
      const std::string g = o.cross_region ? "" : s->region;
      auto [it, added] = groups.emplace(g, static_cast<int>(st.group_name.size()));
      if (added) st.group_name.push_back(g);
      ss.group = it->second;
    }
    st.stamp_index[s->name] = st.stamps.size();
    st.stamps.push_back(ss);
  }
  std::map<std::string, std::string> flight;
  for (const MoveInFlight& m : fleet.in_flight) flight[m.tenant] = m.to;
  std::vector<const Tenant*> tenants;
  for (const Tenant& t : fleet.tenants) tenants.push_back(&t);
  std::sort(tenants.begin(), tenants.end(),
            [](const Tenant* a, const Tenant* b) { return a->key < b->key; });
  for (const Tenant* t : tenants) {
    TState ts;
    ts.tenant = t;
    auto f = flight.find(t->key);
    if (f != flight.end()) ts.in_flight_to = f->second;
    ts.stamp = st.stamp_index.at(f != flight.end() ? f->second : t->stamp);
    SState& ss = st.stamps[ts.stamp];
    ss.bytes += t->bytes;
    ss.tenants += 1;
    ss.members.push_back(st.tenants.size());
    st.tenants.push_back(ts);
  }
  std::vector<double> gb(st.group_name.size(), 0), gc(st.group_name.size(), 0);
  for (const SState& ss : st.stamps) {
    if (ss.group < 0) continue;
    gb[ss.group] += static_cast<double>(ss.bytes);
    gc[ss.group] += ss.cap;
  }
  for (size_t g = 0; g < gb.size(); ++g) st.group_mean.push_back(gc[g] > 0 ? gb[g] / gc[g] : 0);
  return st;
}

double meanOf(const State& st, const SState& s) {
  return s.group >= 0 ? st.group_mean[s.group] : 0;
}

double deviation(const State& st, const SState& s) {
  const double m = meanOf(st, s);
  return m > 0 ? std::fabs(s.util() - m) / m : 0;
}

bool inBand(const State& st, const SState& s, double threshold) {
  if (s.group < 0) return true;
  const double m = meanOf(st, s);
  return std::fabs(s.util() - m) <= threshold * m + kEps;
}

double maxDeviation(const State& st) {
  double d = 0;
  for (const SState& s : st.stamps) {
    if (s.group >= 0) d = std::max(d, deviation(st, s));
  }
  return d;
}

// Why tenant `t` may not go from `src` to `dst` ("" when it may), hard filters only.
std::string targetRefusal(const TState& t, const SState& src, const SState& dst,
                          const PlannerOptions& o) {
  const Stamp& d = *dst.stamp;
  if (dst.group < 0) return d.name + " is draining";
  const auto& allowed = t.tenant->allowed_regions;
  if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), d.region) == allowed.end()) {
    return d.name + " is in region '" + d.region + "', not one the tenant allows";
  }
  if (!o.cross_region && d.region != src.stamp->region) {
    return d.name + " is in another region ('" + d.region + "')";
  }
  if (d.load && *d.load >= o.max_target_load) {
    return d.name + " is busy (load " + pct(*d.load) + " >= " + pct(o.max_target_load) + ")";
  }
  if (d.capacity_tenants > 0 && dst.tenants + 1 > d.capacity_tenants) {
    return d.name + " holds its maximum of " + std::to_string(d.capacity_tenants) + " tenants";
  }
  const double after = static_cast<double>(dst.bytes + t.tenant->bytes);
  if (after > dst.limit + 0.5) {
    return d.name + " would reach " + pct(after / dst.cap) + " > limit " +
           pct(o.evacuation_limit - o.safety_margin);
  }
  return "";
}

// Why the tenant may not be planned at all ("" when it may).
std::string tenantRefusal(const TState& t, const State& st) {
  if (t.tenant->pinned) return "pinned to " + t.tenant->stamp;
  if (t.tenant->excluded) return "excluded from planning";
  if (!t.in_flight_to.empty()) {
    return "a move to " + t.in_flight_to + " is already in flight";
  }
  if (t.moved) return "already moved by this plan";
  (void)st;
  return "";
}

void apply(State& st, size_t ti, size_t to) {
  TState& t = st.tenants[ti];
  SState& a = st.stamps[t.stamp];
  SState& b = st.stamps[to];
  a.bytes -= t.tenant->bytes;
  a.tenants -= 1;
  a.members.erase(std::find(a.members.begin(), a.members.end(), ti));
  b.bytes += t.tenant->bytes;
  b.tenants += 1;
  b.members.push_back(ti);
  t.stamp = to;
  t.moved = true;
}

std::vector<StampSummary> summarize(const State& st) {
  std::vector<StampSummary> out;
  for (const SState& s : st.stamps) {
    StampSummary sum;
    sum.name = s.stamp->name;
    sum.region = s.stamp->region;
    sum.capacity_bytes = s.stamp->capacity_bytes;
    sum.draining = s.group < 0;
    sum.bytes_before = sum.bytes_after = s.bytes;
    sum.tenants_before = sum.tenants_after = s.tenants;
    sum.util_before = sum.util_after = s.util();
    sum.mean = meanOf(st, s);
    out.push_back(sum);
  }
  return out;
}

void finishSummary(const State& st, std::vector<StampSummary>& sums) {
  for (size_t i = 0; i < st.stamps.size(); ++i) {
    sums[i].bytes_after = st.stamps[i].bytes;
    sums[i].tenants_after = st.stamps[i].tenants;
    sums[i].util_after = st.stamps[i].util();
  }
}

// Orders candidate targets (indices into st.stamps) so that the first is the one to try first:
// among those within near_equal of the lowest `score`, two drawn at random and the lower kept
// ("power of two choices"); then the rest by score, then name.
std::vector<size_t> orderTargets(std::vector<std::pair<double, size_t>> scored, double near_equal,
                                 Rng& rng, size_t* band_size) {
  std::sort(scored.begin(), scored.end());
  std::vector<size_t> out;
  *band_size = 0;
  if (scored.empty()) return out;
  size_t band = 0;
  while (band < scored.size() && scored[band].first <= scored[0].first + near_equal + kEps) ++band;
  *band_size = band;
  size_t first = 0;
  if (band >= 2) {
    size_t i = rng.below(band);
    size_t j = rng.below(band - 1);
    if (j >= i) ++j;
    first = std::min(i, j);  // sorted by (score, index): the smaller position is the better one
  }
  out.push_back(scored[first].second);
  for (size_t k = 0; k < scored.size(); ++k) {
    if (k != first) out.push_back(scored[k].second);
  }
  return out;
}

struct Candidate {
  size_t tenant = 0;
  double gap_after = 0;
  double shift = 0;
};

// The best tenant of `src` to move to `dst`: the one whose size is closest to the ideal amount
// (what brings the source down to the mean or the target up to it, whichever is less), among
// those that pass the hard filters and improve the pair's gap by enough.
std::optional<Candidate> bestTenant(const State& st, const SState& src, const SState& dst,
                                    const PlannerOptions& o) {
  const double m = meanOf(st, src);
  const double us = src.util(), ut = dst.util();
  const double gap = us - ut;
  if (gap <= kEps) return std::nullopt;
  const double ideal = std::max(0.0, std::min((us - m) * src.cap, (m - ut) * dst.cap));
  std::optional<Candidate> best;
  double best_dist = 0;
  uint64_t best_bytes = 0;
  for (size_t ti : src.members) {
    const TState& t = st.tenants[ti];
    if (!tenantRefusal(t, st).empty()) continue;
    const uint64_t bytes = t.tenant->bytes;
    if (bytes == 0) continue;  // moving nothing changes nothing
    const double x = static_cast<double>(bytes);
    const double us2 = us - x / src.cap, ut2 = ut + x / dst.cap;
    if (ut2 > us + kEps || us2 < ut - kEps) continue;  // the pair must not cross
    const double shift = x / src.cap + x / dst.cap;
    const double gap_after = std::fabs(us2 - ut2);
    const double gain = gap - gap_after;
    if (gain <= kEps || gain + kEps < o.improvement_fraction * shift) continue;
    if (!targetRefusal(t, src, dst, o).empty()) continue;
    const double dist = std::fabs(x - ideal);
    if (!best || dist < best_dist || (dist == best_dist && bytes < best_bytes)) {
      best = Candidate{ti, gap_after, shift};
      best_dist = dist;
      best_bytes = bytes;
    }
  }
  return best;
}

}  // namespace

const char* planKindName(PlanKind kind) {
  return kind == PlanKind::kDrain ? "drain" : "rebalance";
}

std::string formatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1000 && u < 5) {
    v /= 1000;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  }
  return buf;
}

Result<Plan> planRebalance(const Fleet& fleet, const PlannerOptions& o) {
  SM_ASSIGN_OR_RETURN(State st, buildState(fleet, o, ""));
  Plan plan;
  plan.kind = PlanKind::kRebalance;
  plan.options = o;
  plan.id = planId(fleet, o, PlanKind::kRebalance, "");
  plan.stamps = summarize(st);
  plan.max_deviation_before = maxDeviation(st);
  Rng rng(o.seed);

  while (true) {
    size_t outside = 0;
    for (const SState& s : st.stamps) outside += inBand(st, s, o.threshold) ? 0 : 1;
    if (outside == 0) {
      plan.converged = true;
      plan.stop_reason = "every stamp is within ±" + pct(o.threshold) + " of its group's mean";
      break;
    }
    if (plan.moves.size() >= o.max_moves) {
      plan.stop_reason = "max moves (" + std::to_string(o.max_moves) + ") reached with " +
                         std::to_string(outside) + " stamp(s) outside the band";
      break;
    }
    // Sources: stamps above their mean, those over the band first, each by relative deviation.
    std::vector<size_t> sources;
    for (size_t i = 0; i < st.stamps.size(); ++i) {
      const SState& s = st.stamps[i];
      if (s.group >= 0 && s.util() > meanOf(st, s) + kEps) sources.push_back(i);
    }
    std::sort(sources.begin(), sources.end(), [&](size_t a, size_t b) {
      const bool oa = !inBand(st, st.stamps[a], o.threshold);
      const bool ob = !inBand(st, st.stamps[b], o.threshold);
      if (oa != ob) return oa;
      const double da = deviation(st, st.stamps[a]), db = deviation(st, st.stamps[b]);
      if (da != db) return da > db;
      return a < b;
    });
    bool found = false;
    for (size_t si : sources) {
      const SState& src = st.stamps[si];
      const double m = meanOf(st, src);
      const bool over = !inBand(st, src, o.threshold);
      // Targets: below the mean in the source's group; when the source is inside the band only
      // stamps under the band (the move then exists for the target's sake).
      std::vector<std::pair<double, size_t>> scored;
      for (size_t ti = 0; ti < st.stamps.size(); ++ti) {
        const SState& dst = st.stamps[ti];
        if (ti == si || dst.group != src.group || dst.util() >= m - kEps) continue;
        if (!over && inBand(st, dst, o.threshold)) continue;
        scored.emplace_back(dst.util(), ti);
      }
      size_t band = 0;
      const std::vector<size_t> order = orderTargets(scored, o.near_equal, rng, &band);
      for (size_t k = 0; k < order.size(); ++k) {
        const size_t di = order[k];
        SState& dst = st.stamps[di];
        auto cand = bestTenant(st, src, dst, o);
        if (!cand) continue;
        const TState& t = st.tenants[cand->tenant];
        Move mv;
        mv.seq = static_cast<uint32_t>(plan.moves.size() + 1);
        mv.tenant = t.tenant->key;
        mv.from = src.stamp->name;
        mv.to = dst.stamp->name;
        mv.bytes = t.tenant->bytes;
        mv.mean = m;
        mv.from_before = src.util();
        mv.to_before = dst.util();
        const double gap = mv.from_before - mv.to_before;
        apply(st, cand->tenant, di);
        mv.from_after = st.stamps[si].util();
        mv.to_after = st.stamps[di].util();
        const std::string group =
            st.group_name[src.group].empty() ? "the fleet" : "region '" + st.group_name[src.group] + "'";
        std::string why = mv.from + " at " + pct(mv.from_before) +
                          (over ? " is over" : " is above") + " the mean " + pct(m) + " of " +
                          group + " (band ±" + pct(o.threshold) + " of it); " + mv.to + " at " +
                          pct(mv.to_before) + " is ";
        if (k == 0 && band >= 2) {
          why += "the better of two random picks among " + std::to_string(band) +
                 " near-equal least utilized targets";
        } else if (k == 0) {
          why += "the least utilized eligible target";
        } else {
          why += "the next eligible target (" + std::to_string(k) + " before it had no fitting tenant)";
        }
        why += "; moving " + formatBytes(mv.bytes) + ": " + mv.from + " " + pct(mv.from_before) +
               " -> " + pct(mv.from_after) + ", " + mv.to + " " + pct(mv.to_before) + " -> " +
               pct(mv.to_after) + "; their gap " + pts(gap) + " -> " + pts(cand->gap_after) +
               " (gain " + pts(gap - cand->gap_after) + " >= " + pct(o.improvement_fraction) +
               " of the " + pts(cand->shift) + " moved)";
        mv.reason = why;
        plan.moves.push_back(std::move(mv));
        found = true;
        break;
      }
      if (found) break;
    }
    if (!found) {
      plan.stop_reason = std::to_string(outside) +
                         " stamp(s) outside the band, but no move passes the constraints and "
                         "improves balance by enough (pinned, region, capacity or tenant sizes)";
      break;
    }
  }
  finishSummary(st, plan.stamps);
  plan.max_deviation_after = maxDeviation(st);
  return plan;
}

Result<Plan> planDrain(const Fleet& fleet, const std::string& stamp, const PlannerOptions& o) {
  bool known = false;
  for (const Stamp& s : fleet.stamps) known = known || s.name == stamp;
  if (!known) {
    SM_RETURN_IF_ERROR(validate(fleet, o));
    return Status::refused("unknown stamp '" + stamp + "' to drain");
  }
  SM_ASSIGN_OR_RETURN(State st, buildState(fleet, o, stamp));
  Plan plan;
  plan.kind = PlanKind::kDrain;
  plan.drain_stamp = stamp;
  plan.options = o;
  plan.id = planId(fleet, o, PlanKind::kDrain, stamp);
  plan.stamps = summarize(st);
  plan.max_deviation_before = maxDeviation(st);
  Rng rng(o.seed);

  const size_t di = st.stamp_index.at(stamp);
  std::vector<size_t> order = st.stamps[di].members;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const uint64_t ba = st.tenants[a].tenant->bytes, bb = st.tenants[b].tenant->bytes;
    return ba != bb ? ba > bb : a < b;
  });
  size_t already_moving_away = 0;
  for (const TState& t : st.tenants) {
    if (!t.in_flight_to.empty() && t.tenant->stamp == stamp && t.in_flight_to != stamp) {
      ++already_moving_away;
    }
  }
  for (size_t ti : order) {
    const TState& t = st.tenants[ti];
    const SState& src = st.stamps[di];
    Unplaced un{t.tenant->key, stamp, t.tenant->bytes, ""};
    if (std::string r = tenantRefusal(t, st); !r.empty()) {
      if (!t.in_flight_to.empty()) r += " (into the stamp being drained: cancel it, then drain again)";
      un.reason = r;
      plan.unplaced.push_back(un);
      continue;
    }
    std::vector<std::pair<double, size_t>> scored;
    std::map<std::string, size_t> refusals;  // reason -> count, for the explanation
    std::vector<std::string> examples;
    for (size_t k = 0; k < st.stamps.size(); ++k) {
      if (k == di) continue;
      const SState& dst = st.stamps[k];
      std::string r = targetRefusal(t, src, dst, o);
      if (r.empty()) {
        scored.emplace_back(static_cast<double>(dst.bytes + t.tenant->bytes) / dst.cap, k);
      } else if (examples.size() < 3) {
        examples.push_back(r);
      }
    }
    if (scored.empty()) {
      const auto& allowed = t.tenant->allowed_regions;
      std::string where;
      if (!o.cross_region) {
        where = "region '" + src.stamp->region + "'";
      } else if (!allowed.empty()) {
        where = "its allowed regions";
      } else {
        where = "the fleet";
      }
      // Which filter emptied the list: region first, then room.
      bool any_in_region = false;
      for (size_t k = 0; k < st.stamps.size(); ++k) {
        if (k == di) continue;
        const Stamp& d = *st.stamps[k].stamp;
        const bool region_ok =
            (allowed.empty() || std::find(allowed.begin(), allowed.end(), d.region) != allowed.end()) &&
            (o.cross_region || d.region == src.stamp->region);
        any_in_region = any_in_region || region_ok;
      }
      if (!any_in_region) {
        un.reason = "no other stamp in " + where;
      } else {
        un.reason = "no stamp in " + where + " with room for " + formatBytes(t.tenant->bytes);
        if (!examples.empty()) {
          un.reason += " (";
          for (size_t e = 0; e < examples.size(); ++e) un.reason += (e ? "; " : "") + examples[e];
          un.reason += ")";
        }
      }
      plan.unplaced.push_back(un);
      continue;
    }
    size_t band = 0;
    const std::vector<size_t> targets = orderTargets(scored, o.near_equal, rng, &band);
    const size_t to = targets.front();
    Move mv;
    mv.seq = static_cast<uint32_t>(plan.moves.size() + 1);
    mv.tenant = t.tenant->key;
    mv.from = stamp;
    mv.to = st.stamps[to].stamp->name;
    mv.bytes = t.tenant->bytes;
    mv.mean = meanOf(st, st.stamps[to]);
    mv.from_before = src.util();
    mv.to_before = st.stamps[to].util();
    apply(st, ti, to);
    mv.from_after = st.stamps[di].util();
    mv.to_after = st.stamps[to].util();
    mv.reason = "drain " + stamp + ": " + mv.to + " has the lowest utilization after the move" +
                (band >= 2 ? " (better of two random picks among " + std::to_string(band) +
                                 " near-equal)"
                           : "") +
                " of " + std::to_string(scored.size()) + " eligible stamp(s); moving " +
                formatBytes(mv.bytes) + ": " + stamp + " " + pct(mv.from_before) + " -> " +
                pct(mv.from_after) + ", " + mv.to + " " + pct(mv.to_before) + " -> " +
                pct(mv.to_after);
    if (st.stamps[to].stamp->capacity_bytes > 0) {
      mv.reason += " (limit " + pct(o.evacuation_limit - o.safety_margin) + ")";
    }
    plan.moves.push_back(std::move(mv));
  }
  finishSummary(st, plan.stamps);
  plan.max_deviation_after = maxDeviation(st);
  plan.converged = plan.unplaced.empty();
  plan.stop_reason =
      plan.unplaced.empty()
          ? "every tenant of " + stamp + " is placed"
          : std::to_string(plan.unplaced.size()) + " tenant(s) of " + stamp + " cannot be placed";
  if (already_moving_away > 0) {
    plan.stop_reason += "; " + std::to_string(already_moving_away) +
                        " already moving away (left to their moves)";
  }
  return plan;
}

Fleet applyMoves(const Fleet& fleet, const std::vector<Move>& moves, size_t count) {
  Fleet out = fleet;
  std::map<std::string, Tenant*> by_key;
  for (Tenant& t : out.tenants) by_key[t.key] = &t;
  for (const MoveInFlight& m : out.in_flight) {
    auto it = by_key.find(m.tenant);
    if (it != by_key.end()) it->second->stamp = m.to;
  }
  out.in_flight.clear();
  for (size_t i = 0; i < count && i < moves.size(); ++i) {
    auto it = by_key.find(moves[i].tenant);
    if (it != by_key.end()) it->second->stamp = moves[i].to;
  }
  return out;
}

}  // namespace stampmover::planner
