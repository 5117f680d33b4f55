// Load generator through the routing client: see loadgen.h.
#include "harness/loadgen.h"

#include <algorithm>

#include "common/pg.h"
#include "routing/clock.h"
#include "routing/routing_client.h"

namespace stampmover::harness {

Loadgen::Loadgen(LoadgenOptions options) : options_(std::move(options)) {}

Loadgen::~Loadgen() { stop(); }

void Loadgen::start() {
  stop_ = false;
  thread_ = std::thread([this] { run(); });
}

void Loadgen::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void Loadgen::wait() {
  if (thread_.joinable()) thread_.join();
}

void Loadgen::run() {
  routing::SystemClock clock;
  routing::RoutingClient client(options_.control_plane_dsn, {}, clock);
  std::map<std::string, common::PgConnection> conns;
  const auto t0 = std::chrono::steady_clock::now();
  const auto interval = std::chrono::duration<double>(1.0 / std::max(options_.rate, 1.0));
  int64_t id = options_.first_id;
  for (uint64_t n = 0; !stop_.load(); ++n) {
    auto due = t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(interval * n);
    if (due - t0 > options_.duration) break;
    std::this_thread::sleep_until(due);
    const auto first_try = std::chrono::steady_clock::now();
    bool acked = false;
    uint64_t retries = 0;
    while (!acked && !stop_.load() &&
           std::chrono::steady_clock::now() - first_try < std::chrono::seconds(30)) {
      auto res = client.resolve(options_.tenant);
      if (!res) {
        ++retries;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
      if (auto* retry = std::get_if<routing::Retry>(&*res)) {
        ++retries;
        std::this_thread::sleep_for(retry->after);
        continue;
      }
      const auto& route = std::get<routing::Route>(*res);
      auto dsn = options_.stamp_dsns.find(route.stamp);
      if (dsn == options_.stamp_dsns.end()) break;  // unknown stamp: give up on this write
      auto& conn = conns[route.stamp];
      if (!conn.valid()) {
        auto c = common::PgConnection::connect(dsn->second, "loadgen");
        if (!c) {
          ++retries;
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          continue;
        }
        conn = std::move(*c);
      }
      auto r = conn.query("INSERT INTO scratch (tenant_id, id, v) VALUES ($1, $2, 'loadgen')",
                          {options_.tenant, std::to_string(id)});
      if (r) {
        acked = true;
        break;
      }
      // Fenced (the cutover froze us) or the route moved: look it up again and retry.
      ++retries;
      client.invalidate(options_.tenant);
      if (r.status().errorClass() == common::ErrorClass::kRetryable) conn = common::PgConnection();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - first_try).count();
    std::lock_guard lock(mu_);
    retries_ += retries;
    if (acked) {
      acked_.push_back(id);
      latencies_ms_.push_back(ms);
    } else {
      ++failures_;
    }
    ++id;
  }
}

LoadgenReport Loadgen::report() const {
  std::lock_guard lock(mu_);
  LoadgenReport r;
  r.acknowledged = acked_.size();
  r.retries = retries_;
  r.failures = failures_;
  std::vector<double> l = latencies_ms_;
  std::sort(l.begin(), l.end());
  if (!l.empty()) {
    r.max_stall_ms = l.back();
    r.p50_ms = l[l.size() / 2];
    r.p99_ms = l[std::min(l.size() - 1, l.size() * 99 / 100)];
  }
  return r;
}

common::Result<uint64_t> Loadgen::missingOn(const std::string& dsn) const {
  SM_ASSIGN_OR_RETURN(auto conn, common::PgConnection::connect(dsn, "loadgen check"));
  std::vector<int64_t> ids;
  {
    std::lock_guard lock(mu_);
    ids = acked_;
  }
  if (ids.empty()) return uint64_t{0};
  std::string arr = "{";
  for (size_t i = 0; i < ids.size(); ++i) arr += (i ? "," : "") + std::to_string(ids[i]);
  arr += "}";
  SM_ASSIGN_OR_RETURN(auto v, conn.queryValue("SELECT count(*) FROM unnest($1::bigint[]) AS a(id) "
                                              "WHERE NOT EXISTS (SELECT 1 FROM scratch s WHERE "
                                              "s.tenant_id = $2 AND s.id = a.id)",
                                              {arr, options_.tenant}));
  return static_cast<uint64_t>(std::stoull(v.value_or("0")));
}

}  // namespace stampmover::harness
