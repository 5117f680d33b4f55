// Narrowing: a chunk whose sums differ is read again by key on both sides, in pages of at most
// chunk_rows source rows (keyset pagination), and compared row by row: missing, extra, or
// different (which columns). Live mode re-reads a differing page after the destination has
// applied past the source position the page was read at, and reports only rows whose
// difference persists while the source row stays unchanged. Also the other-tenants check. The
// comparison rules are pure (compareRows, LiveWindow), unit-tested without a server.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/lsn.h"
#include "common/pg.h"
#include "common/status.h"
#include "verify/row_digest.h"
#include "verify/table_plan.h"
#include "verify/verifier.h"

namespace stampmover::verify {

// One row as narrowing sees it (not the row itself: memory stays ~100 bytes a row).
struct RowImage {
  Digest digest{};                      // SHA-256 of the canonical row
  std::vector<uint64_t> column_hashes;  // per compared column, to name the differing columns
  std::string version;                  // live source reads: "xmin/ctid" of the row version
};
// Key: the raw canonical PK fields joined by tabs (escaping is deterministic, so equal keys
// give equal strings).
using RowMap = std::unordered_map<std::string, RowImage>;

// Parses one canonical COPY row (the compared columns, then the version when `with_version`)
// and digests it with `hasher`. Returns false when the field count is wrong (a server answer we
// did not ask for) or OpenSSL fails.
bool parseRow(std::string_view line, const PreparedTable& table, bool with_version,
              RowHasher& hasher, std::string* key, RowImage* image);

// Runs `COPY (...) TO STDOUT` and hands each row (with its newline) to `on_row`, one at a time:
// memory is one row. Errors: the server's, class kept (kRetryable on connection loss).
common::Status copyOut(common::PgConnection& conn, const std::string& sql,
                       const std::function<void(std::string_view)>& on_row);

struct KeyedDelta {
  DiffKind kind = DiffKind::kDifferent;
  std::string key;              // as in RowMap
  std::vector<size_t> columns;  // kDifferent: positions of differing columns
  Digest digest{};              // the row's digest (source's for missing, dest's for extra)
};

// Row-by-row comparison of the same key range read from both sides.
std::vector<KeyedDelta> compareRows(const RowMap& source, const RowMap& dest);

// Live mode, one round: the source reads of one key range taken since the destination passed
// the position of the first of them. A destination row is settled when it equals the source row
// (or its absence) as one of those reads saw it: the destination then held a state the source
// really had inside the window, which is all a copy that lags can show. A key that stays
// unsettled while the source row did not change across the window (same row version, or absent
// every time) is a difference: the destination had passed that version and does not hold it.
class LiveWindow {
 public:
  // Adds one source read of the whole key range (every key absent from it was absent then).
  void addSource(RowMap read);
  // Forgets every read.
  void clear();
  // True when `dest` (nullptr: the destination has no such row) equals the source row as some
  // read of the window saw it.
  bool matches(const std::string& key, const RowImage* dest) const;
  // True when every read saw the same row version (or none at all).
  bool sourceUnchanged(const std::string& key) const;
  // Every key any read saw.
  void keys(std::unordered_set<std::string>* out) const;
  // The last read (empty before the first).
  const RowMap& latest() const { return latest_; }
  bool empty() const { return reads_ == 0; }

 private:
  // What the reads saw of one key; memory grows with the versions a hot row goes through, not
  // with the number of reads.
  struct Seen {
    std::vector<Digest> digests;  // distinct contents seen
    std::string first_version;    // version at its first sighting
    uint64_t present = 0;         // reads that saw the row
    uint64_t first_read = 0;      // index of the first read that saw it
    bool changed = false;         // another version was seen later
  };
  std::unordered_map<std::string, Seen> seen_;
  uint64_t reads_ = 0;
  RowMap latest_;
};

// Splits a RowMap key into the PK values (unescaped), for reports.
std::vector<std::optional<std::string>> keyValues(std::string_view key);

struct NarrowContext {
  common::PgConnection* source = nullptr;
  common::PgConnection* dest = nullptr;
  const PreparedTable* table = nullptr;
  const ChunkPlan* plan = nullptr;
  const VerifyOptions* options = nullptr;
  const std::atomic<bool>* cancel = nullptr;
};

struct NarrowResult {
  std::vector<KeyedDelta> deltas;        // confirmed differences (and kUnsettled), first max_listed
  uint64_t counts[5] = {0, 0, 0, 0, 0};  // every delta, by DiffKind
  uint64_t pages = 0;
  uint64_t rounds = 0;  // live re-reads
};

// Narrows chunk `chunk`. Errors keep their class; kRetryable when, in live mode, the applier
// does not pass a source position within options.live_wait.
common::Result<NarrowResult> narrowChunk(const NarrowContext& ctx, size_t chunk);

// The source's and destination's applied positions for live mode: max of the destination's
// replication origin progress (flushed) and the source slot's confirmed_flush_lsn (the worker
// confirms only what is durable at the destination). A migration fed from Kafka has neither
// in source positions: its watermark (stampmover.kafka_applied at the destination, keyed by the
// origin's name; see mover/kafka_offsets.h) is returned instead. Errors: kRefused when neither the origin
// nor the slot exists.
common::Result<common::Lsn> appliedPosition(common::PgConnection& source,
                                            common::PgConnection& dest,
                                            const std::string& origin_name);

// The other-tenants check: rows on the destination of tenants other than `tenant` that the
// source holds too in this table (a leftover of an earlier move, or a leak; see verifier.h).
// Returns those rows (at most `max_listed`, key order) and their total count.
struct OtherTenantRows {
  // (the other tenant, its row's PK values in PK order), key order, at most max_listed.
  std::vector<std::pair<std::string, std::vector<std::optional<std::string>>>> rows;
  uint64_t count = 0;
};
common::Result<OtherTenantRows> findOtherTenantRows(common::PgConnection& source,
                                                    common::PgConnection& dest,
                                                    const PreparedTable& table,
                                                    const std::string& tenant, uint32_t max_listed);

}  // namespace stampmover::verify
