// Re-check by primary key of the rows the applier changed: the cutover's final verification
// inside the window and the pruning pass outside it. Both sides are read with the same key
// arrays, so a key names the same row on both, and rows are compared with the verifier's row
// equality (verify/row_equality.h): canonical values, columns by name. One statement per table
// and side, whatever the number of keys (plus, once per call, a catalog query when a column has
// a user-defined type whose domain must be resolved).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "mover/catalog.h"
#include "mover/pg_applier.h"

namespace stampmover::orch {

// Milliseconds of the steady clock since `t0` (the cutover's and the re-check's timings).
inline double msSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Compares the rows whose keys the applier touched, on both sides, by primary key; a table
// flagged whole (a TRUNCATE) or an overflowed set compares the tenant's whole table by digest.
// Pins the encoding settings on both connections. Returns descriptions of differences (at
// most ~20). Errors: the servers' (class kept).
common::Result<std::vector<std::string>> recheckTouchedRows(
    common::PgConnection& source, common::PgConnection& destination,
    const std::vector<mover::TableInfo>& tables, const mover::TouchedKeys& touched,
    const std::string& tenant, uint64_t* rows_checked);

struct PruneStats {
  uint64_t checked = 0;  // keys compared
  uint64_t kept = 0;     // keys still different
  double ms = 0;
};

// Outside the window: compares the rows of the touched keys on both sides and returns the keys
// whose rows still differ (whole-table flags and an overflowed set are kept as they are). A key
// whose rows are equal now needs no re-check later: any later change of it is applied, and
// touched, again. Changes applied but not committed at the destination only make keys differ.
common::Result<mover::TouchedKeys> pruneTouched(common::PgConnection& source,
                                                common::PgConnection& destination,
                                                const std::vector<mover::TableInfo>& tables,
                                                const mover::TouchedKeys& touched,
                                                const std::string& tenant, PruneStats* stats);

// pruneTouched() on the applier's set: takes it, re-checks, puts back what still differs (all
// of it on error).
common::Status pruneApplierTouched(common::PgConnection& source, common::PgConnection& destination,
                                   const std::vector<mover::TableInfo>& tables,
                                   mover::PgApplier& applier, const std::string& tenant,
                                   PruneStats* stats);

// What the destination holds for one primary key, compared with the source.
enum class KeyedRowState : uint8_t {
  kEqual,      // on both sides, equal rows
  kMissing,    // on the source, not on the destination
  kExtra,      // on the destination, not on the source
  kDifferent,  // on both sides, rows differ
  kAbsent,     // on neither side (e.g. deleted on both)
};
const char* keyedRowStateName(KeyedRowState state);  // "equal", "missing", ...

// Compares the rows of `keys` (primary-key values in `table.primary_key` order, text; each
// vector as long as the key) of `tenant` in `table` on both sides, with the verifier's row
// equality; one statement per side. Pins the encoding settings on both connections. Returns
// one state per key, in order. Errors: the servers' (class and SQLSTATE kept: a key value that
// is not valid for its column's type fails with class 22).
common::Result<std::vector<KeyedRowState>> compareRowsByKey(
    common::PgConnection& source, common::PgConnection& destination, const mover::TableInfo& table,
    const std::vector<std::vector<common::PgParam>>& keys, const std::string& tenant);

}  // namespace stampmover::orch
