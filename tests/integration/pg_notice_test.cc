// Server notices on PgConnection against a real cluster: NOTICE goes to the debug log and
// WARNING to the warn log, each under the connection's label and never its DSN, on ordinary and
// replication connections alike, and nothing reaches stderr through libpq's default printer.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <sstream>
#include <string>

#include "common/pg.h"
#include "tests/support/test_support.h"

using namespace stampmover;
using namespace stampmover::testing;
using common::PgConnection;

namespace {

// Captures the default logger's lines as "<level> <message>" for one test; restores it after.
class LogCapture : public ::testing::Test {
 protected:
  void SetUp() override {
    previous_ = spdlog::default_logger();
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    auto logger = std::make_shared<spdlog::logger>("capture", sink);
    logger->set_pattern("%l %v");
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  void TearDown() override { spdlog::set_default_logger(previous_); }

  std::string logged() const { return out_.str(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream out_;
};

}  // namespace

TEST_F(LogCapture, NoticeToDebugAndWarningToWarnUnderTheLabel) {
  const std::string dsn = sourceCluster().dsn();
  auto c = connectOrDie(dsn, "source stamp 'notice-test'");
  ::testing::internal::CaptureStderr();
  execOrDie(c, "DROP TABLE IF EXISTS no_such_table_for_notice");
  execOrDie(c, "DO $$ BEGIN RAISE WARNING 'careful: %', 7; END $$");
  const std::string err = ::testing::internal::GetCapturedStderr();
  const std::string log = logged();
  EXPECT_NE(log.find("debug source stamp 'notice-test': NOTICE:  table "
                     "\"no_such_table_for_notice\" does not exist, skipping"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("warning source stamp 'notice-test': WARNING:  careful: 7"), std::string::npos)
      << log;
  EXPECT_EQ(log.find(dsn), std::string::npos) << "the DSN must not be logged: " << log;
  EXPECT_EQ(err.find("no_such_table_for_notice"), std::string::npos) << err;
  EXPECT_EQ(err.find("careful"), std::string::npos) << err;
}

TEST_F(LogCapture, ReplicationConnectionsLogNoticesToo) {
  auto c = common::PgConnection::connect(sourceCluster().dsn(), "source (replication)",
                                         {{"replication", "database"}});
  ASSERT_TRUE(c) << c.status().message();
  // A logical walsender runs plain SQL as well; its notices take the same path.
  execOrDie(*c, "DROP TABLE IF EXISTS no_such_table_for_walsender");
  EXPECT_NE(logged().find("debug source (replication): NOTICE:  table "
                          "\"no_such_table_for_walsender\" does not exist, skipping"),
            std::string::npos)
      << logged();
}

TEST_F(LogCapture, ResultOutlivingItsConnectionStillNamesIt) {
  common::PgResult res;
  {
    auto c = connectOrDie(sourceCluster().dsn(), "short-lived");
    auto r = c.query("SELECT 1");
    ASSERT_TRUE(r) << r.status().message();
    res = std::move(*r);
  }
  // libpq reports a bad column through the hooks it copied into the result from the connection
  // (its own notices carry no "NOTICE:" prefix in the text, only in the severity field).
  EXPECT_EQ(PQgetvalue(res.get(), 0, 5), nullptr);
  EXPECT_NE(logged().find("debug short-lived: column number 5 is out of range 0..0"),
            std::string::npos)
      << logged();
}
