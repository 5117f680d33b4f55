// Plans kept in the control-plane PostgreSQL (schema stampmover_planner), so that `rebalance
// apply PLAN_ID` enqueues exactly the plan an operator read, from any machine. A plan's id is a
// hash of its inputs (plan_json.h): saving the same plan twice keeps one row.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "planner/planner.h"

namespace stampmover::planner {

struct StoredPlan {
  Plan plan;
  std::string created_at;  // ISO 8601 UTC
  std::string applied_at;  // "" until applied
};

// Not thread-safe: one connection, used by one command at a time.
class PlanStore {
 public:
  // Connects to the control plane (`dsn` is a secret: never logged) and creates the schema
  // idempotently. Errors: kRetryable (unreachable), the server's otherwise.
  static common::Result<PlanStore> open(const std::string& dsn);

  // Saves `plan` under its id (a second save of the same id changes nothing).
  common::Status save(const Plan& plan);
  // The plan stored under `id`; nullopt when there is none.
  common::Result<std::optional<StoredPlan>> load(const std::string& id);
  // Records that the plan was applied (enqueued) now.
  common::Status markApplied(const std::string& id);

 private:
  explicit PlanStore(common::PgConnection conn) : conn_(std::move(conn)) {}
  common::PgConnection conn_;
};

}  // namespace stampmover::planner
