// bench/serve (issue 12 targets): one `stampmover serve` process runs N small-tenant moves at once
// (default 8) while a client polls the API and times every answer; the same N moves run as N
// standalone `stampmover migrate` processes on an identical copy of the data are the baseline
// (ours, theirs, ratio). Then a move's owner is killed with SIGKILL mid-catch-up and the time
// until a second serve process holds the move is compared with 2x the lease TTL.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <nlohmann/json.hpp>
#include <regex>

#include "api/client.h"
#include "bench/bench_util.h"
#include "common/pg.h"
#include "harness/seed.h"

using namespace stampmover::bench;
using nlohmann::json;
namespace api = stampmover::api;

namespace {

const std::string kToken = "bench-operate-token-0123456789abcdef";

struct Setup {
  std::string dir;
  uint32_t moves = 8;
  uint64_t tenant_items = 2000;
  double lease_ttl = 3;
};

std::vector<int64_t> tenantsOf(uint32_t n) {
  std::vector<int64_t> t = {42};
  for (int64_t i = 1; t.size() < n; ++i) t.push_back(i);
  return t;
}

Status makeDatabase(harness::LocalCluster& c, const std::string& db) {
  return c.psql("postgres", "CREATE DATABASE " + db);
}

// Schema on both sides, the tenants seeded on the source.
Status seed(harness::LocalCluster& a, harness::LocalCluster& b, const std::string& db,
            const Setup& s) {
  SM_RETURN_IF_ERROR(makeDatabase(a, db));
  SM_RETURN_IF_ERROR(makeDatabase(b, db));
  for (auto* c : {&a, &b}) {
    SM_ASSIGN_OR_RETURN(auto conn, stampmover::common::PgConnection::connect(c->dsn(db), "bench"));
    SM_RETURN_IF_ERROR(harness::createDemoSchema(conn));
  }
  SM_ASSIGN_OR_RETURN(auto src, stampmover::common::PgConnection::connect(a.dsn(db), "bench"));
  harness::SeedOptions so;
  auto tenants = tenantsOf(s.moves);
  so.tenant = tenants[0];
  so.others.assign(tenants.begin() + 1, tenants.end());
  so.tenant_items = s.tenant_items;
  so.other_items = s.tenant_items * so.others.size();
  return harness::seedTenants(src, so);
}

std::string writeConfig(const Setup& s, const std::string& name, const std::string& src,
                        const std::string& dst, const std::string& cp, uint32_t workers) {
  const std::string path = s.dir + "/" + name + ".yaml";
  std::ofstream(s.dir + "/tokens") << kToken << " operate\n";
  std::ofstream out(path);
  out << "state_dir: " << s.dir << "/state-" << name << "\n"
      << "stamps:\n  stamp-a:\n    dsn: \"" << src << "\"\n"
      << "  stamp-b:\n    dsn: \"" << dst << "\"\n";
  if (workers == 0) return path;  // a plain stamps file (migrate does not take serve:)
  out << "serve:\n  tokens_file: " << s.dir << "/tokens\n"
                      << "  control_plane_dsn: \"" << cp << "\"\n"
                      << "  workers: " << workers << "\n  max_moves: " << s.moves
                      << "\n  max_per_source: " << s.moves << "\n  max_per_destination: "
                      << s.moves << "\n  lease_ttl_seconds: " << s.lease_ttl
                      << "\n  soak_seconds: 1\n  drain_timeout_seconds: 30\n";
  return path;
}

// Starts serve and reads its port from the "listening on" line.
Result<std::pair<Child, int>> startServe(const Setup& s, const std::string& config,
                                         const std::string& owner) {
  SM_ASSIGN_OR_RETURN(Child c, spawnChild({STAMPMOVER_BIN, "--config", config, "serve", "--listen",
                                           "127.0.0.1:0", "--owner", owner},
                                          s.dir + "/" + owner + ".log", false));
  std::regex re("serve: listening on 127\\.0\\.0\\.1:([0-9]+)");
  for (int i = 0; i < 300; ++i) {
    std::smatch m;
    const std::string text = readFile(c.log_path);
    if (std::regex_search(text, m, re)) return std::make_pair(std::move(c), std::stoi(m[1]));
    if (childExited(c)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Status::internal(owner + " did not start:\n" + tailLines(readFile(c.log_path), 20));
}

api::ClientOptions client(int port) {
  api::ClientOptions o;
  o.base_url = "http://127.0.0.1:" + std::to_string(port);
  o.token = kToken;
  o.timeout = std::chrono::seconds(10);
  return o;
}

Result<json> call(int port, const std::string& method, const std::string& path,
                  const std::string& body = "") {
  SM_ASSIGN_OR_RETURN(auto r, api::httpRequest(client(port), method, path, body));
  if (r.status >= 300) return Status::internal(method + " " + path + ": " + r.body);
  return json::parse(r.body, nullptr, false);
}

int stopServe(Child& c) {
  kill(c.pid, SIGTERM);
  return waitChild(c, std::chrono::seconds(60)).exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench/serve: N concurrent small moves on one serve (API latency) against N "
               "standalone migrate processes; lease takeover after SIGKILL"};
  Setup s;
  app.add_option("--moves", s.moves, "Concurrent moves (tenants)")->capture_default_str();
  app.add_option("--tenant-items", s.tenant_items, "order_items rows per tenant")
      ->capture_default_str();
  app.add_option("--lease-ttl", s.lease_ttl, "Lease TTL, seconds")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (Status st = checkRange("--moves", s.moves, 1, 32); !st) return reportError(argv[0], st.message());
  if (Status st = checkStampmoverBinary(STAMPMOVER_BIN); !st) return reportError(argv[0], st.message());
  auto dir = makeTempDir("bench-serve");
  if (!dir) return reportError(argv[0], dir.status().message());
  s.dir = *dir;
  RemoveDir cleanup_dir{s.dir};
  std::unique_ptr<harness::LocalCluster> a, b;
  if (Status st = startCluster("bench-serve-a", a); !st) return reportError(argv[0], st.message());
  if (Status st = startCluster("bench-serve-b", b); !st) return reportError(argv[0], st.message());
  for (const char* db : {"ours", "theirs", "takeover"}) {
    if (Status st = seed(*a, *b, db, s); !st) return reportError(argv[0], st.message());
  }
  for (const char* db : {"cp_ours", "cp_theirs", "cp_takeover"}) {
    if (Status st = makeDatabase(*b, db); !st) return reportError(argv[0], st.message());
  }
  const auto tenants = tenantsOf(s.moves);
  say("bench/serve: %u moves of ~%s rows each, lease TTL %.1f s\n", s.moves,
      withCommas(harness::seededTenantRows(s.tenant_items)).c_str(), s.lease_ttl);

  // --- ours: one serve process, N moves at once, the API timed meanwhile. ------------------
  const std::string ours_cfg =
      writeConfig(s, "ours", a->dsn("ours"), b->dsn("ours"), b->dsn("cp_ours"), s.moves);
  auto serve = startServe(s, ours_cfg, "serve-ours");
  if (!serve) return reportError(argv[0], serve.status().message());
  const int port = serve->second;
  std::vector<int64_t> ids;
  std::atomic<bool> stop{false};
  std::vector<double> lat_ms;
  std::mutex lat_mu;
  std::thread poller([&] {
    size_t i = 0;
    while (!stop) {
      std::string path = "/v1/moves";
      {
        std::lock_guard<std::mutex> g(lat_mu);
        if (!ids.empty() && i % 2) path += "/" + std::to_string(ids[i / 2 % ids.size()]);
      }
      const auto t0 = Clock::now();
      auto r = api::httpRequest(client(port), "GET", path);
      const double ms = secondsSince(t0) * 1000;
      if (r && r->status == 200) {
        std::lock_guard<std::mutex> g(lat_mu);
        lat_ms.push_back(ms);
      }
      ++i;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  const auto t_ours = Clock::now();
  for (int64_t t : tenants) {
    auto m = call(port, "POST", "/v1/moves",
                  json{{"tenant", std::to_string(t)}, {"from", "stamp-a"}, {"to", "stamp-b"}}.dump());
    if (!m) {
      stop = true;
      poller.join();
      return reportError(argv[0], m.status().message());
    }
    std::lock_guard<std::mutex> g(lat_mu);
    ids.push_back((*m)["id"].get<int64_t>());
  }
  size_t max_running = 0, succeeded = 0;
  std::string failed;
  while (secondsSince(t_ours) < 150) {
    auto l = call(port, "GET", "/v1/moves");
    if (l) {
      size_t running = 0;
      succeeded = 0;
      for (const auto& m : (*l)["moves"]) {
        const std::string state = m["state"];
        running += state == "running";
        succeeded += state == "succeeded";
        if (state == "failed" || state == "cancelled") failed = m.dump();
      }
      max_running = std::max(max_running, running);
      if (succeeded == ids.size() || !failed.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const double ours_s = secondsSince(t_ours);
  stop = true;
  poller.join();
  stopServe(serve->first);
  if (succeeded != ids.size()) {
    return reportError(argv[0], "ours: " + std::to_string(succeeded) + " of " +
                                    std::to_string(ids.size()) + " moves succeeded " + failed +
                                    "\n" + tailLines(readFile(serve->first.log_path), 30));
  }

  // --- theirs: N standalone migrate processes on an identical copy. ------------------------
  const std::string theirs_cfg =
      writeConfig(s, "theirs", a->dsn("theirs"), b->dsn("theirs"), b->dsn("cp_theirs"), 0);
  const auto t_theirs = Clock::now();
  std::vector<Child> kids;
  for (int64_t t : tenants) {
    auto c = spawnChild({STAMPMOVER_BIN, "--config", theirs_cfg, "--state-dir",
                         s.dir + "/theirs-state-" + std::to_string(t), "migrate", "--tenant",
                         std::to_string(t), "--from", "stamp-a", "--to", "stamp-b", "--cutover",
                         "auto", "--soak", "1", "--control-plane-dsn", b->dsn("cp_theirs"),
                         "--progress", "log"},
                        s.dir + "/migrate-" + std::to_string(t) + ".log", false);
    if (!c) return reportError(argv[0], c.status().message());
    kids.push_back(std::move(*c));
  }
  for (auto& k : kids) {
    auto r = waitChild(k, std::chrono::seconds(150));
    if (Status st = childStatus(r, "migrate", k.log_path); !st) return reportError(argv[0], st.message());
  }
  const double theirs_s = secondsSince(t_theirs);

  // --- takeover: SIGKILL the owner mid-catch-up; a second serve takes the move over. -------
  const std::string tk_cfg =
      writeConfig(s, "takeover", a->dsn("takeover"), b->dsn("takeover"), b->dsn("cp_takeover"), 1);
  auto first = startServe(s, tk_cfg, "serve-first");
  if (!first) return reportError(argv[0], first.status().message());
  auto m = call(first->second, "POST", "/v1/moves",
                R"({"tenant": "42", "from": "stamp-a", "to": "stamp-b", "cutover": "manual"})");
  if (!m) return reportError(argv[0], m.status().message());
  const std::string id = std::to_string((*m)["id"].get<int64_t>());
  bool catching_up = false;
  for (auto t0 = Clock::now(); secondsSince(t0) < 60 && !catching_up;) {
    auto g = call(first->second, "GET", "/v1/moves/" + id);
    catching_up = g && (*g)["progress"]["phase"] == "catching_up";
    if (!catching_up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!catching_up) return reportError(argv[0], "takeover: the move did not reach catch-up");
  auto second = startServe(s, tk_cfg, "serve-second");
  if (!second) return reportError(argv[0], second.status().message());
  kill(first->first.pid, SIGKILL);
  const auto t_kill = Clock::now();
  waitChild(first->first, std::chrono::seconds(10));
  double takeover_s = -1;
  while (secondsSince(t_kill) < 10 * s.lease_ttl) {
    auto g = call(second->second, "GET", "/v1/moves/" + id);
    if (g && (*g)["owner"] == "serve-second") {
      takeover_s = secondsSince(t_kill);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stopServe(second->first);

  const double p50 = percentile(lat_ms, 0.50), p99 = percentile(lat_ms, 0.99);
  const bool conc_ok = max_running >= s.moves && p99 <= 50;
  const bool tk_ok = takeover_s >= 0 && takeover_s <= 2 * s.lease_ttl;
  say("\nresults (%u moves)\n", s.moves);
  say("  ours    one serve:            all done in %6.1f s, %zu running at once at most; API p50 "
      "%.1f ms, p99 %.1f ms, max %.1f ms (%zu requests)\n",
      ours_s, max_running, p50, p99, lat_ms.empty() ? 0.0 : *std::max_element(lat_ms.begin(), lat_ms.end()),
      lat_ms.size());
  say("  theirs  %u migrate processes: all done in %6.1f s\n", s.moves, theirs_s);
  say("  ratio   ours/theirs %.2fx\n", ours_s / theirs_s);
  say("  target  >= %u concurrent with API p99 <= 50 ms: %s\n", s.moves, conc_ok ? "met" : "MISSED");
  say("  takeover after SIGKILL: %.2f s (lease TTL %.1f s; target <= %.1f s): %s\n", takeover_s,
      s.lease_ttl, 2 * s.lease_ttl, tk_ok ? "met" : "MISSED");
  return conc_ok && tk_ok ? 0 : 1;
}
