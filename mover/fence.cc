// Source write fence: see fence.h. The trigger function is generated per table so the tenant
// column is read directly (NEW."col"), not through dynamic SQL or jsonb per row.
#include "mover/fence.h"

#include <spdlog/spdlog.h>

#include <thread>

namespace stampmover::mover {

using common::PgConnection;
using common::quoteIdent;
using common::Result;
using common::Status;

namespace {

std::string functionName(const TableInfo& t) {
  return "stampmover.fence_" + std::to_string(t.oid);
}

// Runs `sql` in its own transaction with lock_timeout, retrying lock timeouts with backoff.
Status withLockRetries(PgConnection& src, const std::string& sql, const std::string& what,
                       const FenceInstallOptions& o) {
  auto backoff = o.backoff;
  for (uint32_t attempt = 1;; ++attempt) {
    Status st = src.exec("BEGIN; SET LOCAL lock_timeout = '" + std::to_string(o.lock_timeout.count()) +
                         "ms'; " + sql + "; COMMIT");
    if (st.isOk()) return st;
    src.exec("ROLLBACK").ignore();  // the transaction is already aborted; this only ends it
    if (st.errorClass() != common::ErrorClass::kRetryable || attempt >= o.attempts) {
      return st.withContext(what + " (after " + std::to_string(attempt) + " attempt(s))");
    }
    spdlog::warn("{}: {}; retrying in {} ms", what, st.message(), backoff.count());
    std::this_thread::sleep_for(backoff);
    backoff *= 2;
  }
}

}  // namespace

Status installFence(PgConnection& src, const std::vector<TableInfo>& tables,
                    const FenceInstallOptions& o) {
  SM_RETURN_IF_ERROR(src.exec(
      "CREATE SCHEMA IF NOT EXISTS stampmover; "
      "CREATE TABLE IF NOT EXISTS stampmover.fence (tenant text PRIMARY KEY, epoch bigint NOT NULL, "
      "fenced_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz NOT NULL DEFAULT 'infinity')"));
  for (const auto& t : tables) {
    SM_ASSIGN_OR_RETURN(bool present, fenceInstalled(src, t));
    if (present) continue;
    const std::string col = quoteIdent(t.tenant_column);
    const std::string fn = functionName(t);
    const std::string body =
        "CREATE OR REPLACE FUNCTION " + fn + "() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN "
        "IF (TG_OP <> 'DELETE' AND EXISTS (SELECT 1 FROM stampmover.fence WHERE tenant = NEW." + col +
        "::text AND expires_at > clock_timestamp())) OR (TG_OP <> 'INSERT' AND EXISTS (SELECT 1 FROM "
        "stampmover.fence WHERE tenant = OLD." + col + "::text AND expires_at > clock_timestamp())) THEN RAISE EXCEPTION 'tenant is being moved to another stamp; retry shortly' "
        "USING ERRCODE = '" + kFenceSqlState + "'; END IF; "
        "IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW; END $f$";
    SM_RETURN_IF_ERROR(src.exec(body));
    SM_RETURN_IF_ERROR(withLockRetries(
        src,
        "CREATE TRIGGER stampmover_fence BEFORE INSERT OR UPDATE OR DELETE ON " + t.quoted() +
            " FOR EACH ROW EXECUTE FUNCTION " + fn + "()",
        "install fence trigger on " + t.key(), o));
  }
  return Status::ok();
}

Result<bool> fenceInstalled(PgConnection& src, const TableInfo& t) {
  SM_ASSIGN_OR_RETURN(auto v, src.queryValue("SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::oid "
                                             "AND tgname = 'stampmover_fence'",
                                             {std::to_string(t.oid)}));
  return v.value_or("0") != "0";
}

Result<uint64_t> fenceTenant(PgConnection& src, const std::string& tenant, uint64_t epoch,
                             std::chrono::milliseconds ttl) {
  SM_RETURN_IF_ERROR(src.exec("BEGIN"));
  auto r = src.query("INSERT INTO stampmover.fence (tenant, epoch, expires_at) VALUES ($1, $2, "
                     "clock_timestamp() + $3 * interval '1 millisecond') "
                     "ON CONFLICT (tenant) DO UPDATE SET epoch = EXCLUDED.epoch, fenced_at = now(), "
                     "expires_at = EXCLUDED.expires_at RETURNING pg_current_xact_id()::text",
                     {tenant, std::to_string(epoch), std::to_string(ttl.count())});
  if (!r) {
    src.exec("ROLLBACK").ignore();  // reporting the insert's error
    return r.status();
  }
  uint64_t xid = std::stoull(common::cell(*r, 0, 0));
  SM_RETURN_IF_ERROR(src.exec("COMMIT"));
  return xid;
}

Status waitForOlderTransactions(PgConnection& src, uint64_t fence_xid,
                                std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    // The oldest transaction still running; every one older than the fence must be gone.
    SM_ASSIGN_OR_RETURN(auto xmin, src.queryValue("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"));
    if (xmin && std::stoull(*xmin) > fence_xid) return Status::ok();
    if (std::chrono::steady_clock::now() >= deadline) {
      SM_ASSIGN_OR_RETURN(auto who, src.queryValue(
                                        "SELECT pid::text || ' (' || coalesce(application_name, '') || "
                                        "', started ' || xact_start::text || ')' FROM pg_stat_activity "
                                        "WHERE backend_xid IS NOT NULL AND backend_xid::text::bigint <= "
                                        "$1::bigint % 4294967296 ORDER BY xact_start LIMIT 1",
                                        {std::to_string(fence_xid)}));
      return Status::retryable(src.label() + ": transactions older than the fence still running after " +
                               std::to_string(timeout.count()) + " ms (oldest: " +
                               who.value_or("unknown") + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

Status extendFence(PgConnection& src, const std::string& tenant) {
  SM_ASSIGN_OR_RETURN(auto r, src.query("UPDATE stampmover.fence SET expires_at = 'infinity' "
                                        "WHERE tenant = $1 AND expires_at > clock_timestamp()",
                                        {tenant}));
  if (std::string(PQcmdTuples(r.get())) != "1") {
    return Status::retryable(src.label() + ": the fence of tenant " + tenant +
                             " expired before the flip");
  }
  return Status::ok();
}

Status unfenceTenant(PgConnection& src, const std::string& tenant) {
  auto r = src.query("DELETE FROM stampmover.fence WHERE tenant = $1", {tenant});
  if (!r && r.status().message().find("does not exist") != std::string::npos) return Status::ok();
  return r.status();
}

Status uninstallFence(PgConnection& src, const std::vector<TableInfo>& tables,
                      const FenceInstallOptions& o) {
  SM_ASSIGN_OR_RETURN(auto n, src.queryValue("SELECT count(*) FROM pg_class WHERE relname = 'fence' "
                                             "AND relnamespace = 'stampmover'::regnamespace"));
  if (n.value_or("0") == "0") return Status::ok();
  SM_ASSIGN_OR_RETURN(auto fenced, src.queryValue("SELECT count(*) FROM stampmover.fence"));
  if (fenced.value_or("0") != "0") return Status::ok();  // another tenant is mid-cutover
  for (const auto& t : tables) {
    SM_RETURN_IF_ERROR(withLockRetries(src, "DROP TRIGGER IF EXISTS stampmover_fence ON " + t.quoted(),
                                       "remove fence trigger from " + t.key(), o));
    SM_RETURN_IF_ERROR(src.exec("DROP FUNCTION IF EXISTS " + functionName(t) + "()"));
  }
  SM_ASSIGN_OR_RETURN(auto left, src.queryValue("SELECT count(*) FROM pg_trigger WHERE tgname = 'stampmover_fence'"));
  if (left.value_or("0") == "0") SM_RETURN_IF_ERROR(src.exec("DROP TABLE IF EXISTS stampmover.fence"));
  return Status::ok();
}

}  // namespace stampmover::mover
