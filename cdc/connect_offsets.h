// The Debezium connector's committed source position, read from Kafka Connect's offsets topic
// (offset.storage.topic). Kafka Connect commits a source offset only after every record the task
// produced before it was acknowledged by the brokers, so a committed position at or past a
// source WAL position F proves that every change committed on the source before F is in Kafka:
// the cutover's drain waits for that, then reads each partition's end (see kafka_source.h).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cdc/kafka_source.h"
#include "common/lsn.h"
#include "common/status.h"

namespace stampmover::cdc {

struct ConnectorPosition {
  common::Lsn processed;  // lsn_proc (lsn for older connectors): the last event processed
  common::Lsn committed;  // lsn_commit: the last transaction commit processed (0 when absent)
  int64_t offset = -1;    // where in the offsets topic this value was read
};

// Reads `offsets_topic` from its beginning to its end (as of the call) and returns the last
// position committed for the connector named `connector` with topic prefix `server`
// (key ["<connector>", {"server": "<server>"}]), or nullopt when none (or a tombstone is last).
// Errors: kRetryable (brokers unreachable within `timeout`), kRefused (the topic does not exist:
// the message names the Connect worker setting), kInternal for an unreadable value.
common::Result<std::optional<ConnectorPosition>> readConnectorPosition(
    const std::map<std::string, std::string>& kafka, const std::string& offsets_topic,
    const std::string& connector, const std::string& server, std::chrono::milliseconds timeout);

// The cutover's drain target. `fence_lsn` is the source's WAL insert position read after the
// fence row committed (and after a marker, pg_logical_emit_message, was written past it so the
// connector has an event to process even when the stamp is idle). Waits (polling every
// `poll`, up to `deadline`) until the connector's committed position has processed an event at
// or past `fence_lsn`, then reads each of `partitions`' end. Every record of a transaction that
// committed before the fence lies below those ends: pgoutput streams transactions in commit
// order, so a processed event at or past fence_lsn comes after every such transaction, and
// Connect committed that position only once the records before it were acknowledged, before
// the ends were read. Applying every partition up to its end (KafkaDebeziumSource::reached)
// therefore applies every change committed before the fence. Errors: kRetryable when the
// deadline passes (the message names the connector's last position), as readConnectorPosition.
common::Result<std::vector<PartitionOffset>> drainTarget(
    const std::map<std::string, std::string>& kafka, const std::string& offsets_topic,
    const std::string& connector, const std::string& server,
    const std::vector<PartitionOffset>& partitions, common::Lsn fence_lsn,
    std::chrono::steady_clock::time_point deadline,
    std::chrono::milliseconds poll = std::chrono::milliseconds(20));

// The same reads, kept open: one consumer assigned to every partition of the offsets topic,
// reading only what was appended since the last call, and asking the data partitions' ends on
// that same connection. What the worker uses while it follows the topics and in the cutover
// window (no client is created per read). Not thread-safe.
class ConnectorWatch {
 public:
  // Looks up the offsets topic's partitions and starts reading them from their beginning.
  // Errors: as readConnectorPosition.
  static common::Result<std::unique_ptr<ConnectorWatch>> open(
      const std::map<std::string, std::string>& kafka, const std::string& offsets_topic,
      const std::string& connector, const std::string& server, std::chrono::milliseconds timeout);
  ~ConnectorWatch();

  // The connector's latest committed position among the records read so far, after reading
  // whatever arrived within `wait` (nullopt: none yet, or reset by a tombstone).
  common::Result<std::optional<ConnectorPosition>> position(std::chrono::milliseconds wait);
  // The current end (high watermark) of each of `partitions`, asked of their leaders now.
  common::Result<std::vector<PartitionOffset>> ends(const std::vector<PartitionOffset>& partitions,
                                                    std::chrono::milliseconds timeout);
  // Reads the offsets topic up to its end as of this call; the connector's latest position.
  // Errors: kRetryable when the end is not reached within `timeout`.
  common::Result<std::optional<ConnectorPosition>> readToEnd(std::chrono::milliseconds timeout);
  // drainTarget() on this connection (`poll`: the longest wait for a new commit per look).
  common::Result<std::vector<PartitionOffset>> drainTarget(
      const std::vector<PartitionOffset>& partitions, common::Lsn fence_lsn,
      std::chrono::steady_clock::time_point deadline,
      std::chrono::milliseconds poll = std::chrono::milliseconds(10));

 private:
  ConnectorWatch() = default;
  common::Status consume(const rd_kafka_message_t* msg);
  common::KafkaHandle rk_;
  std::vector<PartitionOffset> parts_;  // of the offsets topic
  std::map<int32_t, int64_t> next_;     // next offset to read, per partition read from
  std::string topic_, connector_, server_;
  std::string want_key_;  // the connector's key, as JSON text compared after parsing
  std::optional<ConnectorPosition> last_;
};

}  // namespace stampmover::cdc
