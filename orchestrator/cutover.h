// The coordinated cutover (DESIGN.md phase 5): lag pre-check, freeze (routing CAS + source
// fence + waiting out older transactions), drain to a heartbeat written after the fence,
// re-check of every row changed since the last full pass, sequences raised, and the flip to
// the destination in dual_write. The freeze->flip window has a hard timeout; any failure or
// timeout inside it rolls back to the source, unfrozen.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "mover/catalog.h"
#include "mover/pg_applier.h"
#include "mover/sequences.h"
#include "routing/routing_directory.h"
#include "orchestrator/recheck.h"

namespace stampmover::orch {

struct CutoverOptions {
  std::chrono::milliseconds window_timeout{2000};  // Default: 2 s hard limit freeze -> flip
  std::chrono::milliseconds lag_precheck{500};     // Default: heartbeat round trip under 0.5 s
  int64_t sequence_headroom = 1000;                // Default: 1000 ids above the source's
};

struct CutoverReport {
  bool flipped = false;
  std::string rollback_reason;  // why it did not flip (empty when flipped)
  double precheck_ms = 0;       // heartbeat round trip before freezing
  double window_ms = 0;         // freeze -> flip (or -> rollback): writes unavailable
  double fence_wait_ms = 0;
  double drain_ms = 0;
  double verify_ms = 0;
  double sequences_ms = 0;
  uint64_t rows_rechecked = 0;  // inside the window
  uint64_t prepass_rows = 0;    // changed rows re-checked before the window
  uint64_t prepass_kept = 0;    // of those, still different (re-checked again inside)
  double prepass_ms = 0;
  std::vector<mover::SequenceRaise> sequences;
  routing::Epoch epoch_after = 0;
};

// What the cutover needs from the running forward stream.
struct CutoverContext {
  std::string tenant;
  std::string source_stamp;
  std::string dest_stamp;
  common::PgConnection* source = nullptr;       // control session on the source
  common::PgConnection* destination = nullptr;  // control session on the destination
  routing::RoutingDirectory* routes = nullptr;
  mover::PgApplier* applier = nullptr;
  std::vector<mover::TableInfo> tables;         // source tenant tables
  // The entry must be in this state on source_stamp before freezing; the flip writes
  // dest_stamp with flip_state and flip_shadow. Forward: active -> dual_write (shadow =
  // source); a rollback during the soak runs the same steps backwards: dual_write -> active.
  routing::RouteState expected_state = routing::RouteState::kActive;
  routing::RouteState flip_state = routing::RouteState::kDualWrite;
  std::optional<std::string> flip_shadow;
  // Emits a heartbeat at the source and applies the stream until that heartbeat is committed
  // and flushed at the destination, or the deadline passes. Returns the round trip.
  std::function<common::Result<std::chrono::microseconds>(
      std::chrono::steady_clock::time_point deadline)>
      drain;
};

// Runs one cutover attempt. A refused pre-check (lag) returns flipped=false without freezing.
// Errors only for failures that could not be rolled back (the message says what is left).
common::Result<CutoverReport> runCutover(CutoverContext& ctx, const CutoverOptions& options);

std::string formatCutoverReport(const CutoverReport& r);

}  // namespace stampmover::orch
