// The worker pool against a real control-plane queue, with a stand-in runner (the move itself is
// exercised by the end-to-end test): two pools share 10 moves within the limits, a lost lease
// stops the runner without a write by the old owner, pause/resume/cancel reach a running move,
// and a drain releases every lease.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "queue/move_queue.h"
#include "queue/worker_pool.h"
#include "tests/support/test_support.h"

namespace stampmover::testing {
namespace {

using namespace std::chrono_literals;
using common::PgConnection;
using common::Status;
using queue::Action;
using queue::MoveQueue;
using queue::MoveRunResult;
using queue::MoveSpec;
using queue::MoveState;
using queue::WorkerPool;
using queue::WorkerPoolOptions;

// Waits up to `limit` for `pred`.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 20s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return pred();
}

// A runner that "moves" for `work` (or until cancelled), tracking how many run at once.
struct FakeRunner {
  std::chrono::milliseconds work{300};
  std::atomic<int> now{0}, peak{0}, calls{0};
  std::mutex mu;
  std::map<std::string, int> per_source, per_dest, peak_source, peak_dest;

  queue::MoveRunnerFn fn() {
    return [this](const queue::Move& m, const queue::Lease&, const std::atomic<bool>* cancel,
                  const std::function<void(const queue::MoveProgress&)>& progress) {
      calls++;
      int n = ++now;
      int p = peak.load();
      while (n > p && !peak.compare_exchange_weak(p, n)) {
      }
      {
        std::lock_guard<std::mutex> g(mu);
        peak_source[m.spec.from_stamp] =
            std::max(peak_source[m.spec.from_stamp], ++per_source[m.spec.from_stamp]);
        peak_dest[m.spec.to_stamp] =
            std::max(peak_dest[m.spec.to_stamp], ++per_dest[m.spec.to_stamp]);
      }
      queue::MoveProgress pr;
      pr.phase = "copying";
      progress(pr);
      const auto end = std::chrono::steady_clock::now() + work;
      bool cancelled = false;
      while (std::chrono::steady_clock::now() < end) {
        if (cancel->load()) {
          cancelled = true;
          break;
        }
        std::this_thread::sleep_for(10ms);
      }
      {
        std::lock_guard<std::mutex> g(mu);
        --per_source[m.spec.from_stamp];
        --per_dest[m.spec.to_stamp];
      }
      --now;
      MoveRunResult r;
      if (cancelled) r.status = Status::cancelled("cancelled");
      return r;
    };
  }
};

class WorkerPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = freshDatabase();
    dsn_ = sourceCluster().dsn(db_);
    check_ = connectOrDie(dsn_, "check");
  }
  std::unique_ptr<MoveQueue> open(queue::QueueOptions o = {}) {
    auto q = MoveQueue::open(dsn_, std::move(o));
    if (!q) throw std::runtime_error(q.status().message());
    return std::move(q).value();
  }
  int64_t create(MoveQueue& q, const std::string& tenant, const std::string& from = "a",
                 const std::string& to = "b") {
    MoveSpec s;
    s.tenant = tenant;
    s.from_stamp = from;
    s.to_stamp = to;
    auto m = q.create(s);
    if (!m) throw std::runtime_error(m.status().message());
    return m->id;
  }
  std::string state(int64_t id) {
    return scalar(check_, "SELECT state FROM stampmover_queue.moves WHERE id = $1",
                  {std::to_string(id)});
  }
  std::string db_, dsn_;
  PgConnection check_;
};

TEST_F(WorkerPoolTest, TwoPoolsRunTenMovesWithinTheLimits) {
  auto q = open();
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"s1", "s2"}, {"s1", "s3"}, {"s1", "s4"}, {"s2", "s3"}, {"s2", "s4"},
      {"s3", "s4"}, {"s4", "s1"}, {"s1", "s2"}, {"s2", "s1"}, {"s3", "s1"}};
  std::vector<int64_t> ids;
  for (size_t i = 0; i < pairs.size(); ++i) {
    ids.push_back(create(*q, "t" + std::to_string(i), pairs[i].first, pairs[i].second));
  }
  FakeRunner fake;
  auto pool = [&](const std::string& owner) {
    WorkerPoolOptions o;
    o.owner = owner;
    o.concurrency = 4;
    o.limits = {3, 1, 2};
    o.poll_interval = 50ms;
    o.runner = fake.fn();
    return std::make_unique<WorkerPool>(*q, o);
  };
  auto p1 = pool("pool-1"), p2 = pool("pool-2");
  ASSERT_TRUE(p1->start().isOk());
  ASSERT_TRUE(p2->start().isOk());
  EXPECT_TRUE(eventually([&] {
    return scalar(check_, "SELECT count(*) FROM stampmover_queue.moves WHERE state = "
                          "'succeeded'") == "10";
  }));
  ASSERT_TRUE(p1->drain().isOk());
  ASSERT_TRUE(p2->drain().isOk());
  EXPECT_EQ(fake.calls.load(), 10);
  EXPECT_LE(fake.peak.load(), 3);
  EXPECT_GE(fake.peak.load(), 2);  // it did run moves side by side
  for (auto& [s, n] : fake.peak_source) EXPECT_LE(n, 1) << s;
  for (auto& [s, n] : fake.peak_dest) EXPECT_LE(n, 2) << s;
  EXPECT_EQ(p1->stats().succeeded + p2->stats().succeeded, 10u);
  // Both pools took part and the progress reached the queue.
  EXPECT_GT(p1->stats().started, 0u);
  EXPECT_GT(p2->stats().started, 0u);
  EXPECT_EQ(q->get(ids[0])->progress.phase, "copying");
}

TEST_F(WorkerPoolTest, ALostLeaseStopsTheRunnerAndTheOldOwnerWritesNothing) {
  queue::QueueOptions qo;
  qo.lease_ttl = 600ms;
  auto q = open(qo);
  const int64_t id = create(*q, "42");
  FakeRunner fake;
  fake.work = 60s;
  WorkerPoolOptions o;
  o.owner = "old";
  o.poll_interval = 50ms;
  o.runner = fake.fn();
  WorkerPool pool(*q, o);
  ASSERT_TRUE(pool.start().isOk());
  ASSERT_TRUE(eventually([&] { return fake.now.load() == 1; }));
  // Another worker took the move (as after a lapse): the old pool must notice and stop.
  execOrDie(check_, "UPDATE stampmover_queue.moves SET owner = 'new', epoch = epoch + 1 WHERE "
                    "id = " + std::to_string(id));
  EXPECT_TRUE(eventually([&] { return fake.now.load() == 0; }, 5s));
  EXPECT_TRUE(eventually([&] { return pool.stats().leases_lost == 1; }, 5s));
  ASSERT_TRUE(pool.drain().isOk());
  // The old owner neither released, failed nor finished it.
  EXPECT_EQ(scalar(check_, "SELECT state || ':' || owner || ':' || epoch FROM "
                           "stampmover_queue.moves WHERE id = $1",
                   {std::to_string(id)}),
            "running:new:2");
}

TEST_F(WorkerPoolTest, PauseResumeAndCancelReachARunningMove) {
  auto q = open();
  const int64_t id = create(*q, "42");
  FakeRunner fake;
  fake.work = 60s;
  WorkerPoolOptions o;
  o.owner = "w";
  o.poll_interval = 50ms;
  o.renew_interval = 100ms;
  o.runner = fake.fn();
  WorkerPool pool(*q, o);
  ASSERT_TRUE(pool.start().isOk());
  ASSERT_TRUE(eventually([&] { return fake.now.load() == 1; }));
  ASSERT_TRUE(q->request(id, Action::kPause).isOk());
  EXPECT_TRUE(eventually([&] { return state(id) == "paused"; }, 5s));
  EXPECT_EQ(fake.now.load(), 0);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(fake.calls.load(), 1);  // a paused move is not claimed
  ASSERT_TRUE(q->request(id, Action::kResume).isOk());
  EXPECT_TRUE(eventually([&] { return fake.now.load() == 1; }, 5s));
  EXPECT_EQ(fake.calls.load(), 2);
  ASSERT_TRUE(q->request(id, Action::kCancel).isOk());
  EXPECT_TRUE(eventually([&] { return state(id) == "cancelled"; }, 5s));
  ASSERT_TRUE(pool.drain().isOk());
}

TEST_F(WorkerPoolTest, DrainReleasesEveryLease) {
  auto q = open();
  for (int i = 0; i < 3; ++i) create(*q, "t" + std::to_string(i), "a" + std::to_string(i), "b");
  FakeRunner fake;
  fake.work = 60s;
  WorkerPoolOptions o;
  o.owner = "w";
  o.poll_interval = 50ms;
  o.limits = {10, 10, 10};
  o.runner = fake.fn();
  WorkerPool pool(*q, o);
  ASSERT_TRUE(pool.start().isOk());
  ASSERT_TRUE(eventually([&] { return fake.now.load() == 3; }));
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(pool.drain(10s).isOk());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(fake.now.load(), 0);
  EXPECT_EQ(scalar(check_, "SELECT string_agg(state || ':' || coalesce(owner, '-'), ',') FROM "
                           "stampmover_queue.moves"),
            "queued:-,queued:-,queued:-");
  // Released moves are claimable at once by another worker.
  auto l = q->claim("other", {});
  ASSERT_TRUE(l.isOk() && l->has_value());
}

TEST_F(WorkerPoolTest, FailedAttemptsAreRetriedAndKept) {
  queue::QueueOptions qo;
  qo.backoff_base = 100ms;
  qo.max_attempts = 3;
  auto q = open(qo);
  const int64_t id = create(*q, "42");
  std::atomic<int> calls{0};
  WorkerPoolOptions o;
  o.owner = "w";
  o.poll_interval = 50ms;
  o.runner = [&](const queue::Move&, const queue::Lease&, const std::atomic<bool>*,
                 const std::function<void(const queue::MoveProgress&)>&) {
    MoveRunResult r;
    r.status = Status::retryable("source restarted (" + std::to_string(++calls) + ")");
    return r;
  };
  WorkerPool pool(*q, o);
  ASSERT_TRUE(pool.start().isOk());
  EXPECT_TRUE(eventually([&] { return state(id) == "failed"; }, 10s));
  ASSERT_TRUE(pool.drain().isOk());
  auto m = q->get(id);
  ASSERT_TRUE(m.isOk());
  ASSERT_EQ(m->errors.size(), 3u);
  EXPECT_EQ(m->errors[2].message, "source restarted (3)");
  EXPECT_EQ(m->errors[2].error_class, "retryable");
}

}  // namespace
}  // namespace stampmover::testing
