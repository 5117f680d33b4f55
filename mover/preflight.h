// Preflight (DESIGN.md phase 1): every check that must pass before a migration changes
// anything on any server. Read-only on both servers. A refusal is one line that names the
// object and the fix.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "common/tenant_key.h"
#include "mover/catalog.h"

namespace stampmover::mover {

// The tenant key as the source server canonicalizes it, and the tenant columns' types.
struct CanonicalTenant {
  common::TenantKey key;
  std::vector<std::string> types;  // distinct format_type() names of the tenant columns
};

// Canonicalizes `raw` once, on the source: `SELECT ($1::<type>)::text` for the tenant column
// type of every table of `tables`. Every later step uses the result (names, fence, routing,
// records, reports). Errors: kRefused when `raw` is empty, not a valid value of a tenant column's
// type, or when the tables' types disagree on the canonical text (one line naming the tables
// and types); kRetryable when the connection drops.
common::Result<CanonicalTenant> canonicalTenantKey(common::PgConnection& source,
                                                   const std::vector<TableInfo>& tables,
                                                   const std::string& raw);
// The same after discovering the tenant tables on `source` by `policy`. Errors as above, and
// kRefused when no table has the tenant column.
common::Result<CanonicalTenant> canonicalTenantKey(common::PgConnection& source,
                                                   const TenantColumnPolicy& policy,
                                                   const std::string& raw);

struct PreflightOptions {
  common::TenantKey tenant;           // Default: none (required): see canonicalTenantKey()
  TenantColumnPolicy tenant_columns;  // Default: tenant_id everywhere
  bool resuming = false;              // Default: false; true skips "tenant already on destination"
  std::string slot_name;              // Default: none; when set, refuse if it exists and !resuming
  // False when the source's changes come from elsewhere (Kafka/Debezium): no free slot and no
  // REPLICATION role are asked of the source.
  bool needs_slot = true;             // Default: true
};

struct PreflightReport {
  common::TenantKey tenant;       // the key preflight checked (canonical)
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
