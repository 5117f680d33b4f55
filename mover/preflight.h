// Preflight (DESIGN.md phase 1): every check that must pass before a migration changes
// anything on any server. Read-only on both servers. A refusal is one line that names the
// object and the fix.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "mover/catalog.h"

namespace stampmover::mover {

struct PreflightOptions {
  std::string tenant;                 // Default: none (required): the tenant key as text
  TenantColumnPolicy tenant_columns;  // Default: tenant_id everywhere
  bool resuming = false;              // Default: false; true skips "tenant already on destination"
  std::string slot_name;              // Default: none; when set, refuse if it exists and !resuming
};

struct PreflightReport {
  std::vector<TableInfo> tables;  // source tables, parents before children
  uint64_t est_rows = 0;          // planner estimate of the tenant's rows on the source
  uint64_t est_bytes = 0;
  int server_version_num = 0;
  int free_slots = 0;
  std::vector<std::string> warnings;
};

// Runs every check. Errors: kRefused naming the object and the fix (schema, settings, tenant);
// kRetryable when a server cannot be reached or the connection drops.
common::Result<PreflightReport> runPreflight(common::PgConnection& source,
                                             common::PgConnection& destination,
                                             const PreflightOptions& options);

}  // namespace stampmover::mover
