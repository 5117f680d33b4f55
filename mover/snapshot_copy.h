// Snapshot copy (DESIGN.md phase 2): the tenant's rows of every tenant table, read with
// `COPY (SELECT ...) TO STDOUT` under one snapshot and written with `COPY ... FROM STDIN` at the
// destination, binary where both sides allow it, in CTID block-range chunks spread over
// `jobs` connection pairs. Each chunk commits at the destination and is then checkpointed;
// a resumed copy sends its chunks through a staging table and upserts, because rows may have
// moved between blocks since the first snapshot.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "mover/catalog.h"
#include "mover/checkpoint_store.h"
#include "mover/progress.h"
#include "mover/txn_statements.h"

namespace stampmover::mover {

struct CopyOptions {
  uint32_t jobs = 0;                        // Default: 0 = auto (see autoJobs())
  uint64_t chunk_bytes = 128ull << 20;      // Default: 128 MiB of heap per chunk
  bool allow_binary = true;                 // Default: true (binary COPY for built-in types)
  double max_bytes_per_sec = 0;             // Default: 0 = unlimited (all jobs together)
  // Sent inside every chunk's destination transaction before COMMIT (see
  // mover/txn_statements.h); called from the copy's workers concurrently.
  TxnStatementsFn commit_statements;        // Default: none
};

struct CopyEndpoints {
  std::string source_dsn;
  std::string source_label;
  std::string dest_dsn;
  std::string dest_label;
};

struct TableCopyResult {
  std::string table;
  uint64_t rows = 0;
  uint64_t bytes = 0;
  uint32_t chunks = 0;
  uint32_t chunks_skipped = 0;  // already done before this run
  bool binary = false;
};

struct CopyReport {
  std::vector<TableCopyResult> tables;
  uint64_t rows = 0;
  uint64_t bytes = 0;
  double seconds = 0;
  uint32_t jobs = 1;
  uint32_t chunks_total = 0;
  uint32_t chunks_copied = 0;
  uint32_t chunks_skipped = 0;
  bool upsert = false;  // resumed: chunks went through staging + upsert
};

// Default parallelism from the machine: one stream per core, at least 2, at most 8 (measured:
// see snapshot_copy.cc).
uint32_t autoJobs();

// Splits each table into CTID block ranges of about `chunk_bytes` of heap (at least one chunk;
// the last is open-ended so rows in pages added later are still read).
std::vector<ChunkSpec> planChunks(const std::vector<TableInfo>& tables, uint64_t chunk_bytes);

// Copies every chunk of `rec.plan` that `store` does not already record as done.
// `snapshot` is an exported snapshot name every worker imports. `upsert` sends rows through a
// staging table and INSERT ... ON CONFLICT (for resumed copies). `cancel` is polled; when set the
// copy stops at the next row with kCancelled and nothing half-done is committed.
// Errors: the first worker error (connection: kRetryable; schema: kRefused).
// Not thread-safe; call from one thread (it starts its own workers).
common::Result<CopyReport> copySnapshot(const CopyEndpoints& endpoints,
                                        const std::vector<TableInfo>& tables,
                                        const MigrationRecord& rec, const std::string& tenant,
                                        const std::string& snapshot, bool upsert,
                                        CheckpointStore& store, const CopyOptions& options,
                                        Progress* progress, const std::atomic<bool>* cancel);

}  // namespace stampmover::mover
