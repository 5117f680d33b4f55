// The fleet as the planner sees it, read from the real world: stamps (capacity, region) from the
// stamps file, the planner's own settings and tenant constraints from its `planner:` section,
// each tenant's size measured cheaply from its stamp's tables (exact per-tenant sums for small
// tables, a block sample scaled up for big ones), where each tenant is served from the routing
// directory, and which stamps are draining.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "mover/catalog.h"
#include "orchestrator/config.h"
#include "planner/model.h"
#include "planner/planner.h"

namespace stampmover::planner {

struct TenantConstraint {
  bool pinned = false;                       // Default: false
  bool excluded = false;                     // Default: false
  std::vector<std::string> allowed_regions;  // Default: none (its stamp's region)
};

// The `planner:` section of the stamps file:
//   planner:
//     threshold: 0.10            # also --threshold
//     max_moves: 20
//     improvement_fraction: 0.5
//     evacuation_limit: 0.90
//     safety_margin: 0.05
//     cross_region: false
//     seed: 0
//     tenants:
//       "42": {pinned: true}
//       "77": {allowed_regions: [eu-west-1]}
//       "90": {excluded: true}
struct PlannerConfig {
  PlannerOptions options;
  std::map<std::string, TenantConstraint> tenants;  // Default: none
};

// Reads the `planner:` section of `path` (absent section: defaults). Errors: kRefused naming the
// file and key ("stamps.yaml: planner.tenants.42.pinned: expected true or false").
common::Result<PlannerConfig> loadPlannerConfig(const std::string& path);

struct MeasureOptions {
  // Tables whose heap is at most this are summed exactly (one sequential scan, GROUP BY tenant).
  uint64_t exact_below_bytes = 64ull << 20;  // Default: 64 MiB
  // Bigger tables are read through TABLESAMPLE SYSTEM so that about this many bytes of heap are
  // read, and the sums scaled up.
  uint64_t sample_bytes = 16ull << 20;     // Default: 16 MiB per table
  uint32_t statement_timeout_ms = 60'000;  // Default: 60 s per query
};

struct TenantSize {
  uint64_t bytes = 0;  // heap bytes of its rows (tuple header and item pointer included)
  uint64_t rows = 0;
  uint64_t bytes_error = 0;  // 95% half-width of a sampled estimate (0 when exact)
};

struct StampMeasure {
  std::map<std::string, TenantSize> tenants;  // canonical tenant key (column::text) -> size
  uint64_t tables = 0;                        // tenant tables seen
  uint64_t sampled_tables = 0;                // of which estimated from a sample
};

// Measures every tenant's rows on one stamp. Reads only (a read-only transaction). Errors: the
// server's, class kept (kRetryable when the connection drops).
common::Result<StampMeasure> measureStamp(common::PgConnection& conn,
                                          const mover::TenantColumnPolicy& policy,
                                          const MeasureOptions& options = {});

// Where each tenant is served now (from the routing directory): tenant -> stamp.
using Placement = std::map<std::string, std::string>;

// Builds the planner's Fleet: stamps of `config` (draining ones marked), tenants from the
// measures (a tenant with a routing entry counts on its routed stamp with the size measured
// there; a tenant without one counts where its rows are, the largest share when on several),
// constraints from `planner`, moves in flight as given. Tenants routed to a stamp whose
// measure has no rows of them count with 0 bytes.
Fleet buildFleet(const orch::Config& config, const PlannerConfig& planner,
                 const std::map<std::string, StampMeasure>& measures, const Placement& placement,
                 const std::map<std::string, std::string>& draining,
                 const std::vector<MoveInFlight>& in_flight);

}  // namespace stampmover::planner
