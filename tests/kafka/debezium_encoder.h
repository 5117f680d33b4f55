// Test helper: turns real changes of a harness source (decoded from a pgoutput slot) into the
// records Debezium's PostgreSQL connector would produce for them, following its documentation
// (JsonConverter without schemas; decimal precise, time.precision adaptive, binary bytes,
// ZonedTimestamp strings, the default unavailable-value placeholder; REPLICA IDENTITY DEFAULT:
// updates without `before`, deletes with the key only, a key change split into a delete with
// __debezium.newkey, a tombstone and a create with __debezium.oldkey). Records are keyed by the
// primary key and partitioned by a hash of it, so one row's changes stay in one partition.
// Covers the demo schema's types (harness/seed.cc); anything else fails the test.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/change.h"

namespace stampmover::testing {

struct KafkaRecord {
  std::string topic;
  int32_t partition = 0;
  std::string key;                    // JSON
  std::optional<std::string> value;   // JSON; nullopt = tombstone
  std::vector<std::pair<std::string, std::string>> headers;
};

class DebeziumEncoder {
 public:
  DebeziumEncoder(std::string prefix, int32_t partitions) : prefix_(std::move(prefix)), partitions_(partitions) {}
  // Records for one change (insert/update/delete/truncate). `snapshot` makes an insert an op r.
  std::vector<KafkaRecord> encode(const common::Change& change, uint64_t lsn, uint32_t xid,
                                  bool snapshot = false);
  // A logical decoding message (op m) on <prefix>.message.
  KafkaRecord message(const std::string& prefix, const std::string& content, uint64_t lsn);
  std::string topicOf(const std::string& table) const { return prefix_ + ".public." + table; }

 private:
  std::string prefix_;
  int32_t partitions_;
  uint64_t last_commit_lsn_ = 0;
};

}  // namespace stampmover::testing
