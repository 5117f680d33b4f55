// Shared setup of the `--cdc kafka` end-to-end tests: a source and destination database of the
// demo schema on the harness clusters, a control-plane database, the stand-in connector's slot
// and publication (every table, every tenant), one topic per table on the mock cluster, and the
// kafka.properties / connector.json files the binary reads. Header-only.
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "harness/seed.h"
#include "harness/load_writer.h"
#include "mover/source_setup.h"
#include "tests/kafka/fake_debezium.h"
#include "tests/kafka/mock_kafka.h"
#include "tests/support/test_support.h"

namespace stampmover::testing {

inline constexpr int32_t kKafkaPartitions = 3;
inline constexpr const char* kKafkaPrefix = "stamp_a";
inline const std::vector<std::string>& kafkaTables() {
  static const std::vector<std::string> t = {"accounts", "orders", "order_items", "documents",
                                             "events", "scratch", "currencies"};
  return t;
}

inline void writeTextFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

inline std::string readTextFile(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

struct KafkaEnv {
  std::string db;
  std::string cp_db;
  std::string slot;  // the stand-in connector's
  common::PgConnection src;
  common::PgConnection dst;
  common::PgConnection cp;
  TempDir dir;
  std::string kafka_config;
  std::string connector_config;

  ~KafkaEnv() {
    // The connector's slot holds WAL on the shared source cluster: dropped with the test.
    if (src.valid()) (void)src.exec("SELECT pg_drop_replication_slot('" + slot + "')");
  }
};

// The databases, topics and files; seeds `items` rows per tenant (42 and others) on the source.
inline std::unique_ptr<KafkaEnv> setUpKafkaEnv(MockKafka& kafka, uint64_t items) {
  auto e = std::make_unique<KafkaEnv>();
  e->db = freshDatabase();
  e->cp_db = freshDatabase();
  e->slot = "dbz_" + e->db;
  e->src = connectOrDie(sourceCluster().dsn(e->db));
  e->dst = connectOrDie(destCluster().dsn(e->db));
  e->cp = connectOrDie(destCluster().dsn(e->cp_db));
  for (auto* c : {&e->src, &e->dst}) EXPECT_TRUE(harness::createDemoSchema(*c).isOk());
  harness::createScratchTable(sourceCluster().dsn(e->db));
  harness::createScratchTable(destCluster().dsn(e->db));
  execOrDie(e->src, "CREATE PUBLICATION " + e->slot + " FOR ALL TABLES");
  execOrDie(e->src, "SELECT pg_create_logical_replication_slot('" + e->slot + "', 'pgoutput')");
  for (const auto& t : kafkaTables()) {
    kafka.createTopic(std::string(kKafkaPrefix) + ".public." + t, kKafkaPartitions);
  }
  e->kafka_config = e->dir.path() + "/kafka.properties";
  writeTextFile(e->kafka_config, "bootstrap.servers=" + kafka.bootstraps() + "\n");
  e->connector_config = e->dir.path() + "/connector.json";
  writeTextFile(e->connector_config,
                std::string(R"({"name": ")") + kConnectorName + R"(", "config": {"connector.class": )"
                R"("io.debezium.connector.postgresql.PostgresConnector", "topic.prefix": "stamp_a", )"
                R"("plugin.name": "pgoutput", "skipped.operations": "none"}})");
  harness::SeedOptions s;
  s.tenant_items = items;
  s.other_items = items;
  EXPECT_TRUE(harness::seedTenants(e->src, s).isOk());
  return e;
}

// migrate --cdc kafka --cutover auto with the control plane, the offsets topic of the stand-in
// connector, and pre-check/window limits above its commit latency on the mock cluster (the mock
// broker answers some produce requests only at its next 1 s poll).
inline std::vector<std::string> kafkaCutoverArgs(const KafkaEnv& e, const std::string& state_dir,
                                                 const std::string& soak, bool rollback) {
  std::vector<std::string> a = {
      "migrate", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db), "--dest-dsn",
      destCluster().dsn(e.db), "--state-dir", state_dir, "--progress", "log",
      "--cdc", "kafka", "--kafka-config", e.kafka_config, "--debezium-config", e.connector_config,
      "--kafka-offsets-topic", kOffsetsTopic, "--cutover", "auto", "--control-plane-dsn",
      destCluster().dsn(e.cp_db), "--soak", soak,
      "--precheck-ms", "1500", "--window-timeout-ms", "4000"};
  if (rollback) a.push_back("--rollback-after-soak");
  if (getenv("SM_SHOW_LOG")) a.insert(a.end(), {"--log-level", "debug"});
  return a;
}

inline bool waitForRoute(common::PgConnection& cp, const std::string& state, int seconds) {
  for (int i = 0; i < seconds * 50; ++i) {
    auto v = cp.queryValue("SELECT state FROM stampmover_routing.routes WHERE tenant = '42'");
    if (v && v->value_or("") == state) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Nothing of this migration left on either stamp (the connector's own slot and publication
// stay): slots, publications, origins, fence triggers, offsets and watermark rows.
inline void expectNothingOfTheMigrationLeft(KafkaEnv& e) {
  const std::string name = mover::replicationNameForTenant("42", e.db);
  for (auto* c : {&e.src, &e.dst}) {
    EXPECT_EQ(scalar(*c, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE $1 || '%'", {name}), "0");
    EXPECT_EQ(scalar(*c, "SELECT count(*) FROM pg_publication WHERE pubname LIKE $1 || '%'", {name}), "0");
    EXPECT_EQ(scalar(*c, "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE $1 || '%'", {name}), "0");
    EXPECT_EQ(scalar(*c, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'stampmover_fence%'"), "0");
  }
  EXPECT_EQ(scalar(e.dst, "SELECT count(*) FROM stampmover.kafka_offsets"), "0");
  EXPECT_EQ(scalar(e.dst, "SELECT count(*) FROM stampmover.kafka_applied"), "0");
}

}  // namespace stampmover::testing
