// The verifier: proves that the destination holds exactly the source's rows of one tenant, or
// names every difference (missing on destination, extra on destination, different columns), by
// chunked checksums over the canonical row encoding (canonical.h, row_equality.h) and
// primary-key chunks (table_plan.h), narrowed to rows where the checksums differ. In live mode
// (while `migrate` applies changes) a differing chunk is re-read after the destination has
// applied past the source position the chunk was read at, and only differences that persist
// are reported.
//
// Flow: plan each table (keyset pagination over its keys, largest tables first) -> bulk pass:
// every row of the tenant on each side, read in heap order by pieces, --jobs queries per server,
// digested and summed into its primary-key chunk -> compare chunk sums -> narrow each differing
// chunk by key (paged, keyset) -> (optionally) look for other tenants on both stamps -> report.
// Memory: one row at a time in the bulk pass, one page (<= chunk_rows rows, as digests) per
// narrowing task; never a table.
//
// Only the verified tenant is judged: its rows are the only ones that can be a difference.
// Other tenants' rows are none of its business, including rows of a tenant that both stamps
// hold, which is the normal state after an earlier move finalized without purging its source.
// The other-tenants check (off by default) lists such rows separately, as "rows of other
// tenants present on both stamps (an earlier move not purged, or a leak)": a filter that let
// another tenant through would show up there too, but the verifier cannot tell a leak from a
// leftover, so it never counts them as differences of this tenant. Rows of tenants that only
// the destination holds (its own customers) are never listed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "verify/table_spec.h"

namespace stampmover::verify {

struct VerifyEndpoint {
  std::string dsn;    // holds a secret: never logged
  std::string label;  // "source stamp 'stamp-a'"
};

struct VerifyOptions {
  std::string tenant;                           // Default: none (required), as stored (text)
  uint32_t jobs = 4;                            // Default: 4 concurrent queries per server
  uint64_t chunk_rows = 10'000;                 // Default: 10000 rows per chunk
  bool live = false;                            // Default: false (the tenant is quiet)
  std::string origin_name;                      // Default: none; live: replication origin/slot
  uint32_t live_rounds = 6;                     // Default: 6 rounds of re-reads per differing page
  std::chrono::milliseconds live_wait{60'000};  // Default: 60 s for the applier to pass a position
  uint32_t max_listed = 1000;                   // Default: 1000 listed rows per table (all counted)
  bool other_tenants_check = false;             // Default: false (judge this tenant only)
  uint64_t rows_per_piece = 100'000;            // Default: 100000 rows per bulk-pass query
};

enum class DiffKind {
  kMissing,    // on the source, not on the destination
  kExtra,      // on the destination, not on the source
  kDifferent,  // on both, some columns differ
  kUnsettled,  // live mode: kept changing on the source; neither proven equal nor different
};
const char* diffKindName(DiffKind k);  // "missing", "extra", "different", "unsettled"

struct RowDiff {
  DiffKind kind = DiffKind::kDifferent;
  // Primary key (all PK columns, key order) as column -> value; nullopt is NULL.
  std::vector<std::pair<std::string, std::optional<std::string>>> key;
  std::vector<std::string> columns;  // kDifferent: the columns that differ
};

// A row on the destination of another tenant that the source holds too (the other-tenants
// check). Not a difference of the verified tenant: see the top of this file.
struct OtherTenantRow {
  std::string tenant;  // the other tenant's key, as its column prints
  std::vector<std::pair<std::string, std::optional<std::string>>> key;  // PK, key order
};

struct TableVerifyResult {
  std::string table;  // "schema.table"
  uint64_t source_rows = 0;
  uint64_t dest_rows = 0;
  uint32_t chunks = 0;
  uint32_t chunks_differing = 0;  // chunks whose sums differed in the bulk pass
  uint64_t missing = 0, extra = 0, different = 0, unsettled = 0;
  std::vector<RowDiff> listed;  // at most max_listed
  // Other-tenants check only: destination rows of other tenants the source holds too, and the
  // first max_listed of them. Never part of differences().
  uint64_t other_tenant_rows = 0;
  std::vector<OtherTenantRow> other_tenants_listed;
  bool resumed = false;  // result read from an earlier, interrupted run
  double seconds = 0;

  // Differences of the verified tenant (unsettled rows are counted apart).
  uint64_t differences() const { return missing + extra + different; }
};

struct VerifyReport {
  std::vector<TableVerifyResult> tables;
  bool live = false;
  bool other_tenants_checked = false;  // the other-tenants check ran
  double seconds = 0;
  uint64_t differences() const;
  uint64_t otherTenantRows() const;
  uint64_t unsettled() const;
  uint64_t sourceRows() const;
};

// Progress callbacks; called from worker threads, so implementations must be thread-safe.
class VerifyObserver {
 public:
  virtual ~VerifyObserver() = default;
  virtual void tableStarted(size_t table) = 0;
  // Source rows (and their canonical bytes) digested so far in `table`, as increments.
  virtual void rowsVerified(size_t table, uint64_t rows, uint64_t bytes) = 0;
  virtual void tableDone(size_t table, const TableVerifyResult& result) = 0;
};

// Durable state that lets an interrupted verify resume. Values are opaque strings the verifier
// writes and reads back; save() may buffer (a crash loses only the last moments). Thread-safe.
class VerifyCheckpoint {
 public:
  virtual ~VerifyCheckpoint() = default;
  // What an earlier run saved under `name`, or nullopt. Errors: the store's, class kept.
  virtual common::Result<std::optional<std::string>> load(const std::string& name) = 0;
  virtual void save(const std::string& name, std::string value) = 0;
};

// Verifies `tables` for options.tenant. Both servers are only read. `observer` and
// `checkpoint` may be null. Returns the report (differences are data, not an error). Errors:
// kRefused when the tables cannot be compared (missing table or column, type differs, no
// primary key, live mode without a replication origin); kRetryable when a server is lost or, in
// live mode, when the applier does not advance; kCancelled when `cancel` was set. Not
// reentrant per checkpoint store; otherwise thread-safe.
common::Result<VerifyReport> runVerify(const VerifyEndpoint& source, const VerifyEndpoint& dest,
                                       const std::vector<VerifyTable>& tables,
                                       const VerifyOptions& options, VerifyObserver* observer,
                                       VerifyCheckpoint* checkpoint,
                                       const std::atomic<bool>* cancel);

}  // namespace stampmover::verify
