// The time seam of the routing client: a monotonic clock behind a tiny interface, so cache
// expiry and retry-after are tested by advancing a ManualClock instead of sleeping.
#pragma once

#include <atomic>
#include <chrono>

namespace stampmover::routing {

class Clock {
 public:
  using Duration = std::chrono::steady_clock::duration;
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  // A monotonic "now". Implementations are thread-safe.
  virtual TimePoint now() const = 0;
};

// std::chrono::steady_clock. Thread-safe.
class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
};

// Time that moves only when a test advances it; starts at an arbitrary fixed point.
// Thread-safe: now() and advance() may be called from any thread.
class ManualClock final : public Clock {
 public:
  TimePoint now() const override { return TimePoint(Duration(ticks_.load())); }
  void advance(Duration d) { ticks_.fetch_add(d.count()); }

 private:
  std::atomic<Duration::rep> ticks_{
      std::chrono::duration_cast<Duration>(std::chrono::hours(1)).count()};
};

}  // namespace stampmover::routing
