// Test helper: a stand-in for Debezium's PostgreSQL connector under Kafka Connect. It reads every
// change of a harness source from a pgoutput slot (all tenants, all tables), publishes the records
// Debezium would (DebeziumEncoder) into the mock cluster, one transaction at a time, flushed, and
// then commits its source position to a Connect-style offsets topic (key
// ["<connector>", {"server": "<prefix>"}], value {"lsn_proc", "lsn_commit", "lsn", "txId"}), as
// Kafka Connect does only after the records before it are acknowledged.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cdc/pgoutput_source.h"
#include "common/change.h"
#include "tests/kafka/debezium_encoder.h"
#include "tests/kafka/mock_kafka.h"
#include "tests/support/test_support.h"

namespace stampmover::testing {

inline constexpr const char* kOffsetsTopic = "connect-offsets";
inline constexpr const char* kConnectorName = "stamp-a";

// The stand-in connector: streams the slot, publishes each transaction's records at its commit
// (flushed before the slot is acknowledged, as Kafka Connect commits source offsets only after
// the records are acked), until stopped after a marker message.
class FakeDebezium {
 public:
  // Streams `slot` (and its publication of the same name) of the source at `dsn` into topics
  // <prefix>.<schema>.<table> of `partitions` partitions (created by the caller), and commits
  // its position to kOffsetsTopic (created here) after each transaction's records are flushed.
  // `commit_every`: how often the source offset is committed (Kafka Connect's
  // offset.flush.interval.ms; records are produced as transactions come regardless).
  FakeDebezium(std::string dsn, std::string slot, MockKafka& kafka, std::string prefix,
               int32_t partitions, std::chrono::milliseconds commit_every = std::chrono::milliseconds(20))
      : dsn_(std::move(dsn)), slot_(std::move(slot)), kafka_(kafka), prefix_(prefix),
        enc_(std::move(prefix), partitions), commit_every_(commit_every) {
    kafka_.createTopic(kOffsetsTopic, 3);
    thread_ = std::thread([this] { run(); });
  }
  ~FakeDebezium() {
    stop_ = true;
    thread_.join();
  }
  // Emits a marker through `conn` and waits until it was published (everything committed
  // before it is in Kafka then). False on timeout.
  bool sync(common::PgConnection& conn, const std::string& marker) {
    execOrDie(conn, "SELECT pg_logical_emit_message(true, 'fake-dbz', '" + marker + "')");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard lock(mu_);
        if (seen_ == marker) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  uint64_t records() const { return records_.load(); }

 private:
  void run() {
    stampmover::cdc::PgoutputSourceOptions so;
    so.dsn = dsn_;
    so.slot = slot_;
    so.publication = slot_;
    auto source = stampmover::cdc::PgoutputSource::start(so);
    if (!source) {
      ADD_FAILURE() << "fake debezium: " << source.status().message();
      return;
    }
    std::vector<KafkaRecord> txn;
    uint32_t xid = 0;
    // Like Kafka Connect, transactions are produced as they come and the source offset is
    // committed for a batch of them (every 20 ms, or when the source is idle), once the
    // batch's records are acknowledged: one flush per transaction could not keep up with a
    // busy source on the mock cluster.
    struct Done {
      uint64_t commit_lsn = 0, end_lsn = 0;
      uint32_t xid = 0;
    };
    std::optional<Done> unflushed;  // produced, not yet acknowledged by the brokers
    std::optional<Done> acked;      // acknowledged, offset not yet committed
    std::string acked_marker;
    auto last_flush = std::chrono::steady_clock::now();
    auto last_commit = last_flush;
    auto commitOffset = [&]() {
      KafkaRecord off;
      off.topic = kOffsetsTopic;
      off.partition = 1;
      off.key = nlohmann::json::array({kConnectorName, {{"server", prefix_}}}).dump();
      off.value = nlohmann::json{{"lsn_proc", acked->commit_lsn}, {"lsn_commit", acked->commit_lsn},
                                 {"lsn", acked->commit_lsn}, {"txId", acked->xid}}.dump();
      kafka_.produce({off});
      (*source)->acknowledge(stampmover::common::Lsn(acked->end_lsn)).ignore();
      acked.reset();
      last_commit = std::chrono::steady_clock::now();
      std::lock_guard lock(mu_);
      if (!acked_marker.empty()) seen_ = std::move(acked_marker), acked_marker.clear();
    };
    while (!stop_) {
      auto ev = (*source)->next(std::chrono::milliseconds(unflushed ? 0 : acked ? 5 : 50));
      if (!ev) {
        ADD_FAILURE() << "fake debezium: " << ev.status().message();
        return;
      }
      const auto now = std::chrono::steady_clock::now();
      if (unflushed && (!ev->has_value() || now - last_flush >= std::chrono::milliseconds(20))) {
        kafka_.flush();
        acked = unflushed;
        unflushed.reset();
        last_flush = std::chrono::steady_clock::now();
        std::lock_guard lock(mu_);
        if (!batch_marker_.empty()) acked_marker = std::move(batch_marker_), batch_marker_.clear();
      }
      if (acked && now - last_commit >= commit_every_) commitOffset();
      if (!ev->has_value()) continue;
      const stampmover::common::ChangeEvent& c = **ev;
      switch (c.kind) {
        case stampmover::common::ChangeEvent::Kind::kBegin:
          xid = c.txn.xid;
          txn.clear();
          break;
        case stampmover::common::ChangeEvent::Kind::kChange:
          for (auto& r : enc_.encode(c.change, c.wal_start.value(), xid)) txn.push_back(std::move(r));
          break;
        case stampmover::common::ChangeEvent::Kind::kMessage:
          if (c.message.prefix == "fake-dbz") {
            std::lock_guard lock(mu_);
            pending_marker_ = c.message.content;
          }
          break;
        case stampmover::common::ChangeEvent::Kind::kCommit: {
          if (!txn.empty()) kafka_.produce(txn, /*flush=*/false);
          records_ += txn.size();
          txn.clear();
          // Kafka Connect commits the source offset once the records before it are acked: after
          // the batch's flush, every commit_every (the slot may release WAL only then, too).
          unflushed = Done{c.txn.commit_lsn.value(), c.txn.end_lsn.value(), c.txn.xid};
          std::lock_guard lock(mu_);
          if (!pending_marker_.empty()) batch_marker_ = std::move(pending_marker_), pending_marker_.clear();
          break;
        }
        default:
          break;
      }
    }
  }
  std::string dsn_, slot_;
  MockKafka& kafka_;
  std::string prefix_;
  DebeziumEncoder enc_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> records_{0};
  std::mutex mu_;
  std::string pending_marker_, batch_marker_, seen_;
  std::chrono::milliseconds commit_every_;
  std::thread thread_;
};

}  // namespace stampmover::testing
