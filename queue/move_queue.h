// The shared queue of moves in the control-plane PostgreSQL (issue 12): moves created by the API,
// claimed by workers on many machines with fenced leases (FOR UPDATE SKIP LOCKED, an epoch bumped
// on every claim, every renewal and transition conditional on (owner, epoch) and timed by the
// database clock), operator actions filed as a desired action, retries with backoff and the error
// of every attempt kept. The worker pool that runs moves is in queue/worker_pool.h.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace stampmover::queue {

// ---------------------------------------------------------------------------------------------
// Errors. Every Status this library returns for a request the caller could have avoided carries
// a stable machine code as a prefix of its message: "<code>: <human text>". errorCode() extracts
// it; httpStatusFor() maps it (the API uses both). Codes never change meaning once shipped.
//   not_found            the move id does not exist                                   -> 404
//   unknown_stamp        a stamp not in the configured list                           -> 422
//   same_stamp           from_stamp == to_stamp                                       -> 422
//   invalid_argument     empty tenant, bad priority, bad action name...               -> 400
//   tenant_busy          the tenant already has an unfinished move                    -> 409
//   illegal_transition   an action the move's state does not allow (see request())    -> 409
//   lease_lost           the caller's (owner, epoch) no longer holds the move         -> 409
//   unavailable          the control plane cannot be reached (kRetryable)             -> 503
//   internal             anything else                                                -> 500
struct ErrorCodes {
  static constexpr const char* kNotFound = "not_found";
  static constexpr const char* kUnknownStamp = "unknown_stamp";
  static constexpr const char* kSameStamp = "same_stamp";
  static constexpr const char* kInvalidArgument = "invalid_argument";
  static constexpr const char* kTenantBusy = "tenant_busy";
  static constexpr const char* kIllegalTransition = "illegal_transition";
  static constexpr const char* kLeaseLost = "lease_lost";
  static constexpr const char* kUnavailable = "unavailable";
  static constexpr const char* kInternal = "internal";
};

// The stable code of `s`: its "<code>: " prefix when it has one of the codes above, else
// "unavailable" for kRetryable, "internal" otherwise; "" for OK.
std::string errorCode(const common::Status& s);
// The message without its code prefix (what a human reads).
std::string errorText(const common::Status& s);
// HTTP status for errorCode(s) (200 for OK).
int httpStatusFor(const common::Status& s);

// ---------------------------------------------------------------------------------------------
// Moves.

enum class CutoverMode { kAuto, kManual };

// What a move is doing, as the queue sees it.
//   queued     waiting to be claimed (first time, after a pause resumed, after a retryable
//              failure once next_attempt_at has passed, or after its owner's lease expired)
//   running    claimed by a worker (owner, epoch, lease_until set); `phase` says where it is
//   paused     the operator paused it; not claimable until resumed
//   succeeded  finalized (or rolled back on request after the flip: see `outcome`)
//   failed     gave up (a refused error, or attempts exhausted); last_error says why
//   cancelled  cancelled before the flip; its server objects were torn down
enum class MoveState { kQueued, kRunning, kPaused, kSucceeded, kFailed, kCancelled };
const char* moveStateName(MoveState s);  // "queued", "running", ...
std::optional<MoveState> parseMoveState(const std::string& s);

// Operator actions (request()).
enum class Action { kCutover, kRollback, kFinalize, kPause, kResume, kCancel };
const char* actionName(Action a);  // "cutover", ...
std::optional<Action> parseAction(const std::string& s);

struct MoveSpec {
  std::string tenant;                        // Default: none (required), as the operator typed it
  std::string from_stamp;                    // Default: none (required)
  std::string to_stamp;                      // Default: none (required)
  CutoverMode cutover = CutoverMode::kAuto;  // Default: auto
  std::optional<std::string> plan_id;        // Default: none (a rebalance/drain plan's id)
  int32_t priority = 0;                      // Default: 0; higher is claimed first
};

// One attempt's failure, kept for `move show`.
struct AttemptError {
  uint32_t attempt = 0;     // 1-based
  std::string owner;        // worker that ran it
  int64_t epoch = 0;
  std::string error_class;  // common::errorClassName
  std::string message;
  std::string at;           // database time, ISO 8601 UTC
};

// Progress a running move last reported (throttled; see MoveQueue::reportProgress).
struct MoveProgress {
  std::string phase;              // runMigrate's phase: "starting", "copying", "catching_up",
                                  // "dual_write", "finalizing", "rolling_back"...
  uint64_t rows_copied = 0;
  uint64_t rows_estimated = 0;
  uint64_t bytes_copied = 0;
  int64_t lag_bytes = -1;         // -1: unknown
  double lag_seconds = -1;        // -1: unknown
  double eta_seconds = -1;        // -1: unknown
  bool throttled = false;         // copy/apply currently slowed down
  std::string throttle_reason;    // why, when throttled ("source replication lag 3.2 GB > 1 GB")
  bool flipped = false;           // the routing entry points at the destination (no cancel now)
  uint64_t changes_applied = 0;   // this run's applied changes (in memory only, for metrics)
};

struct Move {
  int64_t id = 0;
  MoveSpec spec;
  MoveState state = MoveState::kQueued;
  std::optional<Action> desired_action;  // filed by the operator, not yet acted on
  std::string owner;                     // "" unless running
  int64_t epoch = 0;                     // fencing token: bumped by every claim
  std::string lease_until;               // ISO 8601 UTC, "" unless running
  uint32_t attempts = 0;                 // claims so far
  uint32_t max_attempts = 0;
  std::string next_attempt_at;           // ISO 8601 UTC; "" when claimable now
  std::string last_error;
  std::vector<AttemptError> errors;      // every attempt's error, oldest first
  MoveProgress progress;
  std::string created_at;
  std::string updated_at;
};

struct MoveFilter {
  std::optional<MoveState> state;     // Default: any
  std::optional<std::string> tenant;  // Default: any
  std::optional<std::string> stamp;   // Default: any (matches from or to)
  uint32_t limit = 1000;              // Default: 1000 rows, newest first
};

// ---------------------------------------------------------------------------------------------
// Leases.

// What a claim hands to a worker. Every call that changes the move takes the lease and succeeds
// only while (owner, epoch) still holds it; otherwise it fails with code lease_lost.
struct Lease {
  int64_t move_id = 0;
  std::string owner;
  int64_t epoch = 0;
  std::string lease_until;  // database time when it lapses unless renewed
};

struct ClaimLimits {
  uint32_t global = 8;           // Default: 8 running moves in the whole queue
  uint32_t per_source = 2;       // Default: 2 running moves out of one stamp
  uint32_t per_destination = 2;  // Default: 2 running moves into one stamp
  // Running moves touching one stamp as source or destination (a move counts against both, as
  // Citus's rebalancer does); 0 turns it off.
  uint32_t per_stamp = 0;        // Default: 0 (off)
};

struct QueueOptions {
  std::chrono::milliseconds lease_ttl{15000};      // Default: 15 s
  uint32_t max_attempts = 10;                      // Default: 10 claims before failed
  std::chrono::milliseconds backoff_base{2000};    // Default: 2 s, doubled per attempt
  std::chrono::milliseconds backoff_max{300000};   // Default: 5 min
  // Stamps create() accepts; empty accepts any name (tests). The API passes the config's stamps.
  std::vector<std::string> known_stamps;           // Default: empty
};

// Counters of this MoveQueue object (for metrics).
struct QueueCounters {
  uint64_t claims = 0;
  uint64_t lease_takeovers = 0;  // claims of a move whose previous lease had expired
  uint64_t leases_lost = 0;      // renew/transition refused with lease_lost
};

// The queue. Every method is thread-safe: each call runs on a connection taken from a small
// internal pool (one statement or one transaction per call), so the API threads and the worker
// pool may share one MoveQueue. Connections that break are replaced on the next call; a call
// whose connection broke fails kRetryable (code unavailable).
class MoveQueue {
 public:
  // Connects to the control plane and applies the queue schema's migrations idempotently (a
  // schema_version table, one transaction per version, concurrent starters serialized by an
  // advisory lock). `dsn` holds a secret: it never reaches a log or an error.
  // Errors: kRetryable (unreachable), kRefused (schema newer than this binary knows).
  static common::Result<std::unique_ptr<MoveQueue>> open(const std::string& dsn,
                                                         QueueOptions options = {});
  ~MoveQueue();
  MoveQueue(const MoveQueue&) = delete;
  MoveQueue& operator=(const MoveQueue&) = delete;

  const QueueOptions& options() const;

  // -- API side ---------------------------------------------------------------------------

  // Queues a move. Refused (codes): invalid_argument (empty tenant or stamp), unknown_stamp,
  // same_stamp, tenant_busy (the tenant has an unfinished move: queued, running or paused).
  common::Result<Move> create(const MoveSpec& spec);
  common::Result<std::vector<Move>> list(const MoveFilter& filter = {});
  // Errors: not_found.
  common::Result<Move> get(int64_t id);

  // Files an operator action; the owning worker acts on it (or the queue does, for a move no
  // worker holds). Legal:
  //   cutover   running, manual cutover, caught up (phase catchup/ready), not flipped
  //   rollback  running or paused, any phase (before the flip it is a cancel with teardown)
  //   finalize  running, flipped (soak)
  //   pause     queued or running, not flipped
  //   resume    paused
  //   cancel    queued, running or paused, not flipped
  // Everything else: illegal_transition, with a reason such as
  //   "illegal_transition: cutover of a move still copying", "illegal_transition: cancel after
  //   flip (use rollback)", "illegal_transition: move is succeeded".
  // Pause of a queued move and resume are applied at once; cancel of a queued or paused move
  // makes it claimable so a worker tears down what it created. Errors: not_found.
  common::Result<Move> request(int64_t id, Action action);

  // -- worker side ------------------------------------------------------------------------

  // Claims the best claimable move (highest priority, then oldest) that fits `limits`, with
  // FOR UPDATE SKIP LOCKED: state queued with next_attempt_at <= now(), or running with an
  // expired lease (a takeover, counted). Bumps the epoch, sets owner and lease_until = now() +
  // lease_ttl, counts the attempt. nullopt when nothing fits. Never hands one (move, epoch) to
  // two callers.
  common::Result<std::optional<Lease>> claim(const std::string& owner, const ClaimLimits& limits);
  // Extends the lease to now() + lease_ttl. Errors: lease_lost.
  common::Status renew(Lease& lease);
  // Records progress (phase, counts, lag) of a held move. Errors: lease_lost.
  common::Status reportProgress(const Lease& lease, const MoveProgress& progress);
  // Takes the pending desired action of a held move (cleared atomically). Errors: lease_lost.
  common::Result<std::optional<Action>> takeAction(const Lease& lease);
  // Ends the lease with a final state: kSucceeded, kFailed, kCancelled or kPaused (the worker
  // stopped at a checkpoint after a pause request). Errors: lease_lost, invalid_argument.
  common::Status finish(const Lease& lease, MoveState final_state, const std::string& note = "");
  // Gives the move back (shutdown drain): queued, claimable at once by anyone. Errors: lease_lost.
  common::Status release(const Lease& lease);
  // Records the attempt's error and requeues with exponential backoff and jitter
  // (backoff_base * 2^(attempts-1), capped, ±25%); `permanent` or attempts exhausted -> failed.
  // Errors: lease_lost.
  common::Status failAttempt(const Lease& lease, const common::Status& error, bool permanent);

  QueueCounters counters() const;

 private:
  struct Impl;
  explicit MoveQueue(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------
// Destination fencing. The worker calls fenceDestination() after each claim, before any write
// to the destination; every destination transaction of the move then carries
// ownerCheckStatement(), which raises SQLSTATE kOwnerFencedSqlState when the owner row no
// longer holds our epoch.

// SQLSTATE raised by the owner check ("SM001", class SM: stampmover's own).
inline constexpr const char* kOwnerFencedSqlState = "SM001";

// On the destination (`destination_dsn`, a secret): creates `stampmover.move_owners` and the
// check function idempotently, then sets the move's owner row to `epoch` unless it already holds
// a higher one. Errors: lease_lost when a higher epoch holds the row (we were taken over),
// kRetryable on connection trouble.
common::Status fenceDestination(const std::string& destination_dsn, int64_t move_id,
                                int64_t epoch);

// The owner check sent inside every destination transaction of the move (parameters $1 = move
// id, $2 = epoch, both as text): fails with kOwnerFencedSqlState unless the owner row holds
// exactly `epoch`, and takes the row's lock, so a takeover's fenceDestination() waits for an
// in-flight transaction of the old owner and every later one of the old owner fails.
std::string ownerCheckSql();

}  // namespace stampmover::queue
