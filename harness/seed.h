// A multi-tenant demo schema and data generator shared by the demo, the tests and the
// benchmarks: five tenant tables with foreign keys, composite and text primary keys, TOASTed
// values and awkward types, one global table without a tenant column, and tenants' rows
// interleaved in the same heap pages (as on a real stamp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"

namespace stampmover::harness {

struct SeedOptions {
  int64_t tenant = 42;               // Default: 42 (the tenant that will be moved)
  uint64_t tenant_items = 10'000;    // Default: 10000 rows in the largest table (order_items)
  std::vector<int64_t> others = {1, 2, 3};  // Default: {1,2,3}: tenants seeded beside it
  uint64_t other_items = 10'000;     // Default: 10000 order_items rows shared by `others`
};

// Creates the schema (idempotent). Tables: accounts, orders, order_items, documents, events,
// currencies (global, no tenant column).
common::Status createDemoSchema(common::PgConnection& conn);

// Inserts rows for `tenant` and `others`, interleaved row by row so every heap page holds
// several tenants. Row counts: order_items = items, orders = items*0.8, accounts = items*0.2,
// events = items, documents = max(1, items/50) (a third of them over 2 KB: TOAST).
common::Status seedTenants(common::PgConnection& conn, const SeedOptions& options);

// Total rows the seed creates for the moved tenant across all tenant tables.
uint64_t seededTenantRows(uint64_t tenant_items);

}  // namespace stampmover::harness
