// explainKafkaDataLoss(): see kafka_data_loss.h.
#include "orchestrator/kafka_data_loss.h"

#include <spdlog/spdlog.h>

#include "cdc/kafka_retention.h"
#include "mover/checkpoint_store.h"
#include "mover/kafka_offsets.h"
#include "mover/preflight.h"

namespace stampmover::orch {

using common::PgConnection;
using common::Result;
using common::Status;

namespace {

struct LostPartitions {
  std::string migration;
  std::string tenant;
  std::string lines;  // "\n  topic T partition P: ..." per partition out of range
};

Result<LostPartitions> findLost(const KafkaMigrateOptions& o) {
  const CopyJobOptions& co = o.migrate.copy;
  LostPartitions out;
  SM_ASSIGN_OR_RETURN(PgConnection src, PgConnection::connect(co.source.dsn, co.source.label));
  SM_ASSIGN_OR_RETURN(auto canon, mover::canonicalTenantKey(src, co.tenant_columns, co.tenant));
  out.tenant = canon.key.text();
  out.migration = mover::migrationId(canon.key, co.source.name, co.destination.name);
  SM_ASSIGN_OR_RETURN(PgConnection dst,
                      PgConnection::connect(co.destination.dsn, co.destination.label));
  SM_ASSIGN_OR_RETURN(auto stored, mover::loadKafkaOffsets(dst, out.migration));
  std::vector<cdc::PartitionOffset> parts;
  for (const auto& s : stored) parts.push_back({s.topic, s.partition, s.next_offset});
  SM_ASSIGN_OR_RETURN(auto ranges, cdc::retainedRanges(o.kafka, parts, o.kafka_timeout));
  for (size_t i = 0; i < stored.size() && i < ranges.size(); ++i) {
    const auto& s = stored[i];
    const auto& r = ranges[i];
    if (s.next_offset < 0) continue;  // "from the beginning": nothing was read yet
    std::string why;
    if (s.next_offset < r.low) {
      why = "the brokers retain only offsets " + std::to_string(r.low) + ".." +
            std::to_string(r.high - 1) + ": " + std::to_string(r.low - s.next_offset) +
            " record(s) not applied yet were deleted (retention)";
    } else if (s.next_offset > r.high) {
      why = "the partition ends at " + std::to_string(r.high) +
            " (the topic was deleted and recreated?)";
    } else {
      continue;
    }
    out.lines += "\n  topic " + s.topic + " partition " + std::to_string(s.partition) +
                 ": stored offset " + std::to_string(s.next_offset) + "; " + why;
  }
  return out;
}

}  // namespace

Status explainKafkaDataLoss(const KafkaMigrateOptions& o, const Status& st) {
  if (st.isOk() || st.errorClass() != common::ErrorClass::kDataLoss) return st;
  const CopyJobOptions& co = o.migrate.copy;
  auto fix = [&](const std::string& tenant) {
    return "Changes of those records can no longer be applied, so this migration cannot catch "
           "up. Start over: `stampmover cleanup --tenant " +
           tenant +
           " --purge-destination` (same source, destination and --state-dir), then run migrate "
           "again: it copies a new snapshot and follows the topics from their current ends. "
           "To avoid it, keep the topics' retention (retention.ms/retention.bytes) longer than "
           "a migration may stay stopped";
  };
  auto lost = findLost(o);
  if (!lost) {
    spdlog::warn("could not read which stored Kafka offsets are out of retention: {}",
                 lost.status().message());
    return Status::dataLoss(st.message() + ". " + fix(co.tenant));
  }
  if (lost->lines.empty()) return Status::dataLoss(st.message() + ". " + fix(lost->tenant));
  return Status::dataLoss("kafka: offsets stored at the " + co.destination.label +
                          " (stampmover.kafka_offsets, migration " + lost->migration +
                          ") are no longer retained by the brokers:" + lost->lines + "\n" +
                          fix(lost->tenant) + " (" + st.message() + ")");
}

}  // namespace stampmover::orch
