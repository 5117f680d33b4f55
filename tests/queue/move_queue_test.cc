// The move queue against a real control-plane PostgreSQL: idempotent schema from concurrent
// starters, claim exclusivity under many concurrent claimers, lease expiry and takeover (epoch
// bumped, the old owner refused), limits under 10 queued moves, illegal transitions with their
// codes, retries with backoff and kept errors, and the destination owner fence refusing a stale
// owner's transaction (written directly through the owner check statement).
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "queue/move_queue.h"
#include "tests/support/test_support.h"

namespace stampmover::testing {
namespace {

using namespace std::chrono_literals;
using common::PgConnection;
using common::Status;
using queue::Action;
using queue::ClaimLimits;
using queue::Lease;
using queue::Move;
using queue::MoveQueue;
using queue::MoveSpec;
using queue::MoveState;
using queue::QueueOptions;

MoveSpec spec(const std::string& tenant, const std::string& from = "stamp-a",
              const std::string& to = "stamp-b") {
  MoveSpec s;
  s.tenant = tenant;
  s.from_stamp = from;
  s.to_stamp = to;
  return s;
}

class MoveQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = freshDatabase();
    dsn_ = sourceCluster().dsn(db_);
    check_ = connectOrDie(dsn_, "check");
  }
  std::unique_ptr<MoveQueue> open(QueueOptions o = {}) {
    auto q = MoveQueue::open(dsn_, std::move(o));
    EXPECT_TRUE(q.isOk()) << q.status().message();
    if (!q) throw std::runtime_error("queue did not open");
    return std::move(q).value();
  }
  Move create(MoveQueue& q, const MoveSpec& s) {
    auto m = q.create(s);
    EXPECT_TRUE(m.isOk()) << m.status().message();
    if (!m) throw std::runtime_error("create failed");
    return *m;
  }
  // Running moves per stamp, read independently of the queue's code.
  std::string runningCounts() {
    return scalar(check_,
                  "SELECT format('%s|%s|%s', count(*), "
                  "coalesce(max(s), 0), coalesce(max(d), 0)) FROM "
                  "(SELECT count(*) OVER (PARTITION BY from_stamp) s, "
                  "count(*) OVER (PARTITION BY to_stamp) d FROM stampmover_queue.moves "
                  "WHERE state = 'running') x");
  }

  std::string db_;
  std::string dsn_;
  PgConnection check_;
};

TEST_F(MoveQueueTest, SchemaAppliedOnceByConcurrentStarters) {
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  std::latch go(6);
  for (int i = 0; i < 6; ++i) {
    ts.emplace_back([&] {
      go.arrive_and_wait();
      auto q = MoveQueue::open(dsn_);
      if (q) ok++;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), 6);
  EXPECT_EQ(scalar(check_, "SELECT string_agg(version::text, ',') FROM "
                           "stampmover_queue.schema_version"),
            "1");
  // A newer schema than the binary knows is refused.
  execOrDie(check_, "INSERT INTO stampmover_queue.schema_version VALUES (99, 'future')");
  auto q = MoveQueue::open(dsn_);
  ASSERT_FALSE(q.isOk());
  EXPECT_EQ(q.status().errorClass(), common::ErrorClass::kRefused);
}

TEST_F(MoveQueueTest, CreateRefusesBadMoves) {
  QueueOptions o;
  o.known_stamps = {"stamp-a", "stamp-b"};
  auto q = open(o);
  Move m = create(*q, spec("42"));
  EXPECT_EQ(m.state, MoveState::kQueued);
  EXPECT_EQ(m.epoch, 0);
  auto busy = q->create(spec("42"));
  EXPECT_EQ(queue::errorCode(busy.status()), "tenant_busy");
  EXPECT_EQ(queue::httpStatusFor(busy.status()), 409);
  auto same = q->create(spec("43", "stamp-a", "stamp-a"));
  EXPECT_EQ(queue::errorCode(same.status()), "same_stamp");
  auto unknown = q->create(spec("43", "stamp-a", "stamp-z"));
  EXPECT_EQ(queue::errorCode(unknown.status()), "unknown_stamp");
  EXPECT_NE(queue::errorText(unknown.status()).find("stamp-z"), std::string::npos);
  auto missing = q->get(9999);
  EXPECT_EQ(queue::errorCode(missing.status()), "not_found");
  EXPECT_EQ(queue::httpStatusFor(missing.status()), 404);
  // Once the first move ends, the tenant may move again.
  ASSERT_TRUE(q->request(m.id, Action::kCancel).isOk());
  EXPECT_EQ(q->get(m.id)->state, MoveState::kCancelled);
  EXPECT_TRUE(q->create(spec("42")).isOk());
}

TEST_F(MoveQueueTest, EachMoveClaimedOncePerEpochByConcurrentClaimers) {
  auto q = open();
  constexpr int kMoves = 40;
  for (int i = 0; i < kMoves; ++i) create(*q, spec("t" + std::to_string(i)));
  ClaimLimits unlimited{1000, 1000, 1000};
  std::mutex mu;
  std::vector<Lease> got;
  std::vector<std::thread> ts;
  std::latch go(8);
  std::atomic<int> errors{0};
  for (int w = 0; w < 8; ++w) {
    ts.emplace_back([&, w] {
      go.arrive_and_wait();
      for (;;) {
        auto l = q->claim("worker-" + std::to_string(w), unlimited);
        if (!l) {
          errors++;
          return;
        }
        if (!l->has_value()) return;
        std::lock_guard<std::mutex> g(mu);
        got.push_back(**l);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(errors.load(), 0);
  ASSERT_EQ(got.size(), static_cast<size_t>(kMoves));
  std::set<int64_t> ids;
  for (const auto& l : got) {
    ids.insert(l.move_id);
    EXPECT_EQ(l.epoch, 1);
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kMoves));
  // The database agrees: every move running, owned by the claimer the caller was told.
  for (const auto& l : got) {
    EXPECT_EQ(scalar(check_, "SELECT owner || ':' || epoch || ':' || state FROM "
                             "stampmover_queue.moves WHERE id = $1",
                     {std::to_string(l.move_id)}),
              l.owner + ":1:running");
  }
  EXPECT_EQ(q->counters().claims, static_cast<uint64_t>(kMoves));
}

TEST_F(MoveQueueTest, ExpiredLeaseIsTakenOverAndTheOldOwnerIsRefused) {
  QueueOptions o;
  o.lease_ttl = 400ms;
  auto q = open(o);
  Move m = create(*q, spec("42"));
  auto a = q->claim("worker-a", {});
  ASSERT_TRUE(a.isOk() && a->has_value());
  Lease la = **a;
  EXPECT_EQ(la.epoch, 1);
  // While the lease holds, nobody else gets the move; renewing keeps it.
  auto none = q->claim("worker-b", {});
  ASSERT_TRUE(none.isOk());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(q->renew(la).isOk());
  std::this_thread::sleep_for(700ms);  // past the TTL by the database clock
  auto b = q->claim("worker-b", {});
  ASSERT_TRUE(b.isOk() && b->has_value());
  Lease lb = **b;
  EXPECT_EQ(lb.move_id, m.id);
  EXPECT_EQ(lb.epoch, 2);
  EXPECT_EQ(q->counters().lease_takeovers, 1u);
  // The old owner can neither renew, report, act nor finish.
  for (const Status& st :
       {q->renew(la), q->reportProgress(la, {}), q->finish(la, MoveState::kSucceeded),
        q->release(la), q->failAttempt(la, Status::retryable("x"), false)}) {
    EXPECT_EQ(queue::errorCode(st), "lease_lost") << st.message();
  }
  EXPECT_EQ(queue::errorCode(q->takeAction(la).status()), "lease_lost");
  // The new owner can.
  ASSERT_TRUE(q->renew(lb).isOk());
  ASSERT_TRUE(q->finish(lb, MoveState::kSucceeded, "finalized").isOk());
  EXPECT_EQ(scalar(check_, "SELECT state || ':' || epoch || ':' || attempts FROM "
                           "stampmover_queue.moves WHERE id = $1",
                   {std::to_string(m.id)}),
            "succeeded:2:2");
}

TEST_F(MoveQueueTest, LimitsHoldUnderTenQueuedMoves) {
  auto q = open();
  // 10 moves among four stamps; several share a source or a destination.
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"s1", "s2"}, {"s1", "s3"}, {"s1", "s4"}, {"s2", "s3"}, {"s2", "s4"},
      {"s3", "s4"}, {"s4", "s1"}, {"s1", "s2"}, {"s2", "s1"}, {"s3", "s1"}};
  for (size_t i = 0; i < pairs.size(); ++i) {
    create(*q, spec("t" + std::to_string(i), pairs[i].first, pairs[i].second));
  }
  ClaimLimits lim{3, 1, 1};
  std::set<int64_t> done;
  std::vector<Lease> held;
  int rounds = 0;
  while (done.size() < pairs.size() && rounds++ < 50) {
    // Many claimers at once, then the invariant checked independently.
    std::vector<std::thread> ts;
    std::mutex mu;
    for (int w = 0; w < 4; ++w) {
      ts.emplace_back([&, w] {
        for (int k = 0; k < 3; ++k) {
          auto l = q->claim("w" + std::to_string(w), lim);
          if (l && l->has_value()) {
            std::lock_guard<std::mutex> g(mu);
            held.push_back(**l);
          }
        }
      });
    }
    for (auto& t : ts) t.join();
    const std::string counts = runningCounts();
    const int global = std::stoi(counts.substr(0, counts.find('|')));
    EXPECT_LE(global, 3) << counts;
    EXPECT_GT(global, 0) << counts;
    EXPECT_EQ(counts.substr(counts.find('|')), global ? "|1|1" : "|0|0") << counts;
    // Finish one, so another can start.
    ASSERT_FALSE(held.empty());
    Lease l = held.front();
    held.erase(held.begin());
    ASSERT_TRUE(q->finish(l, MoveState::kSucceeded).isOk());
    done.insert(l.move_id);
  }
  EXPECT_EQ(done.size(), pairs.size());
}

TEST_F(MoveQueueTest, IllegalTransitionsAreRefusedWithTheirCodes) {
  auto q = open();
  MoveSpec manual = spec("42");
  manual.cutover = queue::CutoverMode::kManual;
  Move m = create(*q, manual);
  auto code = [&](Action a) { return queue::errorCode(q->request(m.id, a).status()); };
  auto text = [&](Action a) { return queue::errorText(q->request(m.id, a).status()); };
  EXPECT_EQ(code(Action::kResume), "illegal_transition");
  EXPECT_EQ(code(Action::kFinalize), "illegal_transition");
  auto l = q->claim("w", {});
  ASSERT_TRUE(l.isOk() && l->has_value());
  queue::MoveProgress p;
  p.phase = "copying";
  ASSERT_TRUE(q->reportProgress(**l, p).isOk());
  EXPECT_EQ(code(Action::kCutover), "illegal_transition");
  EXPECT_NE(text(Action::kCutover).find("cutover of a move still copying"), std::string::npos);
  // Caught up: cutover is filed for the worker, once.
  p.phase = "catching_up";
  ASSERT_TRUE(q->reportProgress(**l, p).isOk());
  auto filed = q->request(m.id, Action::kCutover);
  ASSERT_TRUE(filed.isOk()) << filed.status().message();
  EXPECT_EQ(filed->desired_action, Action::kCutover);
  auto taken = q->takeAction(**l);
  ASSERT_TRUE(taken.isOk());
  EXPECT_EQ(*taken, Action::kCutover);
  EXPECT_FALSE(q->takeAction(**l)->has_value());
  // After the flip: no cancel, no pause, finalize allowed.
  p.phase = "dual_write";
  p.flipped = true;
  ASSERT_TRUE(q->reportProgress(**l, p).isOk());
  EXPECT_EQ(code(Action::kCancel), "illegal_transition");
  EXPECT_NE(text(Action::kCancel).find("cancel after flip"), std::string::npos);
  EXPECT_EQ(queue::httpStatusFor(q->request(m.id, Action::kCancel).status()), 409);
  EXPECT_EQ(code(Action::kPause), "illegal_transition");
  EXPECT_TRUE(q->request(m.id, Action::kFinalize).isOk());
  ASSERT_TRUE(q->finish(**l, MoveState::kSucceeded).isOk());
  EXPECT_NE(text(Action::kRollback).find("rollback of a move that is succeeded"),
            std::string::npos);
  // An automatic move refuses a manual cutover.
  Move a = create(*q, spec("43"));
  EXPECT_NE(queue::errorText(q->request(a.id, Action::kCutover).status()).find("automatic"),
            std::string::npos);
  // Pause / resume of a queued move apply at once; a paused move is not claimable.
  EXPECT_EQ(q->request(a.id, Action::kPause)->state, MoveState::kPaused);
  EXPECT_FALSE(q->claim("w", {})->has_value());
  EXPECT_EQ(q->request(a.id, Action::kResume)->state, MoveState::kQueued);
  EXPECT_TRUE(q->claim("w", {})->has_value());
}

TEST_F(MoveQueueTest, FailedAttemptsBackOffAndKeepTheirErrors) {
  QueueOptions o;
  o.backoff_base = 1500ms;
  o.max_attempts = 2;
  auto q = open(o);
  Move m = create(*q, spec("42"));
  auto l = q->claim("w", {});
  ASSERT_TRUE(l.isOk() && l->has_value());
  ASSERT_TRUE(q->failAttempt(**l, Status::retryable("source went away"), false).isOk());
  Move after = *q->get(m.id);
  EXPECT_EQ(after.state, MoveState::kQueued);
  EXPECT_FALSE(after.next_attempt_at.empty());  // in the future
  EXPECT_FALSE(q->claim("w", {})->has_value());  // not before the backoff
  // 1.5 s ± 25%: claimable within 2 s.
  std::optional<Lease> again;
  for (int i = 0; i < 30 && !again; ++i) {
    std::this_thread::sleep_for(100ms);
    auto c = q->claim("w2", {});
    ASSERT_TRUE(c.isOk());
    again = *c;
  }
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->epoch, 2);
  ASSERT_TRUE(q->failAttempt(*again, Status::retryable("destination went away"), false).isOk());
  Move failed = *q->get(m.id);
  EXPECT_EQ(failed.state, MoveState::kFailed);  // attempts exhausted
  ASSERT_EQ(failed.errors.size(), 2u);
  EXPECT_EQ(failed.errors[0].message, "source went away");
  EXPECT_EQ(failed.errors[0].owner, "w");
  EXPECT_EQ(failed.errors[1].message, "destination went away");
  EXPECT_EQ(failed.errors[1].epoch, 2);
  EXPECT_EQ(failed.last_error, "destination went away");
}

class OwnerFenceTest : public MoveQueueTest {};

TEST_F(OwnerFenceTest, StaleOwnerTransactionFailsOnTheDestination) {
  const std::string dest = destCluster().dsn(db_);
  PgConnection d = connectOrDie(dest, "dest");
  execOrDie(d, "CREATE TABLE rows_t (id int PRIMARY KEY, who text)");
  ASSERT_TRUE(queue::fenceDestination(dest, 7, 1).isOk());
  ASSERT_TRUE(queue::fenceDestination(dest, 7, 1).isOk());  // idempotent for the same epoch
  auto writeAs = [&](int64_t epoch, int id) -> Status {
    PgConnection w = connectOrDie(dest, "writer");
    execOrDie(w, "BEGIN");
    execOrDie(w, "INSERT INTO rows_t VALUES (" + std::to_string(id) + ", 'e" +
                     std::to_string(epoch) + "')");
    auto r = w.query(queue::ownerCheckSql(), {std::string("7"), std::to_string(epoch)});
    if (!r) {
      w.exec("ROLLBACK").ignore();  // the transaction is aborted anyway
      return r.status();
    }
    return w.exec("COMMIT");
  };
  EXPECT_TRUE(writeAs(1, 1).isOk());
  // Another worker takes the move over: epoch 2 on the destination.
  ASSERT_TRUE(queue::fenceDestination(dest, 7, 2).isOk());
  Status stale = writeAs(1, 2);
  ASSERT_FALSE(stale.isOk());
  EXPECT_EQ(stale.sqlState(), queue::kOwnerFencedSqlState);
  EXPECT_TRUE(writeAs(2, 3).isOk());
  // The stale owner cannot take the row back either.
  EXPECT_EQ(queue::errorCode(queue::fenceDestination(dest, 7, 1)), "lease_lost");
  EXPECT_EQ(scalar(d, "SELECT string_agg(id || who, ',' ORDER BY id) FROM rows_t"), "1e1,3e2");
  // Another move's owner row is independent.
  EXPECT_FALSE(writeAs(1, 4).isOk());
  ASSERT_TRUE(queue::fenceDestination(dest, 8, 1).isOk());
  EXPECT_EQ(scalar(d, "SELECT epoch FROM stampmover.move_owners WHERE move_id = 7"), "2");
}

TEST_F(OwnerFenceTest, TakeoverWaitsOutAndEndsAStalledOwnerTransaction) {
  const std::string dest = destCluster().dsn(db_);
  PgConnection d = connectOrDie(dest, "dest");
  execOrDie(d, "CREATE TABLE rows_t (id int PRIMARY KEY)");
  ASSERT_TRUE(queue::fenceDestination(dest, 7, 1).isOk());
  // The old owner passed its check and then stopped before COMMIT (as under SIGSTOP).
  PgConnection old = connectOrDie(dest, "old owner");
  execOrDie(old, "BEGIN");
  execOrDie(old, "INSERT INTO rows_t VALUES (1)");
  ASSERT_TRUE(old.query(queue::ownerCheckSql(), {std::string("7"), std::string("1")}).isOk());
  // The takeover cannot bump the row under the old owner's lock; it ends the stalled session.
  const auto t0 = std::chrono::steady_clock::now();
  Status st = queue::fenceDestination(dest, 7, 2);
  ASSERT_TRUE(st.isOk()) << st.message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s);
  // The old owner's COMMIT can no longer land its row.
  EXPECT_FALSE(old.exec("COMMIT").isOk());
  EXPECT_EQ(scalar(d, "SELECT count(*) FROM rows_t"), "0");
}

}  // namespace
}  // namespace stampmover::testing
