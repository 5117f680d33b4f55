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

#include "common/pg.h"
#include "routing/routing_directory.h"
#include "tests/kafka/kafka_env.h"
#include "tests/support/direct_writer.h"
#include "tests/support/writer.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;

namespace {

std::string readLog(const std::string& path) {
  std::string out = readTextFile(path);
  return out.size() > 30000 ? out.substr(out.size() - 30000) : out;
}

class KafkaCutoverTest : public ::testing::Test {
 protected:
  void start() {
    env_ = setUpKafkaEnv(kafka_, 1000);
    dbz_ = std::make_unique<FakeDebezium>(sourceCluster().dsn(env_->db), env_->slot, kafka_,
                                          kKafkaPrefix, kKafkaPartitions);
    ASSERT_TRUE(dbz_->sync(env_->src, "seeded"));
  }
  std::vector<std::string> cutoverArgs(const std::string& soak, bool rollback) {
    return kafkaCutoverArgs(*env_, env_->dir.path() + "/state", soak, rollback);
  }
  MockKafka kafka_;
  std::unique_ptr<KafkaEnv> env_;
  std::unique_ptr<FakeDebezium> dbz_;  // destroyed first: it holds the connector's slot
};

}  // namespace

TEST_F(KafkaCutoverTest, FlipsSoaksAndFinalizesUnderAWriter) {
  ASSERT_NO_FATAL_FAILURE(start());
  KafkaEnv& e = *env_;
  WriterOptions wo;
  wo.dsn = sourceCluster().dsn(e.db);
  wo.duration = std::chrono::milliseconds(60000);  // until stopped at the flip
  wo.seed = 21;
  wo.max_transactions = 3000;  // within the mock's retention per partition
  wo.pause = std::chrono::microseconds(3000);
  wo.truncates = false;  // a truncate has no key: its order against rows is not kept (README)
  Writer writer(wo);
  const std::string log = e.dir.path() + "/migrate.log";
  ChildProcess child(spawnStampmover(cutoverArgs("3", false), log));
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
  expectNothingOfTheMigrationLeft(e);
}

TEST_F(KafkaCutoverTest, RollsBackAfterTheSoakWithoutLosingDestinationWrites) {
  ASSERT_NO_FATAL_FAILURE(start());
  KafkaEnv& e = *env_;
  WriterOptions wo;
  wo.dsn = sourceCluster().dsn(e.db);
  wo.duration = std::chrono::milliseconds(60000);
  wo.seed = 22;
  wo.max_transactions = 3000;
  wo.pause = std::chrono::microseconds(3000);
  wo.truncates = false;
  Writer writer(wo);
  const std::string log = e.dir.path() + "/migrate.log";
  ChildProcess child(spawnStampmover(cutoverArgs("3", true), log));
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
  expectNothingOfTheMigrationLeft(e);
  // The source takes the tenant's writes again.
  execOrDie(e.src, "UPDATE orders SET status = 'back' WHERE tenant_id = 42 AND order_id = 5");
}

// kill -9 of the worker during the dual-write soak: a rerun with the same arguments resumes the
// soak from the reverse slot (the topics are not read again past the flip) and finalizes, with
// the destination's writes of the soak on the source and nothing left.
TEST_F(KafkaCutoverTest, KillNineDuringTheSoakThenRerunFinalizes) {
  ASSERT_NO_FATAL_FAILURE(start());
  KafkaEnv& e = *env_;
  const std::string log = e.dir.path() + "/migrate.log";
  ChildProcess child(spawnStampmover(cutoverArgs("600", false), log));
  ASSERT_TRUE(waitForRoute(e.cp, "dual_write", 120)) << "no flip; log:\n" << readLog(log);
  execOrDie(e.dst, "INSERT INTO scratch VALUES (42, 900003, 'before the kill')");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_EQ(::kill(child.pid(), SIGKILL), 0);
  EXPECT_EQ(child.wait(), -SIGKILL);
  execOrDie(e.dst, "INSERT INTO scratch VALUES (42, 900004, 'between the kill and the rerun')");
  // The brokers are not needed past the flip: the rerun finishes even with Kafka unreachable.
  const std::string unreachable = e.dir.path() + "/unreachable.properties";
  writeTextFile(unreachable, "bootstrap.servers=127.0.0.1:1\n");
  std::vector<std::string> again = cutoverArgs("1", false);
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
  expectNothingOfTheMigrationLeft(e);
}

// Kafka Connect commits source offsets periodically (offset.flush.interval.ms): here every
// 1.5 s, under a writer that never stops by itself before the flip (new rows at the tail all the
// time, and read-then-write REPEATABLE READ transactions). The watermark, the live comparison's
// re-reads and the drain all wait for those commits; the comparison still settles, the
// pre-check and window limits are raised above the commit interval, and the cutover happens
// with no acknowledged write lost.
TEST_F(KafkaCutoverTest, SlowOffsetCommitsUnderAWriterThatNeverPauses) {
  env_ = setUpKafkaEnv(kafka_, 300);
  KafkaEnv& e = *env_;
  const std::string src_dsn = sourceCluster().dsn(e.db);
  const std::string cp_dsn = destCluster().dsn(e.cp_db);
  stampmover::routing::PgRoutingDirectory routes(cp_dsn);
  ASSERT_TRUE(routes.ensureSchema().isOk());
  ASSERT_TRUE(routes.put("42", stampmover::common::dsnLocation(src_dsn)).isOk());
  dbz_ = std::make_unique<FakeDebezium>(src_dsn, e.slot, kafka_, kKafkaPrefix, kKafkaPartitions,
                                        std::chrono::milliseconds(1500));
  ASSERT_TRUE(dbz_->sync(e.src, "seeded"));
  DirectWriterOptions dw;
  dw.dsn = src_dsn;
  dw.stamp = stampmover::common::dsnLocation(src_dsn);
  dw.control_plane_dsn = cp_dsn;
  DirectWriter writer(dw);  // stops by itself once the routing entry leaves the source
  for (int i = 0; i < 250 && writer.acknowledged() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto args = kafkaCutoverArgs(e, e.dir.path() + "/state", "1", false);
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--precheck-ms") args[i + 1] = "4000";
    if (args[i] == "--window-timeout-ms") args[i + 1] = "8000";
  }
  auto r = runStampmover(args);
  writer.stop();
  if (getenv("SM_SHOW_LOG")) std::fputs(r.err.c_str(), stderr);
  ASSERT_EQ(r.exit_code, 0) << r.err.substr(r.err.size() > 20000 ? r.err.size() - 20000 : 0);
  EXPECT_NE(r.err.find("identical on both stamps"), std::string::npos);
  const size_t flip = r.err.find("cutover: FLIPPED");
  ASSERT_NE(flip, std::string::npos);
  std::printf("%s\n", r.err.substr(flip, r.err.find('\n', flip) - flip).c_str());
  // The drain waited for a commit of the connector: at most its interval plus the mock's tick.
  const size_t drain = r.err.find("kafka drain to");
  ASSERT_NE(drain, std::string::npos);
  std::printf("%s\n", r.err.substr(drain, r.err.find('\n', drain) - drain).c_str());
  EXPECT_EQ(scalar(e.cp, "SELECT stamp || ',' || state FROM stampmover_routing.routes WHERE tenant = '42'"),
            stampmover::common::dsnLocation(destCluster().dsn(e.db)) + ",active");
  EXPECT_GT(writer.acknowledged(), 0u);
  EXPECT_EQ(writer.missingOn(e.dst), "") << "acknowledged writes lost (of " << writer.acknowledged() << ")";
  EXPECT_EQ(writer.otherErrors(), 0u) << writer.lastError();
  ASSERT_NO_FATAL_FAILURE(expectDemoTenantEqual(e.src, e.dst));
  expectNothingOfTheMigrationLeft(e);
}
