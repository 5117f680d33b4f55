// The phases of a migration (DESIGN.md, "Phases of a migration") as an explicit machine: the
// names persisted in the migration record and mirrored to the control plane's migrations row,
// the legal transitions between them, and the driver that refuses an illegal one. runMigrate
// resumes at the persisted phase after a restart.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace stampmover::orch {

enum class Phase {
  kStarting,     // record written; publication and slot being created (preflight passed)
  kCopying,      // slot and copy plan fixed; chunks in progress
  kCopied,       // snapshot copy complete
  kCatchingUp,   // streaming the forward slot; a cutover may be requested
  kFreezing,     // a cutover attempt is running (freeze -> flip); back to catching_up if it
                 // rolled back, on to dual_write if it flipped
  kDualWrite,    // flipped: the destination serves, the reverse stream keeps the source exact
  kFinalizing,   // teardown after dual_write, keeping the destination
  kFinalized,    // terminal: on the destination, nothing of the migration left
  kRollingBack,  // teardown after the reverse flip, back on the source
  kRolledBack,   // terminal: on the source, nothing of the migration left
  kAborting,     // rollback before the flip: teardown and the partial copy removed
  kAborted,      // terminal: never flipped; on the source, nothing left
  kFailed,       // stopped for a human (data mismatch); only an abort leaves it
};

// The persisted name ("catching_up", ...) and back. Unknown names are nullopt.
std::string_view phaseName(Phase p);
std::optional<Phase> parsePhase(std::string_view name);

bool isTerminal(Phase p);  // finalized, rolled_back, aborted
// Phases in which the routing entry may already point at the destination: a rerun never goes
// back to catching_up from them (the forward slot is gone).
bool isPastFlip(Phase p);
// True when `from -> to` is a legal step; staying in a phase (a restart) is legal for every
// non-terminal phase.
bool isLegalTransition(Phase from, Phase to);
// OK, or kRefused naming both phases.
common::Status checkTransition(Phase from, Phase to);

// Every phase boundary is a failpoint (common/failpoint.h) named "phase.<name>" ("phase.freezing",
// ...), passed right after the new phase was persisted: the chaos suite kills the worker there.

// Holds the current phase and persists every step before taking it. Not thread-safe.
class PhaseMachine {
 public:
  // `persist` makes the new phase durable (and visible); called before current() changes.
  using Persist = std::function<common::Status(Phase from, Phase to)>;
  PhaseMachine(Phase initial, Persist persist) : current_(initial), persist_(std::move(persist)) {}

  Phase current() const { return current_; }
  // Checks the transition, persists it, then takes it. Errors: kRefused for an illegal one
  // (nothing persisted); the persist function's error (the phase is unchanged).
  common::Status advance(Phase to);
  // Every phase taken by advance() in this process, in order (for reports and tests).
  const std::vector<Phase>& history() const { return history_; }

 private:
  Phase current_;
  Persist persist_;
  std::vector<Phase> history_;
};

}  // namespace stampmover::orch
