// The cutover with the Kafka (Debezium) source, end to end: `stampmover migrate --cdc kafka
// --cutover auto` against real source, destination and control-plane databases (harness),
// librdkafka's mock cluster on loopback, and the stand-in connector (tests/kafka/fake_debezium.h)
// publishing every change of the source and committing its position to a Connect-style offsets
// topic. Under a concurrent writer the worker copies, catches up from the topics, passes the full
// comparison (live verify reads the watermark the Kafka stream keeps), freezes, drains through
// the connector's committed position and the partitions' ends, flips, soaks with the reverse
// slot (pgoutput from the destination), then finalizes or rolls back. Checked independently:
// the routing entry, every tenant row on both sides by ordered SELECTs, writes made on the
// destination during the soak reaching the source, and nothing of the migration left on either
// stamp (origins, reverse slot and publication, fence, offsets and watermark rows).
#include <gtest/gtest.h>

#include <signal.h>

#include <fstream>
#include <thread>

#include "harness/seed.h"
#include "mover/source_setup.h"
#include "tests/kafka/fake_debezium.h"
#include "tests/kafka/mock_kafka.h"
#include "tests/support/test_support.h"
#include "tests/support/writer.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;
namespace harness = stampmover::harness;

namespace {

constexpr int32_t kPartitions = 3;
constexpr const char* kPrefix = "stamp_a";
const char* kTables[] = {"accounts", "orders", "order_items", "documents", "events", "scratch",
                         "currencies"};

struct Env {
  std::string db;
  std::string cp_db;
  std::string slot;  // the connector's
  PgConnection src;
  PgConnection dst;
  PgConnection cp;
  TempDir dir;
  std::string kafka_config;
  std::string connector_config;
};

void writeFile(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::unique_ptr<Env> setUpEnv(MockKafka& kafka) {
  auto e = std::make_unique<Env>();
  e->db = freshDatabase();
  e->cp_db = freshDatabase();
  e->slot = "dbz_" + e->db;
  e->src = connectOrDie(sourceCluster().dsn(e->db));
  e->dst = connectOrDie(destCluster().dsn(e->db));
  e->cp = connectOrDie(destCluster().dsn(e->cp_db));
  for (auto* c : {&e->src, &e->dst}) EXPECT_TRUE(harness::createDemoSchema(*c).isOk());
  createScratchTable(sourceCluster().dsn(e->db));
  createScratchTable(destCluster().dsn(e->db));
  execOrDie(e->src, "CREATE PUBLICATION " + e->slot + " FOR ALL TABLES");
  execOrDie(e->src, "SELECT pg_create_logical_replication_slot('" + e->slot + "', 'pgoutput')");
  for (const char* t : kTables) kafka.createTopic(std::string(kPrefix) + ".public." + t, kPartitions);
  e->kafka_config = e->dir.path() + "/kafka.properties";
  writeFile(e->kafka_config, "bootstrap.servers=" + kafka.bootstraps() + "\n");
  e->connector_config = e->dir.path() + "/connector.json";
  writeFile(e->connector_config,
            std::string(R"({"name": ")") + kConnectorName + R"(", "config": {"connector.class": )"
            R"("io.debezium.connector.postgresql.PostgresConnector", "topic.prefix": "stamp_a", )"
            R"("plugin.name": "pgoutput", "skipped.operations": "none"}})");
  harness::SeedOptions s;
  s.tenant_items = 1000;
  s.other_items = 1000;
  EXPECT_TRUE(harness::seedTenants(e->src, s).isOk());
  return e;
}

std::vector<std::string> cutoverArgs(const Env& e, const std::string& soak, bool rollback) {
  std::vector<std::string> a = {
      "migrate", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db), "--dest-dsn",
      destCluster().dsn(e.db), "--state-dir", e.dir.path() + "/state", "--progress", "log",
      "--cdc", "kafka", "--kafka-config", e.kafka_config, "--debezium-config", e.connector_config,
      "--kafka-offsets-topic", kOffsetsTopic, "--cutover", "auto", "--control-plane-dsn",
      destCluster().dsn(e.cp_db), "--soak", soak,
      // The drain waits for the connector's offset commit; the mock broker sometimes answers a
      // produce only at its next 1 s poll, so the stand-in connector's commits lag up to ~1 s.
      "--precheck-ms", "1500", "--window-timeout-ms", "4000"};
  if (rollback) a.push_back("--rollback-after-soak");
  if (getenv("SM_SHOW_LOG")) a.insert(a.end(), {"--log-level", "debug"});
  return a;
}

std::string readLog(const std::string& path) {
  std::ifstream f(path);
  std::string out((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return out.size() > 30000 ? out.substr(out.size() - 30000) : out;
}

bool waitForRoute(PgConnection& cp, const std::string& state, int seconds) {
  for (int i = 0; i < seconds * 50; ++i) {
    auto v = cp.queryValue("SELECT state FROM stampmover_routing.routes WHERE tenant = '42'");
    if (v && v->value_or("") == state) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Nothing of this migration left (the connector's own slot and publication stay).
void expectNothingLeft(Env& e) {
  const std::string name = stampmover::mover::replicationNameForTenant("42", e.db);
  for (auto* c : {&e.src, &e.dst}) {
    EXPECT_EQ(scalar(*c, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE $1 || '%'", {name}), "0");
    EXPECT_EQ(scalar(*c, "SELECT count(*) FROM pg_publication WHERE pubname LIKE $1 || '%'", {name}), "0");
    EXPECT_EQ(scalar(*c, "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE $1 || '%'", {name}), "0");
    EXPECT_EQ(scalar(*c, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'stampmover_fence%'"), "0");
  }
  EXPECT_EQ(scalar(e.dst, "SELECT count(*) FROM stampmover.kafka_offsets"), "0");
  EXPECT_EQ(scalar(e.dst, "SELECT count(*) FROM stampmover.kafka_applied"), "0");
}

class KafkaCutoverTest : public ::testing::Test {
 protected:
  void TearDown() override {
    dbz_.reset();
    if (env_ && env_->src.valid())
      (void)env_->src.exec("SELECT pg_drop_replication_slot('" + env_->slot + "')");
  }
  MockKafka kafka_;
  std::unique_ptr<Env> env_;
  std::unique_ptr<FakeDebezium> dbz_;
};

}  // namespace

TEST_F(KafkaCutoverTest, FlipsSoaksAndFinalizesUnderAWriter) {
  env_ = setUpEnv(kafka_);
  Env& e = *env_;
  dbz_ = std::make_unique<FakeDebezium>(sourceCluster().dsn(e.db), e.slot, kafka_, kPrefix, kPartitions);
  ASSERT_TRUE(dbz_->sync(e.src, "seeded"));
  WriterOptions wo;
  wo.dsn = sourceCluster().dsn(e.db);
  wo.duration = std::chrono::milliseconds(60000);  // until stopped at the flip
  wo.seed = 21;
  wo.max_transactions = 3000;  // within the mock's retention per partition
  wo.pause = std::chrono::microseconds(3000);
  wo.truncates = false;  // a truncate has no key: its order against rows is not kept (README)
  Writer writer(wo);
  const std::string log = e.dir.path() + "/migrate.log";
  ChildProcess child(spawnStampmover(cutoverArgs(e, "3", false), log));
  ASSERT_TRUE(waitForRoute(e.cp, "dual_write", 120)) << "no flip; log:\n" << readLog(log);
  writer.stop();  // the source is fenced for the tenant from the flip on
  ASSERT_GT(writer.transactions(), 20u);
  execOrDie(e.dst, "INSERT INTO scratch VALUES (42, 900001, 'written during soak')");
  execOrDie(e.dst, "UPDATE orders SET status = 'soaked' WHERE tenant_id = 42 AND order_id = 5");
  ASSERT_EQ(child.wait(), 0) << readLog(log);
  const std::string text = readLog(log);
  if (getenv("SM_SHOW_LOG")) std::fputs(text.c_str(), stderr);
  EXPECT_NE(text.find("cutover: FLIPPED"), std::string::npos) << text;
  EXPECT_NE(text.find("identical on both stamps"), std::string::npos) << text;
  for (size_t at = text.find("kafka drain to"); at != std::string::npos; at = text.find("kafka drain to", at + 1)) {
    std::printf("%s\n", text.substr(at, text.find('\n', at) - at).c_str());
  }
  std::printf("%s\n", text.substr(text.find("cutover: FLIPPED"), 400).c_str());
  EXPECT_EQ(scalar(e.cp, "SELECT stamp || ',' || state FROM stampmover_routing.routes WHERE tenant = '42'"),
            "127.0.0.1:" + std::to_string(destCluster().port()) + "/" + e.db + ",active")
      << "finalized on the destination";
  EXPECT_EQ(scalar(e.src, "SELECT v FROM scratch WHERE tenant_id = 42 AND id = 900001"), "written during soak");
  // Every row the writer committed before the fence, and the soak's writes, on both sides.
  ASSERT_NO_FATAL_FAILURE(expectDemoTenantEqual(e.src, e.dst));
  for (const auto& [table, order] : kDemoTenantTables) {
    EXPECT_EQ(scalar(e.dst, std::string("SELECT count(*) FROM ") + table + " WHERE tenant_id <> 42"), "0")
        << "other tenants' rows reached the destination in " << table;
  }
  expectNothingLeft(e);
}

TEST_F(KafkaCutoverTest, RollsBackAfterTheSoakWithoutLosingDestinationWrites) {
  env_ = setUpEnv(kafka_);
  Env& e = *env_;
  dbz_ = std::make_unique<FakeDebezium>(sourceCluster().dsn(e.db), e.slot, kafka_, kPrefix, kPartitions);
  ASSERT_TRUE(dbz_->sync(e.src, "seeded"));
  WriterOptions wo;
  wo.dsn = sourceCluster().dsn(e.db);
  wo.duration = std::chrono::milliseconds(60000);
  wo.seed = 22;
  wo.max_transactions = 3000;
  wo.pause = std::chrono::microseconds(3000);
  wo.truncates = false;
  Writer writer(wo);
  const std::string log = e.dir.path() + "/migrate.log";
  ChildProcess child(spawnStampmover(cutoverArgs(e, "3", true), log));
  ASSERT_TRUE(waitForRoute(e.cp, "dual_write", 120)) << "no flip; log:\n" << readLog(log);
  writer.stop();
  execOrDie(e.dst, "INSERT INTO scratch VALUES (42, 900002, 'acknowledged on the destination')");
  execOrDie(e.dst, "DELETE FROM order_items WHERE tenant_id = 42 AND order_id = 7");
  ASSERT_EQ(child.wait(), 0) << readLog(log);
  EXPECT_EQ(scalar(e.cp, "SELECT stamp || ',' || state FROM stampmover_routing.routes WHERE tenant = '42'"),
            "127.0.0.1:" + std::to_string(sourceCluster().port()) + "/" + e.db + ",active")
      << "back on the source";
  EXPECT_EQ(scalar(e.src, "SELECT v FROM scratch WHERE tenant_id = 42 AND id = 900002"),
            "acknowledged on the destination");
  EXPECT_EQ(scalar(e.src, "SELECT count(*) FROM order_items WHERE tenant_id = 42 AND order_id = 7"), "0");
  ASSERT_NO_FATAL_FAILURE(expectDemoTenantEqual(e.src, e.dst));
  expectNothingLeft(e);
  // The source takes the tenant's writes again.
  execOrDie(e.src, "UPDATE orders SET status = 'back' WHERE tenant_id = 42 AND order_id = 5");
}

// kill -9 of the worker during the dual-write soak: a rerun with the same arguments resumes the
// soak from the reverse slot (the topics are not read again past the flip) and finalizes, with
// the destination's writes of the soak on the source and nothing left.
TEST_F(KafkaCutoverTest, KillNineDuringTheSoakThenRerunFinalizes) {
  env_ = setUpEnv(kafka_);
  Env& e = *env_;
  dbz_ = std::make_unique<FakeDebezium>(sourceCluster().dsn(e.db), e.slot, kafka_, kPrefix, kPartitions);
  ASSERT_TRUE(dbz_->sync(e.src, "seeded"));
  const std::string log = e.dir.path() + "/migrate.log";
  ChildProcess child(spawnStampmover(cutoverArgs(e, "600", false), log));
  ASSERT_TRUE(waitForRoute(e.cp, "dual_write", 120)) << "no flip; log:\n" << readLog(log);
  execOrDie(e.dst, "INSERT INTO scratch VALUES (42, 900003, 'before the kill')");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_EQ(::kill(child.pid(), SIGKILL), 0);
  EXPECT_EQ(child.wait(), -SIGKILL);
  execOrDie(e.dst, "INSERT INTO scratch VALUES (42, 900004, 'between the kill and the rerun')");
  // The brokers are not needed past the flip: the rerun finishes even with Kafka unreachable.
  const std::string unreachable = e.dir.path() + "/unreachable.properties";
  writeFile(unreachable, "bootstrap.servers=127.0.0.1:1\n");
  std::vector<std::string> again = cutoverArgs(e, "1", false);
  for (size_t i = 0; i + 1 < again.size(); ++i) {
    if (again[i] == "--kafka-config") again[i + 1] = unreachable;
  }
  const std::string log2 = e.dir.path() + "/rerun.log";
  ChildProcess rerun(spawnStampmover(again, log2));
  ASSERT_EQ(rerun.wait(), 0) << readLog(log2);
  EXPECT_EQ(scalar(e.cp, "SELECT stamp || ',' || state FROM stampmover_routing.routes WHERE tenant = '42'"),
            "127.0.0.1:" + std::to_string(destCluster().port()) + "/" + e.db + ",active")
      << readLog(log2);
  EXPECT_EQ(scalar(e.src, "SELECT v FROM scratch WHERE tenant_id = 42 AND id = 900003"), "before the kill");
  EXPECT_EQ(scalar(e.src, "SELECT v FROM scratch WHERE tenant_id = 42 AND id = 900004"),
            "between the kill and the rerun");
  ASSERT_NO_FATAL_FAILURE(expectDemoTenantEqual(e.src, e.dst));
  expectNothingLeft(e);
}
