// End to end: a real move of harness tenant 42 run by worker pools over one queue. The first
// pool's lease is taken over mid-catch-up while it is still alive and running; the destination
// owner fence makes its next apply transaction fail (it writes nothing more), a second pool
// resumes the move from the shared checkpoints, the operator's manual cutover and finalize go
// through the queue, and the tenant ends identical on both stamps (independent SELECT dumps).
#include <gtest/gtest.h>

#include <optional>
#include <thread>

#include "harness/seed.h"
#include "orchestrator/migrate_job.h"
#include "queue/move_queue.h"
#include "queue/worker_pool.h"
#include "tests/support/test_support.h"
#include "tests/support/writer.h"

namespace stampmover::testing {
namespace {

using namespace std::chrono_literals;
using common::PgConnection;
using queue::Action;
using queue::MoveQueue;
using queue::MoveState;
using queue::WorkerPool;
using queue::WorkerPoolOptions;

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return pred();
}

TEST(QueueMove, TakeoverFencesTheOldOwnerAndTheMoveEndsIdentical) {
  const std::string db = freshDatabase();
  const std::string cp_db = freshDatabase();
  const std::string src_dsn = sourceCluster().dsn(db), dst_dsn = destCluster().dsn(db);
  const std::string cp_dsn = destCluster().dsn(cp_db);
  PgConnection src = connectOrDie(src_dsn), dst = connectOrDie(dst_dsn), cp = connectOrDie(cp_dsn);
  for (auto* c : {&src, &dst}) ASSERT_TRUE(harness::createDemoSchema(*c).isOk());
  createScratchTable(src_dsn);
  createScratchTable(dst_dsn);
  harness::SeedOptions seed;
  seed.tenant_items = 1000;
  seed.other_items = 1000;
  ASSERT_TRUE(harness::seedTenants(src, seed).isOk());

  queue::QueueOptions qo;
  qo.lease_ttl = 60s;  // renewals never race the test's expiry below
  qo.backoff_base = 200ms;
  auto qr = MoveQueue::open(cp_dsn, qo);
  ASSERT_TRUE(qr.isOk()) << qr.status().message();
  auto& q = **qr;
  queue::MoveSpec spec;
  spec.tenant = "42";
  spec.from_stamp = "stamp-a";
  spec.to_stamp = "stamp-b";
  spec.cutover = queue::CutoverMode::kManual;
  auto created = q.create(spec);
  ASSERT_TRUE(created.isOk()) << created.status().message();
  const int64_t id = created->id;

  TempDir state;  // shared by both pools, as one machine's volume
  auto migrateOptions = [&](const queue::Move& m) -> common::Result<orch::MigrateOptions> {
    orch::MigrateOptions o;
    o.copy.tenant = m.spec.tenant;
    o.copy.source = {m.spec.from_stamp, src_dsn, "source stamp '" + m.spec.from_stamp + "'"};
    o.copy.destination = {m.spec.to_stamp, dst_dsn, "destination stamp '" + m.spec.to_stamp + "'"};
    o.copy.state_dir = state.path();
    o.control_plane_dsn = cp_dsn;
    o.soak = 1s;
    o.status_interval = 500ms;
    o.give_up_after = 20s;
    return o;
  };
  auto poolOptions = [&](const std::string& owner) {
    WorkerPoolOptions o;
    o.owner = owner;
    o.concurrency = 2;
    o.poll_interval = 200ms;
    o.renew_interval = 300ms;
    o.progress_interval = 300ms;
    o.migrate_options = migrateOptions;
    return o;
  };
  auto phase = [&] {
    return scalar(cp, "SELECT progress->>'phase' FROM stampmover_queue.moves WHERE id = $1",
                  {std::to_string(id)});
  };

  // Pool A copies and follows the tenant (manual cutover: it keeps catching up).
  auto a_options = poolOptions("worker-a");
  a_options.concurrency = 1;  // busy with this move: never claims it back when its lease lapses
  auto a = std::make_unique<WorkerPool>(q, a_options);
  ASSERT_TRUE(a->start().isOk());
  ASSERT_TRUE(eventually([&] { return phase() == "catching_up"; }, 120s)) << phase();
  execOrDie(src, "INSERT INTO scratch VALUES (42, 1, 'applied by worker-a')");
  ASSERT_TRUE(eventually([&] { return scalar(dst, "SELECT count(*) FROM scratch") == "1"; }, 30s));

  // Its lease lapses (as when it is stopped); another worker takes the move over and fences the
  // destination with the new epoch while worker-a is still running.
  // worker-a's pool runs one move at a time, so it cannot claim this one back itself; its
  // renewal may still revive the lapsed lease before worker-b's claim (renewal asks only for
  // owner and epoch), so lapse and claim again until worker-b holds it.
  std::optional<queue::Lease> b_lease;
  for (int attempt = 0; attempt < 50 && !b_lease; ++attempt) {
    execOrDie(cp, "UPDATE stampmover_queue.moves SET lease_until = now() - interval '1 s' "
                  "WHERE id = " + std::to_string(id));
    auto b_claim = q.claim("worker-b", {});
    ASSERT_TRUE(b_claim.isOk()) << b_claim.status().message();
    if (b_claim->has_value()) b_lease = **b_claim;
  }
  ASSERT_TRUE(b_lease.has_value()) << "worker-b never took the lapsed lease over";
  const queue::Lease lb = *b_lease;
  EXPECT_EQ(lb.epoch, 2);
  EXPECT_EQ(q.counters().lease_takeovers, 1u);
  ASSERT_TRUE(queue::fenceDestination(dst_dsn, id, lb.epoch).isOk());
  // worker-a's next destination transaction fails the owner check: the row stays unapplied
  // and worker-a stops without touching the queue.
  execOrDie(src, "INSERT INTO scratch VALUES (42, 2, 'must not be applied by worker-a')");
  EXPECT_TRUE(eventually([&] { return a->stats().leases_lost == 1; }, 60s));
  // Counted when it concluded; the pool reaps its thread a moment later.
  EXPECT_TRUE(eventually([&] { return a->stats().running == 0; }, 10s));
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(scalar(dst, "SELECT count(*) FROM scratch"), "1");
  EXPECT_EQ(scalar(cp, "SELECT owner || ':' || epoch FROM stampmover_queue.moves WHERE id = $1",
                   {std::to_string(id)}),
            "worker-b:2");
  ASSERT_TRUE(a->drain().isOk());

  // worker-b's process gives the move to its pool (release), which resumes it.
  ASSERT_TRUE(q.release(lb).isOk());
  auto b = std::make_unique<WorkerPool>(q, poolOptions("worker-b"));
  ASSERT_TRUE(b->start().isOk());
  ASSERT_TRUE(eventually([&] { return scalar(dst, "SELECT count(*) FROM scratch") == "2"; }, 90s));
  ASSERT_TRUE(eventually([&] { return phase() == "catching_up"; }, 30s)) << phase();
  // The operator's cutover and finalize, through the queue.
  auto cut = q.request(id, Action::kCutover);
  ASSERT_TRUE(cut.isOk()) << cut.status().message();
  ASSERT_TRUE(eventually([&] { return q.get(id)->progress.flipped; }, 90s)) << phase();
  EXPECT_EQ(queue::errorCode(q.request(id, Action::kCancel).status()), "illegal_transition");
  auto fin = q.request(id, Action::kFinalize);
  ASSERT_TRUE(fin.isOk()) << fin.status().message();
  ASSERT_TRUE(eventually([&] { return q.get(id)->state == MoveState::kSucceeded; }, 90s))
      << phase() << " " << q.get(id)->last_error;
  ASSERT_TRUE(b->drain().isOk());
  auto m = q.get(id);
  ASSERT_TRUE(m.isOk());
  EXPECT_EQ(m->epoch, 3);
  EXPECT_TRUE(m->errors.empty()) << m->errors.front().message;
  EXPECT_EQ(scalar(cp, "SELECT state FROM stampmover_routing.routes WHERE tenant = '42'"),
            "active");
  ASSERT_NO_FATAL_FAILURE(expectDemoTenantEqual(src, dst));
}

}  // namespace
}  // namespace stampmover::testing
