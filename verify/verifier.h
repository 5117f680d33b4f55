// The verifier: proves that the destination holds exactly the source's rows of one tenant, or
// names every difference (missing on destination, extra on destination, different columns,
// rows of another source tenant on the destination), by chunked checksums over the canonical
// row encoding (canonical.h) and primary-key chunks (table_plan.h), narrowed to rows where the
// checksums differ. In live mode (while `migrate` applies changes) a differing chunk is re-read
// after the destination has applied past the source position the chunk was read at, and only
// differences that persist are reported.
//
// Flow: plan each table (keyset pagination over its keys, largest tables first) -> bulk pass:
// every row of the tenant on each side, read in heap order by pieces, --jobs queries per server,
// digested and summed into its primary-key chunk -> compare chunk sums -> narrow each differing
// chunk by key (paged, keyset) -> look for other source tenants' rows on the destination ->
// report. Memory: one row at a time in the bulk pass, one page (<= chunk_rows rows, as digests)
// per narrowing task; never a table.
//
// Foreign rows: a row on the destination whose tenant is not this one is outside the tenant's
// data, but when the source holds rows of that same tenant in that table, the row looks copied
// from the source by mistake (a filter that let another tenant through): it is reported as
// kind "foreign" and counts as a difference. Rows of tenants that only the destination holds
// (its own customers) are never reported. A tenant legitimately on both stamps (moved earlier
// and not purged yet, or being moved too) shows up here as well: --no-foreign-check skips it.
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
  bool foreign_check = true;                    // Default: true (other tenants' rows on the dest)
  uint64_t rows_per_piece = 100'000;            // Default: 100000 rows per bulk-pass query
};

enum class DiffKind {
  kMissing,    // on the source, not on the destination
  kExtra,      // on the destination, not on the source
  kDifferent,  // on both, some columns differ
  kForeign,    // on the destination, belongs to another tenant that the source holds
  kUnsettled,  // live mode: kept changing on the source; neither proven equal nor different
};
const char* diffKindName(DiffKind k);  // "missing", "extra", "different", "foreign", "unsettled"

struct RowDiff {
  DiffKind kind = DiffKind::kDifferent;
  // Primary key (all PK columns, key order) as column -> value; nullopt is NULL.
  std::vector<std::pair<std::string, std::optional<std::string>>> key;
  std::vector<std::string> columns;  // kDifferent: the columns that differ
  std::string tenant;                // kForeign: the other tenant's key
};

struct TableVerifyResult {
  std::string table;  // "schema.table"
  uint64_t source_rows = 0;
  uint64_t dest_rows = 0;
  uint32_t chunks = 0;
  uint32_t chunks_differing = 0;  // chunks whose sums differed in the bulk pass
  uint64_t missing = 0, extra = 0, different = 0, foreign = 0, unsettled = 0;
  std::vector<RowDiff> listed;  // at most max_listed; foreign rows last
  bool resumed = false;         // result read from an earlier, interrupted run
  double seconds = 0;

  uint64_t differences() const { return missing + extra + different + foreign; }
};

struct VerifyReport {
  std::vector<TableVerifyResult> tables;
  bool live = false;
  double seconds = 0;
  uint64_t differences() const;
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
