// JSON of plans and fleets, and the plan id: see plan_json.h. nlohmann::json objects keep keys
// sorted (std::map), so dump() of the canonical form is stable.
#include "planner/plan_json.h"

#include <algorithm>
#include <cstdio>

namespace stampmover::planner {

using common::Result;
using common::Status;
using nlohmann::json;

json fleetToJson(const Fleet& fleet) {
  std::vector<const Stamp*> stamps;
  for (const Stamp& s : fleet.stamps) stamps.push_back(&s);
  std::sort(stamps.begin(), stamps.end(),
            [](const Stamp* a, const Stamp* b) { return a->name < b->name; });
  std::vector<const Tenant*> tenants;
  for (const Tenant& t : fleet.tenants) tenants.push_back(&t);
  std::sort(tenants.begin(), tenants.end(),
            [](const Tenant* a, const Tenant* b) { return a->key < b->key; });
  std::vector<const MoveInFlight*> flight;
  for (const MoveInFlight& m : fleet.in_flight) flight.push_back(&m);
  std::sort(flight.begin(), flight.end(),
            [](const MoveInFlight* a, const MoveInFlight* b) { return a->tenant < b->tenant; });
  json j;
  j["stamps"] = json::array();
  for (const Stamp* s : stamps) {
    json js = {{"name", s->name},
               {"region", s->region},
               {"capacity_bytes", s->capacity_bytes},
               {"capacity_tenants", s->capacity_tenants},
               {"draining", s->draining}};
    js["load"] = s->load ? json(*s->load) : json(nullptr);
    j["stamps"].push_back(js);
  }
  j["tenants"] = json::array();
  for (const Tenant* t : tenants) {
    std::vector<std::string> regions = t->allowed_regions;
    std::sort(regions.begin(), regions.end());
    // bytes_error is measurement metadata, not a planning input: left out of the id's input so
    // the same sizes name the same plan.
    j["tenants"].push_back({{"key", t->key},
                            {"stamp", t->stamp},
                            {"bytes", t->bytes},
                            {"allowed_regions", regions},
                            {"pinned", t->pinned},
                            {"excluded", t->excluded}});
  }
  j["in_flight"] = json::array();
  for (const MoveInFlight* m : flight) {
    j["in_flight"].push_back({{"tenant", m->tenant}, {"from", m->from}, {"to", m->to}});
  }
  return j;
}

json optionsToJson(const PlannerOptions& o) {
  return {{"threshold", o.threshold},
          {"max_moves", o.max_moves},
          {"seed", o.seed},
          {"improvement_fraction", o.improvement_fraction},
          {"evacuation_limit", o.evacuation_limit},
          {"safety_margin", o.safety_margin},
          {"max_target_load", o.max_target_load},
          {"near_equal", o.near_equal},
          {"cross_region", o.cross_region}};
}

std::string planId(const Fleet& fleet, const PlannerOptions& options, PlanKind kind,
                   const std::string& drain_stamp) {
  json j = {{"kind", planKindName(kind)},
            {"drain", drain_stamp},
            {"options", optionsToJson(options)},
            {"fleet", fleetToJson(fleet)},
            {"version", 1}};
  const std::string text = j.dump();
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return std::string("plan-") + buf;
}

json planToJson(const Plan& p) {
  json j;
  j["id"] = p.id;
  j["kind"] = planKindName(p.kind);
  j["drain_stamp"] = p.drain_stamp;
  j["options"] = optionsToJson(p.options);
  j["converged"] = p.converged;
  j["stop_reason"] = p.stop_reason;
  j["max_deviation_before"] = p.max_deviation_before;
  j["max_deviation_after"] = p.max_deviation_after;
  j["moves"] = json::array();
  for (const Move& m : p.moves) {
    j["moves"].push_back({{"seq", m.seq},
                          {"tenant", m.tenant},
                          {"from", m.from},
                          {"to", m.to},
                          {"bytes", m.bytes},
                          {"from_before", m.from_before},
                          {"from_after", m.from_after},
                          {"to_before", m.to_before},
                          {"to_after", m.to_after},
                          {"mean", m.mean},
                          {"reason", m.reason}});
  }
  j["unplaced"] = json::array();
  for (const Unplaced& u : p.unplaced) {
    j["unplaced"].push_back(
        {{"tenant", u.tenant}, {"stamp", u.stamp}, {"bytes", u.bytes}, {"reason", u.reason}});
  }
  j["stamps"] = json::array();
  for (const StampSummary& s : p.stamps) {
    j["stamps"].push_back({{"name", s.name},
                           {"region", s.region},
                           {"capacity_bytes", s.capacity_bytes},
                           {"draining", s.draining},
                           {"bytes_before", s.bytes_before},
                           {"bytes_after", s.bytes_after},
                           {"tenants_before", s.tenants_before},
                           {"tenants_after", s.tenants_after},
                           {"util_before", s.util_before},
                           {"util_after", s.util_after},
                           {"mean", s.mean}});
  }
  return j;
}

Result<Plan> planFromJson(const json& j) {
  try {
    Plan p;
    p.id = j.at("id").get<std::string>();
    const std::string kind = j.at("kind").get<std::string>();
    if (kind != "drain" && kind != "rebalance") {
      return Status::refused("plan: kind must be rebalance or drain, got '" + kind + "'");
    }
    p.kind = kind == "drain" ? PlanKind::kDrain : PlanKind::kRebalance;
    p.drain_stamp = j.at("drain_stamp").get<std::string>();
    const json& o = j.at("options");
    p.options.threshold = o.at("threshold").get<double>();
    p.options.max_moves = o.at("max_moves").get<uint32_t>();
    p.options.seed = o.at("seed").get<uint64_t>();
    p.options.improvement_fraction = o.at("improvement_fraction").get<double>();
    p.options.evacuation_limit = o.at("evacuation_limit").get<double>();
    p.options.safety_margin = o.at("safety_margin").get<double>();
    p.options.max_target_load = o.at("max_target_load").get<double>();
    p.options.near_equal = o.at("near_equal").get<double>();
    p.options.cross_region = o.at("cross_region").get<bool>();
    p.converged = j.at("converged").get<bool>();
    p.stop_reason = j.at("stop_reason").get<std::string>();
    p.max_deviation_before = j.at("max_deviation_before").get<double>();
    p.max_deviation_after = j.at("max_deviation_after").get<double>();
    for (const json& m : j.at("moves")) {
      Move mv;
      mv.seq = m.at("seq").get<uint32_t>();
      mv.tenant = m.at("tenant").get<std::string>();
      mv.from = m.at("from").get<std::string>();
      mv.to = m.at("to").get<std::string>();
      mv.bytes = m.at("bytes").get<uint64_t>();
      mv.from_before = m.at("from_before").get<double>();
      mv.from_after = m.at("from_after").get<double>();
      mv.to_before = m.at("to_before").get<double>();
      mv.to_after = m.at("to_after").get<double>();
      mv.mean = m.at("mean").get<double>();
      mv.reason = m.at("reason").get<std::string>();
      p.moves.push_back(std::move(mv));
    }
    for (const json& u : j.at("unplaced")) {
      p.unplaced.push_back({u.at("tenant").get<std::string>(), u.at("stamp").get<std::string>(),
                            u.at("bytes").get<uint64_t>(), u.at("reason").get<std::string>()});
    }
    for (const json& s : j.at("stamps")) {
      StampSummary ss;
      ss.name = s.at("name").get<std::string>();
      ss.region = s.at("region").get<std::string>();
      ss.capacity_bytes = s.at("capacity_bytes").get<uint64_t>();
      ss.draining = s.at("draining").get<bool>();
      ss.bytes_before = s.at("bytes_before").get<uint64_t>();
      ss.bytes_after = s.at("bytes_after").get<uint64_t>();
      ss.tenants_before = s.at("tenants_before").get<uint32_t>();
      ss.tenants_after = s.at("tenants_after").get<uint32_t>();
      ss.util_before = s.at("util_before").get<double>();
      ss.util_after = s.at("util_after").get<double>();
      ss.mean = s.at("mean").get<double>();
      p.stamps.push_back(std::move(ss));
    }
    return p;
  } catch (const json::exception& e) {
    return Status::refused(std::string("plan: ") + e.what());
  }
}

}  // namespace stampmover::planner
