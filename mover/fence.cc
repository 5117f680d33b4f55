// Stamp write fence: see fence.h. The row trigger function is generated per table so the tenant
// column is read directly (NEW."col"), not through dynamic SQL or jsonb per row.
//
// Why the triggers look the way they do (measured on PostgreSQL 15, server CPU per single-row
// autocommit UPDATE of a tenant that is not fenced; see bench/cutover_bench.cc for the client
// figure):
//   - BEFORE UPDATE/DELETE row triggers make the executor lock the old tuple before the trigger
//     runs (GetTupleForTrigger), and a BEFORE INSERT row trigger turns COPY into row-at-a-time
//     inserts; AFTER row triggers cost neither. An exception in an AFTER row trigger (fired at
//     the end of the statement) aborts the statement just the same, so the fence holds.
//   - A WHEN clause is compiled once per statement (parsed from its node string, simplified,
//     initialized): a one-function WHEN is nearly free, a per-tenant hash test inside WHEN costs
//     more than a PL/pgSQL call. So WHEN only asks "is anyone fenced?" (the mask is non-zero),
//     and the per-tenant Bloom test is the trigger function's first, query-free statement.
//   - A PL/pgSQL IF whose condition contains a subquery runs through the executor on every
//     call, even when a cheap AND operand is false; the EXISTS on stampmover.fence is therefore
//     a separate IF reached only when the writer's bit is set.
// The mask is a sequence because a sequence value is shared, non-transactional and readable
// with one function call (pg_sequence_last_value); it is maintained under an advisory lock so
// that it always covers every committed live fence row (see recomputeMaskSql).
#include "mover/fence.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <thread>

namespace stampmover::mover {

using common::PgConnection;
using common::quoteIdent;
using common::Result;
using common::Status;

namespace {

// Advisory lock keys (two int4 keys: an arbitrary class for stampmover, then the purpose).
// kInstallLock serializes acquire/release and the DDL they do; kMaskLock serializes every write
// of the fence table with the recomputation of the mask. Never taken in the other order.
constexpr const char* kInstallLock = "SELECT pg_advisory_xact_lock(1936549997, 1)";
constexpr const char* kMaskLock = "SELECT pg_advisory_xact_lock(1936549997, 2)";

constexpr const char* kLegacyTrigger = "stampmover_fence";   // BEFORE row trigger of older versions
constexpr const char* kRowTrigger = "stampmover_fence_row";  // kFenceTriggerNames[0]

// The stamp is armed when one fence row trigger fires in ordinary sessions; armFence() arms
// every one of them, so a stamp is armed everywhere or nowhere (new triggers take its state).
constexpr const char* kStampArmedSql =
    "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'stampmover_fence_row' AND tgenabled "
    "= 'O')";
// The fence row triggers that do not fire in ordinary sessions: dormant ones ('D'), or set by
// hand to fire only (or also) in apply sessions ('R', 'A').
constexpr const char* kUnarmedSql =
    "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = 'stampmover_fence_row' AND "
    "tgenabled <> 'O' ORDER BY 1";
constexpr const char* kMask = "'stampmover.fence_mask'::regclass";

// The mask as of now: one bit per live fenced tenant (hashtext, 64 buckets). Run under
// kMaskLock, in a statement of its own (so its snapshot is taken after the lock is held and sees
// every committed fence row). Expired rows are left out: they fence nothing, and an expired row
// can only come back through fenceTenant(), which recomputes.
// An empty mask is stored as "never called" (setval(..., 0, false)), which
// pg_sequence_last_value() reports as NULL: the triggers' WHEN is a NullTest (see top of file).
constexpr const char* kRecomputeMaskSql =
    "SELECT setval('stampmover.fence_mask', m, m <> 0) FROM (SELECT coalesce((SELECT "
    "bit_or(1::bigint << (hashtext(tenant) & 63)) FROM stampmover.fence WHERE expires_at > "
    "clock_timestamp()), 0) AS m) s";

std::string rowFunctionName(uint32_t oid) { return "stampmover.fence_row_" + std::to_string(oid); }
std::string legacyFunctionName(uint32_t oid) { return "stampmover.fence_" + std::to_string(oid); }

std::string lockTimeoutSql(const FenceInstallOptions& o) {
  return "SET LOCAL lock_timeout = '" + std::to_string(o.lock_timeout.count()) + "ms'";
}

// Runs `body` in a transaction holding kInstallLock with lock_timeout set, retrying retryable
// failures (lock timeouts above all) with backoff. `body` runs after the lock is held, so its
// statements see everything committed by earlier holders.
Status withInstallLock(PgConnection& c, const FenceInstallOptions& o, const std::string& what,
                       const std::function<Status()>& body) {
  auto backoff = o.backoff;
  for (uint32_t attempt = 1;; ++attempt) {
    Status st = c.exec("BEGIN; " + lockTimeoutSql(o) + "; " + kInstallLock);
    if (st.isOk()) st = body();
    if (st.isOk()) st = c.exec("COMMIT");
    if (st.isOk()) return st;
    c.exec("ROLLBACK").ignore();  // the transaction is already aborted; this only ends it
    if (st.errorClass() != common::ErrorClass::kRetryable || attempt >= o.attempts) {
      return st.withContext(what + " (after " + std::to_string(attempt) + " attempt(s))");
    }
    spdlog::warn("{}: {}; retrying in {} ms", what, st.message(), backoff.count());
    std::this_thread::sleep_for(backoff);
    backoff *= 2;
  }
}

// `name` is schema.relation. Read from pg_class under the statement's own snapshot, not with
// to_regclass(): that looks the name up without a lock, through this session's catalog cache,
// which may still hold a table another session dropped while we waited for kInstallLock (the
// cache catches up only when a lock is taken), so a query naming the table then fails with
// 42P01.
Result<bool> relationExists(PgConnection& c, const char* name) {
  SM_ASSIGN_OR_RETURN(
      auto v, c.queryValue("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN "
                           "pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE "
                           "n.nspname = split_part($1, '.', 1) AND c.relname = split_part($1, '.', 2))",
                           {std::string(name)}));
  return v.value_or("f") == "t";
}

std::string oidArray(const std::vector<uint32_t>& oids) {
  std::string a = "{";
  for (size_t i = 0; i < oids.size(); ++i) a += (i ? "," : "") + std::to_string(oids[i]);
  return a + "}";
}

// The fence's schema objects. The writers of tenant tables run the WHEN clause and the trigger
// functions with their own rights, so they get read access to the fence table and the mask
// (fenced tenant keys are not secret; nothing else in the schema is granted).
constexpr const char* kSchemaSql =
    "CREATE SCHEMA IF NOT EXISTS stampmover; "
    "CREATE TABLE IF NOT EXISTS stampmover.fence (tenant text PRIMARY KEY, epoch bigint NOT NULL, "
    "fenced_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz NOT NULL DEFAULT "
    "'infinity'); "
    "CREATE TABLE IF NOT EXISTS stampmover.fence_users (migration_id text NOT NULL, table_oid oid "
    "NOT NULL, acquired_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (migration_id, "
    "table_oid)); "
    "CREATE SEQUENCE IF NOT EXISTS stampmover.fence_mask AS bigint MINVALUE -9223372036854775808 "
    "MAXVALUE 9223372036854775807 START 0; "
    "GRANT USAGE ON SCHEMA stampmover TO PUBLIC; "
    "GRANT SELECT ON stampmover.fence TO PUBLIC; "
    "GRANT SELECT ON SEQUENCE stampmover.fence_mask TO PUBLIC; "
    // TRUNCATE removes every tenant's rows, so it is refused while any tenant of the stamp is
    // fenced (the applier never truncates: a source TRUNCATE becomes a tenant-scoped DELETE,
    // and apply sessions run as replica, where this trigger does not fire).
    "CREATE OR REPLACE FUNCTION stampmover.fence_truncate() RETURNS trigger LANGUAGE plpgsql AS "
    "$f$ BEGIN "
    "IF EXISTS (SELECT 1 FROM stampmover.fence WHERE expires_at > clock_timestamp()) THEN "
    "RAISE EXCEPTION 'TRUNCATE of %.% refused: a tenant is being moved to another stamp; retry "
    "shortly, or delete by tenant', TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = '55P04'; "
    "END IF; RETURN NULL; END $f$";

// The row trigger function of one table (AFTER INSERT/UPDATE/DELETE; the result is ignored).
std::string rowFunctionSql(const TableInfo& t) {
  const std::string col = quoteIdent(t.tenant_column);
  auto check = [&](const std::string& rec) {
    // First the query-free Bloom test, then (rarely) the lookup. A NULL tenant is never fenced.
    return "IF (m & (1::bigint << (hashtext(" + rec + "." + col +
           "::text) & 63))) <> 0 THEN "
           "IF EXISTS (SELECT 1 FROM stampmover.fence WHERE tenant = " +
           rec + "." + col +
           "::text AND expires_at > clock_timestamp()) THEN "
           "RAISE EXCEPTION 'tenant is being moved to another stamp; retry shortly' "
           "USING ERRCODE = '" +
           std::string(kFenceSqlState) + "'; END IF; END IF; ";
  };
  return "CREATE OR REPLACE FUNCTION " + rowFunctionName(t.oid) +
         "() RETURNS trigger LANGUAGE plpgsql AS $f$ DECLARE m bigint; BEGIN "
         "m := coalesce(pg_sequence_last_value(" +
         kMask +
         "), 0); "
         "IF TG_OP <> 'DELETE' THEN " +
         check("NEW") +
         "END IF; "
         // Moving a row out of a fenced tenant is a write of that tenant too.
         "IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD." +
         col + " IS DISTINCT FROM NEW." + col + ") THEN " + check("OLD") +
         "END IF; "
         "RETURN NULL; END $f$";
}

// The row trigger's WHEN clause. pg_get_triggerdef() prints it back as
// "(pg_sequence_last_value('stampmover.fence_mask'::regclass) IS NOT NULL)"; a row trigger whose
// definition lacks kWhenMarker is an older version's (IS DISTINCT FROM 0: it fires on the NULL
// that now means "nobody fenced", which is safe but slow) and acquireFence() replaces it.
constexpr const char* kWhenSql =
    "pg_sequence_last_value('stampmover.fence_mask'::regclass) IS NOT NULL";
constexpr const char* kWhenMarker = "IS NOT NULL";

// Drops whatever fence triggers `table_sql` has and creates both (one transaction, the
// caller's), the row trigger dormant (disabled) unless `armed`. One row trigger for the three
// events: the WHEN clause names neither NEW nor OLD, and every trigger on a table is copied for
// every statement that writes it (fewer is cheaper).
std::string createTriggersSql(const std::string& table_sql, uint32_t oid, bool armed) {
  const std::string when = " FOR EACH ROW WHEN (" + std::string(kWhenSql) + ") EXECUTE FUNCTION " +
                           rowFunctionName(oid) + "()";
  std::string sql =
      "DROP TRIGGER IF EXISTS " + std::string(kLegacyTrigger) + " ON " + table_sql + "; ";
  for (const char* name : kFenceTriggerNames) {
    sql += "DROP TRIGGER IF EXISTS " + std::string(name) + " ON " + table_sql + "; ";
  }
  sql += "CREATE TRIGGER " + std::string(kRowTrigger) + " AFTER INSERT OR UPDATE OR DELETE ON " +
         table_sql + when + "; ";
  sql += "CREATE TRIGGER stampmover_fence_truncate BEFORE TRUNCATE ON " + table_sql +
         " FOR EACH STATEMENT EXECUTE FUNCTION stampmover.fence_truncate(); ";
  if (!armed) sql += "ALTER TABLE " + table_sql + " DISABLE TRIGGER " + kRowTrigger + "; ";
  sql += "DROP FUNCTION IF EXISTS " + legacyFunctionName(oid) + "()";
  return sql;
}

// Fence triggers per table oid: name -> tgenabled ('O': fires in ordinary sessions, not in
// apply sessions; 'D': disabled, i.e. a dormant row trigger), plus kOutdatedKey when the row
// trigger has an older version's WHEN clause (it still fences, so checkFenceInPlace accepts it;
// acquireFence replaces it).
constexpr const char* kOutdatedKey = " outdated WHEN";
using TriggerMap = std::map<uint32_t, std::map<std::string, char>>;

Result<TriggerMap> fenceTriggers(PgConnection& c, const std::vector<uint32_t>& oids) {
  SM_ASSIGN_OR_RETURN(auto r,
                      c.query("SELECT tgrelid::text, tgname, tgenabled, tgname = "
                              "'stampmover_fence_row' AND strpos(pg_get_triggerdef(oid), $2) = 0 "
                              "FROM pg_trigger WHERE tgrelid = ANY($1::oid[]) AND (tgname LIKE "
                              "'stampmover\\_fence\\_%' OR tgname = 'stampmover_fence')",
                              {oidArray(oids), std::string(kWhenMarker)}));
  TriggerMap out;
  for (int i = 0; i < common::rowCount(r); ++i) {
    auto& mine = out[static_cast<uint32_t>(std::stoul(common::cell(r, i, 0)))];
    const std::string state = common::cell(r, i, 2);
    mine[common::cell(r, i, 1)] = state.empty() ? 'D' : state[0];
    if (common::cell(r, i, 3) == "t") mine[kOutdatedKey] = 'O';
  }
  return out;
}

// The triggers of kFenceTriggerNames that `have` lacks or has disabled; a legacy trigger counts
// as something to replace. The row trigger is not counted when merely dormant: arming
// (armFence) enables it.
std::vector<std::string> missingTriggers(const std::map<std::string, char>& have) {
  std::vector<std::string> out;
  for (const char* name : kFenceTriggerNames) {
    auto it = have.find(name);
    if (it == have.end())
      out.push_back(std::string(name) + " missing");
    else if (it->second != 'O' && std::string(name) != kRowTrigger)
      out.push_back(std::string(name) + " disabled");
  }
  if (have.count(kLegacyTrigger)) out.push_back(std::string(kLegacyTrigger) + " (old version)");
  return out;
}

std::vector<uint32_t> oidsOf(const std::vector<TableInfo>& tables) {
  std::vector<uint32_t> oids;
  for (const auto& t : tables) oids.push_back(t.oid);
  return oids;
}

// Schema objects, per-table functions, users; then the triggers table by table, in the stamp's
// state (armed or dormant), or armed everywhere when `arm`.
Status makeFenceComplete(PgConnection& c, const std::vector<TableInfo>& tables,
                         const std::string& migration_id, const FenceInstallOptions& o, bool arm) {
  SM_RETURN_IF_ERROR(withInstallLock(c, o, "install the fence's schema objects", [&]() -> Status {
    SM_RETURN_IF_ERROR(c.exec(kSchemaSql));
    // Functions first: creating them takes no lock on the tables. The name is not the legacy
    // trigger's function (BEFORE, RETURN NEW): replacing that body while the legacy trigger is
    // still in place would make it swallow every write.
    for (const auto& t : tables) SM_RETURN_IF_ERROR(c.exec(rowFunctionSql(t)));
    SM_RETURN_IF_ERROR(c.exec(std::string(kMaskLock) + "; " + kRecomputeMaskSql));
    if (!migration_id.empty()) {
      SM_RETURN_IF_ERROR(c.query("INSERT INTO stampmover.fence_users (migration_id, table_oid) "
                                 "SELECT $1, unnest($2::oid[]) ON CONFLICT DO NOTHING",
                                 {migration_id, oidArray(oidsOf(tables))})
                             .status());
    }
    return Status::ok();
  }));
  SM_ASSIGN_OR_RETURN(auto have, fenceTriggers(c, oidsOf(tables)));
  for (const auto& t : tables) {
    if (missingTriggers(have[t.oid]).empty() && !have[t.oid].count(kOutdatedKey)) continue;
    SM_RETURN_IF_ERROR(
        withInstallLock(c, o, "install fence triggers on " + t.key(), [&]() -> Status {
          // Under kInstallLock: an armFence() elsewhere has either armed the stamp or not begun.
          SM_ASSIGN_OR_RETURN(auto armed, c.queryValue(kStampArmedSql));
          return c.exec(createTriggersSql(t.quoted(), t.oid, arm || armed.value_or("f") == "t"));
        }));
  }
  return arm ? armFence(c, o) : Status::ok();
}

// Drops the fence triggers from each table of `oids` that no user needs, while no tenant is
// fenced; then the fence's objects when nothing is left. Each table is one transaction under
// kInstallLock, so an acquire cannot slip in between the check and the drop. Which of the
// fence's tables exist is read inside each locked transaction, never before it: migrations
// sharing the stamp install and tear them down concurrently (read before the lock, a teardown
// that dropped fence_users meanwhile failed this one with "relation does not exist", and a
// fence_users created meanwhile was taken for "no users", dropping triggers another needed).
Status dropUnusedFence(PgConnection& c, const std::vector<uint32_t>& oids,
                       const FenceInstallOptions& o) {
  auto neededSql = [&c]() -> Result<std::string> {
    SM_ASSIGN_OR_RETURN(bool have_fence, relationExists(c, "stampmover.fence"));
    SM_ASSIGN_OR_RETURN(bool have_users, relationExists(c, "stampmover.fence_users"));
    return std::string("SELECT ") +
           (have_users ? "EXISTS (SELECT 1 FROM stampmover.fence_users WHERE table_oid = $1::oid)"
                       : "$1::oid IS NULL") +
           " OR " +
           (have_fence
                ? "EXISTS (SELECT 1 FROM stampmover.fence WHERE expires_at > clock_timestamp())"
                : "false");
  };
  SM_ASSIGN_OR_RETURN(auto have, fenceTriggers(c, oids));
  for (uint32_t oid : oids) {
    if (have[oid].empty()) continue;
    SM_RETURN_IF_ERROR(withInstallLock(
        c, o, "remove fence triggers from table oid " + std::to_string(oid), [&]() -> Status {
          SM_ASSIGN_OR_RETURN(const std::string needed, neededSql());
          SM_ASSIGN_OR_RETURN(auto keep, c.queryValue(needed, {std::to_string(oid)}));
          if (keep.value_or("t") == "t") return Status::ok();  // a user or a fenced tenant
          SM_ASSIGN_OR_RETURN(
              auto name, c.queryValue("SELECT $1::oid::regclass::text", {std::to_string(oid)}));
          if (!name) return Status::ok();  // cannot happen: the triggers were there
          std::string sql =
              "DROP TRIGGER IF EXISTS " + std::string(kLegacyTrigger) + " ON " + *name;
          for (const char* t : kFenceTriggerNames)
            sql += "; DROP TRIGGER IF EXISTS " + std::string(t) + " ON " + *name;
          sql += "; DROP FUNCTION IF EXISTS " + rowFunctionName(oid) +
                 "(); DROP FUNCTION IF EXISTS " + legacyFunctionName(oid) + "()";
          return c.exec(sql);
        }));
  }
  {
    SM_ASSIGN_OR_RETURN(bool have_fence, relationExists(c, "stampmover.fence"));
    SM_ASSIGN_OR_RETURN(bool have_users, relationExists(c, "stampmover.fence_users"));
    if (!have_fence && !have_users) return Status::ok();  // nothing of ours to remove now
  }
  return withInstallLock(c, o, "remove the fence's schema objects", [&]() -> Status {
    SM_ASSIGN_OR_RETURN(bool have_fence, relationExists(c, "stampmover.fence"));
    SM_ASSIGN_OR_RETURN(bool have_users, relationExists(c, "stampmover.fence_users"));
    SM_ASSIGN_OR_RETURN(
        auto left,
        c.queryValue(
            std::string("SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE "
                        "'stampmover\\_fence\\_%' "
                        "OR tgname = 'stampmover_fence') + ") +
            (have_users ? "(SELECT count(*) FROM stampmover.fence_users)" : "0") + " + " +
            (have_fence
                 ? "(SELECT count(*) FROM stampmover.fence WHERE expires_at > clock_timestamp())"
                 : "0")));
    if (left.value_or("1") != "0") return Status::ok();
    // Functions of tables that were dropped or never had triggers here.
    SM_ASSIGN_OR_RETURN(auto fns, c.query("SELECT p.oid::regprocedure::text FROM pg_proc p WHERE "
                                          "p.pronamespace = 'stampmover'::regnamespace AND "
                                          "p.proname ~ '^fence_(row_)?[0-9]+$'"));
    std::string sql =
        "DROP TABLE IF EXISTS stampmover.fence_users, stampmover.fence; "
        "DROP SEQUENCE IF EXISTS stampmover.fence_mask; "
        "DROP FUNCTION IF EXISTS stampmover.fence_truncate()";
    for (int i = 0; i < common::rowCount(fns); ++i)
      sql += "; DROP FUNCTION IF EXISTS " + common::cell(fns, i, 0);
    return c.exec(sql);
  });
}

std::string xid32(uint64_t xid) { return std::to_string(xid % 4294967296ULL); }

// pg_stat_activity shows other roles' backend_xid, backend_xmin, state and xact_start only to
// superusers and members of pg_read_all_stats; to anyone else those sessions look idle, and the
// wait would return with them still running. Refuse instead.
Status canSeeAllSessions(PgConnection& c) {
  SM_ASSIGN_OR_RETURN(auto ok, c.queryValue("SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = "
                                            "current_user) OR pg_has_role(current_user, "
                                            "'pg_read_all_stats', 'USAGE')"));
  if (ok.value_or("f") == "t") return Status::ok();
  SM_ASSIGN_OR_RETURN(auto role, c.queryValue("SELECT current_user::text"));
  return Status::refused(c.label() + ": role " + role.value_or("?") +
                         " cannot see other sessions' transactions in pg_stat_activity, so the "
                         "fence cannot wait them out; GRANT pg_read_all_stats TO " +
                         quoteIdent(role.value_or("?")));
}

}  // namespace

Status acquireFence(PgConnection& c, const std::vector<TableInfo>& tables,
                    const std::string& migration_id, const FenceInstallOptions& o) {
  if (migration_id.empty()) return Status::refused("acquireFence: empty migration id");
  return makeFenceComplete(c, tables, migration_id, o, false);
}

Status releaseFence(PgConnection& c, const std::string& migration_id,
                    const std::vector<TableInfo>& tables, const FenceInstallOptions& o) {
  std::set<uint32_t> oids;
  for (const auto& t : tables) oids.insert(t.oid);
  if (!migration_id.empty()) {
    SM_RETURN_IF_ERROR(
        withInstallLock(c, o, "release the fence for " + migration_id, [&]() -> Status {
          // Read under the lock: another migration's teardown may have dropped it just now.
          SM_ASSIGN_OR_RETURN(bool have_users, relationExists(c, "stampmover.fence_users"));
          if (!have_users) return Status::ok();
          SM_ASSIGN_OR_RETURN(auto r,
                              c.query("DELETE FROM stampmover.fence_users WHERE migration_id = $1 "
                                      "RETURNING table_oid::text",
                                      {migration_id}));
          for (int i = 0; i < common::rowCount(r); ++i)
            oids.insert(static_cast<uint32_t>(std::stoul(common::cell(r, i, 0))));
          return Status::ok();
        }));
  }
  return dropUnusedFence(c, std::vector<uint32_t>(oids.begin(), oids.end()), o);
}

Status installFence(PgConnection& c, const std::vector<TableInfo>& tables,
                    const FenceInstallOptions& o) {
  return makeFenceComplete(c, tables, "", o, true);
}

Status armFence(PgConnection& c, const FenceInstallOptions& o) {
  SM_ASSIGN_OR_RETURN(auto r, c.query(kUnarmedSql));
  for (int i = 0; i < common::rowCount(r); ++i) {
    const std::string table = common::cell(r, i, 0);  // regclass text: quoted as needed
    SM_RETURN_IF_ERROR(withInstallLock(c, o, "arm the fence on " + table, [&] {
      return c.exec("ALTER TABLE " + table + " ENABLE TRIGGER " + kRowTrigger);
    }));
  }
  if (common::rowCount(r) > 0) {
    spdlog::info("{}: armed the write fence on {} table(s)", c.label(), common::rowCount(r));
  }
  return Status::ok();
}

Status uninstallFence(PgConnection& c, const std::vector<TableInfo>& tables,
                      const FenceInstallOptions& o) {
  return dropUnusedFence(c, oidsOf(tables), o);
}

Result<bool> fenceInstalled(PgConnection& c, const TableInfo& t) {
  SM_ASSIGN_OR_RETURN(auto have, fenceTriggers(c, {t.oid}));
  auto& mine = have[t.oid];
  return missingTriggers(mine).empty();
}

Status checkFenceInPlace(PgConnection& c, const std::vector<TableInfo>& tables,
                         const FenceInstallOptions& o) {
  SM_ASSIGN_OR_RETURN(bool have_fence, relationExists(c, "stampmover.fence"));
  SM_ASSIGN_OR_RETURN(bool have_mask, relationExists(c, "stampmover.fence_mask"));
  if (!have_fence || !have_mask) {
    return Status::refused(c.label() +
                           ": the write fence is not installed (stampmover.fence or "
                           "stampmover.fence_mask missing); rerun the cutover, which installs it");
  }
  SM_RETURN_IF_ERROR(canSeeAllSessions(c));
  SM_ASSIGN_OR_RETURN(auto have, fenceTriggers(c, oidsOf(tables)));
  std::string problems;
  for (const auto& t : tables) {
    auto missing = missingTriggers(have[t.oid]);
    if (missing.empty()) continue;
    problems += problems.empty() ? "" : "; ";
    problems += t.key() + ": ";
    for (size_t i = 0; i < missing.size(); ++i) problems += (i ? ", " : "") + missing[i];
  }
  if (!problems.empty()) {
    return Status::refused(c.label() + ": the write fence is not in place (" + problems +
                           "); not freezing. Rerun the cutover, which reinstalls the triggers "
                           "outside the window (acquireFence), and find out who removed them");
  }
  SM_RETURN_IF_ERROR(armFence(c, o));
  // A live fence whose bit is not in the mask is not enforced. Only a hand-made change gets
  // here (e.g. setval on the mask); put it right before anyone relies on it.
  SM_ASSIGN_OR_RETURN(
      auto stale,
      c.queryValue("SELECT count(*) FROM stampmover.fence WHERE expires_at > clock_timestamp() AND "
                   "(coalesce(pg_sequence_last_value('stampmover.fence_mask'::regclass), 0) & "
                   "(1::bigint << (hashtext(tenant) & 63))) = 0"));
  if (stale.value_or("0") != "0") {
    spdlog::warn("{}: the fence mask missed {} fenced tenant(s); recomputing it", c.label(),
                 *stale);
    SM_RETURN_IF_ERROR(
        c.exec(std::string("BEGIN; ") + kMaskLock + "; " + kRecomputeMaskSql + "; COMMIT"));
  }
  return Status::ok();
}

Result<std::vector<std::string>> fenceUsers(PgConnection& c) {
  std::vector<std::string> out;
  SM_ASSIGN_OR_RETURN(bool have_users, relationExists(c, "stampmover.fence_users"));
  if (!have_users) return out;
  SM_ASSIGN_OR_RETURN(auto r, c.query("SELECT DISTINCT migration_id FROM stampmover.fence_users "
                                      "ORDER BY 1"));
  for (int i = 0; i < common::rowCount(r); ++i) out.push_back(common::cell(r, i, 0));
  return out;
}

Result<uint64_t> fenceTenant(PgConnection& src, const std::string& tenant, uint64_t epoch,
                             std::chrono::milliseconds ttl) {
  // kMaskLock first (an unfence recomputing the mask at the same moment would otherwise drop
  // this tenant's bit); the mask is set before COMMIT, so no writer can see the fence row
  // without seeing its bit. lock_timeout bounds the lock waits by the fence's own lifetime.
  Status begun = src.exec("BEGIN; SET LOCAL lock_timeout = '" +
                          std::to_string(std::max<int64_t>(1, ttl.count())) + "ms'; " + kMaskLock);
  if (!begun.isOk()) {
    src.exec("ROLLBACK").ignore();  // reporting the lock's error
    return begun;
  }
  // A fence row is enforced only where the row triggers are armed (arming is DDL: never here;
  // armFence() runs before, outside the window, and nothing disarms a trigger: release drops
  // triggers only from tables no migration uses).
  auto unarmed = src.query(kUnarmedSql);
  if (!unarmed) {
    src.exec("ROLLBACK").ignore();  // reporting the query's error
    return unarmed.status();
  }
  if (common::rowCount(*unarmed) > 0) {
    src.exec("ROLLBACK").ignore();  // nothing written
    std::string list;
    for (int i = 0; i < common::rowCount(*unarmed); ++i)
      list += (i ? ", " : "") + common::cell(*unarmed, i, 0);
    return Status::refused(src.label() + ": not fencing tenant " + tenant +
                           ": the write fence is not armed on " + list +
                           " (its row trigger is dormant or disabled), so the fence would not be "
                           "enforced there; arm it outside the window first (checkFenceInPlace, "
                           "which the cutover runs before each freeze)");
  }
  auto r = src.query(
      "INSERT INTO stampmover.fence (tenant, epoch, expires_at) VALUES ($1, $2, "
      "clock_timestamp() + $3 * interval '1 millisecond') "
      "ON CONFLICT (tenant) DO UPDATE SET epoch = EXCLUDED.epoch, fenced_at = now(), "
      "expires_at = EXCLUDED.expires_at RETURNING pg_current_xact_id()::text",
      {tenant, std::to_string(epoch), std::to_string(ttl.count())});
  Status st = r.status();
  if (st.isOk()) st = src.exec(std::string(kRecomputeMaskSql) + "; COMMIT");
  if (!st.isOk()) {
    src.exec("ROLLBACK").ignore();  // reporting the insert's or the commit's error
    return st;
  }
  return static_cast<uint64_t>(std::stoull(common::cell(*r, 0, 0)));
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
  SM_ASSIGN_OR_RETURN(bool have_fence, relationExists(src, "stampmover.fence"));
  if (!have_fence) return Status::ok();
  SM_RETURN_IF_ERROR(
      src.query("DELETE FROM stampmover.fence WHERE tenant = $1", {tenant}).status());
  // The bit goes only after the delete committed, in a transaction of its own: had it gone
  // before a commit that then failed, the still-fenced tenant would be writable.
  SM_ASSIGN_OR_RETURN(bool have_mask, relationExists(src, "stampmover.fence_mask"));
  if (!have_mask) return Status::ok();  // a fence installed by an older version
  Status st = src.exec(std::string("BEGIN; ") + kMaskLock + "; " + kRecomputeMaskSql + "; COMMIT");
  if (!st.isOk()) {
    src.exec("ROLLBACK").ignore();  // the mask keeps a stale bit: slower for a few, never unsafe
    spdlog::warn("{}: the fence mask was not recomputed after unfencing tenant {}: {}", src.label(),
                 tenant, st.message());
  }
  return Status::ok();
}

// Which sessions are waited for, and why (see fence.h):
//   - Only this database's: PostgreSQL has no cross-database writes (dblink and postgres_fdw
//     open a session of their own in this database, which is then listed here).
//   - Not walsenders (they stream; a standby's hot_standby_feedback xmin shows up on them),
//     autovacuum (never writes user rows) or logical replication workers (they apply as
//     replica, which the fence lets through anyway, as it does our own apply sessions).
//   - A backend with neither an xid nor a snapshot is not waited for even if its transaction
//     began before the fence: it has written nothing (writing assigns an xid), and whatever it
//     runs next takes a snapshot after the commit and sees the fence row (READ COMMITTED takes
//     one per statement; REPEATABLE READ takes its only one at its first statement, not at
//     BEGIN). The same holds for a READ COMMITTED statement that started before the commit:
//     while it runs, its snapshot pins backend_xmin <= fence_xid and we wait; PL/pgSQL runs
//     the trigger's lookup with a fresh snapshot in READ COMMITTED, so rows it writes after
//     the commit are refused, and rows written before give it an xid we wait for.
//   - Why xids and not xact_start against the fence's commit time: a snapshot taken before the
//     commit always has xmin <= fence_xid (the fence's xid was either running or not yet
//     assigned, i.e. >= the snapshot's xmax), which also catches a transaction that started
//     after the commit but imported an older snapshot (SET TRANSACTION SNAPSHOT), and needs no
//     clock: xact_start is a wall-clock time that can step backwards. xact_start is reported.
Status waitForOlderTransactions(PgConnection& src, uint64_t fence_xid,
                                std::chrono::milliseconds timeout, const FenceWaitOptions& o) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  SM_RETURN_IF_ERROR(canSeeAllSessions(src));
  // An xid assigned now, after the fence's commit: every xid assigned before that commit is
  // older. (Costs one xid and a commit record, once per cutover.)
  SM_ASSIGN_OR_RETURN(auto after, src.queryValue("SELECT pg_current_xact_id()::text"));
  if (!after) return Status::internal(src.label() + ": pg_current_xact_id() returned NULL");
  const uint64_t after_xid = std::stoull(*after);
  std::string pids = "{";
  for (size_t i = 0; i < o.exclude_pids.size(); ++i)
    pids += (i ? "," : "") + std::to_string(o.exclude_pids[i]);
  pids += "}";
  // xid comparisons are modulo 2^32, as the server's own: a precedes-or-equals b when
  // (b - a) mod 2^32 < 2^31.
  const std::string sql =
      "WITH s AS ("
      " SELECT pid::text AS who, coalesce(application_name, '') AS app, coalesce(state, '') AS st,"
      " round(extract(epoch FROM clock_timestamp() - xact_start)::numeric, 3)::text AS age,"
      " backend_xmin IS NOT NULL AND ((($1::bigint - backend_xmin::text::bigint) % 4294967296"
      "   + 4294967296) % 4294967296) < 2147483648 AS old_snapshot,"
      " backend_xid IS NOT NULL AND ((($2::bigint - backend_xid::text::bigint) % 4294967296"
      "   + 4294967296) % 4294967296) BETWEEN 1 AND 2147483647 AS old_xid,"
      " xact_start"
      " FROM pg_stat_activity"
      " WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> ALL($3::int[])"
      "   AND backend_type NOT IN ('walsender', 'autovacuum worker', 'autovacuum launcher',"
      "                            'logical replication worker', 'logical replication launcher')"
      " UNION ALL"
      " SELECT 'prepared transaction ' || quote_literal(gid), '', 'prepared',"
      " round(extract(epoch FROM clock_timestamp() - prepared)::numeric, 3)::text, false,"
      " ((($2::bigint - transaction::text::bigint) % 4294967296 + 4294967296) % 4294967296)"
      "   BETWEEN 1 AND 2147483647, prepared"
      " FROM pg_prepared_xacts WHERE database = current_database())"
      " SELECT who, app, st, coalesce(age, '?'), old_snapshot, old_xid FROM s"
      " WHERE old_snapshot OR old_xid ORDER BY xact_start NULLS LAST";
  const std::vector<common::PgParam> params = {xid32(fence_xid), xid32(after_xid), pids};
  for (;;) {
    SM_ASSIGN_OR_RETURN(auto r, src.query(sql, params));
    const int n = common::rowCount(r);
    if (n == 0) return Status::ok();
    if (std::chrono::steady_clock::now() >= deadline) {
      std::string who;
      for (int i = 0; i < n && i < static_cast<int>(o.max_named); ++i) {
        const bool snap = common::cell(r, i, 4) == "t", wrote = common::cell(r, i, 5) == "t";
        who += (i ? "; " : "");
        const std::string id = common::cell(r, i, 0);
        who += (id.rfind("prepared", 0) == 0 ? id : "pid " + id) + " (application_name '" +
               common::cell(r, i, 1) + "', " + common::cell(r, i, 2) + ", transaction age " +
               common::cell(r, i, 3) + " s, " +
               (snap && wrote ? "snapshot and xid older than the fence"
                : snap        ? "snapshot older than the fence"
                              : "xid assigned before the fence") +
               ")";
      }
      if (n > static_cast<int>(o.max_named))
        who += "; and " + std::to_string(n - static_cast<int>(o.max_named)) + " more";
      return Status::retryable(src.label() + ": " + std::to_string(n) +
                               " transaction(s) older than the fence still running after " +
                               std::to_string(timeout.count()) + " ms: " + who +
                               ". They must end before the tenant can be frozen: end or shorten "
                               "them (pg_terminate_backend) or retry the cutover later");
    }
    std::this_thread::sleep_for(o.poll);
  }
}

}  // namespace stampmover::mover
