// The migration phase machine: see phase.h. The transition table is the one place that says
// which step may follow which; every persisted phase change goes through it.
#include "orchestrator/phase.h"

#include <utility>

namespace stampmover::orch {

using common::Status;

namespace {

constexpr std::pair<Phase, std::string_view> kNames[] = {
    {Phase::kStarting, "starting"},       {Phase::kCopying, "copying"},
    {Phase::kCopied, "copied"},           {Phase::kCatchingUp, "catching_up"},
    {Phase::kFreezing, "freezing"},       {Phase::kDualWrite, "dual_write"},
    {Phase::kFinalizing, "finalizing"},   {Phase::kFinalized, "finalized"},
    {Phase::kRollingBack, "rolling_back"}, {Phase::kRolledBack, "rolled_back"},
    {Phase::kAborting, "aborting"},       {Phase::kAborted, "aborted"},
    {Phase::kFailed, "failed"},
};

}  // namespace

std::string_view phaseName(Phase p) {
  for (const auto& [phase, name] : kNames) {
    if (phase == p) return name;
  }
  return "unknown";
}

std::optional<Phase> parsePhase(std::string_view name) {
  for (const auto& [phase, n] : kNames) {
    if (n == name) return phase;
  }
  return std::nullopt;
}

bool isTerminal(Phase p) {
  return p == Phase::kFinalized || p == Phase::kRolledBack || p == Phase::kAborted;
}

bool isPastFlip(Phase p) {
  return p == Phase::kDualWrite || p == Phase::kFinalizing || p == Phase::kFinalized ||
         p == Phase::kRollingBack || p == Phase::kRolledBack;
}

bool isLegalTransition(Phase from, Phase to) {
  if (isTerminal(from)) return false;
  if (from == to) return true;  // a restart resumes where it stopped
  // A stop for a human can come from any live phase; only an abort leaves it.
  if (to == Phase::kFailed) return true;
  switch (from) {
    case Phase::kStarting:
      return to == Phase::kCopying || to == Phase::kAborting;
    case Phase::kCopying:
      return to == Phase::kCopied || to == Phase::kAborting;
    case Phase::kCopied:
      return to == Phase::kCatchingUp || to == Phase::kAborting;
    case Phase::kCatchingUp:
      // dual_write directly: a rerun that finds the routing entry already flipped.
      return to == Phase::kFreezing || to == Phase::kDualWrite || to == Phase::kAborting;
    case Phase::kFreezing:
      return to == Phase::kCatchingUp || to == Phase::kDualWrite || to == Phase::kAborting;
    case Phase::kDualWrite:
      return to == Phase::kFinalizing || to == Phase::kRollingBack;
    case Phase::kFinalizing:
      return to == Phase::kFinalized;
    case Phase::kRollingBack:
      return to == Phase::kRolledBack;
    case Phase::kAborting:
      return to == Phase::kAborted;
    case Phase::kFailed:
      return to == Phase::kAborting;
    default:
      return false;
  }
}

Status checkTransition(Phase from, Phase to) {
  if (isLegalTransition(from, to)) return Status::ok();
  return Status::refused("illegal migration phase transition " + std::string(phaseName(from)) +
                         " -> " + std::string(phaseName(to)) +
                         (isTerminal(from) ? " (the migration is over; start a new one)" : ""));
}

Status PhaseMachine::advance(Phase to) {
  SM_RETURN_IF_ERROR(checkTransition(current_, to));
  if (persist_) SM_RETURN_IF_ERROR(persist_(current_, to));
  current_ = to;
  history_.push_back(to);
  return Status::ok();
}

}  // namespace stampmover::orch
