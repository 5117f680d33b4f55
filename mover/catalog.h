// Catalog discovery: which tables carry the tenant column, their columns, keys, replica
// identity, foreign keys and size, read from pg_catalog. Read-only: nothing here changes a
// server.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "mover/checkpoint_store.h"

namespace stampmover::mover {

// Which column holds the tenant key: a default name and per-table overrides.
struct TenantColumnPolicy {
  std::string default_column = "tenant_id";             // Default: "tenant_id"
  std::map<std::string, std::string> per_table;         // Default: none ("schema.table" -> column)
  std::string columnFor(const std::string& table_key) const;
};

struct ColumnInfo {
  std::string name;
  std::string type;      // format_type(): "numeric(20,4)", "text[]"
  uint32_t type_oid = 0;
  bool not_null = false;
  bool has_default = false;
  bool generated = false;  // GENERATED ALWAYS AS (...) STORED: never copied, recomputed
  bool builtin_type = true;  // binary COPY is portable between servers only for built-in types
};

struct TableInfo {
  uint32_t oid = 0;
  std::string schema;
  std::string name;
  std::vector<ColumnInfo> columns;
  std::vector<std::string> primary_key;         // PK columns in key order (empty: none)
  char replica_identity = 'd';                  // d(efault=PK), n(othing), f(ull), i(ndex)
  std::vector<std::string> replica_identity_columns;
  std::string tenant_column;
  std::vector<std::string> parents;             // keys of tables this one references (FK)
  uint64_t heap_bytes = 0;                      // pg_relation_size (main fork)
  uint64_t block_size = 8192;
  double est_tenant_rows = 0;                   // planner estimate for the tenant
  uint64_t est_tenant_bytes = 0;

  std::string key() const { return schema + "." + name; }        // unquoted, for messages
  std::string quoted() const { return common::qualifiedName(schema, name); }
  const ColumnInfo* column(const std::string& n) const;
  // Columns that are copied (not generated), in attnum order.
  std::vector<const ColumnInfo*> copyColumns() const;
  bool binaryCopyable() const;
};

// Lists every ordinary table that has its tenant column (by `policy`), skipping system schemas
// and stampmover's own. Tables are returned parents before children (FK topological order).
common::Result<std::vector<TableInfo>> discoverTenantTables(common::PgConnection& conn,
                                                            const TenantColumnPolicy& policy);

// Describes one table by schema and name; nullopt when it does not exist.
common::Result<std::optional<TableInfo>> describeTable(common::PgConnection& conn,
                                                       const std::string& schema,
                                                       const std::string& name,
                                                       const std::string& tenant_column);

// Planner estimate of the tenant's rows and bytes in `table` (EXPLAIN with the key bound as a
// parameter); fills est_tenant_rows / est_tenant_bytes.
common::Status estimateTenantSize(common::PgConnection& conn, TableInfo& table,
                                  const std::string& tenant);

// True when `table` holds at least one row of `tenant` (parameterised, LIMIT 1).
common::Result<bool> tenantHasRows(common::PgConnection& conn, const TableInfo& table,
                                   const std::string& tenant);

// The connected server's system identifier (pg_control_system()) and database oid: what tells a
// stamp rebuilt at the same address from the one a migration record was written about.
// Errors: kRefused when the role may not read pg_control_system() (the message says what to
// grant); kRetryable when the connection drops.
common::Result<StampIdentity> readStampIdentity(common::PgConnection& conn);

// Comma-separated quoted column list of the copied columns.
std::string columnList(const TableInfo& table);

}  // namespace stampmover::mover
