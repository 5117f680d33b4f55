// Rebalance and drain planning (issue 13): from a Fleet, a list of tenant moves, each with its
// reason, that brings every stamp within ±threshold of its group's mean utilization, or that
// empties a draining stamp. Planning reads nothing and moves nothing: a Plan is data, shown to an
// operator (app/rebalance_command.cc) and later enqueued.
//
// Definitions used throughout:
//  - utilization u = bytes / capacity_bytes. A stamp without capacity_bytes (unlimited) is
//    weighed with the mean of the configured capacities, or, when no stamp has one, with the
//    fleet's total bytes (u is then the stamp's share of the fleet).
//  - a group is the set of stamps a tenant may move within: one per region unless
//    cross_region, the whole fleet otherwise. Draining stamps belong to no group. A group's mean
//    m = sum(bytes) / sum(capacity) does not change as tenants move inside it.
//  - a stamp is balanced when |u - m| <= threshold * m (relative band, as Citus's threshold).
//  - projected placement: a tenant with a move in flight counts at that move's destination.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "planner/model.h"

namespace stampmover::planner {

struct PlannerOptions {
  double threshold = 0.10;             // Default: 0.10 (every stamp within ±10% of the mean)
  uint32_t max_moves = 20;             // Default: 20 (rebalance only; a drain places everything)
  uint64_t seed = 0;                   // Default: 0 (seed of the near-equal target choice)
  // A move must shrink the utilization gap between its source and target by at least this
  // fraction of the utilization it shifts (x/c_src + x/c_dst): Citus's improvement_threshold,
  // which refuses to move 1 TB to gain 10 GB.
  double improvement_fraction = 0.5;   // Default: 0.5
  // A stamp above evacuation_limit must shed tenants; no move may take a target above
  // evacuation_limit - safety_margin (of capacity_bytes).
  double evacuation_limit = 0.90;      // Default: 0.90
  double safety_margin = 0.05;         // Default: 0.05 (targets end at most at 85%)
  double max_target_load = 0.80;       // Default: 0.80 (a stamp with load >= this takes nothing)
  // Targets whose utilization is within this of the least utilized eligible target are
  // near-equal; one of them is chosen by two random choices (CockroachDB's allocator) so that
  // concurrent planners do not all pick the same stamp.
  double near_equal = 0.02;            // Default: 0.02 (2 points of utilization)
  // false: a tenant stays in its stamp's region (and within allowed_regions when listed); true:
  // it may go to any region its allowed_regions lists, or anywhere when it lists none.
  bool cross_region = false;           // Default: false
};

enum class PlanKind { kRebalance, kDrain };

struct Move {
  uint32_t seq = 0;                    // 1-based position in the plan
  std::string tenant;
  std::string from;
  std::string to;
  uint64_t bytes = 0;
  double from_before = 0, from_after = 0;  // source utilization
  double to_before = 0, to_after = 0;      // target utilization
  double mean = 0;                         // the group's mean utilization (0 for drain to any)
  std::string reason;                      // one readable sentence with the numbers above
};

// A tenant a drain could not place, and why ("pinned", "no stamp in region r with room: ...").
struct Unplaced {
  std::string tenant;
  std::string stamp;
  uint64_t bytes = 0;
  std::string reason;
};

struct StampSummary {
  std::string name;
  std::string region;
  uint64_t capacity_bytes = 0;
  bool draining = false;
  uint64_t bytes_before = 0, bytes_after = 0;
  uint32_t tenants_before = 0, tenants_after = 0;
  double util_before = 0, util_after = 0;
  double mean = 0;                     // its group's mean (0 when draining)
};

struct Plan {
  std::string id;                      // stable: hash of the inputs, options and seed
  PlanKind kind = PlanKind::kRebalance;
  std::string drain_stamp;             // kDrain only
  PlannerOptions options;
  std::vector<Move> moves;
  std::vector<Unplaced> unplaced;      // kDrain only
  std::vector<StampSummary> stamps;    // sorted by name
  double max_deviation_before = 0;     // max over stamps of |u - m| / m (groups' own m)
  double max_deviation_after = 0;
  bool converged = false;              // rebalance: every stamp within the band after the plan
  std::string stop_reason;             // why planning stopped
};

// Plans a rebalance. Moves go from the most to the least utilized stamps of a group; each move
// respects every hard filter (region, pinned/excluded/in flight, target capacity bytes and
// tenants after the move, target load, draining) and shrinks its source-target gap by at least
// improvement_fraction of its size without the two crossing, so after any prefix of the plan
// the fleet is no worse balanced than before (weighted variance of u, largest |u - m| and
// max - min of each group never grow). Stops when every stamp is within the band, after
// max_moves, or when no move qualifies. Deterministic for a fleet (in any order), options and
// seed. Errors: kRefused for an inconsistent fleet (unknown stamp of a tenant or a move,
// duplicate names or keys, a threshold or limit out of range). Thread-safe (pure function).
common::Result<Plan> planRebalance(const Fleet& fleet, const PlannerOptions& options);

// Plans the drain of `stamp`: the stamp is treated as draining, and each of its tenants (largest
// first) goes to the eligible stamp of lowest utilization after the move (near-equal ones by two
// random choices), within capacity, region and load. Tenants that cannot go are listed in
// Plan::unplaced with the reason (pinned, excluded, no stamp in the region with room, ...).
// Tenants already moving away are left to their move. Errors: kRefused as planRebalance, and
// for an unknown stamp. Thread-safe.
common::Result<Plan> planDrain(const Fleet& fleet, const std::string& stamp,
                               const PlannerOptions& options);

// The fleet after the first `count` moves of `plan` (tenants' stamps updated; in-flight moves
// applied too, so that it shows the projected placement). For tests and "what if" views.
Fleet applyMoves(const Fleet& fleet, const std::vector<Move>& moves, size_t count);

const char* planKindName(PlanKind kind);

// "12.3 GB", "512 B": decimal units, for reasons and tables.
std::string formatBytes(uint64_t bytes);

}  // namespace stampmover::planner
