// The planner's view of a fleet: stamps (capacity, region, optional load signal, draining),
// tenants (where they are, how big, where they may go) and moves already in flight. Plain data:
// the inventory fills it from the stamps file and the stamps' catalogs, tests build it by hand.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace stampmover::planner {

struct Stamp {
  std::string name;
  std::string region;                // Default: "" (a region of its own name: "")
  uint64_t capacity_bytes = 0;       // Default: 0 (unlimited: no capacity filter, see planner.h)
  uint32_t capacity_tenants = 0;     // Default: 0 (unlimited)
  std::optional<double> load;        // Default: none; 0..1 (e.g. CPU), a busy stamp takes nothing
  bool draining = false;             // Default: false; a draining stamp takes no tenant
};

struct Tenant {
  std::string key;                   // canonical tenant key as text
  std::string stamp;                 // the stamp holding it now
  uint64_t bytes = 0;                // measured size (inventory estimate)
  uint64_t bytes_error = 0;          // Default: 0; 95% half-width of the estimate (inventory.h)
  std::vector<std::string> allowed_regions;  // Default: none (see PlannerOptions::cross_region)
  bool pinned = false;               // Default: false; never moved, not even by a drain
  bool excluded = false;             // Default: false; left out of planning (e.g. under review)
};

// A move already queued or running: the tenant counts at its destination (projected), and is
// not planned again.
struct MoveInFlight {
  std::string tenant;
  std::string from;
  std::string to;
};

struct Fleet {
  std::vector<Stamp> stamps;
  std::vector<Tenant> tenants;
  std::vector<MoveInFlight> in_flight;
};

}  // namespace stampmover::planner
