// The service's metrics (see metrics.h): prometheus-cpp families registered once, per-move
// series added on first use and removed by forgetMove().
#include "metrics/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <sstream>

namespace stampmover::metrics {

namespace {
using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

constexpr const char* kMoves = "stampmover_moves";
constexpr const char* kRows = "stampmover_copied_rows_total";
constexpr const char* kBytes = "stampmover_copied_bytes_total";
constexpr const char* kLagBytes = "stampmover_apply_lag_bytes";
constexpr const char* kLagSeconds = "stampmover_apply_lag_seconds";
constexpr const char* kApplied = "stampmover_applied_changes_total";
constexpr const char* kApplyRate = "stampmover_apply_rate_changes_per_second";
constexpr const char* kVerify = "stampmover_verify_progress_ratio";
constexpr const char* kThrottled = "stampmover_throttled";
constexpr const char* kWindow = "stampmover_cutover_window_seconds";
constexpr const char* kRollbacks = "stampmover_rollbacks_total";
constexpr const char* kErrors = "stampmover_errors_total";
constexpr const char* kTakeovers = "stampmover_lease_takeovers_total";
constexpr const char* kHttpRequests = "stampmover_http_requests_total";
constexpr const char* kHttpDuration = "stampmover_http_request_duration_seconds";
constexpr const char* kHttpConnections = "stampmover_http_connections";

// prometheus-cpp 1.0.1 (Debian 12) writes a counter's family name as given, without appending
// _total (later releases append it), so counters are registered under their full exposed name.
// api_test scrapes /metrics and checks every name of metricNames() is there.
std::string counterBase(const char* name) { return name; }
}  // namespace

struct Registry::Impl {
  std::shared_ptr<prometheus::Registry> reg = std::make_shared<prometheus::Registry>();
  Family<Gauge>& moves = prometheus::BuildGauge().Name(kMoves).Help("Moves by phase").Register(*reg);
  Counter& rows = prometheus::BuildCounter()
                      .Name(counterBase(kRows))
                      .Help("Rows copied by the snapshot copy")
                      .Register(*reg)
                      .Add({});
  Counter& bytes = prometheus::BuildCounter()
                       .Name(counterBase(kBytes))
                       .Help("Bytes copied by the snapshot copy")
                       .Register(*reg)
                       .Add({});
  Family<Gauge>& lag_bytes = prometheus::BuildGauge()
                                 .Name(kLagBytes)
                                 .Help("Source WAL not yet applied at the destination, per move")
                                 .Register(*reg);
  Family<Gauge>& lag_seconds = prometheus::BuildGauge()
                                   .Name(kLagSeconds)
                                   .Help("Heartbeat round trip of the catch-up, per move")
                                   .Register(*reg);
  Counter& applied = prometheus::BuildCounter()
                         .Name(counterBase(kApplied))
                         .Help("Row changes applied at destinations")
                         .Register(*reg)
                         .Add({});
  Family<Gauge>& apply_rate = prometheus::BuildGauge()
                                  .Name(kApplyRate)
                                  .Help("Recent apply rate, per move")
                                  .Register(*reg);
  Family<Gauge>& verify = prometheus::BuildGauge()
                              .Name(kVerify)
                              .Help("Fraction of the verify pass done, per move")
                              .Register(*reg);
  Family<Gauge>& throttled = prometheus::BuildGauge()
                                 .Name(kThrottled)
                                 .Help("1 while the throttle slows the move down, per move")
                                 .Register(*reg);
  Histogram& window =
      prometheus::BuildHistogram()
          .Name(kWindow)
          .Help("Write-unavailability window of each cutover (freeze to flip)")
          .Register(*reg)
          .Add({}, Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5});
  Counter& rollbacks = prometheus::BuildCounter()
                           .Name(counterBase(kRollbacks))
                           .Help("Rollbacks (operator or automatic)")
                           .Register(*reg)
                           .Add({});
  Family<Counter>& errors = prometheus::BuildCounter()
                                .Name(counterBase(kErrors))
                                .Help("Errors of moves by class")
                                .Register(*reg);
  Counter& takeovers = prometheus::BuildCounter()
                           .Name(counterBase(kTakeovers))
                           .Help("Leases taken over from an owner whose lease expired")
                           .Register(*reg)
                           .Add({});
  Family<Counter>& http_requests = prometheus::BuildCounter()
                                       .Name(counterBase(kHttpRequests))
                                       .Help("API requests by route, method and status code")
                                       .Register(*reg);
  Family<Histogram>& http_duration = prometheus::BuildHistogram()
                                         .Name(kHttpDuration)
                                         .Help("API request latency by route")
                                         .Register(*reg);
  Gauge& http_connections = prometheus::BuildGauge()
                                .Name(kHttpConnections)
                                .Help("Open API connections")
                                .Register(*reg)
                                .Add({});

  Impl() {
    // Every error class exists from the start, so a scrape shows 0 rather than nothing.
    for (const char* c : {"retryable", "refused", "data_loss", "cancelled", "internal"}) {
      errors.Add({{"class", c}});
    }
  }
};

Registry::Registry() : impl_(std::make_unique<Impl>()) {}
Registry::~Registry() = default;

void Registry::setMovesInPhase(const std::string& phase, double count) {
  impl_->moves.Add({{"phase", phase}}).Set(count);
}
void Registry::addRowsCopied(uint64_t rows) { impl_->rows.Increment(static_cast<double>(rows)); }
void Registry::addBytesCopied(uint64_t bytes) {
  impl_->bytes.Increment(static_cast<double>(bytes));
}
void Registry::setApplyLag(const std::string& move_id, uint64_t bytes, double seconds) {
  impl_->lag_bytes.Add({{"move", move_id}}).Set(static_cast<double>(bytes));
  impl_->lag_seconds.Add({{"move", move_id}}).Set(seconds);
}
void Registry::addAppliedChanges(uint64_t changes) {
  impl_->applied.Increment(static_cast<double>(changes));
}
void Registry::setApplyRate(const std::string& move_id, double changes_per_second) {
  impl_->apply_rate.Add({{"move", move_id}}).Set(changes_per_second);
}
void Registry::setVerifyProgress(const std::string& move_id, double ratio) {
  impl_->verify.Add({{"move", move_id}}).Set(ratio);
}
void Registry::observeCutoverWindow(double seconds) { impl_->window.Observe(seconds); }
void Registry::incRollbacks() { impl_->rollbacks.Increment(); }
void Registry::incErrors(const std::string& error_class) {
  impl_->errors.Add({{"class", error_class}}).Increment();
}
void Registry::incLeaseTakeovers() { impl_->takeovers.Increment(); }
void Registry::observeHttpRequest(const std::string& route, const std::string& method, int code,
                                  double seconds) {
  impl_->http_requests.Add({{"route", route}, {"method", method}, {"code", std::to_string(code)}})
      .Increment();
  impl_->http_duration
      .Add({{"route", route}},
           Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1})
      .Observe(seconds);
}
void Registry::addHttpConnections(int delta) { impl_->http_connections.Increment(delta); }

void Registry::setThrottled(const std::string& move_id, bool throttled) {
  impl_->throttled.Add({{"move", move_id}}).Set(throttled ? 1 : 0);
}

void Registry::forgetMove(const std::string& move_id) {
  const prometheus::Labels labels{{"move", move_id}};
  for (Family<Gauge>* f :
       {&impl_->lag_bytes, &impl_->lag_seconds, &impl_->apply_rate, &impl_->verify,
        &impl_->throttled}) {
    // Has() first: Add() of a missing series would create it just to remove it.
    if (f->Has(labels)) f->Remove(&f->Add(labels));
  }
}

std::string Registry::serialize() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, impl_->reg->Collect());
  return out.str();
}

std::vector<std::string> Registry::metricNames() {
  return {kMoves,      kRows,      kBytes,     kLagBytes,     kLagSeconds,   kApplied,
          kApplyRate,  kVerify,    kThrottled,    kWindow,    kRollbacks,    kErrors,       kTakeovers,
          kHttpRequests, kHttpDuration, kHttpConnections};
}

Registry& defaultRegistry() {
  // Leaked on purpose: worker threads may still report while static destructors run at exit.
  static Registry* r = new Registry();
  return *r;
}

}  // namespace stampmover::metrics
