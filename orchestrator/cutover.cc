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

constexpr const char* kPinnedSettings =
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 3; SET bytea_output = 'hex'";

double msSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Rows of `table` for the given PK tuples, as (pk text, row text), ordered by PK.
Result<std::vector<std::pair<std::string, std::string>>> fetchRows(
    PgConnection& c, const mover::TableInfo& t, const std::vector<std::vector<PgParam>>& keys,
    const std::string& tenant) {
  std::vector<PgParam> arrays;
  std::string unnest;
  std::string match;
  std::string pk_text;
  for (size_t k = 0; k < t.primary_key.size(); ++k) {
    std::string arr = "{";
    for (size_t i = 0; i < keys.size(); ++i) {
      const PgParam& v = keys[i][k];
      if (i) arr += ",";
      if (!v) {
        arr += "NULL";
        continue;
      }
      arr += '"';
      for (char ch : *v) {
        if (ch == '"' || ch == '\\') arr += '\\';
        arr += ch;
      }
      arr += '"';
    }
    arr += "}";
    arrays.push_back(arr);
    const mover::ColumnInfo* col = t.column(t.primary_key[k]);
    const std::string type = col ? col->type : "text";
    unnest += (k ? ", " : "") + std::string("$") + std::to_string(k + 1) + "::" + type + "[]";
    const std::string q = common::quoteIdent(t.primary_key[k]);
    match += (k ? " AND " : "") + std::string("t.") + q + " = k.c" + std::to_string(k);
    pk_text += (k ? " || ',' || " : "") + std::string("coalesce(t.") + q + "::text, 'NULL')";
  }
  std::string cols;
  for (size_t k = 0; k < t.primary_key.size(); ++k) cols += (k ? ", c" : "c") + std::to_string(k);
  arrays.push_back(tenant);
  std::string sql = "SELECT " + pk_text + ", t::text FROM " + t.quoted() +
                    " t JOIN unnest(" + unnest + ") AS k(" + cols + ") ON " + match + " WHERE t." +
                    common::quoteIdent(t.tenant_column) + " = $" + std::to_string(arrays.size()) +
                    "";
  SM_ASSIGN_OR_RETURN(auto res, c.query(sql, arrays));
  std::vector<std::pair<std::string, std::string>> out;
  for (int r = 0; r < common::rowCount(res); ++r) {
    out.emplace_back(common::cell(res, r, 0), common::cell(res, r, 1));
  }
  std::sort(out.begin(), out.end());  // bytewise, as the merge below compares
  return out;
}

Result<std::vector<std::string>> tableDigest(PgConnection& c, const mover::TableInfo& t,
                                            const std::string& tenant) {
  std::string order;
  for (const auto& k : t.primary_key) order += (order.empty() ? "" : ", ") + common::quoteIdent(k);
  SM_ASSIGN_OR_RETURN(auto v, c.queryValue("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY " +
                                               order + ")), '') FROM " + t.quoted() + " t WHERE " +
                                               common::quoteIdent(t.tenant_column) + " = $1",
                                           {tenant}));
  return std::vector<std::string>{v.value_or("")};
}

}  // namespace

Result<std::vector<std::string>> recheckTouchedRows(PgConnection& src, PgConnection& dst,
                                                    const std::vector<mover::TableInfo>& tables,
                                                    const mover::TouchedKeys& touched,
                                                    const std::string& tenant,
                                                    uint64_t* rows_checked) {
  std::vector<std::string> diffs;
  SM_RETURN_IF_ERROR(src.exec(kPinnedSettings));
  SM_RETURN_IF_ERROR(dst.exec(kPinnedSettings));
  for (const auto& t : tables) {
    const bool whole = touched.overflowed || touched.whole_table.count(t.key()) > 0;
    if (whole) {
      SM_ASSIGN_OR_RETURN(auto a, tableDigest(src, t, tenant));
      SM_ASSIGN_OR_RETURN(auto b, tableDigest(dst, t, tenant));
      *rows_checked += std::stoull(a[0].substr(0, a[0].find(':')));
      if (a != b) diffs.push_back(t.key() + ": tenant rows differ (" + a[0] + " vs " + b[0] + ")");
      continue;
    }
    auto it = touched.keys.find(t.key());
    if (it == touched.keys.end() || it->second.empty()) continue;
    auto t0 = Clock::now();
    SM_ASSIGN_OR_RETURN(auto a, fetchRows(src, t, it->second, tenant));
    auto t1 = Clock::now();
    SM_ASSIGN_OR_RETURN(auto b, fetchRows(dst, t, it->second, tenant));
    spdlog::debug("re-check {}: {} keys, source {:.1f} ms, destination {:.1f} ms", t.key(),
                  it->second.size(), std::chrono::duration<double, std::milli>(t1 - t0).count(),
                  msSince(t1));
    *rows_checked += it->second.size();
    // Duplicated keys (a row touched twice) come back once per key occurrence; compare sets.
    auto dedupe = [](std::vector<std::pair<std::string, std::string>>& v) {
      v.erase(std::unique(v.begin(), v.end()), v.end());
    };
    dedupe(a);
    dedupe(b);
    size_t i = 0, j = 0;
    while (i < a.size() || j < b.size()) {
      if (j >= b.size() || (i < a.size() && a[i].first < b[j].first)) {
        diffs.push_back(t.key() + " (" + a[i].first + "): missing on the destination");
        ++i;
      } else if (i >= a.size() || b[j].first < a[i].first) {
        diffs.push_back(t.key() + " (" + b[j].first + "): extra on the destination");
        ++j;
      } else {
        if (a[i].second != b[j].second) diffs.push_back(t.key() + " (" + a[i].first + "): different");
        ++i;
        ++j;
      }
      if (diffs.size() > 20) return diffs;
    }
  }
  return diffs;
}

Result<CutoverReport> runCutover(CutoverContext& ctx, const CutoverOptions& o) {
  CutoverReport rep;
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
  char line[512];
  std::string out;
  if (r.flipped) {
    std::snprintf(line, sizeof line,
                  "cutover: FLIPPED (epoch %llu); writes unavailable "
                  "for %.1f ms (freeze -> flip)\n"
                  "  pre-check round trip %.1f ms; fence wait %.1f ms; drain %.1f ms; re-check of %llu "
                  "changed rows %.1f ms; %zu sequence(s) raised in %.1f ms\n",
                  static_cast<unsigned long long>(r.epoch_after), r.window_ms, r.precheck_ms,
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
