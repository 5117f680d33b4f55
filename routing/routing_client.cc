// Routing client: see routing_client.h. The cache never goes backwards: a fetch that started
// before an invalidate() is returned to its caller but not cached, and an entry is never
// replaced by one with a lower epoch.
#include "routing/routing_client.h"

#include <algorithm>
#include <utility>

namespace stampmover::routing {

using common::Result;
using common::Status;

Status checkWriteEpoch(const RouteEntry& current, Epoch epoch, std::string_view at_stamp,
                       std::chrono::milliseconds retry_after) {
  const std::string& t = current.tenant;
  if (epoch < current.epoch) {
    return Status::refused("write for tenant " + t + " carries stale routing epoch " +
                           std::to_string(epoch) + " (current epoch " +
                           std::to_string(current.epoch) + ", stamp " + current.stamp + ", " +
                           routeStateName(current.state) + "): re-resolve the tenant and resend");
  }
  if (epoch > current.epoch) {
    return Status::refused(
        "write for tenant " + t + " carries routing epoch " + std::to_string(epoch) +
        ", which the routing directory has not issued "
        "(current epoch " +
        std::to_string(current.epoch) + "): the epoch did not come from this directory");
  }
  if (current.state == RouteState::kFrozen) {
    return Status::retryable("tenant " + t + " is frozen for a cutover (epoch " +
                             std::to_string(epoch) + "): retry after " +
                             std::to_string(retry_after.count()) + " ms");
  }
  if (!at_stamp.empty() && at_stamp != current.stamp) {
    return Status::refused("write for tenant " + t + " reached stamp " + std::string(at_stamp) +
                           ", but stamp " + current.stamp + " serves it (epoch " +
                           std::to_string(current.epoch) + "): re-resolve the tenant and resend");
  }
  return Status::ok();
}

RoutingClient::RoutingClient(std::string dsn, RoutingClientOptions options, Clock& clock)
    : owned_(std::make_unique<PgRoutingDirectory>(std::move(dsn))),
      directory_(owned_.get()),
      options_(options),
      clock_(clock) {}

RoutingClient::RoutingClient(RoutingDirectory& directory, RoutingClientOptions options,
                             Clock& clock)
    : directory_(&directory), options_(options), clock_(clock) {}

Result<std::optional<RouteEntry>> RoutingClient::lookup(const std::string& tenant, bool fresh) {
  // Expiry counts from before the round trip: an entry is never served longer than the ttl
  // after the directory could have changed it.
  const Clock::TimePoint started = clock_.now();
  uint64_t generation = 0;
  {
    std::lock_guard lock(mu_);
    if (!fresh) {
      auto it = cache_.find(tenant);
      if (it != cache_.end() && started < it->second.expires) return it->second.entry;
    }
    generation = generation_;
  }
  // Outside the lock: other tenants' cache hits must not wait for this round trip.
  SM_ASSIGN_OR_RETURN(std::optional<RouteEntry> fetched, directory_->get(tenant));

  std::lock_guard lock(mu_);
  if (generation != generation_) return fetched;  // invalidated meanwhile: answer, don't cache
  auto it = cache_.find(tenant);
  if (it != cache_.end() && it->second.entry && started < it->second.expires &&
      (!fetched || it->second.entry->epoch > fetched->epoch)) {
    return it->second.entry;  // a concurrent fetch cached a newer entry: keep it
  }
  auto ttl = options_.cache_ttl;
  if (fetched && fetched->state == RouteState::kFrozen) {
    ttl = std::min(ttl, options_.retry_after);
  }
  cache_[tenant] = Slot{fetched, started + ttl};
  return fetched;
}

Result<Resolution> RoutingClient::resolve(const std::string& tenant) {
  SM_ASSIGN_OR_RETURN(std::optional<RouteEntry> entry, lookup(tenant, false));
  if (!entry) {
    return Status::refused("tenant " + tenant +
                           " has no routing entry: it is not served by any stamp");
  }
  if (entry->state == RouteState::kFrozen) {
    const auto now = clock_.now();
    bool expired = false;
    {
      std::lock_guard lock(mu_);
      auto [it, inserted] = frozen_since_.try_emplace(tenant, entry->epoch, now);
      if (!inserted && it->second.first != entry->epoch) it->second = {entry->epoch, now};
      expired = now - it->second.second > options_.frozen_expiry;
    }
    if (!expired) return Resolution(Retry{options_.retry_after, entry->epoch});
    // The freeze outlived any cutover window: its worker died. Serve from the stamp again.
    return Resolution(Route{std::move(entry->stamp), entry->epoch, RouteState::kActive,
                            std::move(entry->shadow_stamp)});
  }
  {
    std::lock_guard lock(mu_);
    frozen_since_.erase(tenant);
  }
  return Resolution(
      Route{std::move(entry->stamp), entry->epoch, entry->state, std::move(entry->shadow_stamp)});
}

void RoutingClient::invalidate(const std::string& tenant) {
  std::lock_guard lock(mu_);
  cache_.erase(tenant);
  ++generation_;
}

void RoutingClient::invalidateAll() {
  std::lock_guard lock(mu_);
  cache_.clear();
  ++generation_;
}

Status RoutingClient::checkEpoch(const std::string& tenant, Epoch epoch, std::string_view at_stamp,
                                 Consistency consistency) {
  const bool latest = consistency == Consistency::kLatest;
  SM_ASSIGN_OR_RETURN(std::optional<RouteEntry> entry, lookup(tenant, latest));
  if (!latest && entry && epoch > entry->epoch) {
    // The writer has seen a newer epoch than the cache: the cache is behind, not the writer.
    SM_ASSIGN_OR_RETURN(entry, lookup(tenant, true));
  }
  if (!entry) {
    return Status::refused("write for tenant " + tenant +
                           " refused: the tenant has no routing entry");
  }
  return checkWriteEpoch(*entry, epoch, at_stamp, options_.retry_after);
}

}  // namespace stampmover::routing
