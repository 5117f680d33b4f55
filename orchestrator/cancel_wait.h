// Cancellation checks and cancellable sleeps shared by the migrate paths (pgoutput and Kafka).
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

namespace stampmover::orch {

// True once `c` (may be null: never cancelled) is set.
inline bool cancelled(const std::atomic<bool>* c) { return c != nullptr && c->load(); }

// Sleeps up to `d`, waking early on cancel.
inline void sleepFor(std::chrono::milliseconds d, const std::atomic<bool>* cancel) {
  auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until && !cancelled(cancel)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace stampmover::orch
