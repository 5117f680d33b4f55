// In-process routing directory: see memory_routing_directory.h. Refusals reuse the helpers of
// routing_directory.h so both implementations word them alike.
#include "routing/memory_routing_directory.h"

#include <cstdio>

namespace stampmover::routing {

using common::Result;
using common::Status;

Status MemoryRoutingDirectory::beginCall() {
  ++calls_;
  if (injected_.empty()) return Status::ok();
  Status st = injected_.front();
  injected_.pop_front();
  return st;
}

Status MemoryRoutingDirectory::ensureSchema() {
  std::lock_guard lock(mu_);
  return beginCall();
}

Result<std::optional<RouteEntry>> MemoryRoutingDirectory::get(const std::string& tenant) {
  std::lock_guard lock(mu_);
  SM_RETURN_IF_ERROR(beginCall());
  auto it = routes_.find(tenant);
  if (it == routes_.end()) return std::optional<RouteEntry>();
  return std::optional<RouteEntry>(it->second);
}

Result<std::vector<RouteEntry>> MemoryRoutingDirectory::list() {
  std::lock_guard lock(mu_);
  SM_RETURN_IF_ERROR(beginCall());
  std::vector<RouteEntry> out;
  for (const auto& [tenant, e] : routes_) out.push_back(e);
  return out;
}

namespace {
// A fake timestamp that grows with every write, in the stored format.
std::string fakeTimestamp(uint64_t n) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "2000-01-01T00:00:00.%06lluZ",
                static_cast<unsigned long long>(n % 1'000'000));
  return buf;
}
}  // namespace

Result<RouteEntry> MemoryRoutingDirectory::put(const std::string& tenant,
                                               const std::string& stamp) {
  SM_RETURN_IF_ERROR(validateRouteChange(tenant, RouteChange{stamp, RouteState::kActive, {}, {}}));
  std::lock_guard lock(mu_);
  SM_RETURN_IF_ERROR(beginCall());
  auto it = routes_.find(tenant);
  if (it != routes_.end()) {
    return Status::refused("tenant " + tenant + " already has a routing entry (stamp " +
                           it->second.stamp + ", epoch " + std::to_string(it->second.epoch) +
                           "): change it with a compare-and-set on its epoch");
  }
  RouteEntry e{tenant, stamp, 1, RouteState::kActive, std::nullopt, fakeTimestamp(++writes_)};
  routes_[tenant] = e;
  history_.push_back(e);
  return e;
}

Result<RouteEntry> MemoryRoutingDirectory::compareAndSet(const std::string& tenant,
                                                         Epoch expected_epoch,
                                                         const RouteChange& change) {
  SM_RETURN_IF_ERROR(validateRouteChange(tenant, change));
  std::lock_guard lock(mu_);
  SM_RETURN_IF_ERROR(beginCall());
  auto it = routes_.find(tenant);
  if (it == routes_.end()) {
    return Status::refused("tenant " + tenant +
                           " has no routing entry: create it first (put), then compare-and-set");
  }
  RouteEntry& e = it->second;
  if (e.epoch != expected_epoch) return staleEpochError(tenant, expected_epoch, e.epoch);
  e.stamp = change.stamp;
  e.state = change.state;
  e.shadow_stamp = change.shadow_stamp;
  e.epoch = expected_epoch + 1;
  e.updated_at = fakeTimestamp(++writes_);
  history_.push_back(e);
  return e;
}

void MemoryRoutingDirectory::injectErrors(std::vector<Status> errors) {
  std::lock_guard lock(mu_);
  for (auto& st : errors) injected_.push_back(std::move(st));
}

uint64_t MemoryRoutingDirectory::calls() const {
  std::lock_guard lock(mu_);
  return calls_;
}

std::vector<RouteEntry> MemoryRoutingDirectory::history() const {
  std::lock_guard lock(mu_);
  return history_;
}

}  // namespace stampmover::routing
