// Test helper: librdkafka's mock cluster (rdkafka_mock.h) of three brokers on 127.0.0.1, started
// by the test and destroyed with it, and an idempotent producer into it. Header-only.
#pragma once

#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <string>
#include <vector>

#include "common/kafka.h"
#include "tests/kafka/debezium_encoder.h"

namespace stampmover::testing {

class MockKafka {
 public:
  MockKafka() {
    char err[512];
    common::KafkaConf conf(rd_kafka_conf_new());
    host_.reset(rd_kafka_new(RD_KAFKA_PRODUCER, conf.release(), err, sizeof err));
    EXPECT_TRUE(host_) << err;
    cluster_ = rd_kafka_mock_cluster_new(host_.get(), 3);
    EXPECT_NE(cluster_, nullptr);
    bootstraps_ = rd_kafka_mock_cluster_bootstraps(cluster_);
    common::KafkaConf pconf(rd_kafka_conf_new());
    rd_kafka_conf_set(pconf.get(), "bootstrap.servers", bootstraps_.c_str(), err, sizeof err);
    rd_kafka_conf_set(pconf.get(), "enable.idempotence", "true", err, sizeof err);
    // Each produce() is flushed at once (a connector's transaction): no batching delay.
    rd_kafka_conf_set(pconf.get(), "linger.ms", "0", err, sizeof err);
    rd_kafka_conf_set(pconf.get(), "socket.nagle.disable", "true", err, sizeof err);
    producer_.reset(rd_kafka_new(RD_KAFKA_PRODUCER, pconf.release(), err, sizeof err));
    EXPECT_TRUE(producer_) << err;
  }
  ~MockKafka() {
    producer_.reset();
    if (cluster_) rd_kafka_mock_cluster_destroy(cluster_);
    host_.reset();
  }
  const std::string& bootstraps() const { return bootstraps_; }
  rd_kafka_mock_cluster_t* cluster() { return cluster_; }
  void createTopic(const std::string& topic, int partitions) {
    ASSERT_EQ(rd_kafka_mock_topic_create(cluster_, topic.c_str(), partitions, 3),
              RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  // Produces `records`; with `flush`, returns once every record produced so far is acknowledged.
  void produce(const std::vector<KafkaRecord>& records, bool flush = true) {
    for (const auto& r : records) {
      rd_kafka_headers_t* hdrs = rd_kafka_headers_new(r.headers.size());
      for (const auto& [k, v] : r.headers)
        rd_kafka_header_add(hdrs, k.c_str(), -1, v.data(), static_cast<ssize_t>(v.size()));
      rd_kafka_resp_err_t err;
      do {
        err = rd_kafka_producev(
            producer_.get(), RD_KAFKA_V_TOPIC(r.topic.c_str()), RD_KAFKA_V_PARTITION(r.partition),
            RD_KAFKA_V_KEY(r.key.data(), r.key.size()),
            RD_KAFKA_V_VALUE((r.value ? const_cast<char*>(r.value->data()) : nullptr),
                             (r.value ? r.value->size() : size_t{0})),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) rd_kafka_poll(producer_.get(), 100);
      } while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL);
      ASSERT_EQ(err, RD_KAFKA_RESP_ERR_NO_ERROR) << rd_kafka_err2str(err);
    }
    if (flush) this->flush();
  }
  void flush() { ASSERT_EQ(rd_kafka_flush(producer_.get(), 30000), RD_KAFKA_RESP_ERR_NO_ERROR); }

 private:
  common::KafkaHandle host_;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
  std::string bootstraps_;
  common::KafkaHandle producer_;
};

}  // namespace stampmover::testing
