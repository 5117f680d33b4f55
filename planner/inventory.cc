// Inventory: see inventory.h. Sizes come from the heap: per tenant, the sum of its rows'
// pg_column_size plus the tuple header and line pointer, exact for small tables and from a
// TABLESAMPLE SYSTEM block sample scaled by the sampled fraction for big ones.
#include "planner/inventory.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace stampmover::planner {

using common::PgConnection;
using common::Result;
using common::Status;

namespace {

// Tuple header (23 bytes, aligned to 24) and the 4-byte line pointer of each heap row.
constexpr uint64_t kRowOverhead = 28;

Status bad(const std::string& file, const std::string& key, const std::string& what) {
  return Status::refused(file + ": " + key + ": " + what);
}

Result<double> number(const YAML::Node& n, const std::string& file, const std::string& key) {
  if (!n.IsScalar()) return bad(file, key, "expected a number");
  try {
    return n.as<double>();
  } catch (const YAML::Exception&) {
    return bad(file, key, "expected a number, got '" + n.Scalar() + "'");
  }
}

Result<bool> boolean(const YAML::Node& n, const std::string& file, const std::string& key) {
  if (!n.IsScalar()) return bad(file, key, "expected true or false");
  try {
    return n.as<bool>();
  } catch (const YAML::Exception&) {
    return bad(file, key, "expected true or false, got '" + n.Scalar() + "'");
  }
}

}  // namespace

Result<PlannerConfig> loadPlannerConfig(const std::string& path) {
  PlannerConfig pc;
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return Status::refused(path + ": " + e.what());
  }
  if (!root.IsMap() || !root["planner"]) return pc;
  const YAML::Node p = root["planner"];
  if (!p.IsMap()) return bad(path, "planner", "expected a mapping");
  PlannerOptions& o = pc.options;
  try {
    for (const auto& kv : p) {
      const std::string k = kv.first.as<std::string>();
      const std::string key = "planner." + k;
      if (k == "threshold") {
        SM_ASSIGN_OR_RETURN(o.threshold, number(kv.second, path, key));
      } else if (k == "max_moves") {
        SM_ASSIGN_OR_RETURN(double v, number(kv.second, path, key));
        if (v < 0 || v != std::floor(v)) return bad(path, key, "expected a whole number >= 0");
        o.max_moves = static_cast<uint32_t>(v);
      } else if (k == "improvement_fraction") {
        SM_ASSIGN_OR_RETURN(o.improvement_fraction, number(kv.second, path, key));
      } else if (k == "evacuation_limit") {
        SM_ASSIGN_OR_RETURN(o.evacuation_limit, number(kv.second, path, key));
      } else if (k == "safety_margin") {
        SM_ASSIGN_OR_RETURN(o.safety_margin, number(kv.second, path, key));
      } else if (k == "max_target_load") {
        SM_ASSIGN_OR_RETURN(o.max_target_load, number(kv.second, path, key));
      } else if (k == "near_equal") {
        SM_ASSIGN_OR_RETURN(o.near_equal, number(kv.second, path, key));
      } else if (k == "cross_region") {
        SM_ASSIGN_OR_RETURN(o.cross_region, boolean(kv.second, path, key));
      } else if (k == "seed") {
        SM_ASSIGN_OR_RETURN(double v, number(kv.second, path, key));
        if (v < 0 || v != std::floor(v)) return bad(path, key, "expected a whole number >= 0");
        o.seed = static_cast<uint64_t>(v);
      } else if (k == "tenants") {
        if (!kv.second.IsMap()) return bad(path, key, "expected a mapping of tenant keys");
        for (const auto& t : kv.second) {
          const std::string tenant = t.first.as<std::string>();
          const std::string tk = key + "." + tenant;
          if (!t.second.IsMap())
            return bad(path, tk, "expected a mapping (pinned, excluded, allowed_regions)");
          TenantConstraint c;
          for (const auto& f : t.second) {
            const std::string fk = f.first.as<std::string>();
            if (fk == "pinned") {
              SM_ASSIGN_OR_RETURN(c.pinned, boolean(f.second, path, tk + "." + fk));
            } else if (fk == "excluded") {
              SM_ASSIGN_OR_RETURN(c.excluded, boolean(f.second, path, tk + "." + fk));
            } else if (fk == "allowed_regions") {
              if (!f.second.IsSequence())
                return bad(path, tk + "." + fk, "expected a list of regions");
              for (const auto& r : f.second) c.allowed_regions.push_back(r.as<std::string>());
            } else {
              return bad(path, tk + "." + fk,
                         "unknown key (expected pinned, excluded, allowed_regions)");
            }
          }
          pc.tenants[tenant] = c;
        }
      } else {
        return bad(path, key,
                   "unknown key (expected threshold, max_moves, improvement_fraction, "
                   "evacuation_limit, safety_margin, max_target_load, near_equal, cross_region, "
                   "seed, tenants)");
      }
    }
  } catch (const YAML::Exception& e) {
    return Status::refused(path + ": planner: " + e.what());
  }
  return pc;
}

Result<StampMeasure> measureStamp(PgConnection& conn, const mover::TenantColumnPolicy& policy,
                                  const MeasureOptions& o) {
  StampMeasure out;
  SM_RETURN_IF_ERROR(conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
  auto body = [&]() -> Status {
    SM_RETURN_IF_ERROR(
        conn.exec("SET LOCAL statement_timeout = " + std::to_string(o.statement_timeout_ms)));
    SM_ASSIGN_OR_RETURN(auto tables, mover::discoverTenantTables(conn, policy));
    struct Acc {
      double bytes = 0, rows = 0, var = 0;
    };
    std::map<std::string, Acc> acc;
    for (const auto& t : tables) {
      ++out.tables;
      SM_ASSIGN_OR_RETURN(
          auto heap, conn.queryValue("SELECT pg_relation_size($1::oid)", {std::to_string(t.oid)}));
      const uint64_t heap_bytes = heap ? std::stoull(*heap) : 0;
      const bool sample = heap_bytes > o.exact_below_bytes;
      double percent = 100;
      std::string from = t.quoted() + " t";
      if (sample) {
        percent = std::clamp(
            100.0 * static_cast<double>(o.sample_bytes) / static_cast<double>(heap_bytes), 0.01,
            100.0);
        char buf[64];
        std::snprintf(buf, sizeof buf, " TABLESAMPLE SYSTEM (%.6f) REPEATABLE (0)", percent);
        from += buf;
        ++out.sampled_tables;
      }
      SM_ASSIGN_OR_RETURN(
          auto r, conn.query("SELECT t." + common::quoteIdent(t.tenant_column) +
                             "::text, count(*), sum(pg_column_size(t.*))::float8 FROM " + from +
                             " WHERE t." + common::quoteIdent(t.tenant_column) +
                             " IS NOT NULL GROUP BY 1"));
      const double scale = 100.0 / percent;
      for (int i = 0; i < common::rowCount(r); ++i) {
        const double n = std::stod(common::cell(r, i, 1));
        const double b = std::stod(common::cell(r, i, 2)) + n * static_cast<double>(kRowOverhead);
        Acc& a = acc[common::cell(r, i, 0)];
        a.rows += n * scale;
        a.bytes += b * scale;
        if (sample) {
          // Rows found in a sample behave roughly like a Poisson count: the relative 95%
          // half-width is 1.96 / sqrt(n). Variances of the tables add up.
          const double half = b * scale * 1.96 / std::sqrt(std::max(n, 1.0));
          a.var += half * half;
        }
      }
    }
    for (const auto& [k, a] : acc) {
      TenantSize s;
      s.bytes = static_cast<uint64_t>(std::llround(a.bytes));
      s.rows = static_cast<uint64_t>(std::llround(a.rows));
      s.bytes_error = static_cast<uint64_t>(std::llround(std::sqrt(a.var)));
      out.tenants[k] = s;
    }
    return Status::ok();
  };
  Status st = body();
  Status end = conn.exec(st ? "COMMIT" : "ROLLBACK");
  if (!st) return st;
  if (!end) return end;
  return out;
}

Fleet buildFleet(const orch::Config& config, const PlannerConfig& planner,
                 const std::map<std::string, StampMeasure>& measures, const Placement& placement,
                 const std::map<std::string, std::string>& draining,
                 const std::vector<MoveInFlight>& in_flight) {
  Fleet f;
  for (const auto& [name, sc] : config.stamps) {
    Stamp s;
    s.name = name;
    s.region = sc.region;
    s.capacity_bytes = sc.capacity_bytes;
    s.capacity_tenants = sc.capacity_tenants;
    s.draining = draining.count(name) > 0;
    f.stamps.push_back(s);
  }
  // Where every tenant is: its routing entry, else the stamp holding most of its bytes.
  std::map<std::string, std::string> where;
  for (const auto& [stamp, m] : measures) {
    for (const auto& [tenant, size] : m.tenants) {
      auto it = where.find(tenant);
      if (it == where.end() || size.bytes > measures.at(it->second).tenants.at(tenant).bytes) {
        where[tenant] = stamp;
      }
    }
  }
  for (const auto& [tenant, stamp] : placement) {
    if (config.stamps.count(stamp)) where[tenant] = stamp;
  }
  for (const auto& [tenant, stamp] : where) {
    Tenant t;
    t.key = tenant;
    t.stamp = stamp;
    auto m = measures.find(stamp);
    if (m != measures.end()) {
      auto s = m->second.tenants.find(tenant);
      if (s != m->second.tenants.end()) {
        t.bytes = s->second.bytes;
        t.bytes_error = s->second.bytes_error;
      }
    }
    auto c = planner.tenants.find(tenant);
    if (c != planner.tenants.end()) {
      t.pinned = c->second.pinned;
      t.excluded = c->second.excluded;
      t.allowed_regions = c->second.allowed_regions;
    }
    f.tenants.push_back(std::move(t));
  }
  for (const MoveInFlight& m : in_flight) {
    if (where.count(m.tenant) && config.stamps.count(m.from) && config.stamps.count(m.to)) {
      f.in_flight.push_back(m);
    }
  }
  return f;
}

}  // namespace stampmover::planner
