// Structured logs for the service: `--log-format json` makes every log line one JSON object
// (time, level, message, and the move id, tenant and phase of the thread's current move when
// known). A worker sets that context with a LogContext for the duration of its work on a move.
#pragma once

#include <string>

namespace stampmover::metrics {

// Replaces the default spdlog logger's format with one JSON object per line:
// {"ts":"...","level":"info","msg":"...","move":"...","tenant":"...","phase":"..."}
// (move, tenant and phase only when the thread has a LogContext). Call after
// common::setupLogging(); not thread-safe (startup only). Messages are escaped, never parsed.
void useJsonLogFormat();

// Sets the calling thread's move context for log lines until destroyed (then the previous
// context is restored, so contexts nest). Not shared between threads; cheap.
class LogContext {
 public:
  LogContext(std::string move_id, std::string tenant, std::string phase = "");
  ~LogContext();
  LogContext(const LogContext&) = delete;
  LogContext& operator=(const LogContext&) = delete;
  // Updates the phase of the innermost context (a worker moving from copy to catch-up).
  static void setPhase(const std::string& phase);

 private:
  std::string prev_move_, prev_tenant_, prev_phase_;
};

// Escapes `s` as the inside of a JSON string (quotes, backslashes, control characters).
std::string jsonEscape(const std::string& s);

}  // namespace stampmover::metrics
