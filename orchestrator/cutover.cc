// Coordinated cutover: see cutover.h. Every step inside the window checks the deadline; the
// rollback path is the same whatever failed: routing back to the source (active), fence off.
#include "orchestrator/cutover.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "common/failpoint.h"
#include "mover/fence.h"

namespace stampmover::orch {

using common::PgConnection;
using common::PgParam;
using common::Result;
using common::Status;
using Clock = std::chrono::steady_clock;

namespace {

// What a compare-and-set did, when its reply may have been lost.
struct CasOutcome {
  enum class Kind { kApplied, kNotApplied, kUnknown } kind = Kind::kNotApplied;
  routing::RouteEntry entry;  // kApplied: the new entry
  Status error;               // otherwise: why
};

// A compare-and-set whose outcome is read back when it is not known (kRetryable: the store was
// unreachable, the commit may or may not have happened), as the routing contract asks: the
// entry at expected+1 with the wanted stamp and state means it was applied; still at `expected`
// means it was not; anything else, or no answer before `deadline`, is unknown.
CasOutcome resolvedCas(routing::RoutingDirectory& routes, const std::string& tenant,
                       routing::Epoch expected, const routing::RouteChange& change,
                       Clock::time_point deadline) {
  auto r = routes.compareAndSet(tenant, expected, change);
  if (r) return {CasOutcome::Kind::kApplied, *r, Status::ok()};
  if (r.status().errorClass() != common::ErrorClass::kRetryable) {
    return {CasOutcome::Kind::kNotApplied, {}, r.status()};
  }
  for (;;) {
    auto e = routes.get(tenant);
    if (e && e->has_value()) {
      const routing::RouteEntry& now = **e;
      if (now.epoch == expected + 1 && now.stamp == change.stamp && now.state == change.state) {
        spdlog::warn("routing write for tenant {} reported {}, but it was applied (epoch {})",
                     tenant, r.status().message(), now.epoch);
        return {CasOutcome::Kind::kApplied, now, Status::ok()};
      }
      if (now.epoch == expected) return {CasOutcome::Kind::kNotApplied, {}, r.status()};
      return {CasOutcome::Kind::kUnknown, {},
              Status::internal("routing entry of tenant " + tenant + " is at epoch " +
                               std::to_string(now.epoch) + " on " + now.stamp +
                               ", written by someone else")};
    }
    if (Clock::now() >= deadline) {
      return {CasOutcome::Kind::kUnknown, {},
              r.status().withContext("routing write for tenant " + tenant +
                                     " with unknown outcome, and the entry could not be read back")};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

Result<CutoverReport> runCutover(CutoverContext& ctx, const CutoverOptions& o) {
  CutoverReport rep;
  // Failpoints of the reverse cutover (a rollback during the soak) have names of their own, so
  // the crash tests can stop the worker in either direction: "cutover.reverse.<step>".
  const bool reverse = ctx.expected_state == routing::RouteState::kDualWrite;
  auto failpointAt = [reverse](const char* step) {
    return common::failpoint(std::string(reverse ? "cutover.reverse." : "cutover.") + step);
  };
  // Outside the window: re-check the rows changed so far and keep only those that still
  // differ, so that the re-check inside it covers little more than what changes from here on.
  {
    PruneStats ps;
    Status pruned = pruneApplierTouched(*ctx.source, *ctx.destination, ctx.tables, *ctx.applier,
                                        ctx.tenant, &ps);
    if (!pruned.isOk()) {
      spdlog::warn("re-check before the window: {}; every changed row is re-checked inside it",
                   pruned.message());
    }
    rep.prepass_rows = ps.checked;
    rep.prepass_kept = ps.kept;
    rep.prepass_ms = ps.ms;
  }
  // Pre-check outside the window: our own heartbeat round trip, not server views.
  auto pre_deadline = Clock::now() + std::chrono::seconds(10);
  SM_ASSIGN_OR_RETURN(auto rtt, ctx.drain(pre_deadline));
  rep.precheck_ms = static_cast<double>(rtt.count()) / 1e3;
  if (rtt > o.lag_precheck) {
    rep.rollback_reason = "lag pre-check: heartbeat round trip " + std::to_string(rep.precheck_ms) +
                          " ms exceeds " + std::to_string(o.lag_precheck.count()) + " ms; not freezing";
    return rep;
  }
  SM_ASSIGN_OR_RETURN(auto entry, ctx.routes->get(ctx.tenant));
  if (!entry) return Status::refused("tenant " + ctx.tenant + " has no routing entry");
  if (entry->state != ctx.expected_state || entry->stamp != ctx.source_stamp) {
    return Status::refused("routing entry of tenant " + ctx.tenant + " is " +
                           routing::routeStateName(entry->state) + " on stamp " + entry->stamp +
                           ", expected " + routing::routeStateName(ctx.expected_state) + " on " +
                           ctx.source_stamp);
  }
  const std::optional<std::string> shadow_before = entry->shadow_stamp;
  // The fence triggers of the stamp we freeze must all be there (another migration's teardown,
  // or a hand, may have removed them): checked right before each freeze, outside the window.
  SM_RETURN_IF_ERROR(mover::checkFenceInPlace(*ctx.source, ctx.tables));

  SM_RETURN_IF_ERROR(failpointAt("before_freeze"));
  // ---- the window: freeze -> flip ----
  const auto t_freeze = Clock::now();
  const auto deadline = t_freeze + o.window_timeout;
  const routing::RouteChange freeze{ctx.source_stamp, routing::RouteState::kFrozen, shadow_before,
                                    "cutover: freeze"};
  CasOutcome frozen = resolvedCas(*ctx.routes, ctx.tenant, entry->epoch, freeze, deadline);
  if (frozen.kind != CasOutcome::Kind::kApplied) {
    // Not frozen, or unknown: nothing else was done; a restarted worker rolls back a frozen
    // entry it finds (prepareCutover).
    return frozen.error.withContext("cutover: freeze");
  }
  routing::Epoch epoch = frozen.entry.epoch;
  // Statements inside the window may not outlive it (a stuck lock, a slow re-check).
  const std::string window_timeout = "SET statement_timeout = " + std::to_string(o.window_timeout.count());
  ctx.source->exec(window_timeout).ignore();       // best effort: the deadline checks remain
  ctx.destination->exec(window_timeout).ignore();  // best effort, as above
  struct ResetTimeout {
    CutoverContext& c;
    ~ResetTimeout() {
      c.source->exec("SET statement_timeout = 0").ignore();       // best effort: next use resets
      c.destination->exec("SET statement_timeout = 0").ignore();  // best effort, as above
    }
  } reset_timeout{ctx};
  auto fail = [&](const std::string& why) -> Result<CutoverReport> {
    rep.rollback_reason = why;
    spdlog::warn("cutover of tenant {} rolled back: {}", ctx.tenant, why);
    ctx.source->exec("SET statement_timeout = 0").ignore();  // the rollback needs its time
    // Known not flipped (an unknown flip never comes here): the source may be unfenced.
    Status un = mover::unfenceTenant(*ctx.source, ctx.tenant);
    CasOutcome back = resolvedCas(*ctx.routes, ctx.tenant, epoch,
                                  {ctx.source_stamp, ctx.expected_state, shadow_before,
                                   "cutover rolled back: " + why},
                                  Clock::now() + std::chrono::seconds(5));
    rep.window_ms = msSince(t_freeze);
    if (!un.isOk() || back.kind != CasOutcome::Kind::kApplied) {
      return Status::internal("cutover rollback incomplete for tenant " + ctx.tenant + ": unfence: " +
                              un.message() + "; routing: " + back.error.message() +
                              " — run `stampmover rollback --tenant " + ctx.tenant + "`");
    }
    rep.epoch_after = back.entry.epoch;
    return rep;
  };
  auto remaining = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  };
  if (Status fp = failpointAt("after_freeze"); !fp.isOk()) return fail(fp.message());

  auto t = Clock::now();
  // The fence outlives the window by a margin, then expires by itself (a killed worker).
  auto xid = mover::fenceTenant(*ctx.source, ctx.tenant, epoch, o.window_timeout * 3);
  if (!xid) return fail("fence: " + xid.status().message());
  Status waited = mover::waitForOlderTransactions(*ctx.source, *xid, remaining());
  rep.fence_wait_ms = msSince(t);
  if (!waited.isOk()) return fail("fence: " + waited.message());
  if (Status fp = failpointAt("after_fence"); !fp.isOk()) return fail(fp.message());

  t = Clock::now();
  auto drained = ctx.drain(deadline);
  rep.drain_ms = msSince(t);
  if (!drained) return fail("drain: " + drained.status().message());
  if (Status fp = failpointAt("after_drain"); !fp.isOk()) return fail(fp.message());

  t = Clock::now();
  auto diffs = recheckTouchedRows(*ctx.source, *ctx.destination, ctx.tables, ctx.applier->touched(),
                                   ctx.tenant, &rep.rows_rechecked);
  rep.verify_ms = msSince(t);
  if (!diffs) return fail("final verification: " + diffs.status().message());
  if (!diffs->empty()) {
    std::string first = (*diffs)[0];
    return fail("final verification found " + std::to_string(diffs->size()) + " difference(s), first: " + first);
  }
  if (Clock::now() > deadline) return fail("window timeout after final verification");
  if (Status fp = failpointAt("after_recheck"); !fp.isOk()) return fail(fp.message());

  t = Clock::now();
  auto seqs = mover::raiseSequences(*ctx.source, *ctx.destination, ctx.tables, o.sequence_headroom);
  rep.sequences_ms = msSince(t);
  if (!seqs) return fail("sequences: " + seqs.status().message());
  rep.sequences = *seqs;
  if (Status fp = failpointAt("after_sequences"); !fp.isOk()) return fail(fp.message());
  if (Clock::now() > deadline) return fail("window timeout before the flip");

  if (Status fp = failpointAt("before_flip"); !fp.isOk()) return fail(fp.message());
  Status kept = mover::extendFence(*ctx.source, ctx.tenant);
  if (!kept.isOk()) return fail("fence: " + kept.message());
  CasOutcome flipped = resolvedCas(*ctx.routes, ctx.tenant, epoch,
                                   {ctx.dest_stamp, ctx.flip_state, ctx.flip_shadow, "cutover: flip"},
                                   deadline + o.window_timeout);
  if (flipped.kind == CasOutcome::Kind::kNotApplied) return fail("flip: " + flipped.error.message());
  if (flipped.kind == CasOutcome::Kind::kUnknown) {
    // The entry may point at the destination: the source keeps its (permanent) fence, so no
    // write can land there unseen. A restarted worker reads the entry and resumes the soak or
    // rolls the freeze back.
    rep.window_ms = msSince(t_freeze);
    return Status::retryable("cutover of tenant " + ctx.tenant + ": " + flipped.error.message() +
                             "; the source stays fenced until the outcome is known — rerun "
                             "migrate (it resumes from what the routing entry says)");
  }
  rep.window_ms = msSince(t_freeze);
  rep.flipped = true;
  rep.epoch_after = flipped.entry.epoch;
  // The stamp that serves now must not fence the tenant (a rollback during the soak fenced the
  // source permanently at the forward flip). A failure here is healed by a restarted worker.
  failpointAt("after_flip").ignore();  // only `kill` matters here: flipped
  Status un = mover::unfenceTenant(*ctx.destination, ctx.tenant);
  if (!un.isOk()) spdlog::warn("unfence of tenant {} on the new primary: {}", ctx.tenant, un.message());
  return rep;
}

std::string formatCutoverReport(const CutoverReport& r) {
  char line[768];
  std::string out;
  if (r.flipped) {
    std::snprintf(line, sizeof line,
                  "cutover: FLIPPED (epoch %llu); writes unavailable "
                  "for %.1f ms (freeze -> flip)\n"
                  "  before the window: %llu changed rows re-checked in %.1f ms (%llu still "
                  "different, re-checked again inside)\n"
                  "  pre-check round trip %.1f ms; fence wait %.1f ms; drain %.1f ms; re-check of %llu "
                  "changed rows %.1f ms; %zu sequence(s) raised in %.1f ms\n",
                  static_cast<unsigned long long>(r.epoch_after), r.window_ms,
                  static_cast<unsigned long long>(r.prepass_rows), r.prepass_ms,
                  static_cast<unsigned long long>(r.prepass_kept), r.precheck_ms,
                  r.fence_wait_ms, r.drain_ms, static_cast<unsigned long long>(r.rows_rechecked),
                  r.verify_ms, r.sequences.size(), r.sequences_ms);
  } else {
    std::snprintf(line, sizeof line, "cutover: not flipped (%s); window %.1f ms; tenant stays on the source\n",
                  r.rollback_reason.c_str(), r.window_ms);
  }
  out += line;
  return out;
}

}  // namespace stampmover::orch
