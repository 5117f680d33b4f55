// Reading Kafka Connect's offsets topic for one connector (see connect_offsets.h).
#include "cdc/connect_offsets.h"

#include <nlohmann/json.hpp>

#include <set>
#include <thread>

#include "cdc/kafka_source.h"
#include "common/kafka.h"

namespace stampmover::cdc {

using common::Result;
using common::Status;

namespace {

// Debezium writes LSNs as JSON numbers.
std::optional<common::Lsn> lsnField(const nlohmann::json& v, const char* name) {
  auto it = v.find(name);
  if (it == v.end() || !it->is_number_unsigned()) return std::nullopt;
  return common::Lsn(it->get<uint64_t>());
}

// One record of the offsets topic: when it is the connector's, `out` becomes its position (or
// nothing, for a tombstone: the connector's offsets were reset).
Status applyRecord(const rd_kafka_message_t* msg, const nlohmann::json& want_key,
                   const std::string& offsets_topic, std::optional<ConnectorPosition>& out) {
  if (msg->key == nullptr) return Status::ok();
  nlohmann::json key = nlohmann::json::parse(
      std::string_view(static_cast<const char*>(msg->key), msg->key_len), nullptr, false);
  if (key != want_key) return Status::ok();
  if (msg->payload == nullptr) {
    out.reset();
    return Status::ok();
  }
  nlohmann::json v = nlohmann::json::parse(
      std::string_view(static_cast<const char*>(msg->payload), msg->len), nullptr, false);
  if (v.is_discarded() || !v.is_object()) {
    return Status::internal("kafka: unreadable value in " + offsets_topic + " partition " +
                            std::to_string(msg->partition) + " offset " + std::to_string(msg->offset));
  }
  ConnectorPosition p;
  p.offset = msg->offset;
  auto proc = lsnField(v, "lsn_proc");
  if (!proc) proc = lsnField(v, "lsn");
  if (!proc) {
    return Status::internal("kafka: the connector offset in " + offsets_topic + " partition " +
                            std::to_string(msg->partition) + " offset " +
                            std::to_string(msg->offset) + " has no lsn_proc or lsn");
  }
  p.processed = *proc;
  p.committed = lsnField(v, "lsn_commit").value_or(common::Lsn());
  out = p;
  return Status::ok();
}

}  // namespace

Result<std::optional<ConnectorPosition>> readConnectorPosition(
    const std::map<std::string, std::string>& kafka, const std::string& offsets_topic,
    const std::string& connector, const std::string& server, std::chrono::milliseconds timeout) {
  SM_ASSIGN_OR_RETURN(auto watch, ConnectorWatch::open(kafka, offsets_topic, connector, server, timeout));
  return watch->readToEnd(timeout);
}

Result<std::vector<PartitionOffset>> drainTarget(
    const std::map<std::string, std::string>& kafka, const std::string& offsets_topic,
    const std::string& connector, const std::string& server,
    const std::vector<PartitionOffset>& partitions, common::Lsn fence_lsn,
    std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds poll) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  SM_ASSIGN_OR_RETURN(auto watch, ConnectorWatch::open(kafka, offsets_topic, connector, server,
                                                       std::max(left, std::chrono::milliseconds(1))));
  return watch->drainTarget(partitions, fence_lsn, deadline, poll);
}

Result<std::unique_ptr<ConnectorWatch>> ConnectorWatch::open(
    const std::map<std::string, std::string>& kafka, const std::string& offsets_topic,
    const std::string& connector, const std::string& server, std::chrono::milliseconds timeout) {
  auto parts = KafkaDebeziumSource::partitionsOf(kafka, {offsets_topic}, timeout);
  if (!parts) {
    if (parts.status().errorClass() == common::ErrorClass::kRefused) {
      return Status::refused("Kafka Connect offsets topic " + offsets_topic +
                             " does not exist: pass the Connect worker's offset.storage.topic "
                             "(--kafka-offsets-topic)");
    }
    return parts.status();
  }
  common::KafkaConf conf(rd_kafka_conf_new());
  char err[512];
  std::map<std::string, std::string> props = kafka;
  props["group.id"] = "stampmover-connect-offsets";
  props["enable.auto.commit"] = "false";
  props["enable.auto.offset.store"] = "false";
  props["auto.offset.reset"] = "earliest";
  // A new commit of the connector is seen within this (librdkafka's default is 500 ms): the
  // cutover window waits for it.
  props["fetch.wait.max.ms"] = "5";
  props["fetch.error.backoff.ms"] = "5";
  for (const auto& [k, v] : props) {
    if (rd_kafka_conf_set(conf.get(), k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
      return Status::refused("kafka property " + k + ": " + err);
  }
  std::unique_ptr<ConnectorWatch> w(new ConnectorWatch());
  w->rk_.reset(rd_kafka_new(RD_KAFKA_CONSUMER, conf.get(), err, sizeof err));
  if (!w->rk_) return Status::refused(std::string("kafka consumer: ") + err);
  conf.release();
  rd_kafka_poll_set_consumer(w->rk_.get());
  common::KafkaTopicPartitionList list(rd_kafka_topic_partition_list_new(static_cast<int>(parts->size())));
  for (const auto& p : *parts) {
    rd_kafka_topic_partition_list_add(list.get(), offsets_topic.c_str(), p.partition)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_resp_err_t aerr = rd_kafka_assign(w->rk_.get(), list.get());
  if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR)
    return Status::internal(std::string("kafka assign: ") + rd_kafka_err2str(aerr));
  w->parts_ = *parts;
  w->topic_ = offsets_topic;
  w->connector_ = connector;
  w->server_ = server;
  w->want_key_ = nlohmann::json::array({connector, {{"server", server}}}).dump();
  return w;
}

ConnectorWatch::~ConnectorWatch() {
  if (rk_) rd_kafka_consumer_close(rk_.get());
}

Result<std::optional<ConnectorPosition>> ConnectorWatch::position(std::chrono::milliseconds wait) {
  const nlohmann::json want = nlohmann::json::parse(want_key_);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  // Everything already fetched is read (a busy connector commits often); bounded in time.
  const auto give_up = deadline + std::chrono::milliseconds(200);
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    common::KafkaMessage msg(rd_kafka_consumer_poll(rk_.get(), static_cast<int>(std::max<int64_t>(left.count(), 0))));
    if (!msg || now >= give_up) break;  // nothing more within `wait`
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) continue;
      if (msg->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
        return Status::refused("Kafka Connect offsets topic " + topic_ + " is gone");
      }
      continue;  // transient; librdkafka retries
    }
    next_[msg->partition] = msg->offset + 1;
    SM_RETURN_IF_ERROR(applyRecord(msg.get(), want, topic_, last_));
  }
  return last_;
}

Result<std::optional<ConnectorPosition>> ConnectorWatch::readToEnd(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  SM_ASSIGN_OR_RETURN(auto ends, ends(parts_, timeout));
  for (;;) {
    bool done = true;
    for (const auto& e : ends) {
      auto it = next_.find(e.partition);
      if (e.offset > 0 && (it == next_.end() || it->second < e.offset)) done = false;
    }
    if (done) return last_;
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status::retryable("kafka: reading " + topic_ + " did not reach its end in " +
                               std::to_string(timeout.count()) + " ms");
    }
    SM_RETURN_IF_ERROR(position(std::chrono::milliseconds(20)).status());
  }
}

Result<std::vector<PartitionOffset>> ConnectorWatch::ends(const std::vector<PartitionOffset>& partitions,
                                                         std::chrono::milliseconds timeout) {
  return KafkaDebeziumSource::endOffsetsOn(rk_.get(), partitions, timeout);
}

Result<std::vector<PartitionOffset>> ConnectorWatch::drainTarget(
    const std::vector<PartitionOffset>& partitions, common::Lsn fence_lsn,
    std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds poll) {
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return Status::retryable(
          "drain: connector " + connector_ + " has not committed a position at or past " +
          fence_lsn.toString() + " (last: " +
          (last_ ? last_->processed.toString() : std::string("none")) +
          "); is it running, does it process logical decoding messages or send heartbeats "
          "(heartbeat.interval.ms), and does its Connect worker commit offsets often "
          "(offset.flush.interval.ms)?");
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    SM_ASSIGN_OR_RETURN(auto pos, position(std::min(left, poll)));
    if (pos && pos->processed >= fence_lsn) break;
  }
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return ends(partitions, std::max(left, std::chrono::milliseconds(1)));
}

}  // namespace stampmover::cdc
