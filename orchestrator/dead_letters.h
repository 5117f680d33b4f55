// The rows behind dead-lettered Kafka events (`migrate --cdc kafka --on-bad-event dead-letter
// FILE`): each event the migration skipped is mapped to its table (by topic) and row (by the
// record's key, Debezium's primary key of the row), and that row is compared on both stamps
// now, so `verify --dead-letter FILE` says which skipped changes left a row different.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "mover/catalog.h"
#include "orchestrator/recheck.h"

namespace stampmover::orch {

struct DeadLetterRow {
  enum class Verdict : uint8_t {
    kRow,           // the row was found by its key: `state` says how it compares now
    kOtherTenant,   // the key names another tenant's row: not this verify's concern
    kUnidentified,  // the row cannot be told from the event (`why`): check it by hand
  };
  std::string file;   // the dead-letter file
  uint64_t line = 0;  // 1-based line of the dead-letter file
  std::string topic;
  int32_t partition = 0;
  int64_t offset = -1;
  std::string reason;  // why the migration dead-lettered it
  std::string table;   // "schema.table"; "" when not identified
  std::vector<std::pair<std::string, std::optional<std::string>>> key;  // PK column -> value
  Verdict verdict = Verdict::kUnidentified;
  KeyedRowState state = KeyedRowState::kAbsent;  // with kRow
  std::string why;                               // with kUnidentified
  // The row differs now (missing, extra or different at the destination).
  bool differs() const {
    return verdict == Verdict::kRow &&
           (state == KeyedRowState::kMissing || state == KeyedRowState::kExtra ||
            state == KeyedRowState::kDifferent);
  }
};

// Reads the dead-letter file at `path` (JSON lines: topic, partition, offset, reason, key,
// value) and compares the row of each event of `tenant` on both sides. `tables` are the
// tenant's tables (mover::discoverTenantTables on the source); an event's table is the one
// whose "<schema>.<table>" ends its topic (Debezium's <prefix>.<schema>.<table>). Lines that
// cannot be read, keys that are missing or not decodable give kUnidentified entries, not
// errors. Memory: one entry per event (the event's value is not kept). Errors: kRefused when
// the file cannot be read; the servers' (class kept).
common::Result<std::vector<DeadLetterRow>> checkDeadLetters(
    const std::string& path, common::PgConnection& source, common::PgConnection& destination,
    const std::vector<mover::TableInfo>& tables, const std::string& tenant);

}  // namespace stampmover::orch
