// The destination's record of a Kafka-sourced migration's progress: each partition's next
// offset, in stampmover.kafka_offsets, written by the statements the applier sends inside every
// apply transaction (ApplierOptions::commit_statements), so offsets commit with the rows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "mover/txn_statements.h"

namespace stampmover::mover {

struct KafkaOffset {
  std::string topic;
  int32_t partition = 0;
  int64_t next_offset = 0;  // the first offset not yet applied
  bool operator==(const KafkaOffset&) const = default;
};

// Creates the stampmover schema and the offsets table when missing (idempotent). Errors: as
// PgConnection::exec (kRefused without CREATE privilege, kRetryable on a lost connection).
common::Status ensureKafkaOffsetsTable(common::PgConnection& dest);

// The stored offsets of `migration`, sorted by topic and partition; empty when none. Errors: as
// PgConnection::query (kRefused when the table is missing: call ensureKafkaOffsetsTable first).
common::Result<std::vector<KafkaOffset>> loadKafkaOffsets(common::PgConnection& dest,
                                                          const std::string& migration);

// One statement that upserts `offsets` for `migration` (arrays as parameters; nothing spliced).
// Empty when `offsets` is empty. Pure.
std::vector<TxnStatement> kafkaOffsetStatements(const std::string& migration,
                                                const std::vector<KafkaOffset>& offsets);

// Removes the migration's rows (teardown). Errors: as PgConnection::query.
common::Status dropKafkaOffsets(common::PgConnection& dest, const std::string& migration);

}  // namespace stampmover::mover
