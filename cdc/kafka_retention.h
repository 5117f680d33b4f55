// What the brokers still retain of each partition (its first and next offset), to tell an
// operator exactly which stored offsets fell out of retention: the Kafka source only learns
// "offset out of range" for the one partition it fetched first.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cdc/kafka_source.h"
#include "common/status.h"

namespace stampmover::cdc {

struct RetainedRange {
  std::string topic;
  int32_t partition = 0;
  int64_t low = 0;   // the first offset still retained (records before it were deleted)
  int64_t high = 0;  // the offset the next record will get
};

// The retained range of each of `partitions` (offsets ignored), asked of each partition's
// leader (a ListOffsets request each, up to `timeout`), in the order given. `kafka` holds the
// librdkafka properties (bootstrap.servers...). Errors: kRefused (bad properties), kRetryable
// (brokers unreachable or a leader unknown). Thread-safe (own client per call).
common::Result<std::vector<RetainedRange>> retainedRanges(
    const std::map<std::string, std::string>& kafka, const std::vector<PartitionOffset>& partitions,
    std::chrono::milliseconds timeout);

}  // namespace stampmover::cdc
