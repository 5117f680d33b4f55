// Client-side deadlines: a replication connection whose server goes silent (here: the
// walsender stopped with SIGSTOP, as a half-open TCP connection would look) ends with a
// retryable error after the receive deadline instead of waiting for the kernel (hours).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>

#include "cdc/pgoutput_source.h"
#include "harness/seed.h"
#include "mover/catalog.h"
#include "mover/source_setup.h"
#include "tests/support/test_support.h"

using namespace stampmover::testing;
namespace harness = stampmover::harness;
namespace mover = stampmover::mover;
namespace cdc = stampmover::cdc;

TEST(Deadlines, ASilentReplicationConnectionIsDroppedAfterTheReceiveDeadline) {
  const std::string db = freshDatabase();
  auto src = connectOrDie(sourceCluster().dsn(db));
  ASSERT_TRUE(harness::createDemoSchema(src).isOk());
  const std::string name = mover::replicationNameForTenant("42", db);
  auto tables = mover::discoverTenantTables(src, {});
  ASSERT_TRUE(tables.isOk()) << tables.status().message();
  ASSERT_TRUE(mover::createTenantPublication(src, name, *tables, "42").isOk());
  auto slot = mover::createSlotWithSnapshot(sourceCluster().dsn(db), "source", name);
  ASSERT_TRUE(slot.isOk()) << slot.status().message();

  cdc::PgoutputSourceOptions so;
  so.dsn = sourceCluster().dsn(db);
  so.slot = name;
  so.publication = name;
  so.receive_timeout = std::chrono::milliseconds(2000);
  auto source = cdc::PgoutputSource::start(so);
  ASSERT_TRUE(source.isOk()) << source.status().message();
  // The stream works while the server answers.
  for (int i = 0; i < 20; ++i) {
    auto ev = (*source)->next(std::chrono::milliseconds(100));
    ASSERT_TRUE(ev.isOk()) << ev.status().message();
  }
  const std::string pid = scalar(src, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                                 {name});
  ASSERT_FALSE(pid.empty());
  ASSERT_EQ(::kill(std::stoi(pid), SIGSTOP), 0);
  const auto t0 = std::chrono::steady_clock::now();
  stampmover::common::Status st;
  while (st.isOk() && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20)) {
    auto ev = (*source)->next(std::chrono::milliseconds(100));
    st = ev.status();
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ::kill(std::stoi(pid), SIGCONT);
  ASSERT_FALSE(st.isOk()) << "no deadline: still waiting after " << waited << " s";
  EXPECT_EQ(st.errorClass(), stampmover::common::ErrorClass::kRetryable) << st.message();
  EXPECT_LT(waited, 6.0) << st.message();
  EXPECT_NE(st.message().find("no message on the replication connection"), std::string::npos)
      << st.message();
  source->reset();
  scalar(src, "SELECT pg_terminate_backend($1::int)", {pid});
}
