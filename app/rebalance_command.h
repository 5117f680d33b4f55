// `stampmover rebalance plan|apply`, `stampmover drain STAMP` and `stampmover stamps` (issue 13):
// the fleet read from the stamps file, the stamps' catalogs and the control plane (routing
// directory, move queue), planned by planner/, enqueued into the service's move queue.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>

#include "common/status.h"

namespace CLI {
class App;
}

struct PlannerCliArgs {
  std::string control_plane_dsn;  // Default: "" ($STAMPMOVER_CONTROL_PLANE_DSN); a secret
  std::string control_plane;      // Default: "" (a stamp of the stamps file instead of the DSN)
  bool json = false;              // Default: false (tables for people)
  // rebalance plan
  double threshold = -1;   // Default: -1 (the config's planner.threshold, else 0.10)
  int64_t max_moves = -1;  // Default: -1 (the config's planner.max_moves, else 20)
  int64_t seed = -1;       // Default: -1 (the config's planner.seed, else 0)
  // rebalance apply
  std::string plan_id;
  // drain
  std::string stamp;
  bool dry_run = false;  // Default: false
  double wait_s = 0;     // Default: 0 (enqueue and return; rerun to follow up)
  double poll_s = 2;     // Default: 2 s between progress lines while waiting
  // set by addPlannerCommands
  CLI::App* plan = nullptr;
  CLI::App* apply = nullptr;
  CLI::App* show = nullptr;   // rebalance show PLAN_ID
  CLI::App* control[3] = {};  // rebalance pause|resume|cancel PLAN_ID
  CLI::App* drain = nullptr;
  CLI::App* stamps = nullptr;
  CLI::App* schedule[3] = {};  // rebalance schedule pause|resume|show
};

// Adds `rebalance` (with `plan` and `apply`), `drain` and `stamps` to `app`.
void addPlannerCommands(CLI::App& app, PlannerCliArgs& args);

// True when one of the commands above was chosen.
bool plannerCommandChosen(const PlannerCliArgs& args);

// Runs the chosen command with the stamps file `config_path`. Returns the exit code: 0 ok,
// 1 internal, 2 refused (bad input: unknown stamp or plan, no config; nothing was changed),
// 3 retryable (a server unreachable; or a drain that has not emptied its stamp by --wait),
// 130 interrupted.
int runPlannerCommand(const PlannerCliArgs& args, const std::string& config_path,
                      const std::atomic<bool>& cancel);

// The worker's re-check of a queued move of plan `plan_id` when its turn comes (serve's worker
// pool calls it after the claim, before anything runs), against the fleet as it is now (stamps
// file, catalogs, routing, open moves other than `move_id`): "" when the move should run,
// otherwise why it is skipped (tenant served elsewhere, another open move of the tenant,
// destination draining, or it no longer improves balance enough, with the numbers).
// Errors: the control plane's or a stamp's (the move is then retried, not skipped).
stampmover::common::Result<std::string> recheckPlannedMove(const std::string& config_path,
                                                           const std::string& control_plane_dsn,
                                                           int64_t move_id,
                                                           const std::string& plan_id,
                                                           const std::string& tenant);

// The fleet routes of serve's API (issue 13, "the same through the API"); `route` is the route
// template, `id` the plan id ("" if none), `body` the request body ("" or a JSON object):
//   GET  /v1/stamps                    `stamps --json`
//   POST /v1/plans                     `rebalance plan --json` ({threshold, max_moves, seed})
//   GET  /v1/plans/{id}                `rebalance show --json`
//   POST /v1/plans/{id}/apply          `rebalance apply` (then the show document)
//   POST /v1/plans/{id}/pause|resume|cancel   the action on every unfinished move of the plan
//   POST /v1/stamps/{stamp}/drain      `drain STAMP` ({dry_run}), one round: mark the stamp
//                                      draining, purge tenants already moved away, plan the rest
//                                      and enqueue it (202, the show document); POST again to
//                                      follow up. Needs `operate` unless dry_run (200, the plan).
// Returns (HTTP status, JSON body); errors are {"code", "message"}: an unknown plan is 404
// not_found naming it, an unknown stamp 404 unknown_stamp naming it, a bad body 400, a drain
// without the operate role 403, other refusals 422, an unreachable server 503.
std::pair<int, std::string> plannerApi(const std::string& config_path,
                                       const std::string& control_plane_dsn,
                                       const std::string& route, const std::string& id,
                                       const std::string& body, bool operate);

// The rebalance schedule (`rebalance: {every: 6h, window: "01:00-05:00", paused: false}` in the
// stamps file): serve runs plan + apply every `every` while the UTC time of day is inside
// `window`. Which serve process acts in a period is decided by a conditional update of one row
// of stampmover_planner.schedule in the control plane (next_run_at <= now(), not paused): only
// the process whose update returned the row runs it. Pause and resume are that row's flag
// (`paused` in the file is only its initial value).
struct ScheduleConfig {
  bool present = false;      // the file has a rebalance: section
  int64_t every_s = 0;       // Default: none (required when present): "30s", "15m", "6h", "1d"
  int window_from_min = 0;   // Default: 00:00 UTC
  int window_to_min = 1440;  // Default: 24:00 UTC (from > to wraps past midnight)
  bool paused = false;       // Default: false (initial value of the control-plane flag)
};
stampmover::common::Result<ScheduleConfig> loadScheduleConfig(const std::string& config_path);

// serve's schedule thread: ticks until `stop`, acting when its conditional update wins.
void runRebalanceSchedule(const std::string& config_path, const std::string& control_plane_dsn,
                          const ScheduleConfig& schedule, const std::string& owner,
                          const std::atomic<bool>& stop);
