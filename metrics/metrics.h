// The service's metrics: one process-wide registry of the numbers an operator watches (moves by
// phase, copy volume, apply lag and rate, verify progress, cutover windows, rollbacks, errors by
// class, lease takeovers, HTTP requests), exposed in the Prometheus text format by serialize().
// prometheus-cpp does the bookkeeping and the exposition; this header keeps it out of sight.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace stampmover::metrics {

// Thread-safe: every method may be called from any thread at any time (prometheus-cpp counters,
// gauges and histograms are atomic; label lookups take the family's lock). Methods never fail:
// a metric is a best-effort observation, never a reason to stop a move.
class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // stampmover_moves{phase}: how many moves are in `phase` now (set from the queue's count).
  void setMovesInPhase(const std::string& phase, double count);
  // stampmover_copied_rows_total / stampmover_copied_bytes_total: snapshot copy volume.
  void addRowsCopied(uint64_t rows);
  void addBytesCopied(uint64_t bytes);
  // stampmover_apply_lag_bytes{move} / stampmover_apply_lag_seconds{move}: catch-up lag.
  void setApplyLag(const std::string& move_id, uint64_t bytes, double seconds);
  // stampmover_applied_changes_total: changes applied at destinations (rate() of it is the
  // apply rate); stampmover_apply_rate_changes_per_second{move}: the worker's own estimate.
  void addAppliedChanges(uint64_t changes);
  void setApplyRate(const std::string& move_id, double changes_per_second);
  // stampmover_throttled{move}: 1 while the throttle slows the move down (the reason is in
  // `move show`), 0 otherwise.
  void setThrottled(const std::string& move_id, bool throttled);
  // stampmover_verify_progress_ratio{move}: 0..1 of the verify pass.
  void setVerifyProgress(const std::string& move_id, double ratio);
  // stampmover_cutover_window_seconds: the freeze -> flip write-unavailability window.
  void observeCutoverWindow(double seconds);
  // stampmover_rollbacks_total.
  void incRollbacks();
  // stampmover_errors_total{class}: `error_class` is common::errorClassName() of the error.
  void incErrors(const std::string& error_class);
  // stampmover_lease_takeovers_total: leases taken over from an expired owner.
  void incLeaseTakeovers();
  // stampmover_http_requests_total{route,method,code} and
  // stampmover_http_request_duration_seconds{route}. `route` is the route template
  // (/v1/moves/{id}), never the raw path, so the label set stays small.
  void observeHttpRequest(const std::string& route, const std::string& method, int code,
                          double seconds);
  // stampmover_http_connections: open API connections.
  void addHttpConnections(int delta);
  // Drops every per-move series of `move_id` (lag, rate, verify) once the move is done.
  void forgetMove(const std::string& move_id);

  // The whole registry in the Prometheus text exposition format (version 0.0.4).
  std::string serialize() const;

  // Names of every metric family this registry exposes (for tests and docs).
  static std::vector<std::string> metricNames();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The process-wide registry: `serve` exposes it on /metrics; workers report into it.
// Created on first use; never destroyed before exit.
Registry& defaultRegistry();

}  // namespace stampmover::metrics
