// retainedRanges(): see kafka_retention.h. A plain client (no group, no assignment) asks each
// partition's leader for its low and high watermarks.
#include "cdc/kafka_retention.h"

#include "common/kafka.h"

namespace stampmover::cdc {

using common::Result;
using common::Status;

Result<std::vector<RetainedRange>> retainedRanges(const std::map<std::string, std::string>& kafka,
                                                  const std::vector<PartitionOffset>& partitions,
                                                  std::chrono::milliseconds timeout) {
  common::KafkaConf conf(rd_kafka_conf_new());
  char err[512];
  for (const auto& [k, v] : kafka) {
    if (rd_kafka_conf_set(conf.get(), k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
      return Status::refused("kafka property " + k + ": " + err);
  }
  common::KafkaHandle rk(rd_kafka_new(RD_KAFKA_CONSUMER, conf.get(), err, sizeof err));
  if (!rk) return Status::refused(std::string("kafka client: ") + err);
  conf.release();  // owned by rk now
  std::vector<RetainedRange> out;
  for (const auto& p : partitions) {
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
        rk.get(), p.topic.c_str(), p.partition, &low, &high, static_cast<int>(timeout.count()));
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return Status::retryable("kafka: retained offsets of topic " + p.topic + " partition " +
                               std::to_string(p.partition) + ": " + rd_kafka_err2str(e));
    }
    out.push_back({p.topic, p.partition, low, high});
  }
  return out;
}

}  // namespace stampmover::cdc
