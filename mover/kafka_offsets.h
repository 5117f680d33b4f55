// The destination's record of a Kafka-sourced migration's progress: each partition's next
// offset, in stampmover.kafka_offsets, written by the statements the applier sends inside every
// apply transaction (ApplierOptions::commit_statements), so offsets commit with the rows.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/lsn.h"
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

// Creates the stampmover schema, the offsets table and the watermark table when missing
// (idempotent). Errors: as
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

// Removes the migration's offsets (a new handoff). Errors: as PgConnection::query.
common::Status dropKafkaOffsets(common::PgConnection& dest, const std::string& migration);

// The watermark of a Kafka-sourced migration, stampmover.kafka_applied (keyed by the
// destination's replication origin name, as live verify knows it): a source WAL position W such
// that every transaction committed on the source before W is applied (committed) at the
// destination. With a Kafka source the origin's own progress is a synthetic counter (see
// kafka_source.h), not a source position, so live verify reads this instead. Starts at 0/0.
common::Status resetKafkaWatermark(common::PgConnection& dest, const std::string& migration,
                                   const std::string& origin);
// Creates the row at 0/0 when missing (a migration started before the table existed).
common::Status ensureKafkaWatermark(common::PgConnection& dest, const std::string& migration,
                                    const std::string& origin);
// Raises the watermark to `lsn` (never lowers it).
common::Status storeKafkaWatermark(common::PgConnection& dest, const std::string& origin,
                                   common::Lsn lsn);
// The watermark, or nullopt when the origin is not a Kafka-sourced migration's.
common::Result<std::optional<common::Lsn>> loadKafkaWatermark(common::PgConnection& dest,
                                                              const std::string& origin);
// Whether the migration has rows in either table (teardown's check), and their removal
// (idempotent; missing tables are fine).
common::Result<bool> kafkaStateExists(common::PgConnection& dest, const std::string& migration);
common::Status dropKafkaState(common::PgConnection& dest, const std::string& migration);

}  // namespace stampmover::mover
