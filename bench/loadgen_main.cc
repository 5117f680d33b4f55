// bench/loadgen: the routed load generator as a command, for operators and ad-hoc tests:
// writes one tenant's rows at a fixed rate through the routing directory (retrying on
// `frozen` and on the source fence), then prints the acknowledged writes, the longest write
// stall and latency percentiles, and checks every acknowledged write on the serving stamp.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "harness/loadgen.h"
#include "routing/routing_directory.h"

int main(int argc, char** argv) {
  CLI::App app{"Routed load generator: writes tenant rows into `scratch` at a fixed rate through "
               "the routing directory and checks every acknowledged write afterwards."};
  stampmover::harness::LoadgenOptions o;
  std::vector<std::string> stamps;
  double seconds = 10;
  app.add_option("--control-plane-dsn", o.control_plane_dsn, "Routing directory")->required();
  app.add_option("--stamp", stamps, "name=DSN of a stamp, repeatable")->required();
  app.add_option("--tenant", o.tenant, "Tenant key (bigint tenant_id)")->capture_default_str();
  app.add_option("--rate", o.rate, "Writes per second")->capture_default_str();
  app.add_option("--seconds", seconds, "How long (bounded)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  for (const auto& s : stamps) {
    auto eq = s.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "loadgen: --stamp '%s': expected name=DSN\n", s.substr(0, s.find(' ')).c_str());
      return 2;
    }
    o.stamp_dsns[s.substr(0, eq)] = s.substr(eq + 1);
  }
  o.duration = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  stampmover::harness::Loadgen lg(o);
  lg.start();
  lg.wait();
  auto r = lg.report();
  std::printf("acknowledged %llu writes, %llu retries, %llu given up; longest write stall %.1f ms, "
              "p50 %.1f ms, p99 %.1f ms\n",
              static_cast<unsigned long long>(r.acknowledged), static_cast<unsigned long long>(r.retries),
              static_cast<unsigned long long>(r.failures), r.max_stall_ms, r.p50_ms, r.p99_ms);
  stampmover::routing::PgRoutingDirectory dir(o.control_plane_dsn);
  auto entry = dir.get(o.tenant);
  if (!entry || !*entry || !o.stamp_dsns.count((*entry)->stamp)) {
    std::fprintf(stderr, "loadgen: cannot tell which stamp serves tenant %s now\n", o.tenant.c_str());
    return 3;
  }
  auto lost = lg.missingOn(o.stamp_dsns.at((*entry)->stamp));
  if (!lost) {
    std::fprintf(stderr, "loadgen: %s\n", lost.status().message().c_str());
    return 3;
  }
  std::printf("%llu acknowledged writes lost (checked on %s, which serves tenant %s)\n",
              static_cast<unsigned long long>(*lost), (*entry)->stamp.c_str(), o.tenant.c_str());
  return *lost == 0 ? 0 : 4;
}
