// The SQL the applier sends for one replicated relation: upserts, deletes, the tenant-scoped
// DELETE that replaces a TRUNCATE, the multi-row forms over unnest() arrays, and the update of
// an unchanged-TOAST row. Pure text generation, no server: unit-tested on its own.
//
// Tenant scoping: when the destination's primary key does not contain the tenant column (a
// table allowed under REPLICA IDENTITY FULL), a key can collide with a row of ANOTHER tenant.
// Every statement then carries the tenant predicate: deletes and the TOAST update match
// `tenant = $n` as well (a delete never touches another tenant's row), and an upsert only
// updates a conflicting row of the same tenant (`ON CONFLICT ... DO UPDATE ... WHERE x.tenant =
// EXCLUDED.tenant`), so a collision leaves the other tenant's row alone and shows up as fewer
// affected rows than sent, which the applier turns into a data-conflict stop.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace stampmover::mover {

// How one column's values travel in a multi-row statement.
struct ColumnCast {
  std::string array_type;  // "bigint[]" (typed array) or "text[]" (elements cast one by one)
  std::string elem_cast;   // "" or "::type" applied to each element of a text[] array
};

// The shape of a relation as the applier sends it: source columns (in source order) mapped
// onto the destination table.
struct ApplyShape {
  std::string table;                 // quoted destination table ("s"."t")
  std::vector<std::string> columns;  // source column names, source order (unquoted)
  std::vector<size_t> pk;            // indices into columns: the destination's PK, key order
  std::vector<size_t> key;           // indices into columns: the source's replica identity
  size_t tenant = 0;                 // index into columns of the tenant column
  std::vector<ColumnCast> casts;     // per column; empty: no multi-row forms
  // True when the PK contains the tenant column: no key can belong to another tenant, so no
  // statement needs the tenant predicate.
  bool tenantInKey() const;
};

// The error of an upsert that met a key of another tenant (see ApplyStatements).
inline constexpr const char* kCollisionSqlState = "22012";

struct ApplyStatements {
  // $1..$n: every column. Insert, or update the row with this PK (of this tenant only).
  std::string upsert;
  // $1..$k: PK values [, $k+1: tenant when !tenantInKey()].
  std::string delete_pk;
  // $1..$k: replica identity values [, tenant]; empty when the relation has no identity.
  std::string delete_key;
  // $1: tenant. A source TRUNCATE of a shared table.
  std::string delete_tenant;
  // Multi-row forms (only when casts are given): one array per column ($1..$n).
  // upsert_many [, $n+1: the number of rows, when !tenantInKey()]. When !tenantInKey() both
  // upserts fail with SQLSTATE 22012 (kCollisionSqlState) if a row met another tenant's key.
  std::string upsert_many;
  std::string insert_plain_many;
  std::string insert_plain;  // one row, no ON CONFLICT
  // One array per PK column ($1..$k) [, $k+1: tenant].
  std::string delete_many;
};

ApplyStatements buildApplyStatements(const ApplyShape& shape);

// UPDATE of the columns that were sent (mask[i] == 'u': unchanged TOAST, left alone; PK
// columns are never set). Parameters: PK values, then each set column in order [, tenant].
std::string toastUpdateSql(const ApplyShape& shape, const std::string& mask);

}  // namespace stampmover::mover
