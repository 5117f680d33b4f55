// `stampmover routes`: prints the routing directory of the control plane (every tenant, or one)
// as an aligned table: tenant, stamp, epoch, state, shadow stamp, last change. Read-only: it
// never creates or upgrades the directory.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "app/commands.h"
#include "common/pg.h"
#include "orchestrator/config.h"
#include "routing/routing_directory.h"

namespace {

using stampmover::common::Result;
using stampmover::common::Status;
namespace routing = stampmover::routing;
namespace orch = stampmover::orch;

struct ControlPlane {
  std::string dsn;    // may hold a password: libpq only
  std::string label;  // for messages
};

Result<ControlPlane> controlPlane(const RoutesArgs& a) {
  if (!a.control_plane.empty() && !a.control_plane_dsn.empty()) {
    return Status::refused("give either --control-plane or --control-plane-dsn, not both");
  }
  if (!a.control_plane_dsn.empty()) {
    return ControlPlane{
        a.control_plane_dsn,
        "control plane (" + stampmover::common::redactDsn(a.control_plane_dsn) + ")"};
  }
  if (a.control_plane.empty()) {
    return Status::refused(
        "no control plane: pass --control-plane-dsn '<libpq dsn>' (or "
        "$STAMPMOVER_CONTROL_PLANE_DSN), or --control-plane <stamp> with --config");
  }
  if (a.config_path.empty()) {
    return Status::refused("--control-plane " + a.control_plane +
                           " needs a stamps file: pass --config stamps.yaml (or set "
                           "STAMPMOVER_CONFIG)");
  }
  SM_ASSIGN_OR_RETURN(orch::Config cfg, orch::loadConfig(a.config_path));
  SM_ASSIGN_OR_RETURN(std::string dsn, orch::resolveDsn(cfg, a.control_plane));
  return ControlPlane{std::move(dsn), "control plane stamp '" + a.control_plane + "'"};
}

void printTable(const std::vector<routing::RouteEntry>& entries) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"TENANT", "STAMP", "EPOCH", "STATE", "SHADOW", "UPDATED_AT"});
  for (const auto& e : entries) {
    rows.push_back({e.tenant, e.stamp, std::to_string(e.epoch), routing::routeStateName(e.state),
                    e.shadow_stamp.value_or("-"), e.updated_at});
  }
  std::vector<size_t> width(rows.front().size(), 0);
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

}  // namespace

Status runRoutes(const RoutesArgs& args) {
  SM_ASSIGN_OR_RETURN(ControlPlane cp, controlPlane(args));
  routing::PgRoutingDirectory directory(cp.dsn, {.label = cp.label});
  std::vector<routing::RouteEntry> entries;
  if (!args.tenant.empty()) {
    SM_ASSIGN_OR_RETURN(
        const std::string tenant,
        resolveTenantArg(
            args.tenant,
            [&directory](const std::string& key) -> Result<bool> {
              SM_ASSIGN_OR_RETURN(auto e, directory.get(key));
              return e.has_value();
            },
            args.state_dir, false, "the routing directory of " + cp.label));
    SM_ASSIGN_OR_RETURN(auto entry, directory.get(tenant));
    if (!entry) {
      return Status::refused("tenant " + tenant + " has no routing entry in " + cp.label +
                             ": it has not been routed yet (run `stampmover routes` to list "
                             "every tenant)");
    }
    entries.push_back(std::move(*entry));
  } else {
    SM_ASSIGN_OR_RETURN(entries, directory.list());
    if (entries.empty()) {
      std::fprintf(stderr, "no routing entries in %s\n", cp.label.c_str());
      return Status::ok();
    }
  }
  printTable(entries);
  return Status::ok();
}
