// Coordinated cutover: see cutover.h. Every step inside the window checks the deadline; the
// rollback path is the same whatever failed: routing back to the source (active), fence off.
#include "orchestrator/cutover.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>

#include "common/failpoint.h"
#include "mover/fence.h"

namespace stampmover::orch {

using common::PgConnection;
using common::PgParam;
using common::Result;
using common::Status;
using Clock = std::chrono::steady_clock;

namespace {

double msSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

Result<CutoverReport> runCutover(CutoverContext& ctx, const CutoverOptions& o) {
  CutoverReport rep;
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

  // ---- the window: freeze -> flip ----
  const auto t_freeze = Clock::now();
  const auto deadline = t_freeze + o.window_timeout;
  SM_ASSIGN_OR_RETURN(auto frozen, ctx.routes->compareAndSet(
                                       ctx.tenant, entry->epoch,
                                       {ctx.source_stamp, routing::RouteState::kFrozen, shadow_before,
                                        "cutover: freeze"}));
  routing::Epoch epoch = frozen.epoch;
  auto fail = [&](const std::string& why) -> Result<CutoverReport> {
    rep.rollback_reason = why;
    spdlog::warn("cutover of tenant {} rolled back: {}", ctx.tenant, why);
    Status un = mover::unfenceTenant(*ctx.source, ctx.tenant);
    auto back = ctx.routes->compareAndSet(ctx.tenant, epoch,
                                          {ctx.source_stamp, ctx.expected_state, shadow_before,
                                           "cutover rolled back: " + why});
    rep.window_ms = msSince(t_freeze);
    if (!un.isOk() || !back) {
      return Status::internal("cutover rollback incomplete for tenant " + ctx.tenant + ": unfence: " +
                              un.message() + "; routing: " + back.status().message() +
                              " — run `stampmover rollback --tenant " + ctx.tenant + "`");
    }
    rep.epoch_after = back->epoch;
    return rep;
  };
  auto remaining = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  };

  auto t = Clock::now();
  // The fence outlives the window by a margin, then expires by itself (a killed worker).
  auto xid = mover::fenceTenant(*ctx.source, ctx.tenant, epoch, o.window_timeout * 3);
  if (!xid) return fail("fence: " + xid.status().message());
  Status waited = mover::waitForOlderTransactions(*ctx.source, *xid, remaining());
  rep.fence_wait_ms = msSince(t);
  if (!waited.isOk()) return fail("fence: " + waited.message());
  if (Status fp = common::failpoint("cutover.after_fence"); !fp.isOk()) return fail(fp.message());

  t = Clock::now();
  auto drained = ctx.drain(deadline);
  rep.drain_ms = msSince(t);
  if (!drained) return fail("drain: " + drained.status().message());

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

  t = Clock::now();
  auto seqs = mover::raiseSequences(*ctx.source, *ctx.destination, ctx.tables, o.sequence_headroom);
  rep.sequences_ms = msSince(t);
  if (!seqs) return fail("sequences: " + seqs.status().message());
  rep.sequences = *seqs;
  if (Clock::now() > deadline) return fail("window timeout before the flip");

  if (Status fp = common::failpoint("cutover.before_flip"); !fp.isOk()) return fail(fp.message());
  Status kept = mover::extendFence(*ctx.source, ctx.tenant);
  if (!kept.isOk()) return fail("fence: " + kept.message());
  auto flipped = ctx.routes->compareAndSet(
      ctx.tenant, epoch,
      {ctx.dest_stamp, ctx.flip_state, ctx.flip_shadow, "cutover: flip"});
  if (!flipped) return fail("flip: " + flipped.status().message());
  rep.window_ms = msSince(t_freeze);
  rep.flipped = true;
  rep.epoch_after = flipped->epoch;
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
