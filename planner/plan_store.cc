// Plan store: see plan_store.h. One table, created under an advisory lock so that concurrent
// first users do not race on CREATE.
#include "planner/plan_store.h"

#include "planner/plan_json.h"

namespace stampmover::planner {

using common::PgConnection;
using common::Result;
using common::Status;

namespace {
constexpr const char* kSchema =
    "SELECT pg_advisory_xact_lock(7235010452913160193); "  // "dr_plans" as a bigint
    "SET LOCAL client_min_messages = warning; "
    "CREATE SCHEMA IF NOT EXISTS stampmover_planner; "
    "CREATE TABLE IF NOT EXISTS stampmover_planner.plans ("
    "  id text PRIMARY KEY,"
    "  kind text NOT NULL CHECK (kind IN ('rebalance', 'drain')),"
    "  drain_stamp text,"
    "  body jsonb NOT NULL,"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  applied_at timestamptz)";
constexpr const char* kIso = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";
}  // namespace

Result<PlanStore> PlanStore::open(const std::string& dsn) {
  SM_ASSIGN_OR_RETURN(PgConnection c, PgConnection::connect(dsn, "control plane"));
  SM_RETURN_IF_ERROR(c.exec("BEGIN"));
  Status st = c.exec(kSchema);
  if (!st) {
    c.exec("ROLLBACK").ignore();  // the error that matters is st
    return st.withContext("control plane: create schema stampmover_planner");
  }
  SM_RETURN_IF_ERROR(c.exec("COMMIT"));
  return PlanStore(std::move(c));
}

Status PlanStore::save(const Plan& plan) {
  return conn_
      .query(
          "INSERT INTO stampmover_planner.plans (id, kind, drain_stamp, body) "
          "VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (id) DO NOTHING",
          {plan.id, std::string(planKindName(plan.kind)),
           plan.kind == PlanKind::kDrain ? common::PgParam(plan.drain_stamp) : std::nullopt,
           planToJson(plan).dump()})
      .status();
}

Result<std::optional<StoredPlan>> PlanStore::load(const std::string& id) {
  SM_ASSIGN_OR_RETURN(
      auto r,
      conn_.query(std::string("SELECT body::text, to_char(created_at AT TIME ZONE 'UTC', ") + kIso +
                      "), coalesce(to_char(applied_at AT TIME ZONE 'UTC', " + kIso +
                      "), '') FROM stampmover_planner.plans WHERE id = $1",
                  {id}));
  if (common::rowCount(r) == 0) return std::optional<StoredPlan>();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(common::cell(r, 0, 0));
  } catch (const std::exception& e) {
    return Status::internal("plan " + id + ": stored body is not JSON: " + e.what());
  }
  SM_ASSIGN_OR_RETURN(Plan p, planFromJson(j));
  StoredPlan sp{std::move(p), common::cell(r, 0, 1), common::cell(r, 0, 2)};
  return std::optional<StoredPlan>(std::move(sp));
}

Status PlanStore::markApplied(const std::string& id) {
  return conn_
      .query(
          "UPDATE stampmover_planner.plans SET applied_at = coalesce(applied_at, now()) "
          "WHERE id = $1",
          {id})
      .status();
}

}  // namespace stampmover::planner
