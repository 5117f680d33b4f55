// The migrate job with a Kafka (Debezium) change source instead of a slot: preflight (the
// tables and the connector's configuration), the snapshot copy under a plain REPEATABLE READ
// snapshot of the source with each partition's end offset recorded before it (the handoff), then
// catch-up from the Debezium topics with each partition's next offset committed in the same
// destination transaction as the rows it produced. Nothing is created on the source stamp.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <string>

#include "cdc/kafka_source.h"
#include "common/status.h"
#include "orchestrator/migrate_job.h"

namespace stampmover::orch {

struct KafkaMigrateOptions {
  // Everything of the pgoutput migrate: tenant, endpoints, state directory, copy tuning, batch
  // sizes, until_caught_up, intervals, cutover/soak/finalize/rollback, control plane.
  MigrateOptions migrate;
  std::map<std::string, std::string> kafka;  // Default: none; librdkafka properties (required)
  // The connector's configuration as Kafka Connect shows it (connector.json's text).
  std::string connector_config;              // Default: none (required)
  // Topic prefix; must equal the connector's topic.prefix. Default: "" = the connector's.
  std::string topic_prefix;
  cdc::BadEventPolicy on_bad_event = cdc::BadEventPolicy::kStop;  // Default: stop
  std::string dead_letter_path;              // Default: none (needed by kDeadLetter)
  // The cutover's drain reads the connector's committed source position from Kafka Connect's
  // offsets topic (the worker's offset.storage.topic), keyed by the connector's name.
  std::string offsets_topic = "connect-offsets";  // Default: connect-offsets
  std::string connector_name;                // Default: "" = connector.json's "name"
  std::chrono::milliseconds kafka_timeout{15000};  // Default: 15 s per metadata/offset request
  size_t max_buffered_bytes = 64u << 20;     // Default: 64 MiB prefetched over all partitions
};

// Parses a librdkafka properties file (`key=value` lines, `#` comments, blank lines). A value
// `@file:PATH` is replaced by the file's contents (trailing newline removed) and `@env:NAME` by
// the environment variable, so secrets need not sit in the file. Errors: kRefused naming the
// file and line.
common::Result<std::map<std::string, std::string>> loadKafkaProperties(const std::string& path);

// Runs copy + Kafka catch-up (until stopped, or with migrate.until_caught_up until caught up:
// every partition read to its end, or a watermark's round trip source -> connector -> Kafka ->
// destination under migrate.caught_up_lag), then, with a cutover, the same phases as runMigrate: the comparison,
// freeze attempts whose drain goes through the connector's committed position and the
// partitions' ends, the dual-write soak with a reverse slot on the destination (pgoutput),
// rollback or finalize. Errors keep their class: kRefused (preflight, the connector's
// configuration, topics), kDataLoss (an offset no longer retained, a difference before the
// cutover), kCancelled (`cancel` set; rerun resumes from the offsets stored at the destination).
common::Result<MigrateReport> runKafkaMigrate(const KafkaMigrateOptions& options,
                                              const std::atomic<bool>* cancel);

}  // namespace stampmover::orch
