// Plans and fleets as JSON (nlohmann_json) for `rebalance plan --json`, the API and the queue,
// and the stable plan id: a hash of the canonical inputs (fleet sorted by name and key, options
// including the seed), so the same inputs always name the same plan.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "planner/model.h"
#include "planner/planner.h"

namespace stampmover::planner {

// Canonical JSON of a fleet: stamps sorted by name, tenants by key, in-flight moves by tenant.
nlohmann::json fleetToJson(const Fleet& fleet);
nlohmann::json optionsToJson(const PlannerOptions& options);

// "plan-" + 16 hex digits of a 64-bit FNV-1a over the canonical JSON of (kind, drained stamp,
// options, fleet). Stable across runs, machines and input order.
std::string planId(const Fleet& fleet, const PlannerOptions& options, PlanKind kind,
                   const std::string& drain_stamp);

// Every field of the plan (id, kind, options, moves with reasons, unplaced, stamps before and
// after, deviations, stop reason).
nlohmann::json planToJson(const Plan& plan);

// Reads back what planToJson wrote. Errors: kRefused naming the missing or mistyped field.
common::Result<Plan> planFromJson(const nlohmann::json& json);

}  // namespace stampmover::planner
