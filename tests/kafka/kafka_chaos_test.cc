// Kill at every step, with the Kafka source: `migrate --cdc kafka --cutover auto` is killed
// (SIGKILL, failpoint `<name>=kill`) at each phase boundary of the copy, around and inside the
// cutover window, at the flip, in the soak, and in the teardown of a finalize and of a rollback,
// while a writer straight at the source (tests/support/direct_writer.h: autocommit inserts and
// REPEATABLE READ transactions that read before they write) runs until the routing entry leaves
// the source. The stand-in connector publishes every change to the mock cluster. Then migrate is
// rerun with the same arguments to completion, and checked independently of stampmover's code:
// every acknowledged write on the stamp that serves the tenant, the tenant identical on both
// stamps (ordered SELECTs), the routing entry where the run says, nothing of the migration left.
#include <gtest/gtest.h>
#include <signal.h>

#include "common/pg.h"
#include "routing/routing_directory.h"
#include "tests/kafka/kafka_env.h"
#include "tests/support/direct_writer.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;

namespace {

struct ChaosCase {
  const char* failpoint;
  bool rollback;
};

void PrintTo(const ChaosCase& c, std::ostream* os) {
  *os << c.failpoint << (c.rollback ? " (rollback)" : " (finalize)");
}

std::string caseName(const ::testing::TestParamInfo<ChaosCase>& info) {
  std::string n = std::string(info.param.failpoint) + (info.param.rollback ? "_rollback" : "_finalize");
  for (char& c : n) {
    if (c == '.') c = '_';
  }
  return n;
}

std::string tail(const std::string& text, size_t n = 6000) {
  return text.size() > n ? "..." + text.substr(text.size() - n) : text;
}

class KafkaChaos : public ::testing::TestWithParam<ChaosCase> {
 protected:
  MockKafka kafka_;
  std::unique_ptr<KafkaEnv> env_;
  std::unique_ptr<FakeDebezium> dbz_;  // destroyed first: it holds the connector's slot
};

}  // namespace

TEST_P(KafkaChaos, KilledThereThenRerunLosesNothing) {
  const ChaosCase c = GetParam();
  env_ = setUpKafkaEnv(kafka_, 300);
  KafkaEnv& e = *env_;
  const std::string src_dsn = sourceCluster().dsn(e.db);
  const std::string cp_dsn = destCluster().dsn(e.cp_db);
  const std::string src_name = stampmover::common::dsnLocation(src_dsn);
  const std::string dst_name = stampmover::common::dsnLocation(destCluster().dsn(e.db));
  // The routing entry exists before the writer resolves it (migrate would create the same).
  stampmover::routing::PgRoutingDirectory routes(cp_dsn);
  ASSERT_TRUE(routes.ensureSchema().isOk());
  ASSERT_TRUE(routes.put("42", src_name).isOk());
  dbz_ = std::make_unique<FakeDebezium>(src_dsn, e.slot, kafka_, kKafkaPrefix, kKafkaPartitions);
  ASSERT_TRUE(dbz_->sync(e.src, "seeded"));
  DirectWriterOptions dw;
  dw.dsn = src_dsn;
  dw.stamp = src_name;
  dw.control_plane_dsn = cp_dsn;
  DirectWriter writer(dw);
  for (int i = 0; i < 250 && writer.acknowledged() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const std::string state = e.dir.path() + "/state";
  const auto args = kafkaCutoverArgs(e, state, "1", c.rollback);
  const std::string log = e.dir.path() + "/first.log";
  setenv("STAMPMOVER_FAILPOINTS", (std::string(c.failpoint) + "=kill").c_str(), 1);
  ChildProcess child(spawnStampmover(args, log));
  unsetenv("STAMPMOVER_FAILPOINTS");
  const int rc = child.wait();
  const std::string first = readTextFile(log);
  ASSERT_EQ(rc, -SIGKILL) << "the first run must die at " << c.failpoint << ":\n" << tail(first);
  ASSERT_NE(first.find(std::string("failpoint ") + c.failpoint + ": kill"), std::string::npos) << tail(first);
  auto r = runStampmover(args);
  writer.stop();
  ASSERT_EQ(r.exit_code, 0) << "rerun:\n" << tail(r.err) << "\nfirst run:\n" << tail(first, 3000);
  if (getenv("SM_SHOW_LOG")) std::fputs(r.err.c_str(), stderr);
  const std::string serving_name = c.rollback ? src_name : dst_name;
  EXPECT_EQ(scalar(e.cp, "SELECT stamp || ',' || state FROM stampmover_routing.routes WHERE tenant = '42'"),
            serving_name + ",active");
  PgConnection& serving = c.rollback ? e.src : e.dst;
  EXPECT_GT(writer.acknowledged(), 0u);
  EXPECT_EQ(writer.missingOn(serving), "") << "acknowledged writes lost (of " << writer.acknowledged() << ")";
  EXPECT_EQ(writer.otherErrors(), 0u) << writer.lastError();
  ASSERT_NO_FATAL_FAILURE(expectDemoTenantEqual(e.src, e.dst));
  expectNothingOfTheMigrationLeft(e);
  // The tenant is writable where it is served.
  execOrDie(serving, "UPDATE orders SET status = 'after-chaos' WHERE tenant_id = 42 AND order_id = 5");
}

// The copy's phases, the steps around and inside the forward window, the soak, and the
// teardowns of a finalize and of a rollback (the reverse window is the pgoutput stream's,
// covered by tests/integration/chaos_test.cc).
INSTANTIATE_TEST_SUITE_P(
    Steps, KafkaChaos,
    ::testing::Values(ChaosCase{"phase.copying", false},
                      ChaosCase{"phase.catching_up", false},
                      ChaosCase{"migrate.after_prepare_freeze", false},
                      ChaosCase{"cutover.after_fence", false},
                      ChaosCase{"cutover.after_drain", false},
                      ChaosCase{"cutover.after_flip", false},
                      ChaosCase{"phase.dual_write", false},
                      ChaosCase{"teardown.after_origins", false},
                      ChaosCase{"phase.rolling_back", true},
                      ChaosCase{"teardown.after_origins", true}),
    caseName);
