// The WorkerPool (worker_pool.h): a claim loop, a lease thread (renewals, operator actions,
// throttled progress writes) and one thread per held move running orchestrator::runMigrate
// with the destination owner check in every destination transaction.
#include "queue/worker_pool.h"

#include <fcntl.h>
#include <unistd.h>

#include <condition_variable>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/log.h"
#include "common/pg.h"
#include "metrics/log_context.h"
#include "orchestrator/control_plane.h"
#include "orchestrator/copy_job.h"
#include "orchestrator/migrate_job.h"

namespace stampmover::queue {

using common::Result;
using common::Status;
using Clock = std::chrono::steady_clock;

namespace {

enum class StopReason : int { kNone = 0, kLeaseLost, kDrain, kPause, kCancel };

struct Running {
  Lease lease;
  Move move;
  std::atomic<bool> cancel{false};
  std::atomic<int> reason{0};
  std::atomic<bool> done{false};
  std::thread thread;
  Clock::time_point last_renewed = Clock::now();
  // Set by the move's thread once runMigrate's options are known (relaying actions needs them).
  std::mutex mu;
  std::string control_plane_dsn;      // guarded by mu; a secret
  std::optional<MoveProgress> pending;  // guarded by mu: latest progress not yet written
  std::optional<MoveProgress> last;     // guarded by mu: latest progress (throttle changes
                                        // re-send it with the new throttle fields)
  Clock::time_point last_progress_write{};
  // Throttle: the source to sample, the state the sampler found, and the wait it asks of every
  // destination transaction (read by commit_statements on the copy's and applier's threads).
  std::string source_dsn;               // guarded by mu; a secret
  bool throttled = false;               // guarded by mu
  std::string throttle_reason;          // guarded by mu: "since <time>: <why>"
  std::string throttle_since;           // guarded by mu: UTC time the throttle began
  std::shared_ptr<std::atomic<int64_t>> delay_ms = std::make_shared<std::atomic<int64_t>>(0);
  std::optional<common::PgConnection> probe;  // the sampler thread's connection to the source
  int state_lock_fd = -1;               // the move's thread only: lockStateDir() until the end

  void stop(StopReason r) {
    int none = 0;
    reason.compare_exchange_strong(none, static_cast<int>(r));
    cancel = true;
  }
  StopReason why() const { return static_cast<StopReason>(reason.load()); }
};

std::string defaultOwner() {
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = 0;
  return std::string(host[0] ? host : "worker") + ":" + std::to_string(getpid());
}

bool flippedPhase(const std::string& phase) {
  return phase == "dual_write" || phase == "finalizing" || phase == "finalized";
}

// Wires the pool's hooks into runMigrate's options. A template so that it compiles against
// MigrateOptions with or without the hooks (commit_statements, on_progress) — they were added
// in parallel with this file.
template <class O, class ProgressFn>
void wireHooks(O& o, int64_t move_id, int64_t epoch, std::shared_ptr<std::atomic<int64_t>> delay,
               ProgressFn progress) {
  if constexpr (requires { o.commit_statements; }) {
    using Stmts = typename decltype(o.commit_statements)::result_type;
    const std::string id = std::to_string(move_id), ep = std::to_string(epoch);
    o.commit_statements = [id, ep, delay]() {
      // The throttle's pace: every destination transaction of the move (copy chunk, apply
      // batch) waits here while the source is over a threshold.
      if (int64_t d = delay->load(); d > 0) std::this_thread::sleep_for(std::chrono::milliseconds(d));
      Stmts out;
      out.push_back({ownerCheckSql(), {id, ep}});
      return out;
    };
  } else {
    spdlog::warn("move {}: this build's runMigrate takes no commit statements: the destination "
                 "owner check is not enforced",
                 move_id);
  }
  if constexpr (requires { o.on_progress; }) {
    o.on_progress = [progress](const auto& p) {
      MoveProgress m;
      m.phase = p.phase;
      m.rows_copied = p.rows_copied;
      m.rows_estimated = p.rows_estimated;
      m.bytes_copied = p.bytes_copied;
      m.lag_bytes = static_cast<int64_t>(p.apply_lag_bytes);
      m.lag_seconds = p.apply_lag_seconds;
      m.eta_seconds = p.eta_seconds;
      m.flipped = flippedPhase(p.phase);
      m.changes_applied = p.changes_applied;
      progress(m);
    };
  }
}

// Takes the move's state directory for this run: an open file description lock (F_OFD_SETLK) on
// <dir>/OWNER.lock, held until the fd is closed at the end of the run. Unlike RocksDB's own
// process-wide LOCK, it also keeps apart two runs in one process, and over NFSv4 (a volume
// shared by pods) it is a network lock. Returns the fd, or -1 with `why` when another run
// (a stopped or still stopping earlier owner) holds it.
int lockStateDir(const std::string& dir, std::string* why) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string path = dir + "/OWNER.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    *why = "cannot open " + path + ": " + std::strerror(errno);
    return -1;
  }
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (::fcntl(fd, F_OFD_SETLK, &fl) != 0) {
    *why = "state directory " + dir + " is held by another run of this move (an earlier " +
           "owner, stopped or still stopping)";
    ::close(fd);
    return -1;
  }
  return fd;
}

// The move whose thread this is (progressFrom is also called from the copy's progress thread).
thread_local const void* t_move_thread_of = nullptr;

std::string utcNow() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

struct WorkerPool::Impl {
  MoveQueue* queue;
  WorkerPoolOptions options;
  std::mutex mu;
  std::condition_variable cv;
  std::map<int64_t, std::shared_ptr<Running>> running;  // guarded by mu
  bool started = false;                                 // guarded by mu
  std::atomic<bool> draining{false};
  std::atomic<bool> stopping{false};  // the lease thread's end
  std::thread claimer, leaser, throttler;
  std::atomic<uint64_t> n_started{0}, n_succeeded{0}, n_failed{0}, n_lost{0};

  std::chrono::milliseconds renewInterval() const {
    if (options.renew_interval.count() > 0) return options.renew_interval;
    return std::max(std::chrono::milliseconds(50), queue->options().lease_ttl / 3);
  }

  void reap() {
    std::vector<std::shared_ptr<Running>> finished;
    {
      std::lock_guard<std::mutex> g(mu);
      for (auto it = running.begin(); it != running.end();) {
        if (it->second->done) {
          finished.push_back(it->second);
          it = running.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& r : finished) {
      if (r->thread.joinable()) r->thread.join();
    }
    if (!finished.empty()) cv.notify_all();
  }

  void claimLoop() {
    while (!draining) {
      reap();
      size_t n;
      {
        std::lock_guard<std::mutex> g(mu);
        n = running.size();
      }
      if (n < options.concurrency) {
        auto l = queue->claim(options.owner, options.limits);
        if (!l) {
          spdlog::warn("worker pool: claim failed: {}", l.status().message());
        } else if (l->has_value()) {
          launch(**l);
          continue;  // claim again at once while there is room
        }
      }
      std::unique_lock<std::mutex> g(mu);
      cv.wait_for(g, options.poll_interval, [&] { return draining.load(); });
    }
  }

  void launch(const Lease& lease) {
    auto r = std::make_shared<Running>();
    r->lease = lease;
    n_started++;
    {
      std::lock_guard<std::mutex> g(mu);
      running[lease.move_id] = r;
    }
    r->thread = std::thread([this, r] {
      runMove(*r);
      r->done = true;
      cv.notify_all();
    });
  }

  // Renewals, operator actions and progress writes of every held move.
  void leaseLoop() {
    while (!stopping) {
      std::vector<std::shared_ptr<Running>> held;
      {
        std::unique_lock<std::mutex> g(mu);
        cv.wait_for(g, renewInterval(), [&] { return stopping.load(); });
        if (stopping) return;
        for (auto& [id, r] : running) {
          if (!r->done) held.push_back(r);
        }
      }
      for (auto& r : held) tend(*r);
    }
  }

  bool throttleConfigured() const {
    return options.throttle_source_lag_bytes > 0 || !options.throttle_load_query.empty();
  }

  // Samples the source of every held move (see WorkerPoolOptions, throttle).
  void throttleLoop() {
    while (!stopping) {
      std::vector<std::shared_ptr<Running>> held;
      {
        std::unique_lock<std::mutex> g(mu);
        cv.wait_for(g, options.throttle_check_interval, [&] { return stopping.load(); });
        if (stopping) return;
        for (auto& [id, r] : running) {
          if (!r->done) held.push_back(r);
        }
      }
      for (auto& r : held) sampleThrottle(*r);
    }
  }

  void sampleThrottle(Running& r) {
    std::string dsn;
    {
      std::lock_guard<std::mutex> g(r.mu);
      dsn = r.source_dsn;
    }
    if (dsn.empty()) return;  // not started yet
    const std::string label = "source stamp '" + r.move.spec.from_stamp + "' (throttle)";
    if (!r.probe) {
      auto c = common::PgConnection::connect(
          dsn, label, {{"connect_timeout", "5"}, {"application_name", "stampmover-throttle"}});
      if (!c) {
        spdlog::warn("move {}: throttle: cannot sample the source: {}", r.lease.move_id,
                     c.status().message());
        return;  // the previous decision stands until a sample succeeds
      }
      r.probe = std::move(*c);
      if (Status st = r.probe->exec("SET statement_timeout = '5s'"); !st) {
        r.probe.reset();
        return;
      }
    }
    std::vector<std::string> why;
    if (options.throttle_source_lag_bytes > 0) {
      // Physical standbys only: the move's own logical walsenders are not the source's health.
      auto v = r.probe->queryValue(
          "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)), 0)::bigint "
          "FROM pg_stat_replication r WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots s "
          "WHERE s.active_pid = r.pid AND s.slot_type = 'logical')");
      if (!v) {
        spdlog::warn("move {}: throttle: replication lag not read: {}", r.lease.move_id,
                     v.status().message());
        r.probe.reset();
        return;
      }
      const uint64_t lag = *v ? std::strtoull((*v)->c_str(), nullptr, 10) : 0;
      if (lag > options.throttle_source_lag_bytes) {
        why.push_back("source replication lag " + std::to_string(lag) + " bytes > " +
                      std::to_string(options.throttle_source_lag_bytes));
      }
    }
    if (!options.throttle_load_query.empty()) {
      auto v = r.probe->queryValue(options.throttle_load_query);
      if (!v) {
        spdlog::warn("move {}: throttle: load query failed: {}", r.lease.move_id,
                     v.status().message());
        r.probe.reset();
        return;
      }
      char* end = nullptr;
      const std::string text = *v ? **v : "";
      const double load = std::strtod(text.c_str(), &end);
      if (text.empty() || end == text.c_str()) {
        spdlog::warn("move {}: throttle: the load query returned '{}', not a number; ignored",
                     r.lease.move_id, text);
      } else if (load > options.throttle_load_threshold) {
        std::ostringstream m;
        m << "source load signal " << load << " > " << options.throttle_load_threshold;
        why.push_back(m.str());
      }
    }
    std::string reason;
    for (const auto& w : why) reason += (reason.empty() ? "" : "; ") + w;
    const int64_t delay =
        std::min<int64_t>(options.throttle_delay.count(), 1000);
    std::lock_guard<std::mutex> g(r.mu);
    const bool now = !why.empty();
    if (now && !r.throttled) {
      r.throttle_since = utcNow();
      spdlog::warn("move {}: throttling ({}): each destination transaction waits {} ms",
                   r.lease.move_id, reason, delay);
    } else if (!now && r.throttled) {
      spdlog::info("move {}: throttle lifted (was {})", r.lease.move_id, r.throttle_reason);
    }
    const std::string full = now ? "since " + r.throttle_since + ": " + reason : "";
    const bool changed = now != r.throttled || full != r.throttle_reason;
    r.throttled = now;
    r.throttle_reason = full;
    r.delay_ms->store(now ? delay : 0);
    if (changed && r.last) {
      MoveProgress p = *r.last;
      p.throttled = now;
      p.throttle_reason = full;
      r.last = p;
      r.pending = p;
      if (options.on_progress) options.on_progress(r.lease.move_id, p);
    }
  }

  void tend(Running& r) {
    Lease l;
    {
      std::lock_guard<std::mutex> g(r.mu);
      l = r.lease;
    }
    Status st = queue->renew(l);
    if (st.isOk()) {
      std::lock_guard<std::mutex> g(r.mu);
      r.lease.lease_until = l.lease_until;
      r.last_renewed = Clock::now();
    } else if (errorCode(st) == ErrorCodes::kLeaseLost) {
      spdlog::warn("move {}: lease lost (epoch {}): stopping", l.move_id, l.epoch);
      r.stop(StopReason::kLeaseLost);
      return;
    } else {
      spdlog::warn("move {}: lease renewal failed: {}", l.move_id, st.message());
      // Unable to renew for a whole TTL: another worker may hold it now; stop writing (the
      // destination fence would refuse us anyway).
      if (Clock::now() - r.last_renewed > queue->options().lease_ttl) {
        r.stop(StopReason::kLeaseLost);
      }
      return;
    }
    // Progress, throttled.
    std::optional<MoveProgress> p;
    {
      std::lock_guard<std::mutex> g(r.mu);
      if (r.pending && Clock::now() - r.last_progress_write >= options.progress_interval) {
        p = std::move(r.pending);
        r.pending.reset();
        r.last_progress_write = Clock::now();
      }
    }
    if (p) {
      Status ps = queue->reportProgress(l, *p);
      if (!ps.isOk()) spdlog::warn("move {}: progress not recorded: {}", l.move_id, ps.message());
    }
    // Operator actions.
    auto a = queue->takeAction(l);
    if (!a) {
      if (errorCode(a.status()) == ErrorCodes::kLeaseLost) r.stop(StopReason::kLeaseLost);
      return;
    }
    if (!a->has_value()) return;
    act(r, **a);
  }

  void act(Running& r, Action a) {
    switch (a) {
      case Action::kPause: r.stop(StopReason::kPause); return;
      case Action::kCancel: r.stop(StopReason::kCancel); return;
      case Action::kResume: return;  // not filed on a held move
      case Action::kCutover:
      case Action::kRollback:
      case Action::kFinalize: break;
    }
    // Relayed to the running migrate through the control plane's migrations table, as
    // `stampmover cutover|rollback|finalize` do.
    std::string dsn;
    {
      std::lock_guard<std::mutex> g(r.mu);
      dsn = r.control_plane_dsn;
    }
    Status st = Status::refused("the move has not reached catch-up");
    if (!dsn.empty()) {
      auto board = orch::MigrationBoard::open(dsn);
      st = board ? board->request(r.move.spec.tenant, actionName(a)) : board.status();
    }
    if (!st.isOk()) {
      if (a == Action::kRollback) {
        // No migration row yet (still copying): a rollback is a cancel with teardown.
        r.stop(StopReason::kCancel);
        return;
      }
      spdlog::warn("move {}: {} not relayed: {}", r.lease.move_id, actionName(a), st.message());
    }
  }

  void progressFrom(Running& r, const MoveProgress& p) {
    // The move's own thread carries its log context; the copy's progress thread has none.
    if (t_move_thread_of == &r) metrics::LogContext::setPhase(p.phase);
    std::lock_guard<std::mutex> g(r.mu);
    MoveProgress q = p;
    q.throttled = r.throttled;
    q.throttle_reason = r.throttle_reason;
    r.last = q;
    r.pending = q;
    if (options.on_progress) options.on_progress(r.lease.move_id, q);  // under r.mu: keeps order
  }

  // Tears down what a cancelled move created (nothing for a move run by a custom runner).
  Status teardown(Running& r) {
    if (options.runner) return Status::ok();
    SM_ASSIGN_OR_RETURN(auto o, options.migrate_options(r.move));
    auto c = orch::runCleanup(o.copy, /*purge_destination=*/true, o.control_plane_dsn);
    return c.status();
  }

  MoveRunResult runDefault(Running& r) {
    MoveRunResult out;
    auto o = options.migrate_options(r.move);
    if (!o) {
      out.status = o.status().withClass(common::ErrorClass::kRefused);
      return out;
    }
    orch::MigrateOptions opts = std::move(o).value();
    out.status = fenceDestination(opts.copy.destination.dsn, r.lease.move_id, r.lease.epoch);
    if (!out.status.isOk()) return out;
    // Fenced first: a previous owner that is stopped (SIGSTOP, a frozen VM) and still holds
    // the move's state directory can no longer write once it wakes; until it exits or stops on
    // its own, the directory is its, and this attempt is retried after a backoff.
    std::string why;
    r.state_lock_fd = lockStateDir(opts.copy.state_dir, &why);
    if (r.state_lock_fd < 0) {
      out.status = Status::retryable(why + "; the destination is fenced against it, retrying");
      return out;
    }
    {
      std::lock_guard<std::mutex> g(r.mu);
      r.control_plane_dsn = opts.control_plane_dsn;
      r.source_dsn = opts.copy.source.dsn;
    }
    opts.cutover_auto = r.move.spec.cutover == CutoverMode::kAuto;
    opts.cutover_manual = r.move.spec.cutover == CutoverMode::kManual;
    wireHooks(opts, r.lease.move_id, r.lease.epoch, r.delay_ms,
              [this, &r](const MoveProgress& p) { progressFrom(r, p); });
    auto rep = orch::runMigrate(opts, &r.cancel);
    if (!rep) {
      out.status = rep.status();
      return out;
    }
    out.flipped = rep->flipped;
    out.rolled_back = rep->rolled_back || rep->aborted;
    for (const auto& c : rep->cutovers) out.cutover_windows_ms.push_back(c.window_ms);
    for (const auto& c : rep->rollbacks) out.cutover_windows_ms.push_back(c.window_ms);
    return out;
  }

  void runMove(Running& r) {
    const Lease lease = r.lease;
    auto m = queue->get(lease.move_id);
    if (!m) {
      spdlog::warn("move {}: not readable: {}", lease.move_id, m.status().message());
      queue->release(lease).ignore();  // best effort: otherwise the lease lapses
      return;
    }
    r.move = *m;
    // Log lines of this thread (runMigrate's) carry move id, tenant and phase (--log-format json).
    metrics::LogContext log_context(std::to_string(lease.move_id), r.move.spec.tenant, "starting");
    t_move_thread_of = &r;
    spdlog::info("move {}: tenant {} {} -> {}, epoch {}, attempt {}", lease.move_id,
                 r.move.spec.tenant, r.move.spec.from_stamp, r.move.spec.to_stamp, lease.epoch,
                 r.move.attempts);
    if (r.move.desired_action == Action::kPause) r.stop(StopReason::kPause);
    if (r.move.desired_action == Action::kCancel || r.move.desired_action == Action::kRollback) {
      if (!r.move.progress.flipped) r.stop(StopReason::kCancel);
    }
    if (draining) r.stop(StopReason::kDrain);
    if (!r.cancel && options.skip_check && r.move.spec.plan_id && r.move.progress.phase.empty()) {
      auto why = options.skip_check(r.move);
      if (!why) {
        spdlog::warn("move {}: re-checking it against plan '{}' failed: {}", lease.move_id,
                     *r.move.spec.plan_id, why.status().message());
        queue->failAttempt(lease, why.status().withContext("re-checking the planned move"), false)
            .ignore();  // best effort: otherwise the lease lapses
        return;
      }
      if (!why->empty()) {
        spdlog::info("move {}: tenant {} skipped (plan '{}'): {}", lease.move_id,
                     r.move.spec.tenant, *r.move.spec.plan_id, *why);
        Status st = queue->finish(lease, MoveState::kCancelled, "skipped: " + *why);
        if (!st) spdlog::warn("move {}: recording the skip failed: {}", lease.move_id, st.message());
        return;
      }
    }

    MoveRunResult res;
    if (!r.cancel) {
      if (options.runner) {
        res = options.runner(r.move, lease, &r.cancel,
                             [this, &r](const MoveProgress& p) { progressFrom(r, p); });
      } else {
        res = runDefault(r);
      }
    } else {
      res.status = Status::cancelled("stopped before it started");
    }
    // Flush the last progress so `move show` has the final phase.
    {
      std::optional<MoveProgress> p;
      {
        std::lock_guard<std::mutex> g(r.mu);
        p = std::move(r.pending);
      }
      if (p && r.why() != StopReason::kLeaseLost) queue->reportProgress(lease, *p).ignore();
    }
    conclude(r, res);  // a cancel's teardown opens the store too: keep the lock until here
    if (r.state_lock_fd >= 0) ::close(r.state_lock_fd);
    r.state_lock_fd = -1;
  }

  void conclude(Running& r, const MoveRunResult& res) {
    const Lease& lease = r.lease;
    if (options.on_finished) options.on_finished(lease.move_id, res);
    const bool fenced = res.status.sqlState() == kOwnerFencedSqlState ||
                        errorCode(res.status) == ErrorCodes::kLeaseLost;
    if (r.why() == StopReason::kLeaseLost || fenced) {
      n_lost++;
      spdlog::warn("move {}: stopped, another worker holds it now (epoch {} lost)", lease.move_id,
                   lease.epoch);
      return;
    }
    Status st;
    if (res.status.isOk()) {
      n_succeeded++;
      st = queue->finish(lease, MoveState::kSucceeded, res.rolled_back ? "rolled back" : "");
    } else if (r.why() == StopReason::kDrain) {
      st = queue->release(lease);
    } else if (r.why() == StopReason::kPause) {
      st = queue->finish(lease, MoveState::kPaused);
    } else if (r.why() == StopReason::kCancel) {
      Status t = teardown(r);
      if (t.isOk()) {
        st = queue->finish(lease, MoveState::kCancelled);
      } else {
        n_failed++;
        st = queue->failAttempt(lease, t.withContext("cancel teardown"), false);
      }
    } else {
      n_failed++;
      const auto cls = res.status.errorClass();
      const bool permanent =
          cls == common::ErrorClass::kRefused || cls == common::ErrorClass::kDataLoss;
      spdlog::warn("move {}: attempt failed ({}): {}", lease.move_id,
                   common::errorClassName(cls), res.status.message());
      st = queue->failAttempt(lease, res.status, permanent);
    }
    if (!st.isOk()) {
      spdlog::warn("move {}: could not record the outcome: {}", lease.move_id, st.message());
    }
  }
};

WorkerPool::WorkerPool(MoveQueue& queue, WorkerPoolOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->queue = &queue;
  impl_->options = std::move(options);
  if (impl_->options.owner.empty()) impl_->options.owner = defaultOwner();
}

WorkerPool::~WorkerPool() {
  drain().ignore();  // its outcome is logged; the destructor must not return before the threads
  std::vector<std::shared_ptr<Running>> left;
  {
    std::lock_guard<std::mutex> g(impl_->mu);
    for (auto& [id, r] : impl_->running) left.push_back(r);
    impl_->running.clear();
  }
  for (auto& r : left) {
    if (r->thread.joinable()) r->thread.join();
  }
  impl_->stopping = true;
  impl_->cv.notify_all();
  if (impl_->leaser.joinable()) impl_->leaser.join();
  if (impl_->throttler.joinable()) impl_->throttler.join();
}

Status WorkerPool::start() {
  auto& o = impl_->options;
  if (o.concurrency == 0) return Status::refused("invalid_argument: concurrency must be > 0");
  if (!o.runner && !o.migrate_options) {
    return Status::refused("invalid_argument: the worker pool needs migrate_options");
  }
  std::lock_guard<std::mutex> g(impl_->mu);
  if (impl_->started) return Status::ok();
  impl_->started = true;
  impl_->claimer = std::thread([this] { impl_->claimLoop(); });
  impl_->leaser = std::thread([this] { impl_->leaseLoop(); });
  if (impl_->throttleConfigured()) impl_->throttler = std::thread([this] { impl_->throttleLoop(); });
  return Status::ok();
}

Status WorkerPool::drain(std::chrono::milliseconds timeout) {
  auto& I = *impl_;
  I.draining = true;
  I.cv.notify_all();
  if (I.claimer.joinable()) I.claimer.join();
  {
    std::lock_guard<std::mutex> g(I.mu);
    for (auto& [id, r] : I.running) r->stop(StopReason::kDrain);
  }
  const auto deadline = Clock::now() + timeout;
  bool all_done = false;
  while (!all_done) {
    I.reap();
    std::unique_lock<std::mutex> g(I.mu);
    all_done = I.running.empty();
    if (all_done || Clock::now() >= deadline) break;
    I.cv.wait_for(g, std::chrono::milliseconds(100));
  }
  // The lease thread keeps renewing while moves stop, then ends.
  if (all_done) {
    I.stopping = true;
    I.cv.notify_all();
    if (I.leaser.joinable()) I.leaser.join();
    if (I.throttler.joinable()) I.throttler.join();
    return Status::ok();
  }
  return Status::internal("worker pool: moves still running after the drain timeout");
}

WorkerPoolStats WorkerPool::stats() const {
  WorkerPoolStats s;
  {
    std::lock_guard<std::mutex> g(impl_->mu);
    s.running = static_cast<uint32_t>(impl_->running.size());
  }
  s.started = impl_->n_started;
  s.succeeded = impl_->n_succeeded;
  s.failed_attempts = impl_->n_failed;
  s.leases_lost = impl_->n_lost;
  s.draining = impl_->draining;
  return s;
}

}  // namespace stampmover::queue
