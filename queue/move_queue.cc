// The MoveQueue (move_queue.h) over the control-plane PostgreSQL: the versioned queue schema,
// claims with FOR UPDATE SKIP LOCKED under one advisory lock (so limits hold exactly), leases
// timed by the database clock and every change conditional on (owner, epoch).
#include "queue/move_queue.h"

#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>

#include "common/log.h"
#include "common/pg.h"

namespace stampmover::queue {

using common::PgConnection;
using common::PgParam;
using common::PgResult;
using common::Result;
using common::Status;

namespace {

// Advisory lock keys (control plane): schema migrations, and claims (serialized so that the
// limits, counted over running moves, cannot be overrun by two claimers at once).
constexpr int64_t kSchemaLockKey = 0x736d71756575'01;  // "smqueue" 1
constexpr int64_t kClaimLockKey = 0x736d71756575'02;

struct SchemaStep {
  int version;
  const char* description;
  const char* sql;
};

// Released steps are never edited: add a new one instead.
const SchemaStep kSchema[] = {
    {1, "moves, attempt errors",
     R"sql(
CREATE TABLE stampmover_queue.moves (
  id               bigserial PRIMARY KEY,
  tenant           text NOT NULL,
  from_stamp       text NOT NULL,
  to_stamp         text NOT NULL,
  cutover          text NOT NULL CHECK (cutover IN ('auto', 'manual')),
  plan_id          text,
  priority         integer NOT NULL DEFAULT 0,
  state            text NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued', 'running', 'paused', 'succeeded', 'failed',
                                    'cancelled')),
  desired_action   text CHECK (desired_action IN ('cutover', 'rollback', 'finalize', 'pause',
                                                  'resume', 'cancel')),
  owner            text,
  epoch            bigint NOT NULL DEFAULT 0,
  lease_until      timestamptz,
  attempts         integer NOT NULL DEFAULT 0,
  max_attempts     integer NOT NULL,
  takeovers        integer NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  last_error       text,
  progress         jsonb NOT NULL DEFAULT '{}',
  flipped          boolean NOT NULL DEFAULT false,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  CHECK (from_stamp <> to_stamp)
);
-- One unfinished move per tenant.
CREATE UNIQUE INDEX moves_open_tenant ON stampmover_queue.moves (tenant)
  WHERE state IN ('queued', 'running', 'paused');
CREATE INDEX moves_claimable ON stampmover_queue.moves (priority DESC, id)
  WHERE state IN ('queued', 'running');
CREATE TABLE stampmover_queue.move_errors (
  move_id      bigint NOT NULL REFERENCES stampmover_queue.moves (id) ON DELETE CASCADE,
  attempt      integer NOT NULL,
  owner        text NOT NULL,
  epoch        bigint NOT NULL,
  error_class  text NOT NULL,
  message      text NOT NULL,
  at           timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (move_id, epoch)
);
)sql"},
};
constexpr int kSchemaVersion = 1;

const char* kIso = "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'";

std::string isoCol(const std::string& col) {
  return "coalesce(to_char(" + col + " AT TIME ZONE 'UTC', " + kIso + "), '')";
}

std::string moveColumns() {
  return "id, tenant, from_stamp, to_stamp, cutover, plan_id, priority, state, desired_action, "
         "coalesce(owner, ''), epoch, " +
         isoCol("lease_until") + ", attempts, max_attempts, " +
         "CASE WHEN next_attempt_at > now() THEN " + isoCol("next_attempt_at") +
         " ELSE '' END, coalesce(last_error, ''), progress::text, flipped, " +
         isoCol("created_at") + ", " + isoCol("updated_at");
}

Status coded(const char* code, const std::string& text,
             common::ErrorClass cls = common::ErrorClass::kRefused) {
  return Status::error(cls, std::string(code) + ": " + text);
}

Status leaseLost(const Lease& l) {
  return coded(ErrorCodes::kLeaseLost, "move " + std::to_string(l.move_id) + " is no longer held by '" +
                                           l.owner + "' at epoch " + std::to_string(l.epoch));
}

nlohmann::json progressJson(const MoveProgress& p) {
  return nlohmann::json{{"phase", p.phase},
                        {"rows_copied", p.rows_copied},
                        {"rows_estimated", p.rows_estimated},
                        {"bytes_copied", p.bytes_copied},
                        {"lag_bytes", p.lag_bytes},
                        {"lag_seconds", p.lag_seconds},
                        {"eta_seconds", p.eta_seconds},
                        {"throttled", p.throttled},
                        {"throttle_reason", p.throttle_reason},
                        {"flipped", p.flipped}};
}

MoveProgress progressFrom(const std::string& text) {
  MoveProgress p;
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return p;
  p.phase = j.value("phase", "");
  p.rows_copied = j.value("rows_copied", uint64_t{0});
  p.rows_estimated = j.value("rows_estimated", uint64_t{0});
  p.bytes_copied = j.value("bytes_copied", uint64_t{0});
  p.lag_bytes = j.value("lag_bytes", int64_t{-1});
  p.lag_seconds = j.value("lag_seconds", -1.0);
  p.eta_seconds = j.value("eta_seconds", -1.0);
  p.throttled = j.value("throttled", false);
  p.throttle_reason = j.value("throttle_reason", "");
  p.flipped = j.value("flipped", false);
  return p;
}

Move moveFrom(const PgResult& r, int i) {
  using common::cell;
  using common::cellIsNull;
  Move m;
  m.id = std::stoll(cell(r, i, 0));
  m.spec.tenant = cell(r, i, 1);
  m.spec.from_stamp = cell(r, i, 2);
  m.spec.to_stamp = cell(r, i, 3);
  m.spec.cutover = cell(r, i, 4) == "manual" ? CutoverMode::kManual : CutoverMode::kAuto;
  if (!cellIsNull(r, i, 5)) m.spec.plan_id = cell(r, i, 5);
  m.spec.priority = std::stoi(cell(r, i, 6));
  m.state = parseMoveState(cell(r, i, 7)).value_or(MoveState::kFailed);
  if (!cellIsNull(r, i, 8)) m.desired_action = parseAction(cell(r, i, 8));
  m.owner = cell(r, i, 9);
  m.epoch = std::stoll(cell(r, i, 10));
  m.lease_until = cell(r, i, 11);
  m.attempts = static_cast<uint32_t>(std::stoul(cell(r, i, 12)));
  m.max_attempts = static_cast<uint32_t>(std::stoul(cell(r, i, 13)));
  m.next_attempt_at = cell(r, i, 14);
  m.last_error = cell(r, i, 15);
  m.progress = progressFrom(cell(r, i, 16));
  m.progress.flipped = m.progress.flipped || cell(r, i, 17) == "t";
  m.created_at = cell(r, i, 18);
  m.updated_at = cell(r, i, 19);
  return m;
}

bool isOpen(MoveState s) {
  return s == MoveState::kQueued || s == MoveState::kRunning || s == MoveState::kPaused;
}

}  // namespace

const char* moveStateName(MoveState s) {
  switch (s) {
    case MoveState::kQueued: return "queued";
    case MoveState::kRunning: return "running";
    case MoveState::kPaused: return "paused";
    case MoveState::kSucceeded: return "succeeded";
    case MoveState::kFailed: return "failed";
    case MoveState::kCancelled: return "cancelled";
  }
  return "unknown";
}

std::optional<MoveState> parseMoveState(const std::string& s) {
  for (auto st : {MoveState::kQueued, MoveState::kRunning, MoveState::kPaused,
                  MoveState::kSucceeded, MoveState::kFailed, MoveState::kCancelled}) {
    if (s == moveStateName(st)) return st;
  }
  return std::nullopt;
}

const char* actionName(Action a) {
  switch (a) {
    case Action::kCutover: return "cutover";
    case Action::kRollback: return "rollback";
    case Action::kFinalize: return "finalize";
    case Action::kPause: return "pause";
    case Action::kResume: return "resume";
    case Action::kCancel: return "cancel";
  }
  return "unknown";
}

std::optional<Action> parseAction(const std::string& s) {
  for (auto a : {Action::kCutover, Action::kRollback, Action::kFinalize, Action::kPause,
                 Action::kResume, Action::kCancel}) {
    if (s == actionName(a)) return a;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------

struct MoveQueue::Impl {
  std::string dsn;
  QueueOptions options;
  std::mutex mu;
  std::vector<PgConnection> idle;  // guarded by mu
  std::atomic<uint64_t> claims{0}, takeovers{0}, leases_lost{0};
  std::mt19937_64 rng{std::random_device{}()};  // guarded by mu

  // A connection for one call; give it back with put() (dropped when broken).
  Result<PgConnection> take() {
    {
      std::lock_guard<std::mutex> g(mu);
      if (!idle.empty()) {
        PgConnection c = std::move(idle.back());
        idle.pop_back();
        return c;
      }
    }
    auto c = PgConnection::connect(dsn, "control plane");
    if (!c) return coded(ErrorCodes::kUnavailable, c.status().message(), c.status().errorClass());
    return std::move(c).value();
  }
  void put(PgConnection c) {
    if (!c.valid() || PQstatus(c.raw()) != CONNECTION_OK ||
        PQtransactionStatus(c.raw()) != PQTRANS_IDLE) {
      return;  // broken or left inside a transaction: the next call connects afresh
    }
    std::lock_guard<std::mutex> g(mu);
    if (idle.size() < 8) idle.push_back(std::move(c));
  }

  // Runs `fn` on a pooled connection, inside BEGIN/COMMIT when `txn`. A server error keeps its
  // class; a lost connection gets the code unavailable.
  template <class T, class Fn>
  Result<T> run(bool txn, Fn&& fn) {
    SM_ASSIGN_OR_RETURN(PgConnection c, take());
    auto finish = [&](Result<T> r) -> Result<T> {
      if (txn) {
        if (r.isOk()) {
          Status st = c.exec("COMMIT");
          if (!st.isOk()) r = Result<T>(st);
        } else {
          c.exec("ROLLBACK").ignore();  // best effort: a broken connection is dropped by put()
        }
      }
      if (!r.isOk() && errorCode(r.status()) == ErrorCodes::kInternal &&
          r.status().errorClass() == common::ErrorClass::kRetryable) {
        r = Result<T>(coded(ErrorCodes::kUnavailable, r.status().message(),
                            common::ErrorClass::kRetryable));
      }
      put(std::move(c));
      return r;
    };
    if (txn) {
      Status st = c.exec("BEGIN");
      if (!st.isOk()) return finish(Result<T>(st));
    }
    return finish(fn(c));
  }

  // Bootstrap (schema, version table, a version newer than ours refused), then each version
  // in its own transaction; every transaction takes the same advisory lock, so concurrent
  // starters apply each step once.
  Status migrate() {
    auto boot = run<bool>(true, [&](PgConnection& c) -> Result<bool> {
      SM_RETURN_IF_ERROR(
          c.query("SELECT pg_advisory_xact_lock($1::bigint)", {std::to_string(kSchemaLockKey)})
              .status());
      SM_RETURN_IF_ERROR(
          c.exec("CREATE SCHEMA IF NOT EXISTS stampmover_queue;"
                 "CREATE TABLE IF NOT EXISTS stampmover_queue.schema_version ("
                 "  version integer PRIMARY KEY, description text NOT NULL,"
                 "  applied_at timestamptz NOT NULL DEFAULT now())"));
      SM_ASSIGN_OR_RETURN(auto v, c.queryValue("SELECT coalesce(max(version), 0) FROM "
                                               "stampmover_queue.schema_version"));
      const int have = v ? std::stoi(*v) : 0;
      if (have > kSchemaVersion) {
        return Status::refused("the control plane's queue schema is at version " +
                               std::to_string(have) + ", newer than this binary knows (" +
                               std::to_string(kSchemaVersion) + "): upgrade stampmover");
      }
      return true;
    });
    SM_RETURN_IF_ERROR(boot.status());
    return applySteps();
  }

  Status applySteps() {
    for (const auto& step : kSchema) {
      auto r = run<bool>(true, [&](PgConnection& c) -> Result<bool> {
        SM_RETURN_IF_ERROR(
            c.query("SELECT pg_advisory_xact_lock($1::bigint)", {std::to_string(kSchemaLockKey)})
                .status());
        SM_ASSIGN_OR_RETURN(auto done,
                            c.queryValue("SELECT 1 FROM stampmover_queue.schema_version "
                                         "WHERE version = $1",
                                         {std::to_string(step.version)}));
        if (done) return true;
        SM_RETURN_IF_ERROR(c.exec(step.sql).withContext("queue schema version " +
                                                        std::to_string(step.version)));
        SM_RETURN_IF_ERROR(c.query("INSERT INTO stampmover_queue.schema_version (version, "
                                   "description) VALUES ($1, $2)",
                                   {std::to_string(step.version), std::string(step.description)})
                               .status());
        return true;
      });
      SM_RETURN_IF_ERROR(r.status());
    }
    return Status::ok();
  }

  std::chrono::milliseconds backoff(uint32_t attempts) {
    double ms = static_cast<double>(options.backoff_base.count()) *
                std::pow(2.0, static_cast<double>(attempts > 0 ? attempts - 1 : 0));
    ms = std::min(ms, static_cast<double>(options.backoff_max.count()));
    std::lock_guard<std::mutex> g(mu);
    std::uniform_real_distribution<double> jitter(0.75, 1.25);
    return std::chrono::milliseconds(static_cast<int64_t>(ms * jitter(rng)));
  }

  // The guard of every change a lease holder makes.
  static std::string held() { return "id = $1 AND owner = $2 AND epoch = $3 AND state = 'running'"; }
  static std::vector<PgParam> leaseParams(const Lease& l) {
    return {std::to_string(l.move_id), l.owner, std::to_string(l.epoch)};
  }
};

MoveQueue::MoveQueue(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MoveQueue::~MoveQueue() = default;

Result<std::unique_ptr<MoveQueue>> MoveQueue::open(const std::string& dsn, QueueOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->dsn = dsn;
  impl->options = std::move(options);
  if (impl->options.lease_ttl.count() <= 0 || impl->options.max_attempts == 0) {
    return coded(ErrorCodes::kInvalidArgument, "lease_ttl and max_attempts must be positive");
  }
  SM_RETURN_IF_ERROR(impl->migrate());
  return std::unique_ptr<MoveQueue>(new MoveQueue(std::move(impl)));
}

const QueueOptions& MoveQueue::options() const { return impl_->options; }

QueueCounters MoveQueue::counters() const {
  return QueueCounters{impl_->claims.load(), impl_->takeovers.load(), impl_->leases_lost.load()};
}

Result<Move> MoveQueue::create(const MoveSpec& spec) {
  if (spec.tenant.empty() || spec.from_stamp.empty() || spec.to_stamp.empty()) {
    return coded(ErrorCodes::kInvalidArgument, "tenant, from and to stamps are required");
  }
  if (spec.from_stamp == spec.to_stamp) {
    return coded(ErrorCodes::kSameStamp,
                 "tenant " + spec.tenant + " cannot move from stamp '" + spec.from_stamp +
                     "' to itself");
  }
  const auto& known = impl_->options.known_stamps;
  for (const auto* s : {&spec.from_stamp, &spec.to_stamp}) {
    if (!known.empty() && std::find(known.begin(), known.end(), *s) == known.end()) {
      return coded(ErrorCodes::kUnknownStamp, "stamp '" + *s + "' is not in the configuration");
    }
  }
  return impl_->run<Move>(false, [&](PgConnection& c) -> Result<Move> {
    auto r = c.query("INSERT INTO stampmover_queue.moves (tenant, from_stamp, to_stamp, cutover, "
                     "plan_id, priority, max_attempts) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                     "RETURNING " + moveColumns(),
                     {spec.tenant, spec.from_stamp, spec.to_stamp,
                      std::string(spec.cutover == CutoverMode::kManual ? "manual" : "auto"),
                      spec.plan_id, std::to_string(spec.priority),
                      std::to_string(impl_->options.max_attempts)});
    if (!r) {
      if (r.status().sqlState() == "23505") {
        return coded(ErrorCodes::kTenantBusy,
                     "tenant " + spec.tenant + " already has an unfinished move");
      }
      return r.status();
    }
    return moveFrom(*r, 0);
  });
}

Result<std::vector<Move>> MoveQueue::list(const MoveFilter& f) {
  return impl_->run<std::vector<Move>>(false, [&](PgConnection& c) -> Result<std::vector<Move>> {
    SM_ASSIGN_OR_RETURN(
        auto r, c.query("SELECT " + moveColumns() +
                            " FROM stampmover_queue.moves WHERE ($1::text IS NULL OR state = $1) "
                            "AND ($2::text IS NULL OR tenant = $2) AND ($3::text IS NULL OR "
                            "from_stamp = $3 OR to_stamp = $3) ORDER BY id DESC LIMIT $4",
                        {f.state ? PgParam(moveStateName(*f.state)) : std::nullopt, f.tenant,
                         f.stamp, std::to_string(f.limit)}));
    std::vector<Move> out;
    for (int i = 0; i < common::rowCount(r); ++i) out.push_back(moveFrom(r, i));
    return out;
  });
}

Result<Move> MoveQueue::get(int64_t id) {
  return impl_->run<Move>(false, [&](PgConnection& c) -> Result<Move> {
    SM_ASSIGN_OR_RETURN(auto r, c.query("SELECT " + moveColumns() +
                                            " FROM stampmover_queue.moves WHERE id = $1",
                                        {std::to_string(id)}));
    if (common::rowCount(r) == 0) {
      return coded(ErrorCodes::kNotFound, "no move with id " + std::to_string(id));
    }
    Move m = moveFrom(r, 0);
    SM_ASSIGN_OR_RETURN(
        auto e, c.query("SELECT attempt, owner, epoch, error_class, message, " + isoCol("at") +
                            " FROM stampmover_queue.move_errors WHERE move_id = $1 ORDER BY at, "
                            "epoch",
                        {std::to_string(id)}));
    for (int i = 0; i < common::rowCount(e); ++i) {
      m.errors.push_back(AttemptError{static_cast<uint32_t>(std::stoul(common::cell(e, i, 0))),
                                      common::cell(e, i, 1), std::stoll(common::cell(e, i, 2)),
                                      common::cell(e, i, 3), common::cell(e, i, 4),
                                      common::cell(e, i, 5)});
    }
    return m;
  });
}

Result<Move> MoveQueue::request(int64_t id, Action action) {
  return impl_->run<Move>(true, [&](PgConnection& c) -> Result<Move> {
    SM_ASSIGN_OR_RETURN(auto r, c.query("SELECT " + moveColumns() +
                                            " FROM stampmover_queue.moves WHERE id = $1 FOR UPDATE",
                                        {std::to_string(id)}));
    if (common::rowCount(r) == 0) {
      return coded(ErrorCodes::kNotFound, "no move with id " + std::to_string(id));
    }
    const Move m = moveFrom(r, 0);
    const bool flipped = m.progress.flipped;
    const bool started = m.attempts > 0;
    auto illegal = [&](const std::string& why) {
      return coded(ErrorCodes::kIllegalTransition, why + " (move " + std::to_string(id) + " is " +
                                                       moveStateName(m.state) +
                                                       (m.progress.phase.empty()
                                                            ? std::string()
                                                            : ", phase " + m.progress.phase) +
                                                       ")");
    };
    if (!isOpen(m.state)) {
      return illegal(std::string(actionName(action)) + " of a move that is " +
                     moveStateName(m.state));
    }
    // What to write: new state (or keep), desired action (or clear).
    std::optional<std::string> new_state;
    std::optional<std::string> desired;
    bool clear_desired = false;
    switch (action) {
      case Action::kCutover:
        if (m.spec.cutover != CutoverMode::kManual) {
          return illegal("cutover of a move with automatic cutover");
        }
        if (flipped) return illegal("cutover of a move already flipped");
        if (m.state != MoveState::kRunning || m.progress.phase.empty() ||
            m.progress.phase == "starting" || m.progress.phase == "copying" ||
            m.progress.phase == "copy") {
          return illegal("cutover of a move still copying");
        }
        desired = "cutover";
        break;
      case Action::kFinalize:
        if (!flipped || m.state != MoveState::kRunning) {
          return illegal("finalize of a move that has not flipped");
        }
        desired = "finalize";
        break;
      case Action::kRollback:
        if (!started) {
          new_state = "cancelled";
          clear_desired = true;
        } else {
          desired = "rollback";
          if (m.state == MoveState::kPaused) new_state = "queued";
        }
        break;
      case Action::kPause:
        if (m.state == MoveState::kPaused) return illegal("pause of a move already paused");
        if (flipped) return illegal("pause after flip (finalize or rollback)");
        if (m.state == MoveState::kQueued && !m.desired_action) {
          new_state = "paused";
        } else {
          desired = "pause";
        }
        break;
      case Action::kResume:
        if (m.state != MoveState::kPaused) return illegal("resume of a move that is not paused");
        new_state = "queued";
        clear_desired = true;
        break;
      case Action::kCancel:
        if (flipped) return illegal("cancel after flip (use rollback)");
        if (!started) {
          new_state = "cancelled";
          clear_desired = true;
        } else {
          desired = "cancel";
          if (m.state == MoveState::kPaused) new_state = "queued";
        }
        break;
    }
    SM_ASSIGN_OR_RETURN(
        auto u,
        c.query("UPDATE stampmover_queue.moves SET state = coalesce($2, state), desired_action = "
                "CASE WHEN $4 THEN NULL ELSE coalesce($3, desired_action) END, "
                "next_attempt_at = CASE WHEN $2 = 'queued' THEN now() ELSE next_attempt_at END, "
                "updated_at = now() WHERE id = $1 RETURNING " +
                    moveColumns(),
                {std::to_string(id), new_state, desired, std::string(clear_desired ? "t" : "f")}));
    return moveFrom(u, 0);
  });
}

Result<std::optional<Lease>> MoveQueue::claim(const std::string& owner, const ClaimLimits& lim) {
  if (owner.empty()) return coded(ErrorCodes::kInvalidArgument, "claim needs an owner name");
  bool takeover = false;
  auto r = impl_->run<std::optional<Lease>>(
      true, [&](PgConnection& c) -> Result<std::optional<Lease>> {
        SM_RETURN_IF_ERROR(
            c.query("SELECT pg_advisory_xact_lock($1::bigint)", {std::to_string(kClaimLockKey)})
                .status());
        // A running move counts against its stamps until it leaves `running` (even with its
        // lease lapsed: its owner may be alive, only paused); taking it over adds nothing.
        SM_ASSIGN_OR_RETURN(
            auto pick,
            c.query(
                "WITH busy AS (SELECT from_stamp, to_stamp FROM stampmover_queue.moves "
                "              WHERE state = 'running') "
                "SELECT m.id, m.state = 'running' FROM stampmover_queue.moves m "
                "WHERE (m.state = 'running' AND m.lease_until < now()) "
                "   OR (m.state = 'queued' AND m.next_attempt_at <= now() "
                "       AND (SELECT count(*) FROM busy) < $1 "
                "       AND (SELECT count(*) FROM busy b WHERE b.from_stamp = m.from_stamp) < $2 "
                "       AND (SELECT count(*) FROM busy b WHERE b.to_stamp = m.to_stamp) < $3 "
                "       AND ($4 = 0 OR (SELECT count(*) FROM busy b WHERE b.from_stamp IN "
                "            (m.from_stamp, m.to_stamp) OR b.to_stamp IN (m.from_stamp, m.to_stamp))"
                "            < $4)) "
                "ORDER BY (m.state = 'running') DESC, m.priority DESC, m.id "
                "LIMIT 1 FOR UPDATE OF m SKIP LOCKED",
                {std::to_string(lim.global), std::to_string(lim.per_source),
                 std::to_string(lim.per_destination), std::to_string(lim.per_stamp)}));
        if (common::rowCount(pick) == 0) return std::optional<Lease>();
        takeover = common::cell(pick, 0, 1) == "t";
        SM_ASSIGN_OR_RETURN(
            auto u,
            c.query("UPDATE stampmover_queue.moves SET state = 'running', owner = $2, "
                    "epoch = epoch + 1, attempts = attempts + 1, takeovers = takeovers + $4, "
                    "lease_until = now() + $3 * interval '1 millisecond', updated_at = now() "
                    "WHERE id = $1 RETURNING epoch, " +
                        isoCol("lease_until"),
                    {common::cell(pick, 0, 0), owner,
                     std::to_string(impl_->options.lease_ttl.count()),
                     std::string(takeover ? "1" : "0")}));
        Lease l;
        l.move_id = std::stoll(common::cell(pick, 0, 0));
        l.owner = owner;
        l.epoch = std::stoll(common::cell(u, 0, 0));
        l.lease_until = common::cell(u, 0, 1);
        return std::optional<Lease>(l);
      });
  if (r && r->has_value()) {
    impl_->claims++;
    if (takeover) {
      impl_->takeovers++;
      spdlog::info("move {}: lease taken over by '{}' at epoch {}", (*r)->move_id, owner,
                  (*r)->epoch);
    }
  }
  return r;
}

Status MoveQueue::renew(Lease& lease) {
  auto r = impl_->run<bool>(false, [&](PgConnection& c) -> Result<bool> {
    auto p = Impl::leaseParams(lease);
    p.push_back(std::to_string(impl_->options.lease_ttl.count()));
    SM_ASSIGN_OR_RETURN(auto u, c.query("UPDATE stampmover_queue.moves SET lease_until = now() + "
                                        "$4 * interval '1 millisecond', updated_at = now() "
                                        "WHERE " + Impl::held() + " RETURNING " +
                                            isoCol("lease_until"),
                                        p));
    if (common::rowCount(u) == 0) return leaseLost(lease);
    lease.lease_until = common::cell(u, 0, 0);
    return true;
  });
  if (errorCode(r.status()) == ErrorCodes::kLeaseLost) impl_->leases_lost++;
  return r.status();
}

Status MoveQueue::reportProgress(const Lease& lease, const MoveProgress& progress) {
  auto r = impl_->run<bool>(false, [&](PgConnection& c) -> Result<bool> {
    auto p = Impl::leaseParams(lease);
    p.push_back(progressJson(progress).dump());
    p.push_back(std::string(progress.flipped ? "t" : "f"));
    SM_ASSIGN_OR_RETURN(auto u, c.query("UPDATE stampmover_queue.moves SET progress = $4::jsonb, "
                                        "flipped = flipped OR $5::boolean, updated_at = now() "
                                        "WHERE " + Impl::held() + " RETURNING id",
                                        p));
    if (common::rowCount(u) == 0) return leaseLost(lease);
    return true;
  });
  if (errorCode(r.status()) == ErrorCodes::kLeaseLost) impl_->leases_lost++;
  return r.status();
}

Result<std::optional<Action>> MoveQueue::takeAction(const Lease& lease) {
  return impl_->run<std::optional<Action>>(
      true, [&](PgConnection& c) -> Result<std::optional<Action>> {
        SM_ASSIGN_OR_RETURN(auto r, c.query("SELECT coalesce(desired_action, '') FROM "
                                            "stampmover_queue.moves WHERE " + Impl::held() +
                                                " FOR UPDATE",
                                            Impl::leaseParams(lease)));
        if (common::rowCount(r) == 0) return leaseLost(lease);
        auto a = parseAction(common::cell(r, 0, 0));
        // pause and cancel stay filed until the move stops (finish clears them), so a worker
        // that dies while stopping leaves them to its successor.
        if (a && *a != Action::kPause && *a != Action::kCancel) {
          SM_RETURN_IF_ERROR(c.query("UPDATE stampmover_queue.moves SET desired_action = NULL "
                                     "WHERE id = $1",
                                     {std::to_string(lease.move_id)})
                                 .status());
        }
        return a;
      });
}

Status MoveQueue::finish(const Lease& lease, MoveState final_state, const std::string& note) {
  if (final_state == MoveState::kQueued || final_state == MoveState::kRunning) {
    return coded(ErrorCodes::kInvalidArgument, "finish takes a final state or paused");
  }
  auto r = impl_->run<bool>(false, [&](PgConnection& c) -> Result<bool> {
    auto p = Impl::leaseParams(lease);
    p.push_back(std::string(moveStateName(final_state)));
    p.push_back(note.empty() ? PgParam() : PgParam(note));
    SM_ASSIGN_OR_RETURN(auto u, c.query("UPDATE stampmover_queue.moves SET state = $4, "
                                        "owner = NULL, lease_until = NULL, desired_action = NULL, "
                                        "last_error = coalesce($5, last_error), updated_at = now() "
                                        "WHERE " + Impl::held() + " RETURNING id",
                                        p));
    if (common::rowCount(u) == 0) return leaseLost(lease);
    return true;
  });
  if (errorCode(r.status()) == ErrorCodes::kLeaseLost) impl_->leases_lost++;
  return r.status();
}

Status MoveQueue::release(const Lease& lease) {
  auto r = impl_->run<bool>(false, [&](PgConnection& c) -> Result<bool> {
    SM_ASSIGN_OR_RETURN(auto u, c.query("UPDATE stampmover_queue.moves SET state = 'queued', "
                                        "owner = NULL, lease_until = NULL, next_attempt_at = "
                                        "now(), updated_at = now() WHERE " + Impl::held() +
                                            " RETURNING id",
                                        Impl::leaseParams(lease)));
    if (common::rowCount(u) == 0) return leaseLost(lease);
    return true;
  });
  if (errorCode(r.status()) == ErrorCodes::kLeaseLost) impl_->leases_lost++;
  return r.status();
}

Status MoveQueue::failAttempt(const Lease& lease, const Status& error, bool permanent) {
  auto r = impl_->run<bool>(true, [&](PgConnection& c) -> Result<bool> {
    SM_ASSIGN_OR_RETURN(auto row, c.query("SELECT attempts, max_attempts FROM "
                                          "stampmover_queue.moves WHERE " + Impl::held() +
                                              " FOR UPDATE",
                                          Impl::leaseParams(lease)));
    if (common::rowCount(row) == 0) return leaseLost(lease);
    const uint32_t attempts = static_cast<uint32_t>(std::stoul(common::cell(row, 0, 0)));
    const uint32_t max_attempts = static_cast<uint32_t>(std::stoul(common::cell(row, 0, 1)));
    const bool give_up = permanent || attempts >= max_attempts;
    SM_RETURN_IF_ERROR(
        c.query("INSERT INTO stampmover_queue.move_errors (move_id, attempt, owner, epoch, "
                "error_class, message) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (move_id, "
                "epoch) DO UPDATE SET message = EXCLUDED.message, at = now()",
                {std::to_string(lease.move_id), std::to_string(attempts), lease.owner,
                 std::to_string(lease.epoch), std::string(common::errorClassName(error.errorClass())),
                 error.message()})
            .status());
    const auto delay = impl_->backoff(attempts);
    SM_RETURN_IF_ERROR(
        c.query("UPDATE stampmover_queue.moves SET state = $2, owner = NULL, lease_until = NULL, "
                "next_attempt_at = now() + $3 * interval '1 millisecond', last_error = $4, "
                "updated_at = now() WHERE id = $1",
                {std::to_string(lease.move_id), std::string(give_up ? "failed" : "queued"),
                 std::to_string(delay.count()), error.message()})
            .status());
    return true;
  });
  if (errorCode(r.status()) == ErrorCodes::kLeaseLost) impl_->leases_lost++;
  return r.status();
}

// ---------------------------------------------------------------------------------------------
// Destination fencing.

namespace {
constexpr int64_t kOwnerDdlLockKey = 0x736d71756575'03;

const char* kOwnerDdl = R"sql(
CREATE SCHEMA IF NOT EXISTS stampmover;
CREATE TABLE IF NOT EXISTS stampmover.move_owners (
  move_id     bigint PRIMARY KEY,
  epoch       bigint NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION stampmover.check_move_owner(p_move bigint, p_epoch bigint)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
  current_epoch bigint;
BEGIN
  -- FOR SHARE: a takeover's epoch bump waits until this transaction ends, so no write of an
  -- old owner can commit after the bump.
  SELECT epoch INTO current_epoch FROM stampmover.move_owners WHERE move_id = p_move FOR SHARE;
  IF current_epoch IS DISTINCT FROM p_epoch THEN
    RAISE EXCEPTION 'move % is owned by epoch %, not %: this worker lost its lease',
      p_move, coalesce(current_epoch::text, 'none'), p_epoch
      USING ERRCODE = 'SM001';
  END IF;
END
$fn$;
)sql";
}  // namespace

std::string ownerCheckSql() {
  return "SELECT stampmover.check_move_owner($1::bigint, $2::bigint)";
}

Status fenceDestination(const std::string& destination_dsn, int64_t move_id, int64_t epoch) {
  SM_ASSIGN_OR_RETURN(auto c, PgConnection::connect(destination_dsn, "destination (owner fence)"));
  SM_ASSIGN_OR_RETURN(auto has, c.queryValue("SELECT to_regprocedure("
                                             "'stampmover.check_move_owner(bigint,bigint)') IS "
                                             "NOT NULL"));
  if (!has || *has != "t") {
    SM_RETURN_IF_ERROR(c.exec("BEGIN"));
    Status st = c.query("SELECT pg_advisory_xact_lock($1::bigint)",
                        {std::to_string(kOwnerDdlLockKey)})
                    .status();
    if (st.isOk()) st = c.exec(kOwnerDdl);
    if (st.isOk()) st = c.exec("COMMIT");
    if (!st.isOk()) {
      c.exec("ROLLBACK").ignore();  // best effort: the connection is dropped right after
      return st.withContext("creating the move owner table on the destination");
    }
  }
  // An old owner stopped (SIGSTOP) inside a transaction that holds the owner row would make
  // this wait for ever: bound the wait, then end the sessions that block us while idle in a
  // transaction (a live owner never idles between its owner check and its COMMIT).
  for (int round = 0;; ++round) {
    SM_RETURN_IF_ERROR(c.exec("SET lock_timeout = '3s'"));
    auto r = c.query(
        "INSERT INTO stampmover.move_owners AS o (move_id, epoch) VALUES ($1, $2) "
        "ON CONFLICT (move_id) DO UPDATE SET epoch = EXCLUDED.epoch, updated_at = now() "
        "WHERE o.epoch <= EXCLUDED.epoch RETURNING epoch",
        {std::to_string(move_id), std::to_string(epoch)});
    if (r) {
      if (common::rowCount(*r) == 0) {
        return coded(ErrorCodes::kLeaseLost, "move " + std::to_string(move_id) +
                                                 ": the destination's owner row holds an epoch "
                                                 "above " + std::to_string(epoch));
      }
      return Status::ok();
    }
    if (r.status().sqlState() != "55P03" || round >= 5) return r.status();
    auto killer = PgConnection::connect(destination_dsn, "destination (owner fence)");
    if (!killer) return killer.status();
    // The blockers cannot be read while we are not waiting: end idle-in-transaction sessions
    // holding a lock on the owner table's rows is what we can see (pg_locks shows relation
    // locks of every session that touched move_owners in its open transaction).
    auto k = killer->query(
        "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a "
        "WHERE a.state LIKE 'idle in transaction%' AND a.pid <> pg_backend_pid() "
        "AND a.pid IN (SELECT l.pid FROM pg_locks l WHERE l.relation = "
        "'stampmover.move_owners'::regclass) AND a.state_change < now() - interval '2 s'");
    if (!k) return k.status();
    spdlog::warn("move {}: ended {} stalled session(s) holding the destination owner row", move_id,
                common::rowCount(*k));
  }
}

}  // namespace stampmover::queue
