// `stampmover rebalance plan|apply`, `drain STAMP`, `stamps`: see rebalance_command.h. The fleet
// is read fresh on every run (stamps file, each stamp's catalog, routing directory, open moves of
// the queue); plans are kept in the control plane under their id; moves go to the service's queue
// (the workers of `stampmover serve` run them under their per-stamp limits).
#include "app/rebalance_command.h"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <thread>
#include <yaml-cpp/yaml.h>

#include "common/pg.h"
#include "mover/catalog.h"
#include "orchestrator/config.h"
#include "planner/inventory.h"
#include "planner/plan_json.h"
#include "planner/plan_store.h"
#include "planner/planner.h"
#include "queue/move_queue.h"
#include "routing/routing_directory.h"

namespace {

namespace orch = stampmover::orch;
namespace pl = stampmover::planner;
namespace q = stampmover::queue;
using stampmover::common::ErrorClass;
using stampmover::common::PgConnection;
using stampmover::common::Result;
using stampmover::common::Status;

int exitCodeFor(const Status& st) {
  switch (st.errorClass()) {
    case ErrorClass::kRefused:
      return 2;
    case ErrorClass::kRetryable:
      return 3;
    case ErrorClass::kDataLoss:
      return 4;
    case ErrorClass::kCancelled:
      return 130;
    case ErrorClass::kInternal:
      return 1;
  }
  return 1;
}

int fail(const Status& st) {
  std::fprintf(stderr, "stampmover: error: %s\n", st.message().c_str());
  return exitCodeFor(st);
}

std::string pct(double u) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", u * 100.0);
  return buf;
}

// The rebalance schedule's row in the control plane (defined at the end of the file).
Result<PgConnection> openSchedule(const std::string& dsn, bool initially_paused);
Result<nlohmann::json> scheduleJson(PgConnection& c);
Status setSchedulePaused(PgConnection& c, bool paused);

// Everything a command needs to know about the fleet, read once.
struct World {
  orch::Config config;
  pl::PlannerConfig planner;
  std::string cp_dsn;  // secret
  std::unique_ptr<stampmover::routing::PgRoutingDirectory> routing;
  std::unique_ptr<q::MoveQueue> queue;
  std::map<std::string, pl::StampMeasure> measures;
  std::map<std::string, std::string> draining;  // stamp -> note
  std::map<std::string, stampmover::routing::RouteEntry> routes;
  std::vector<q::Move> open_moves;  // queued, running, paused
  pl::Fleet fleet;
};

Result<World> openWorld(const PlannerCliArgs& a, const std::string& config_path) {
  World w;
  if (config_path.empty()) {
    return Status::refused("no stamps file: pass --config stamps.yaml (or set STAMPMOVER_CONFIG)");
  }
  SM_ASSIGN_OR_RETURN(w.config, orch::loadConfig(config_path));
  SM_ASSIGN_OR_RETURN(w.planner, pl::loadPlannerConfig(config_path));
  if (!a.control_plane.empty() && !a.control_plane_dsn.empty()) {
    return Status::refused("give either --control-plane or --control-plane-dsn, not both");
  }
  if (!a.control_plane.empty()) {
    if (!w.config.stamps.count(a.control_plane)) {
      return Status::refused("--control-plane '" + a.control_plane + "' is not a stamp of " +
                             config_path);
    }
    SM_ASSIGN_OR_RETURN(w.cp_dsn, orch::resolveDsn(w.config, a.control_plane));
  } else {
    w.cp_dsn = a.control_plane_dsn;
  }
  if (w.cp_dsn.empty()) {
    return Status::refused(
        "no control plane: pass --control-plane-dsn '<libpq dsn>' (or "
        "$STAMPMOVER_CONTROL_PLANE_DSN), or --control-plane <stamp>");
  }
  return w;
}

// Reads routing, queue and every stamp's sizes; builds the fleet.
Status readFleet(World& w) {
  w.routing = std::make_unique<stampmover::routing::PgRoutingDirectory>(w.cp_dsn);
  SM_RETURN_IF_ERROR(w.routing->ensureSchema());
  SM_ASSIGN_OR_RETURN(auto entries, w.routing->list());
  for (auto& e : entries) w.routes[e.tenant] = e;
  SM_ASSIGN_OR_RETURN(w.draining, w.routing->drainingStamps());
  q::QueueOptions qo;
  for (const auto& [name, _] : w.config.stamps) qo.known_stamps.push_back(name);
  SM_ASSIGN_OR_RETURN(w.queue, q::MoveQueue::open(w.cp_dsn, qo));
  for (auto s : {q::MoveState::kQueued, q::MoveState::kRunning, q::MoveState::kPaused}) {
    q::MoveFilter f;
    f.state = s;
    f.limit = 100000;
    SM_ASSIGN_OR_RETURN(auto moves, w.queue->list(f));
    for (auto& m : moves) w.open_moves.push_back(std::move(m));
  }
  for (const auto& [name, _] : w.config.stamps) {
    SM_ASSIGN_OR_RETURN(std::string dsn, orch::resolveDsn(w.config, name));
    SM_ASSIGN_OR_RETURN(PgConnection c, PgConnection::connect(dsn, "stamp '" + name + "'"));
    auto m = pl::measureStamp(c, w.config.tenant_columns);
    if (!m) return m.status().withContext("measuring tenants on stamp '" + name + "'");
    w.measures[name] = std::move(*m);
  }
  pl::Placement placement;
  for (const auto& [t, e] : w.routes) placement[t] = e.stamp;
  std::vector<pl::MoveInFlight> flight;
  for (const auto& m : w.open_moves) {
    flight.push_back({m.spec.tenant, m.spec.from_stamp, m.spec.to_stamp});
  }
  w.fleet = pl::buildFleet(w.config, w.planner, w.measures, placement, w.draining, flight);
  return Status::ok();
}

pl::PlannerOptions optionsFrom(const PlannerCliArgs& a, const World& w) {
  pl::PlannerOptions o = w.planner.options;
  if (a.threshold >= 0) o.threshold = a.threshold;
  if (a.max_moves >= 0) o.max_moves = static_cast<uint32_t>(a.max_moves);
  if (a.seed >= 0) o.seed = static_cast<uint64_t>(a.seed);
  return o;
}

void printStampTable(const pl::Plan& p) {
  std::printf("%-14s %-12s %10s %10s %8s %4s   %10s %8s %4s\n", "stamp", "region", "capacity",
              "before", "util", "ten.", "after", "util", "ten.");
  for (const auto& s : p.stamps) {
    std::printf("%-14s %-12s %10s %10s %8s %4u   %10s %8s %4u%s\n", s.name.c_str(),
                s.region.empty() ? "-" : s.region.c_str(),
                s.capacity_bytes ? pl::formatBytes(s.capacity_bytes).c_str() : "unlimited",
                pl::formatBytes(s.bytes_before).c_str(), pct(s.util_before).c_str(),
                s.tenants_before, pl::formatBytes(s.bytes_after).c_str(), pct(s.util_after).c_str(),
                s.tenants_after, s.draining ? "  (draining)" : "");
  }
}

void printPlan(const pl::Plan& p) {
  std::printf("plan %s (%s%s): %zu move(s); %s\n", p.id.c_str(), pl::planKindName(p.kind),
              p.kind == pl::PlanKind::kDrain ? (" of " + p.drain_stamp).c_str() : "",
              p.moves.size(), p.stop_reason.c_str());
  std::printf("threshold ±%s of the mean, max %u moves, seed %llu; largest deviation %s -> %s\n",
              pct(p.options.threshold).c_str(), p.options.max_moves,
              static_cast<unsigned long long>(p.options.seed), pct(p.max_deviation_before).c_str(),
              pct(p.max_deviation_after).c_str());
  printStampTable(p);
  if (!p.moves.empty()) std::printf("moves:\n");
  for (const auto& m : p.moves) {
    std::printf("  %3u. tenant %s: %s -> %s (%s)\n       %s\n", m.seq, m.tenant.c_str(),
                m.from.c_str(), m.to.c_str(), pl::formatBytes(m.bytes).c_str(), m.reason.c_str());
  }
  if (!p.unplaced.empty()) std::printf("cannot be placed:\n");
  for (const auto& u : p.unplaced) {
    std::printf("  tenant %s (%s on %s): %s\n", u.tenant.c_str(), pl::formatBytes(u.bytes).c_str(),
                u.stamp.c_str(), u.reason.c_str());
  }
}

const q::Move* openMoveOf(const World& w, const std::string& tenant) {
  for (const auto& m : w.open_moves) {
    if (m.spec.tenant == tenant) return &m;
  }
  return nullptr;
}

// Deletes the stale rows that finished moves leave on `stamp` (a finalized move keeps the
// source's copy): tenants whose routing entry is active on another stamp, with no open move, and
// whose serving stamp holds rows of them. `only` (when set) limits it to one tenant. Children
// first, batches of 1000, as the replication role (the old stamp's fence triggers would refuse
// the deletes). Returns how many tenants were purged.
Result<uint64_t> purgeDeparted(World& w, const std::string& stamp, bool print,
                               const std::string& only = "") {
  SM_ASSIGN_OR_RETURN(std::string dsn, orch::resolveDsn(w.config, stamp));
  SM_ASSIGN_OR_RETURN(PgConnection c, PgConnection::connect(dsn, "stamp '" + stamp + "'"));
  SM_ASSIGN_OR_RETURN(auto tables,
                      stampmover::mover::discoverTenantTables(c, w.config.tenant_columns));
  SM_ASSIGN_OR_RETURN(PgConnection cp, PgConnection::connect(w.cp_dsn, "control plane"));
  uint64_t purged_tenants = 0;
  for (const auto& [tenant, size] : w.measures[stamp].tenants) {
    if (!only.empty() && tenant != only) continue;
    auto r = w.routes.find(tenant);
    if (r == w.routes.end() || r->second.stamp == stamp ||
        r->second.state != stampmover::routing::RouteState::kActive || openMoveOf(w, tenant)) {
      continue;
    }
    const std::string serving = r->second.stamp;
    auto serving_measure = w.measures.find(serving);
    if (serving_measure == w.measures.end() || !serving_measure->second.tenants.count(tenant)) {
      spdlog::warn("drain {}: tenant {} is routed to {} which holds none of its rows; not purging",
                   stamp, tenant, serving);
      continue;
    }
    // A migration of the tenant that touches this stamp and has not ended (one run by
    // `stampmover migrate` outside the queue, or one that stopped midway) may own these rows.
    SM_ASSIGN_OR_RETURN(
        auto mig, cp.query("SELECT phase FROM stampmover_routing.migrations WHERE tenant = $1 "
                           "AND $2 IN (source_stamp, destination_stamp) "
                           "AND phase NOT IN ('finalized', 'rolled_back')",
                           {tenant, stamp}));
    if (stampmover::common::rowCount(mig) > 0) {
      std::printf("  tenant %s: not purging %s: a migration touching it is in phase %s\n",
                  tenant.c_str(), stamp.c_str(), stampmover::common::cell(mig, 0, 0).c_str());
      continue;
    }
    SM_RETURN_IF_ERROR(c.exec("SET session_replication_role = replica"));
    uint64_t rows = 0;
    for (auto it = tables.rbegin(); it != tables.rend(); ++it) {
      for (;;) {
        SM_ASSIGN_OR_RETURN(
            auto d,
            c.query("DELETE FROM " + it->quoted() + " WHERE ctid = ANY (ARRAY(SELECT ctid FROM " +
                        it->quoted() + " WHERE " +
                        stampmover::common::quoteIdent(it->tenant_column) + " = $1 LIMIT 1000))",
                    {tenant}));
        const uint64_t n = std::stoull(PQcmdTuples(d.get()));
        rows += n;
        if (n < 1000) break;
      }
    }
    SM_RETURN_IF_ERROR(c.exec("RESET session_replication_role"));
    ++purged_tenants;
    if (print) {
      std::printf(
          "  tenant %s: served by %s; %llu stale row(s) left by an earlier move purged "
          "from %s\n",
          tenant.c_str(), serving.c_str(), static_cast<unsigned long long>(rows), stamp.c_str());
    }
  }
  return purged_tenants;
}

// Utilization as it is now: bytes per stamp (an open move counts at its destination, as the
// planner counts moves in flight) and capacity per stamp. The worker's re-check
// (`except_move` set) leaves out that move and counts only moves already started (running or
// paused): a queued move may itself be skipped, so it must not make another look better or worse.
void utilizationNow(const World& w, std::map<std::string, double>& bytes,
                    std::map<std::string, double>& cap, int64_t except_move = 0) {
  for (const auto& s : w.fleet.stamps) cap[s.name] = static_cast<double>(s.capacity_bytes);
  for (const auto& t : w.fleet.tenants) bytes[t.stamp] += static_cast<double>(t.bytes);
  for (const auto& om : w.open_moves) {
    if (om.id == except_move) continue;
    if (except_move != 0 && om.state == q::MoveState::kQueued) continue;
    for (const auto& t : w.fleet.tenants) {
      if (t.key == om.spec.tenant) {
        bytes[om.spec.from_stamp] -= static_cast<double>(t.bytes);
        bytes[om.spec.to_stamp] += static_cast<double>(t.bytes);
      }
    }
  }
}

// Why planned move `m` of `plan` should not run now ("" when it still should): a stamp gone from
// the stamps file, another open move of the tenant (not `self`), the tenant served elsewhere, the
// destination draining, or (rebalance plans) a gain below the plan's improvement_fraction of
// the utilization it shifts, with `bytes` the tenant's size now.
std::string skipReason(const World& w, const pl::Plan& plan, const pl::Move& m, uint64_t size,
                       std::map<std::string, double>& bytes, std::map<std::string, double>& cap,
                       int64_t self = 0) {
  auto r = w.routes.find(m.tenant);
  const std::string now_on = r != w.routes.end() ? r->second.stamp : "";
  if (!w.config.stamps.count(m.from) || !w.config.stamps.count(m.to)) {
    return "a stamp of the move is no longer in the stamps file";
  }
  for (const auto& om : w.open_moves) {
    if (om.spec.tenant == m.tenant && om.id != self) {
      return "move " + std::to_string(om.id) + " of this tenant is already " +
             q::moveStateName(om.state);
    }
  }
  if (!now_on.empty() && now_on != m.from) {
    return "the tenant is now served by " + now_on + ", not " + m.from;
  }
  if (w.draining.count(m.to)) return m.to + " is draining";
  if (plan.kind == pl::PlanKind::kRebalance && cap[m.from] > 0 && cap[m.to] > 0) {
    const double x = static_cast<double>(size);
    const double us = bytes[m.from] / cap[m.from], ut = bytes[m.to] / cap[m.to];
    const double gain = (us - ut) - std::fabs((us - x / cap[m.from]) - (ut + x / cap[m.to]));
    const double need = plan.options.improvement_fraction * (x / cap[m.from] + x / cap[m.to]);
    if (gain + 1e-12 < need) {
      return "no longer improves balance enough: " + m.from + " at " + pct(us) + ", " + m.to +
             " at " + pct(ut) + ", gain " + pct(gain) + " < " + pct(need);
    }
  }
  return "";
}

// Enqueues the moves of `plan` that still make sense; prints one line per move.
Result<uint32_t> enqueuePlan(World& w, const pl::Plan& plan) {
  // Utilization as it is now, updated as moves are enqueued.
  std::map<std::string, double> bytes, cap;
  utilizationNow(w, bytes, cap);
  uint32_t queued = 0;
  for (const auto& m : plan.moves) {
    std::string skip = skipReason(w, plan, m, m.bytes, bytes, cap);
    if (!skip.empty()) {
      std::printf("  %3u. tenant %s: skipped: %s\n", m.seq, m.tenant.c_str(), skip.c_str());
      continue;
    }
    if (w.measures[m.to].tenants.count(m.tenant)) {
      // The destination still holds the copy an earlier move left there: the move's preflight
      // would refuse it, and it is stale (the tenant is served by m.from).
      auto purged = purgeDeparted(w, m.to, true, m.tenant);
      if (!purged) return purged.status();
      if (*purged == 0) {
        std::printf(
            "  %3u. tenant %s: skipped: %s holds rows of it that are not known to be "
            "stale; see `stampmover cleanup --purge-destination`\n",
            m.seq, m.tenant.c_str(), m.to.c_str());
        continue;
      }
      w.measures[m.to].tenants.erase(m.tenant);
    }
    q::MoveSpec spec;
    spec.tenant = m.tenant;
    spec.from_stamp = m.from;
    spec.to_stamp = m.to;
    spec.plan_id = plan.id;
    auto created = w.queue->create(spec);
    if (!created) {
      if (q::errorCode(created.status()) == q::ErrorCodes::kTenantBusy) {
        std::printf("  %3u. tenant %s: skipped: %s\n", m.seq, m.tenant.c_str(),
                    q::errorText(created.status()).c_str());
        continue;
      }
      return created.status().withContext("enqueueing move " + std::to_string(m.seq) + " (tenant " +
                                          m.tenant + ")");
    }
    w.open_moves.push_back(*created);
    bytes[m.from] -= static_cast<double>(m.bytes);
    bytes[m.to] += static_cast<double>(m.bytes);
    ++queued;
    std::printf("  %3u. tenant %s: %s -> %s queued as move %lld\n", m.seq, m.tenant.c_str(),
                m.from.c_str(), m.to.c_str(), static_cast<long long>(created->id));
  }
  return queued;
}

}  // namespace

Result<std::string> recheckPlannedMove(const std::string& config_path,
                                       const std::string& control_plane_dsn, int64_t move_id,
                                       const std::string& plan_id, const std::string& tenant) {
  World w;
  SM_ASSIGN_OR_RETURN(w.config, orch::loadConfig(config_path));
  SM_ASSIGN_OR_RETURN(w.planner, pl::loadPlannerConfig(config_path));
  w.cp_dsn = control_plane_dsn;
  SM_ASSIGN_OR_RETURN(pl::PlanStore store, pl::PlanStore::open(w.cp_dsn));
  SM_ASSIGN_OR_RETURN(auto sp, store.load(plan_id));
  if (!sp) return std::string("its plan '" + plan_id + "' is no longer in the control plane");
  const pl::Move* planned = nullptr;
  for (const auto& m : sp->plan.moves) {
    if (m.tenant == tenant) planned = &m;
  }
  if (!planned) return std::string();  // not a move of the plan: nothing to judge it by
  SM_RETURN_IF_ERROR(readFleet(w));
  uint64_t size = planned->bytes;
  for (const auto& t : w.fleet.tenants) {
    if (t.key == tenant) size = t.bytes;
  }
  std::map<std::string, double> bytes, cap;
  utilizationNow(w, bytes, cap, move_id);
  return skipReason(w, sp->plan, *planned, size, bytes, cap, move_id);
}

namespace {

// The plan stored under a.plan_id, or a refusal naming it.
Result<pl::StoredPlan> storedPlan(const PlannerCliArgs& a, World& w) {
  SM_ASSIGN_OR_RETURN(pl::PlanStore store, pl::PlanStore::open(w.cp_dsn));
  SM_ASSIGN_OR_RETURN(auto sp, store.load(a.plan_id));
  if (!sp) {
    return Status::refused("unknown plan '" + a.plan_id +
                           "': make one with `stampmover rebalance plan` (or `drain --dry-run`) "
                           "and pass the id it prints; nothing was changed");
  }
  return std::move(*sp);
}

// Every queued move that carries the plan's id, oldest first.
Result<std::vector<q::Move>> movesOfPlan(World& w, const std::string& plan_id) {
  q::QueueOptions qo;
  for (const auto& [name, _] : w.config.stamps) qo.known_stamps.push_back(name);
  if (!w.queue) {
    SM_ASSIGN_OR_RETURN(w.queue, q::MoveQueue::open(w.cp_dsn, qo));
  }
  q::MoveFilter f;
  f.limit = 100000;
  SM_ASSIGN_OR_RETURN(auto all, w.queue->list(f));
  std::vector<q::Move> out;
  for (auto& m : all) {
    if (m.spec.plan_id && *m.spec.plan_id == plan_id) out.push_back(std::move(m));
  }
  std::reverse(out.begin(), out.end());
  return out;
}

// The plan as stored, with its moves as the queue sees them (`rebalance show --json`, the API).
nlohmann::json showJson(const pl::StoredPlan& sp, const std::vector<q::Move>& moves) {
  nlohmann::json j = pl::planToJson(sp.plan);
  j["created_at"] = sp.created_at;
  j["applied_at"] = sp.applied_at;
  nlohmann::json qm = nlohmann::json::array();
  for (const auto& m : moves) {
    nlohmann::json errors = nlohmann::json::array();
    for (const auto& e : m.errors) {
      errors.push_back({{"attempt", e.attempt},
                        {"error_class", e.error_class},
                        {"message", e.message},
                        {"at", e.at}});
    }
    qm.push_back({{"id", m.id},
                  {"tenant", m.spec.tenant},
                  {"from", m.spec.from_stamp},
                  {"to", m.spec.to_stamp},
                  {"state", q::moveStateName(m.state)},
                  {"phase", m.progress.phase},
                  {"eta_seconds", m.progress.eta_seconds},
                  {"last_error", m.last_error},
                  {"errors", errors}});
  }
  j["queued_moves"] = qm;
  return j;
}

// `rebalance show PLAN_ID`: the plan's moves as the queue sees them, with every failed attempt.
int runShow(const PlannerCliArgs& a, World& w) {
  auto sp = storedPlan(a, w);
  if (!sp) return fail(sp.status());
  auto moves = movesOfPlan(w, a.plan_id);
  if (!moves) return fail(moves.status());
  if (a.json) {
    std::printf("%s\n", showJson(*sp, *moves).dump(2).c_str());
    return 0;
  }
  printPlan(sp->plan);
  std::map<std::string, int> by_state;
  for (const auto& m : *moves) by_state[q::moveStateName(m.state)]++;
  std::string states;
  for (const auto& [st, n] : by_state)
    states += (states.empty() ? "" : ", ") + std::to_string(n) + " " + st;
  std::printf("made %s, %s; %zu move(s) in the queue%s%s\n", sp->created_at.c_str(),
              sp->applied_at.empty() ? "not applied" : ("applied " + sp->applied_at).c_str(),
              moves->size(), states.empty() ? "" : ": ", states.c_str());
  for (const auto& m : *moves) {
    std::printf("  move %lld: tenant %s %s -> %s, %s%s", static_cast<long long>(m.id),
                m.spec.tenant.c_str(), m.spec.from_stamp.c_str(), m.spec.to_stamp.c_str(),
                q::moveStateName(m.state),
                m.progress.phase.empty() ? "" : (" (" + m.progress.phase + ")").c_str());
    if (m.progress.eta_seconds >= 0) std::printf(", ETA %.0f s", m.progress.eta_seconds);
    if (m.last_error.rfind("skipped: ", 0) == 0) std::printf(", %s", m.last_error.c_str());
    std::printf("\n");
    for (const auto& e : m.errors) {
      std::printf("      attempt %u (%s, %s): %s\n", e.attempt, e.at.c_str(), e.error_class.c_str(),
                  e.message.c_str());
    }
  }
  return 0;
}

// `rebalance pause|resume|cancel PLAN_ID`: the action on every move of the plan that allows it.
int runControl(const PlannerCliArgs& a, World& w, q::Action action) {
  auto sp = storedPlan(a, w);
  if (!sp) return fail(sp.status());
  auto moves = movesOfPlan(w, a.plan_id);
  if (!moves) return fail(moves.status());
  uint32_t done = 0;
  for (const auto& m : *moves) {
    if (m.state == q::MoveState::kSucceeded || m.state == q::MoveState::kFailed ||
        m.state == q::MoveState::kCancelled) {
      continue;
    }
    auto r = w.queue->request(m.id, action);
    if (!r) {
      if (r.status().errorClass() == ErrorClass::kRefused) {
        std::printf("  move %lld (tenant %s): not %s: %s\n", static_cast<long long>(m.id),
                    m.spec.tenant.c_str(), q::actionName(action), q::errorText(r.status()).c_str());
        continue;
      }
      return fail(r.status());
    }
    ++done;
    std::printf("  move %lld (tenant %s): %s requested, now %s\n", static_cast<long long>(m.id),
                m.spec.tenant.c_str(), q::actionName(action), q::moveStateName(r->state));
  }
  std::printf("plan %s: %s requested on %u of %zu move(s)\n", a.plan_id.c_str(),
              q::actionName(action), done, moves->size());
  return 0;
}

int runPlan(const PlannerCliArgs& a, World& w) {
  if (Status st = readFleet(w); !st) return fail(st);
  auto plan = pl::planRebalance(w.fleet, optionsFrom(a, w));
  if (!plan) return fail(plan.status());
  auto store = pl::PlanStore::open(w.cp_dsn);
  if (!store) return fail(store.status());
  if (Status st = store->save(*plan); !st) return fail(st);
  if (a.json) {
    std::printf("%s\n", pl::planToJson(*plan).dump(2).c_str());
    return 0;
  }
  printPlan(*plan);
  if (!plan->moves.empty()) {
    std::printf("nothing was moved; enqueue with: stampmover rebalance apply %s\n",
                plan->id.c_str());
  }
  return 0;
}

int runApply(const PlannerCliArgs& a, World& w) {
  auto store = pl::PlanStore::open(w.cp_dsn);
  if (!store) return fail(store.status());
  auto sp = store->load(a.plan_id);
  if (!sp) return fail(sp.status());
  if (!*sp) {
    return fail(Status::refused("unknown plan '" + a.plan_id +
                                "': make one with `stampmover rebalance plan` (or `drain "
                                "--dry-run`) and pass the id it prints; nothing was enqueued"));
  }
  if (Status st = readFleet(w); !st) return fail(st);
  const pl::Plan& plan = (*sp)->plan;
  std::printf("applying plan %s (%s, %zu move(s), made %s%s):\n", plan.id.c_str(),
              pl::planKindName(plan.kind), plan.moves.size(), (*sp)->created_at.c_str(),
              (*sp)->applied_at.empty() ? "" : (", applied before " + (*sp)->applied_at).c_str());
  auto n = enqueuePlan(w, plan);
  if (!n) return fail(n.status());
  if (Status st = store->markApplied(plan.id); !st) return fail(st);
  std::printf(
      "%u move(s) queued; `stampmover serve` workers run them within their per-stamp "
      "limits; follow with `stampmover stamps` or `stampmover move list`\n",
      *n);
  return 0;
}

// Rows of any tenant left on `stamp` (tenant column not null), per table.
Result<std::map<std::string, uint64_t>> tenantRowsOn(World& w, const std::string& stamp) {
  SM_ASSIGN_OR_RETURN(std::string dsn, orch::resolveDsn(w.config, stamp));
  SM_ASSIGN_OR_RETURN(PgConnection c, PgConnection::connect(dsn, "stamp '" + stamp + "'"));
  SM_ASSIGN_OR_RETURN(auto tables,
                      stampmover::mover::discoverTenantTables(c, w.config.tenant_columns));
  std::map<std::string, uint64_t> out;
  for (const auto& t : tables) {
    SM_ASSIGN_OR_RETURN(
        auto v, c.queryValue("SELECT count(*) FROM " + t.quoted() + " WHERE " +
                             stampmover::common::quoteIdent(t.tenant_column) + " IS NOT NULL"));
    const uint64_t n = v ? std::stoull(*v) : 0;
    if (n > 0) out[t.key()] = n;
  }
  return out;
}

int runDrain(const PlannerCliArgs& a, World& w, const std::atomic<bool>& cancel) {
  if (!w.config.stamps.count(a.stamp)) {
    std::string known;
    for (const auto& [n, _] : w.config.stamps) known += (known.empty() ? "" : ", ") + n;
    return fail(Status::refused("unknown stamp '" + a.stamp + "' (stamps of " + w.config.path +
                                ": " + known + "); nothing was changed"));
  }
  if (Status st = readFleet(w); !st) return fail(st);
  if (!a.dry_run && !w.draining.count(a.stamp)) {
    const std::string note = "drained by stampmover drain";
    if (Status st = w.routing->setDraining(a.stamp, true, note); !st) return fail(st);
    w.draining[a.stamp] = note;
    std::printf("stamp %s marked draining: the routing directory refuses new tenants there\n",
                a.stamp.c_str());
  }
  const auto started = std::chrono::steady_clock::now();
  std::set<int64_t> ours;
  // Moves of this drain are those created after this point; a tenant whose move failed is not
  // retried by the drain (the queue already retried it with backoff): it is reported instead.
  int64_t start_id = 0;
  {
    q::MoveFilter nf;
    nf.limit = 1;
    auto newest = w.queue->list(nf);
    if (!newest) return fail(newest.status());
    if (!newest->empty()) start_id = newest->front().id;
  }
  std::map<std::string, std::string> failed;  // tenant -> "move N: error"
  for (int round = 0;; ++round) {
    {
      q::MoveFilter ff;
      ff.state = q::MoveState::kFailed;
      ff.stamp = a.stamp;
      auto fl = w.queue->list(ff);
      if (!fl) return fail(fl.status());
      for (const auto& m : *fl) {
        if (m.id <= start_id || m.spec.from_stamp != a.stamp || failed.count(m.spec.tenant)) {
          continue;
        }
        failed[m.spec.tenant] = "move " + std::to_string(m.id) + " failed: " + m.last_error;
        std::printf("  tenant %s: %s\n", m.spec.tenant.c_str(), failed[m.spec.tenant].c_str());
      }
    }
    // Whether a move out of the stamp was still open when this round's purge looked: one that
    // finished since then leaves rows that only the next round's purge removes.
    bool moving_at_purge = false;
    for (const auto& m : w.open_moves)
      moving_at_purge = moving_at_purge || m.spec.from_stamp == a.stamp;
    if (!a.dry_run) {
      auto purged = purgeDeparted(w, a.stamp, true);
      if (!purged) return fail(purged.status());
      if (*purged > 0) {
        // Re-read: the purged tenants' rows are gone from the measure.
        w = World{std::move(w.config), std::move(w.planner), std::move(w.cp_dsn)};
        if (Status st = readFleet(w); !st) return fail(st);
      }
    }
    auto plan = pl::planDrain(w.fleet, a.stamp, optionsFrom(a, w));
    if (!plan) return fail(plan.status());
    if (round == 0) {
      auto store = pl::PlanStore::open(w.cp_dsn);
      if (!store) return fail(store.status());
      if (Status st = store->save(*plan); !st) return fail(st);
      if (a.json) {
        std::printf("%s\n", pl::planToJson(*plan).dump(2).c_str());
      } else {
        printPlan(*plan);
      }
      if (a.dry_run) {
        std::fprintf(a.json ? stderr : stdout, "dry run: nothing was marked or moved\n");
        return 0;
      }
    }
    pl::Plan todo = *plan;
    std::erase_if(todo.moves, [&](const pl::Move& m) { return failed.count(m.tenant) > 0; });
    uint32_t enqueued = 0;
    if (!todo.moves.empty()) {
      std::printf("enqueueing %zu move(s) of plan %s:\n", todo.moves.size(), plan->id.c_str());
      auto n = enqueuePlan(w, todo);
      if (!n) return fail(n.status());
      enqueued = *n;
    }
    for (const auto& m : w.open_moves) {
      if (m.spec.from_stamp == a.stamp) ours.insert(m.id);
    }
    // Progress: tenants still served by the stamp, moves out of it by state.
    size_t left = 0;
    for (const auto& t : w.fleet.tenants) left += t.stamp == a.stamp ? 1 : 0;
    size_t running = 0, queued = 0;
    for (const auto& m : w.open_moves) {
      if (m.spec.from_stamp != a.stamp) continue;
      (m.state == q::MoveState::kRunning ? running : queued) += 1;
    }
    auto rows = tenantRowsOn(w, a.stamp);
    if (!rows) return fail(rows.status());
    uint64_t total_rows = 0;
    for (const auto& [_, n] : *rows) total_rows += n;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const size_t done = ours.size() >= running + queued ? ours.size() - running - queued : 0;
    std::string eta = "unknown";
    if (done > 0 && running + queued > 0) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.0f s",
                    elapsed / static_cast<double>(done) * static_cast<double>(running + queued));
      eta = buf;
    }
    std::printf(
        "drain %s: %zu tenant(s) still routed there, %llu tenant row(s) left, moves "
        "%zu running, %zu queued, %zu done; ETA %s\n",
        a.stamp.c_str(), left, static_cast<unsigned long long>(total_rows), running, queued, done,
        eta.c_str());
    std::fflush(stdout);
    if (total_rows == 0 && left == 0 && running + queued == 0) {
      std::printf("stamp %s holds no tenant rows: drained\n", a.stamp.c_str());
      return 0;
    }
    if (running + queued == 0 && enqueued == 0 && !moving_at_purge) {
      // Nothing is moving and nothing more can be started: say why and stop.
      std::printf(
          "stamp %s cannot be emptied now: %zu tenant(s) cannot be placed, %zu move(s) "
          "failed%s\n",
          a.stamp.c_str(), plan->unplaced.size(), failed.size(),
          total_rows > 0 && left == 0 ? ", tenant rows remain that no route explains" : "");
      for (const auto& u : plan->unplaced) {
        std::printf("  tenant %s: %s\n", u.tenant.c_str(), u.reason.c_str());
      }
      for (const auto& [t, why] : failed) std::printf("  tenant %s: %s\n", t.c_str(), why.c_str());
      return failed.empty() ? 2 : 3;
    }
    if (elapsed >= a.wait_s) {
      if (a.wait_s > 0) {
        std::printf(
            "stamp %s is not empty yet after %.0f s; rerun `stampmover drain %s` to "
            "follow up (it resumes)\n",
            a.stamp.c_str(), elapsed, a.stamp.c_str());
        return 3;
      }
      return 0;  // enqueued; rerun to follow up and purge
    }
    for (auto until = std::chrono::steady_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(a.poll_s * 1000));
         std::chrono::steady_clock::now() < until;) {
      if (cancel.load()) {
        std::printf("interrupted: moves already queued keep running; rerun to follow up\n");
        return 130;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    w = World{std::move(w.config), std::move(w.planner), std::move(w.cp_dsn)};
    if (Status st = readFleet(w); !st) return fail(st);
  }
}

// Every stamp with capacity, bytes, utilization, tenants, draining and moves in flight
// (`stamps --json`, the API). The fleet must have been read.
nlohmann::json stampsJson(const World& w) {
  std::map<std::string, uint64_t> bytes;
  std::map<std::string, uint32_t> tenants;
  for (const auto& t : w.fleet.tenants) {
    bytes[t.stamp] += t.bytes;
    tenants[t.stamp] += 1;
  }
  std::map<std::string, uint32_t> out, in;
  for (const auto& m : w.open_moves) {
    out[m.spec.from_stamp] += 1;
    in[m.spec.to_stamp] += 1;
  }
  nlohmann::json j = nlohmann::json::array();
  for (const auto& s : w.fleet.stamps) {
    j.push_back({{"stamp", s.name},
                 {"region", s.region},
                 {"capacity_bytes", s.capacity_bytes},
                 {"capacity_tenants", s.capacity_tenants},
                 {"bytes", bytes[s.name]},
                 {"utilization", s.capacity_bytes ? static_cast<double>(bytes[s.name]) /
                                                        static_cast<double>(s.capacity_bytes)
                                                  : 0.0},
                 {"tenants", tenants[s.name]},
                 {"draining", s.draining},
                 {"moves_out", out[s.name]},
                 {"moves_in", in[s.name]}});
  }
  return j;
}

int runStamps(const PlannerCliArgs& a, World& w) {
  if (Status st = readFleet(w); !st) return fail(st);
  std::map<std::string, uint64_t> bytes;
  std::map<std::string, uint32_t> tenants;
  for (const auto& t : w.fleet.tenants) {
    bytes[t.stamp] += t.bytes;
    tenants[t.stamp] += 1;
  }
  std::map<std::string, uint32_t> out, in;
  for (const auto& m : w.open_moves) {
    out[m.spec.from_stamp] += 1;
    in[m.spec.to_stamp] += 1;
  }
  if (a.json) {
    std::printf("%s\n", stampsJson(w).dump(2).c_str());
    return 0;
  }
  std::printf("%-14s %-12s %10s %10s %8s %7s %9s %10s\n", "stamp", "region", "capacity", "used",
              "util", "tenants", "draining", "moves o/i");
  for (const auto& s : w.fleet.stamps) {
    const double u = s.capacity_bytes ? static_cast<double>(bytes[s.name]) /
                                            static_cast<double>(s.capacity_bytes)
                                      : 0.0;
    const std::string moves = std::to_string(out[s.name]) + "/" + std::to_string(in[s.name]);
    std::printf("%-14s %-12s %10s %10s %8s %7u %9s %10s\n", s.name.c_str(),
                s.region.empty() ? "-" : s.region.c_str(),
                s.capacity_bytes ? pl::formatBytes(s.capacity_bytes).c_str() : "unlimited",
                pl::formatBytes(bytes[s.name]).c_str(), s.capacity_bytes ? pct(u).c_str() : "-",
                tenants[s.name], s.draining ? "yes" : "no", moves.c_str());
  }
  for (const auto& m : w.open_moves) {
    std::printf("  move %lld: tenant %s %s -> %s, %s%s%s\n", static_cast<long long>(m.id),
                m.spec.tenant.c_str(), m.spec.from_stamp.c_str(), m.spec.to_stamp.c_str(),
                q::moveStateName(m.state),
                m.progress.phase.empty() ? "" : (" (" + m.progress.phase + ")").c_str(),
                m.last_error.empty() ? "" : ("; last error: " + m.last_error).c_str());
  }
  return 0;
}

void addControlPlaneOptions(CLI::App* cmd, PlannerCliArgs& a) {
  cmd->add_option("--control-plane-dsn", a.control_plane_dsn,
                  "Control-plane PostgreSQL (routing directory, move queue, plans)")
      ->envname("STAMPMOVER_CONTROL_PLANE_DSN");
  cmd->add_option("--control-plane", a.control_plane,
                  "Control-plane stamp name from the stamps file, instead of the DSN");
  cmd->add_flag("--json", a.json, "JSON instead of tables");
}

void addPlanOptions(CLI::App* cmd, PlannerCliArgs& a) {
  cmd->add_option("--threshold", a.threshold,
                  "Balanced when every stamp is within ±this fraction of its region's mean "
                  "utilization (default: planner.threshold of the config, else 0.10)")
      ->check(CLI::Range(0.0001, 10.0));
  cmd->add_option("--max-moves", a.max_moves,
                  "At most this many moves (default: planner.max_moves, else 20)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", a.seed,
                  "Seed of the random choice among near-equal targets (default: planner.seed, "
                  "else 0); the same fleet and seed give the same plan and id")
      ->check(CLI::NonNegativeNumber);
}

}  // namespace

void addPlannerCommands(CLI::App& app, PlannerCliArgs& a) {
  auto* rebalance = app.add_subcommand(
      "rebalance",
      "Even out stamps' utilization: `plan` shows the moves and why (nothing moves), `apply "
      "PLAN_ID` queues them for `stampmover serve`");
  rebalance->require_subcommand(1);
  a.plan = rebalance->add_subcommand(
      "plan",
      "Measure every stamp, plan moves from the most to the least utilized stamp of each region "
      "until all are within ±threshold of the mean; print each move with its reason and the "
      "plan id. Moves nothing (the plan is stored in the control plane under its id).");
  addControlPlaneOptions(a.plan, a);
  addPlanOptions(a.plan, a);
  a.apply = rebalance->add_subcommand(
      "apply",
      "Queue the moves of a stored plan. Moves whose tenant moved meanwhile, already has a move, "
      "or that no longer improve balance enough are skipped with the reason.");
  a.apply->add_option("PLAN_ID", a.plan_id, "Id printed by `rebalance plan` (plan-...)")
      ->required();
  addControlPlaneOptions(a.apply, a);
  a.show = rebalance->add_subcommand(
      "show",
      "A stored plan (moves and reasons) and its moves in the queue: state, phase, ETA and "
      "every failed attempt's error. Read-only.");
  a.show->add_option("PLAN_ID", a.plan_id, "Plan id (plan-...)")->required();
  addControlPlaneOptions(a.show, a);
  const char* verbs[3] = {"pause", "resume", "cancel"};
  const char* help[3] = {
      "Pause every queued or running move of the plan (running ones stop at a checkpoint)",
      "Resume every paused move of the plan",
      "Cancel every move of the plan that has not flipped (what they created is torn down)"};
  for (int i = 0; i < 3; ++i) {
    a.control[i] = rebalance->add_subcommand(verbs[i], help[i]);
    a.control[i]->add_option("PLAN_ID", a.plan_id, "Plan id (plan-...)")->required();
    addControlPlaneOptions(a.control[i], a);
  }
  auto* sched = rebalance->add_subcommand(
      "schedule",
      "The periodic plan + apply of the stamps file's `rebalance: {every, window, paused}`, run "
      "by `stampmover serve` (one serve process acts per period): pause, resume, or show the "
      "last run and its plan id");
  sched->require_subcommand(1);
  const char* sverbs[3] = {"pause", "resume", "show"};
  const char* shelp[3] = {"Stop the scheduled runs (moves already queued keep running)",
                          "Resume the scheduled runs", "Paused or not, next run, last run, its plan id and result"};
  for (int i = 0; i < 3; ++i) {
    a.schedule[i] = sched->add_subcommand(sverbs[i], shelp[i]);
    addControlPlaneOptions(a.schedule[i], a);
  }
  a.drain = app.add_subcommand(
      "drain",
      "Empty a stamp before decommissioning it: mark it draining (routing refuses new tenants "
      "there), plan every tenant away within capacity and constraints, queue the moves, purge "
      "the rows of tenants that have left, and check by SQL that no tenant row remains. "
      "Rerunnable: each run follows up where the last stopped.");
  a.drain->add_option("STAMP", a.stamp, "Stamp of the stamps file to drain")->required();
  a.drain->add_flag("--dry-run", a.dry_run, "Print the plan only: mark nothing, move nothing");
  a.drain
      ->add_option("--wait", a.wait_s,
                   "Follow the drain for up to this many seconds (progress, ETA, purge as "
                   "tenants leave); 0 queues and returns")
      ->check(CLI::NonNegativeNumber);
  a.drain->add_option("--poll", a.poll_s, "Seconds between progress lines with --wait")
      ->check(CLI::PositiveNumber);
  addControlPlaneOptions(a.drain, a);
  addPlanOptions(a.drain, a);
  a.stamps = app.add_subcommand(
      "stamps",
      "Each stamp's capacity, bytes used (measured from its tables), utilization, tenants, "
      "whether it is draining, and the moves in flight out of and into it. Changes nothing (on a "
      "new control plane it creates the routing and queue schemas, as serve does).");
  addControlPlaneOptions(a.stamps, a);
}

bool plannerCommandChosen(const PlannerCliArgs& a) {
  for (auto* c : a.control) {
    if (c && *c) return true;
  }
  for (auto* c : a.schedule) {
    if (c && *c) return true;
  }
  return (a.plan && *a.plan) || (a.apply && *a.apply) || (a.show && *a.show) ||
         (a.drain && *a.drain) || (a.stamps && *a.stamps);
}

// `rebalance schedule pause|resume|show` (verb 0, 1, 2).
int runSchedule(const PlannerCliArgs& a, World& w, int verb) {
  auto sc = loadScheduleConfig(w.config.path);
  if (!sc) return fail(sc.status());
  auto c = openSchedule(w.cp_dsn, sc->paused);
  if (!c) return fail(c.status());
  if (verb < 2) {
    if (Status st = setSchedulePaused(*c, verb == 0); !st) return fail(st);
  }
  auto j = scheduleJson(*c);
  if (!j) return fail(j.status());
  if (a.json) {
    std::printf("%s\n", j->dump(2).c_str());
    return 0;
  }
  std::printf("rebalance schedule: %s%s\n", (*j)["paused"].get<bool>() ? "paused" : "active",
              sc->present ? "" : " (no rebalance: section in the stamps file: serve runs nothing)");
  std::printf("  next run:  %s\n", (*j)["next_run_at"].get<std::string>().c_str());
  std::printf("  last run:  %s by %s: plan %s: %s\n",
              (*j)["last_run_at"].get<std::string>().c_str(),
              (*j)["last_owner"].get<std::string>().c_str(),
              (*j)["last_plan_id"].get<std::string>().c_str(),
              (*j)["last_result"].get<std::string>().c_str());
  return 0;
}

int runPlannerCommand(const PlannerCliArgs& a, const std::string& config_path,
                      const std::atomic<bool>& cancel) {
  auto w = openWorld(a, config_path);
  if (!w) return fail(w.status());
  if (a.plan && *a.plan) return runPlan(a, *w);
  if (a.apply && *a.apply) return runApply(a, *w);
  if (a.show && *a.show) return runShow(a, *w);
  const q::Action actions[3] = {q::Action::kPause, q::Action::kResume, q::Action::kCancel};
  for (int i = 0; i < 3; ++i) {
    if (a.control[i] && *a.control[i]) return runControl(a, *w, actions[i]);
  }
  for (int i = 0; i < 3; ++i) {
    if (a.schedule[i] && *a.schedule[i]) return runSchedule(a, *w, i);
  }
  if (a.drain && *a.drain) return runDrain(a, *w, cancel);
  if (a.stamps && *a.stamps) return runStamps(a, *w);
  return fail(Status::internal("no planner command chosen"));
}

namespace {

std::pair<int, std::string> apiError(int status, const std::string& code, const std::string& msg) {
  return {status, nlohmann::json{{"code", code}, {"message", msg}}.dump() + "\n"};
}

std::pair<int, std::string> apiError(const Status& st) {
  switch (st.errorClass()) {
    case ErrorClass::kRefused:
      return apiError(422, "refused", st.message());
    case ErrorClass::kRetryable:
      return apiError(503, "unavailable", st.message());
    default:
      return apiError(500, "internal", st.message());
  }
}

}  // namespace

std::pair<int, std::string> plannerApi(const std::string& config_path,
                                       const std::string& control_plane_dsn,
                                       const std::string& route, const std::string& id,
                                       const std::string& body, bool operate) {
  PlannerCliArgs a;
  a.control_plane_dsn = control_plane_dsn;
  a.plan_id = id;
  nlohmann::json in = nlohmann::json::object();
  if (!body.empty()) {
    in = nlohmann::json::parse(body, nullptr, false);
    if (in.is_discarded() || !in.is_object()) {
      return apiError(400, "invalid_body", "the body must be a JSON object");
    }
  }
  const bool drain = route == "/v1/stamps/{stamp}/drain";
  for (const auto& [k, v] : in.items()) {
    if (drain && k == "dry_run") {
      if (!v.is_boolean()) return apiError(400, "invalid_body", "'dry_run' must be a boolean");
      a.dry_run = v.get<bool>();
      continue;
    }
    if ((route != "/v1/plans" && !drain) ||
        (k != "threshold" && k != "max_moves" && k != "seed")) {
      return apiError(400, "unknown_field", "unknown field '" + k + "'");
    }
    if (!v.is_number()) return apiError(400, "invalid_body", "'" + k + "' must be a number");
  }
  if (in.contains("threshold")) a.threshold = in["threshold"].get<double>();
  if (in.contains("max_moves")) a.max_moves = in["max_moves"].get<int64_t>();
  if (in.contains("seed")) a.seed = in["seed"].get<int64_t>();
  auto w = openWorld(a, config_path);
  if (!w) return apiError(w.status());
  const auto ok = [](int status, const nlohmann::json& j) {
    return std::pair<int, std::string>{status, j.dump() + "\n"};
  };
  if (route == "/v1/stamps") {
    if (Status st = readFleet(*w); !st) return apiError(st);
    return ok(200, stampsJson(*w));
  }
  if (drain) {
    if (!w->config.stamps.count(id)) {
      std::string known;
      for (const auto& [n, _] : w->config.stamps) known += (known.empty() ? "" : ", ") + n;
      return apiError(404, "unknown_stamp",
                      "unknown stamp '" + id + "' (stamps: " + known + "); nothing was changed");
    }
    if (!a.dry_run && !operate) {
      return apiError(403, "forbidden",
                      "POST " + route + " needs the operate role unless dry_run; this token has read");
    }
    if (Status st = readFleet(*w); !st) return apiError(st);
    if (!a.dry_run) {
      if (!w->draining.count(id)) {
        const std::string note = "drained through the API";
        if (Status st = w->routing->setDraining(id, true, note); !st) return apiError(st);
        spdlog::info("api: stamp {} marked draining", id);
      }
      auto purged = purgeDeparted(*w, id, false);
      if (!purged) return apiError(purged.status());
      auto again = openWorld(a, config_path);
      if (!again) return apiError(again.status());
      w = std::move(again);
      if (Status st = readFleet(*w); !st) return apiError(st);
    }
    auto plan = pl::planDrain(w->fleet, id, optionsFrom(a, *w));
    if (!plan) return apiError(plan.status());
    auto store = pl::PlanStore::open(w->cp_dsn);
    if (!store) return apiError(store.status());
    if (Status st = store->save(*plan); !st) return apiError(st);
    if (a.dry_run) return ok(200, pl::planToJson(*plan));
    auto n = enqueuePlan(*w, *plan);
    if (!n) return apiError(n.status());
    if (Status st = store->markApplied(plan->id); !st) return apiError(st);
    spdlog::info("api: drain of stamp {}: plan {}, {} move(s) queued", id, plan->id, *n);
    a.plan_id = plan->id;
    auto sp = storedPlan(a, *w);
    if (!sp) return apiError(sp.status());
    auto moves = movesOfPlan(*w, plan->id);
    if (!moves) return apiError(moves.status());
    return ok(202, showJson(*sp, *moves));
  }
  if (route.rfind("/v1/schedule", 0) == 0) {
    auto sc = loadScheduleConfig(config_path);
    if (!sc) return apiError(sc.status());
    auto c = openSchedule(w->cp_dsn, sc->paused);
    if (!c) return apiError(c.status());
    if (route != "/v1/schedule") {
      if (Status st = setSchedulePaused(*c, route == "/v1/schedule/pause"); !st) {
        return apiError(st);
      }
      spdlog::info("api: rebalance schedule {}d", route.substr(route.rfind('/') + 1));
    }
    auto j = scheduleJson(*c);
    if (!j) return apiError(j.status());
    return ok(route == "/v1/schedule" ? 200 : 202, *j);
  }
  if (route == "/v1/plans") {  // plan: nothing moves
    if (Status st = readFleet(*w); !st) return apiError(st);
    auto plan = pl::planRebalance(w->fleet, optionsFrom(a, *w));
    if (!plan) return apiError(plan.status());
    auto store = pl::PlanStore::open(w->cp_dsn);
    if (!store) return apiError(store.status());
    if (Status st = store->save(*plan); !st) return apiError(st);
    spdlog::info("api: plan {} made ({} move(s)); nothing moved", plan->id, plan->moves.size());
    return ok(201, pl::planToJson(*plan));
  }
  // /v1/plans/{id}[/action]
  auto sp = storedPlan(a, *w);
  if (!sp) {
    if (sp.status().errorClass() == ErrorClass::kRefused) {
      return apiError(404, "not_found", sp.status().message());
    }
    return apiError(sp.status());
  }
  if (route == "/v1/plans/{id}/apply") {
    if (Status st = readFleet(*w); !st) return apiError(st);
    auto n = enqueuePlan(*w, sp->plan);
    if (!n) return apiError(n.status());
    auto store = pl::PlanStore::open(w->cp_dsn);
    if (!store) return apiError(store.status());
    if (Status st = store->markApplied(id); !st) return apiError(st);
    spdlog::info("api: plan {} applied: {} move(s) queued", id, *n);
    sp = storedPlan(a, *w);
    if (!sp) return apiError(sp.status());
  } else if (route != "/v1/plans/{id}") {
    const std::string verb = route.substr(route.rfind('/') + 1);
    auto action = q::parseAction(verb);
    if (!action) return apiError(404, "route_not_found", "no action " + verb);
    auto moves = movesOfPlan(*w, id);
    if (!moves) return apiError(moves.status());
    for (const auto& m : *moves) {
      if (m.state == q::MoveState::kSucceeded || m.state == q::MoveState::kFailed ||
          m.state == q::MoveState::kCancelled) {
        continue;
      }
      auto r = w->queue->request(m.id, *action);
      if (!r && r.status().errorClass() != ErrorClass::kRefused) return apiError(r.status());
    }
    spdlog::info("api: plan {}: {} requested on its moves", id, verb);
  }
  auto moves = movesOfPlan(*w, id);
  if (!moves) return apiError(moves.status());
  return ok(route == "/v1/plans/{id}" ? 200 : 202, showJson(*sp, *moves));
}

// ---------------------------------------------------------------------------------------------
// The rebalance schedule (see rebalance_command.h).

namespace {

constexpr const char* kScheduleSchema =
    "SELECT pg_advisory_xact_lock(7235010452913160193); "  // the plan store's lock
    "SET LOCAL client_min_messages = warning; "
    "CREATE SCHEMA IF NOT EXISTS stampmover_planner; "
    "CREATE TABLE IF NOT EXISTS stampmover_planner.schedule ("
    "  id int PRIMARY KEY CHECK (id = 1),"
    "  paused boolean NOT NULL,"
    "  next_run_at timestamptz NOT NULL DEFAULT now(),"
    "  last_run_at timestamptz,"
    "  last_owner text,"
    "  last_plan_id text,"
    "  last_result text,"
    "  updated_at timestamptz NOT NULL DEFAULT now())";

Result<PgConnection> openSchedule(const std::string& dsn, bool initially_paused) {
  SM_ASSIGN_OR_RETURN(PgConnection c, PgConnection::connect(dsn, "control plane"));
  SM_RETURN_IF_ERROR(c.exec("BEGIN"));
  Status st = c.exec(kScheduleSchema);
  if (!st) {
    c.exec("ROLLBACK").ignore();  // the error that matters is st
    return st.withContext("control plane: create table stampmover_planner.schedule");
  }
  SM_RETURN_IF_ERROR(c.exec("COMMIT"));
  SM_RETURN_IF_ERROR(c.query("INSERT INTO stampmover_planner.schedule (id, paused) VALUES (1, $1) "
                             "ON CONFLICT (id) DO NOTHING",
                             {std::string(initially_paused ? "true" : "false")})
                         .status());
  return c;
}

Result<nlohmann::json> scheduleJson(PgConnection& c) {
  const std::string iso = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";
  auto ts = [&](const std::string& col) {
    return "coalesce(to_char(" + col + " AT TIME ZONE 'UTC', " + iso + "), '')";
  };
  SM_ASSIGN_OR_RETURN(auto r, c.query("SELECT paused, " + ts("next_run_at") + ", " +
                                      ts("last_run_at") + ", coalesce(last_owner, ''), "
                                      "coalesce(last_plan_id, ''), coalesce(last_result, '') "
                                      "FROM stampmover_planner.schedule WHERE id = 1"));
  using stampmover::common::cell;
  return nlohmann::json{{"paused", cell(r, 0, 0) == "t"},     {"next_run_at", cell(r, 0, 1)},
                        {"last_run_at", cell(r, 0, 2)},       {"last_owner", cell(r, 0, 3)},
                        {"last_plan_id", cell(r, 0, 4)},      {"last_result", cell(r, 0, 5)}};
}

Status setSchedulePaused(PgConnection& c, bool paused) {
  return c.query("UPDATE stampmover_planner.schedule SET paused = $1, updated_at = now() "
                 "WHERE id = 1",
                 {std::string(paused ? "true" : "false")})
      .status();
}

Result<int64_t> parseDuration(const std::string& s) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (...) {
    used = 0;
  }
  const std::string unit = used ? s.substr(used) : "";
  const double mult = unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : 0;
  if (!used || mult == 0 || v * mult < 1) return Status::refused("bad duration");
  return static_cast<int64_t>(v * mult);
}

Result<int> parseHhmm(const std::string& s) {
  int h = -1, m = -1;
  char tail = 0;
  if (std::sscanf(s.c_str(), "%d:%d%c", &h, &m, &tail) != 2 || h < 0 || m < 0 || m > 59 ||
      h * 60 + m > 1440) {
    return Status::refused("bad time");
  }
  return h * 60 + m;
}

// plan + apply of one scheduled run; returns (plan id, what happened).
std::pair<std::string, std::string> runScheduledOnce(const std::string& config_path,
                                                     const std::string& cp_dsn) {
  PlannerCliArgs a;
  a.control_plane_dsn = cp_dsn;
  auto w = openWorld(a, config_path);
  if (!w) return {"", "error: " + w.status().message()};
  if (Status st = readFleet(*w); !st) return {"", "error: " + st.message()};
  auto plan = pl::planRebalance(w->fleet, optionsFrom(a, *w));
  if (!plan) return {"", "error: " + plan.status().message()};
  auto store = pl::PlanStore::open(w->cp_dsn);
  if (!store) return {plan->id, "error: " + store.status().message()};
  if (Status st = store->save(*plan); !st) return {plan->id, "error: " + st.message()};
  if (plan->moves.empty()) return {plan->id, "no move: " + plan->stop_reason};
  auto n = enqueuePlan(*w, *plan);
  if (!n) return {plan->id, "error: " + n.status().message()};
  if (Status st = store->markApplied(plan->id); !st) return {plan->id, "error: " + st.message()};
  return {plan->id, std::to_string(*n) + " of " + std::to_string(plan->moves.size()) +
                        " move(s) queued"};
}

}  // namespace

Result<ScheduleConfig> loadScheduleConfig(const std::string& path) {
  ScheduleConfig sc;
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return Status::refused(path + ": " + e.what());
  }
  if (!root.IsMap() || !root["rebalance"]) return sc;
  const YAML::Node r = root["rebalance"];
  auto bad = [&](const std::string& key, const std::string& what) {
    return Status::refused(path + ": rebalance." + key + ": " + what);
  };
  if (!r.IsMap()) return Status::refused(path + ": rebalance: expected a mapping");
  sc.present = true;
  bool have_every = false;
  for (const auto& kv : r) {
    const std::string k = kv.first.as<std::string>();
    const std::string v = kv.second.IsScalar() ? kv.second.Scalar() : "";
    if (k == "every") {
      auto d = parseDuration(v);
      if (!d) return bad(k, "expected a duration such as 30s, 15m, 6h or 1d, got '" + v + "'");
      sc.every_s = *d;
      have_every = true;
    } else if (k == "window") {
      const auto dash = v.find('-');
      auto from = parseHhmm(v.substr(0, dash));
      auto to = dash == std::string::npos ? from : parseHhmm(v.substr(dash + 1));
      if (dash == std::string::npos || !from || !to || *from == *to) {
        return bad(k, "expected \"HH:MM-HH:MM\" (UTC; 22:00-04:00 wraps midnight), got '" + v +
                          "'");
      }
      sc.window_from_min = *from;
      sc.window_to_min = *to;
    } else if (k == "paused") {
      if (v != "true" && v != "false") return bad(k, "expected true or false, got '" + v + "'");
      sc.paused = v == "true";
    } else {
      return bad(k, "unknown key (expected every, window, paused)");
    }
  }
  if (!have_every) return bad("every", "missing (how often to plan and apply, e.g. 6h)");
  return sc;
}

void runRebalanceSchedule(const std::string& config_path, const std::string& cp_dsn,
                          const ScheduleConfig& sc, const std::string& owner,
                          const std::atomic<bool>& stop) {
  const auto tick = std::chrono::seconds(std::clamp<int64_t>(sc.every_s / 4, 1, 30));
  std::optional<PgConnection> c;
  while (!stop) {
    if (!c) {
      auto opened = openSchedule(cp_dsn, sc.paused);
      if (opened) {
        c.emplace(std::move(*opened));
      } else {
        spdlog::warn("rebalance schedule: control plane: {}", opened.status().message());
      }
    }
    if (c) {
      // The database's clock decides the window and the period, so every serve agrees.
      auto won = c->query(
          "WITH t AS (SELECT (extract(hour FROM now() AT TIME ZONE 'UTC') * 60 + "
          "extract(minute FROM now() AT TIME ZONE 'UTC'))::int AS m) "
          "UPDATE stampmover_planner.schedule SET next_run_at = now() + $1 * interval '1 second', "
          "last_run_at = now(), last_owner = $2, last_plan_id = NULL, last_result = 'running', "
          "updated_at = now() FROM t WHERE id = 1 AND NOT paused AND next_run_at <= now() AND "
          "(CASE WHEN $3::int < $4::int "
          "      THEN m >= $3::int AND m < $4::int ELSE m >= $3::int OR m < $4::int END) "
          "RETURNING 1",
          {std::to_string(sc.every_s), owner, std::to_string(sc.window_from_min),
           std::to_string(sc.window_to_min)});
      if (!won) {
        spdlog::warn("rebalance schedule: {}", won.status().message());
        c.reset();
      } else if (stampmover::common::rowCount(*won) == 1) {
        spdlog::info("rebalance schedule: {} runs plan + apply", owner);
        auto [plan_id, result] = runScheduledOnce(config_path, cp_dsn);
        spdlog::info("rebalance schedule: plan '{}': {}", plan_id, result);
        auto rec = c->query("UPDATE stampmover_planner.schedule SET last_plan_id = $1, "
                            "last_result = $2, updated_at = now() WHERE id = 1",
                            {plan_id, result});
        if (!rec) spdlog::warn("rebalance schedule: recording the run: {}", rec.status().message());
      }
    }
    for (auto t = std::chrono::steady_clock::now() + tick;
         !stop && std::chrono::steady_clock::now() < t;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}
