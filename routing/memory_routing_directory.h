// An in-process RoutingDirectory with the same compare-and-set semantics and error wording as
// PgRoutingDirectory: for unit tests of the client, the orchestrator and routers, with a hook
// that injects errors (a control plane that is down, a CAS whose outcome is unknown).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>

#include "routing/routing_directory.h"

namespace stampmover::routing {

// Thread-safe: every method takes one mutex.
class MemoryRoutingDirectory final : public RoutingDirectory {
 public:
  common::Status ensureSchema() override;
  common::Result<std::optional<RouteEntry>> get(const std::string& tenant) override;
  common::Result<std::vector<RouteEntry>> list() override;
  common::Result<RouteEntry> put(const std::string& tenant, const std::string& stamp) override;
  common::Result<RouteEntry> compareAndSet(const std::string& tenant, Epoch expected_epoch,
                                           const RouteChange& change) override;

  // Makes the next calls (any method, in order) fail with these errors instead of running.
  void injectErrors(std::vector<common::Status> errors);
  // Calls made so far (each method counts, including those that failed).
  uint64_t calls() const;
  // Every entry ever written (put and successful CAS), oldest first: the history table.
  std::vector<RouteEntry> history() const;

 private:
  // Pops an injected error, if any, and counts the call. Caller holds mu_.
  common::Status beginCall();

  mutable std::mutex mu_;
  std::map<std::string, RouteEntry> routes_;
  std::vector<RouteEntry> history_;
  std::deque<common::Status> injected_;
  uint64_t calls_ = 0;
  uint64_t writes_ = 0;  // orders updated_at, which has no wall clock here
};

}  // namespace stampmover::routing
