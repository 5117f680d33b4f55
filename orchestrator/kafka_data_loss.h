// The operator's report when a Kafka-sourced migration meets offsets the brokers no longer
// retain: which partitions, the offsets stored at the destination, what the brokers still hold,
// and the command that starts over. The source only sees "offset out of range" for the first
// partition it fetched; this looks at every stored offset.
#pragma once

#include "common/status.h"
#include "orchestrator/kafka_migrate.h"

namespace stampmover::orch {

// Returns `st` unchanged unless it is kDataLoss; then a kDataLoss status whose message names
// every partition whose stored offset (stampmover.kafka_offsets at the destination) lies outside
// what the brokers retain, with the stored offset and the retained range, and the fix
// (`stampmover cleanup --tenant T --purge-destination`, then migrate again). When the details
// cannot be read (a server unreachable), the original message with the fix appended. Reads
// only: the source's catalog (tenant key), the destination's offsets, the brokers' watermarks.
common::Status explainKafkaDataLoss(const KafkaMigrateOptions& options, const common::Status& st);

}  // namespace stampmover::orch
