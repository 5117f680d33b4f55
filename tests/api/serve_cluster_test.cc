// Two `stampmover serve` processes sharing one queue, as two workers of a deployment (issue 12):
// the owner of a move mid-catch-up is stopped (SIGSTOP) until the other takes the move over and
// fences the destination, then woken (SIGCONT): it writes nothing more; the new owner is killed
// with SIGKILL mid-catch-up under a live writer and the survivor takes over from the checkpoints
// within 2x the lease TTL; the tenant ends identical (independent SELECT dumps). Then ten moves
// queued at once run within the global and per-stamp limits, and a move is throttled by a load
// signal with `move show` saying why.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "api/client.h"
#include "harness/seed.h"
#include "tests/support/test_support.h"
#include "tests/support/writer.h"

namespace st = stampmover::testing;
using namespace std::chrono_literals;
using nlohmann::json;
using stampmover::api::ClientOptions;
using stampmover::api::httpRequest;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kToken = "operate-token-0123456789abcdef";
constexpr double kLeaseTtl = 3.0;  // seconds

void writeFile(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit,
                std::chrono::milliseconds step = 100ms) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(step);
  }
  return pred();
}

// The stamps file every serve process of a test reads: stamps, a shared state volume and the
// serve: section. `stamps` maps names to DSNs.
std::string writeConfig(const st::TempDir& dir, const std::map<std::string, std::string>& stamps,
                        const std::string& cp_dsn, const std::string& extra_serve = "") {
  writeFile(dir.path() + "/tokens", kToken + " operate\n");
  std::string y = "state_dir: " + dir.path() + "/state\nstamps:\n";
  for (const auto& [name, dsn] : stamps) y += "  " + name + ":\n    dsn: \"" + dsn + "\"\n";
  y += "serve:\n"
       "  tokens_file: " + dir.path() + "/tokens\n"
       "  control_plane_dsn: \"" + cp_dsn + "\"\n"
       "  lease_ttl_seconds: " + std::to_string(kLeaseTtl) + "\n"
       "  soak_seconds: 1\n"
       "  drain_timeout_seconds: 20\n" + extra_serve;
  writeFile(dir.path() + "/stampmover.yaml", y);
  return dir.path() + "/stampmover.yaml";
}

// One serve process on 127.0.0.1 (port picked by the kernel), stopped by pid at the end.
struct Serve {
  std::string name, log;
  std::unique_ptr<st::ChildProcess> child;
  int port = 0;
  bool stopped = false;  // SIGSTOPped: SIGCONT before the destructor's SIGKILL is not needed

  bool start(const std::string& config, const std::string& dir, const std::string& owner,
             const std::vector<std::string>& extra = {}) {
    name = owner;
    log = dir + "/" + owner + ".log";
    std::vector<std::string> args = {"--config", config, "serve", "--listen", "127.0.0.1:0",
                                     "--owner", owner};
    args.insert(args.end(), extra.begin(), extra.end());
    child = std::make_unique<st::ChildProcess>(st::spawnStampmover(args, log));
    std::regex re("serve: listening on 127\\.0\\.0\\.1:([0-9]+)");
    for (int i = 0; i < 600; ++i) {
      std::smatch m;
      std::string text = st::readFile(log);
      if (std::regex_search(text, m, re)) {
        port = std::stoi(m[1]);
        return true;
      }
      if (kill(child->pid(), 0) != 0) break;
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << owner << " did not start:\n" << st::readFile(log);
    return false;
  }
  pid_t pid() const { return child->pid(); }
  ClientOptions client() const {
    ClientOptions o;
    o.base_url = "http://127.0.0.1:" + std::to_string(port);
    o.token = kToken;
    o.timeout = 20s;
    return o;
  }
};

json callJson(const Serve& s, const std::string& method, const std::string& path,
              const std::string& body = "", int* status = nullptr) {
  auto r = httpRequest(s.client(), method, path, body);
  if (!r) {
    ADD_FAILURE() << s.name << " " << method << " " << path << ": " << r.status().message();
    return json();
  }
  if (status) *status = r->status;
  return json::parse(r->body, nullptr, false);
}

// The queue's row of the move, read from the control plane directly (not through either API,
// since one of the processes may be stopped).
struct QueueRow {
  std::string state, owner, phase;
  int64_t epoch = 0;
  bool flipped = false;
};
QueueRow queueRow(stampmover::common::PgConnection& cp, int64_t id) {
  QueueRow q;
  q.state = st::scalar(cp, "SELECT state FROM stampmover_queue.moves WHERE id = $1", {std::to_string(id)});
  q.owner = st::scalar(cp, "SELECT coalesce(owner, '') FROM stampmover_queue.moves WHERE id = $1",
                       {std::to_string(id)});
  q.phase = st::scalar(cp, "SELECT coalesce(progress->>'phase', '') FROM stampmover_queue.moves "
                           "WHERE id = $1", {std::to_string(id)});
  std::string e = st::scalar(cp, "SELECT epoch FROM stampmover_queue.moves WHERE id = $1",
                             {std::to_string(id)});
  q.epoch = e.empty() ? 0 : std::stoll(e);
  q.flipped = st::scalar(cp, "SELECT flipped FROM stampmover_queue.moves WHERE id = $1",
                         {std::to_string(id)}) == "t";
  return q;
}

std::string scratchCount(stampmover::common::PgConnection& c, int64_t id) {
  return st::scalar(c, "SELECT count(*) FROM scratch WHERE tenant_id = 42 AND id = $1",
                    {std::to_string(id)});
}

// Sum of every sample of metric `name` (any labels) in serve's /metrics.
double metricSum(const Serve& s, const std::string& name) {
  auto r = httpRequest(s.client(), "GET", "/metrics");
  if (!r || r->status != 200) {
    ADD_FAILURE() << s.name << " /metrics: " << (r ? r->body : r.status().message());
    return -1;
  }
  std::regex line("^" + name + R"((\{[^}]*\})? ([0-9.eE+-]+)$)");
  std::istringstream in(r->body);
  std::string l;
  double sum = 0;
  while (std::getline(in, l)) {
    std::smatch m;
    if (std::regex_match(l, m, line)) sum += std::stod(m[2]);
  }
  return sum;
}

}  // namespace

TEST(ServeCluster, StoppedOwnerIsFencedKilledOwnerIsTakenOverTenantIdentical) {
  const std::string db = st::freshDatabase();
  const std::string cp_db = st::freshDatabase();
  const std::string src_dsn = st::sourceCluster().dsn(db), dst_dsn = st::destCluster().dsn(db);
  const std::string cp_dsn = st::destCluster().dsn(cp_db);
  auto src = st::connectOrDie(src_dsn), dst = st::connectOrDie(dst_dsn), cp = st::connectOrDie(cp_dsn);
  for (auto* c : {&src, &dst}) ASSERT_TRUE(stampmover::harness::createDemoSchema(*c).isOk());
  st::createScratchTable(src_dsn);
  st::createScratchTable(dst_dsn);
  stampmover::harness::SeedOptions seed;
  seed.tenant_items = 2000;
  seed.other_items = 2000;
  ASSERT_TRUE(stampmover::harness::seedTenants(src, seed).isOk());

  st::TempDir dir;  // one state volume shared by both processes (per-move directories)
  const std::string config =
      writeConfig(dir, {{"stamp-a", src_dsn}, {"stamp-b", dst_dsn}}, cp_dsn, "  workers: 2\n");
  std::map<std::string, std::unique_ptr<Serve>> serves;
  for (const std::string owner : {"serve-a", "serve-b"}) {
    serves[owner] = std::make_unique<Serve>();
    ASSERT_TRUE(serves[owner]->start(config, dir.path(), owner));
  }
  auto other = [&](const std::string& owner) { return owner == "serve-a" ? "serve-b" : "serve-a"; };

  int status = 0;
  json created = callJson(*serves["serve-a"], "POST", "/v1/moves",
                          R"({"tenant": "42", "from": "stamp-a", "to": "stamp-b", "cutover": "manual"})",
                          &status);
  ASSERT_EQ(status, 201) << created.dump();
  const int64_t id = created["id"].get<int64_t>();
  ASSERT_TRUE(eventually([&] { return queueRow(cp, id).phase == "catching_up"; }, 120s))
      << queueRow(cp, id).phase << "\n" << st::readFile(serves["serve-a"]->log)
      << st::readFile(serves["serve-b"]->log);
  st::execOrDie(src, "INSERT INTO scratch VALUES (42, 1000001, 'applied by the first owner')");
  ASSERT_TRUE(eventually([&] { return scratchCount(dst, 1000001) == "1"; }, 30s));

  // --- SIGSTOP the owner: the other takes the move over and fences the destination. ---------
  const QueueRow first = queueRow(cp, id);
  const std::string h = first.owner, o = other(h);
  ASSERT_TRUE(serves.count(h)) << h;
  ASSERT_EQ(kill(serves[h]->pid(), SIGSTOP), 0);
  serves[h]->stopped = true;
  const auto t_stop = Clock::now();
  ASSERT_TRUE(eventually([&] { return queueRow(cp, id).epoch > first.epoch; }, 20s));
  const double takeover_stop = std::chrono::duration<double>(Clock::now() - t_stop).count();
  EXPECT_LE(takeover_stop, 2 * kLeaseTtl) << "takeover of a stopped owner";
  const int64_t fenced_epoch = queueRow(cp, id).epoch;
  ASSERT_TRUE(eventually([&] {
    return st::scalar(dst, "SELECT epoch FROM stampmover.move_owners WHERE move_id = $1",
                      {std::to_string(id)}) == std::to_string(fenced_epoch);
  }, 20s)) << st::readFile(serves[o]->log);
  // Hold the new owner still too, so that nothing may legitimately apply the next row; then wake
  // the fenced one. Whatever it was doing (an open apply transaction, a lease renewal), it must
  // not get a row in.
  ASSERT_EQ(kill(serves[o]->pid(), SIGSTOP), 0);
  st::execOrDie(src, "INSERT INTO scratch VALUES (42, 1000002, 'must not be applied by the fenced owner')");
  ASSERT_EQ(kill(serves[h]->pid(), SIGCONT), 0);
  serves[h]->stopped = false;
  // Epochs only grow: the row appearing while the move's epoch is still the fenced one would be
  // a write of the woken owner at its old epoch.
  const auto watch_end = Clock::now() + 6s;
  bool applied_by_new_claim = false;
  while (Clock::now() < watch_end) {
    const bool present = scratchCount(dst, 1000002) == "1";
    const int64_t epoch_now = queueRow(cp, id).epoch;
    if (present) {
      EXPECT_GT(epoch_now, fenced_epoch) << "the fenced owner wrote after it was fenced";
      applied_by_new_claim = true;
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(eventually([&] {
    return st::readFile(serves[h]->log).find("epoch " + std::to_string(first.epoch) + " lost") !=
           std::string::npos;
  }, 20s)) << st::readFile(serves[h]->log);
  ASSERT_EQ(kill(serves[o]->pid(), SIGCONT), 0);
  ASSERT_TRUE(eventually([&] { return scratchCount(dst, 1000002) == "1"; }, 60s))
      << st::readFile(serves[o]->log) << st::readFile(serves[h]->log);
  (void)applied_by_new_claim;

  // --- SIGKILL the owner mid-catch-up under a live writer: the survivor takes over. -----------
  ASSERT_TRUE(eventually([&] {
    QueueRow q = queueRow(cp, id);
    return q.state == "running" && q.phase == "catching_up" && serves.count(q.owner);
  }, 60s)) << queueRow(cp, id).owner;
  st::WriterOptions wo;
  wo.dsn = src_dsn;
  wo.duration = 20s;
  wo.truncates = false;
  wo.pause = std::chrono::microseconds(2000);
  auto writer = std::make_unique<st::Writer>(wo);
  std::this_thread::sleep_for(2s);  // changes flowing
  const QueueRow before_kill = queueRow(cp, id);
  const std::string victim = before_kill.owner, survivor = other(victim);
  ASSERT_EQ(kill(serves[victim]->pid(), SIGKILL), 0);
  EXPECT_EQ(serves[victim]->child->wait(), -SIGKILL);
  const auto t_kill = Clock::now();
  ASSERT_TRUE(eventually([&] {
    QueueRow q = queueRow(cp, id);
    return q.owner == survivor && q.epoch > before_kill.epoch;
  }, 30s)) << st::readFile(serves[survivor]->log);
  const double takeover_kill = std::chrono::duration<double>(Clock::now() - t_kill).count();
  EXPECT_LE(takeover_kill, 2 * kLeaseTtl) << "takeover of a killed owner";
  std::printf("takeover after SIGSTOP: %.2f s, after SIGKILL: %.2f s (lease TTL %.1f s)\n",
              takeover_stop, takeover_kill, kLeaseTtl);
  ASSERT_TRUE(eventually([&] { return queueRow(cp, id).phase == "catching_up"; }, 60s))
      << st::readFile(serves[survivor]->log);
  writer->stop();
  st::execOrDie(src, "INSERT INTO scratch VALUES (42, 1000003, 'after the writer')");
  ASSERT_TRUE(eventually([&] { return scratchCount(dst, 1000003) == "1"; }, 60s))
      << st::readFile(serves[survivor]->log);

  // --- The operator's cutover and finalize through the survivor's API. ----------------------
  json c = callJson(*serves[survivor], "POST", "/v1/moves/" + std::to_string(id) + "/cutover", "", &status);
  ASSERT_EQ(status, 202) << c.dump();
  ASSERT_TRUE(eventually([&] { return queueRow(cp, id).flipped; }, 90s))
      << st::readFile(serves[survivor]->log);
  json f = callJson(*serves[survivor], "POST", "/v1/moves/" + std::to_string(id) + "/finalize", "", &status);
  ASSERT_EQ(status, 202) << f.dump();
  ASSERT_TRUE(eventually([&] { return queueRow(cp, id).state == "succeeded"; }, 90s))
      << st::readFile(serves[survivor]->log);
  json shown = callJson(*serves[survivor], "GET", "/v1/moves/" + std::to_string(id));
  EXPECT_EQ(shown["state"], "succeeded") << shown.dump();
  EXPECT_EQ(st::scalar(cp, "SELECT stamp || '/' || state FROM stampmover_routing.routes WHERE tenant = '42'"),
            "stamp-b/active");
  ASSERT_NO_FATAL_FAILURE(st::expectDemoTenantEqual(src, dst));
  if (std::getenv("SERVE_CLUSTER_TEST_LOGS")) {
    for (auto& [n, sv] : serves) std::printf("==== %s\n%s", n.c_str(), st::readFile(sv->log).c_str());
  }
  // The survivor drains on SIGTERM.
  ASSERT_EQ(kill(serves[survivor]->pid(), SIGTERM), 0);
  EXPECT_EQ(serves[survivor]->child->wait(), 0) << st::readFile(serves[survivor]->log);
}

TEST(ServeCluster, TenQueuedMovesRunWithinTheLimits) {
  // Two source and two destination databases: stamp-a -> stamp-b and stamp-c -> stamp-d, five
  // tenants each (tenant ids are global: 42, 1..4 on stamp-a, 142, 101..104 on stamp-c), so the
  // global limit (3) binds apart from the per-stamp ones (2).
  const std::string db1 = st::freshDatabase(), db2 = st::freshDatabase(), cp_db = st::freshDatabase();
  const std::string cp_dsn = st::destCluster().dsn(cp_db);
  const std::map<std::string, std::vector<int64_t>> tenants = {{db1, {42, 1, 2, 3, 4}},
                                                                {db2, {142, 101, 102, 103, 104}}};
  for (const auto& db : {db1, db2}) {
    auto s = st::connectOrDie(st::sourceCluster().dsn(db));
    auto d = st::connectOrDie(st::destCluster().dsn(db));
    ASSERT_TRUE(stampmover::harness::createDemoSchema(s).isOk());
    ASSERT_TRUE(stampmover::harness::createDemoSchema(d).isOk());
    st::createScratchTable(st::sourceCluster().dsn(db));
    st::createScratchTable(st::destCluster().dsn(db));
    stampmover::harness::SeedOptions seed;
    seed.tenant_items = 300;
    seed.tenant = tenants.at(db)[0];
    seed.others = {tenants.at(db).begin() + 1, tenants.at(db).end()};
    seed.other_items = 1200;
    ASSERT_TRUE(stampmover::harness::seedTenants(s, seed).isOk());
  }
  st::TempDir dir;
  const std::string config = writeConfig(
      dir,
      {{"stamp-a", st::sourceCluster().dsn(db1)}, {"stamp-b", st::destCluster().dsn(db1)},
       {"stamp-c", st::sourceCluster().dsn(db2)}, {"stamp-d", st::destCluster().dsn(db2)}},
      cp_dsn,
      "  workers: 4\n  max_moves: 3\n  max_per_source: 2\n  max_per_destination: 2\n");
  Serve s1, s2;
  ASSERT_TRUE(s1.start(config, dir.path(), "serve-1"));
  ASSERT_TRUE(s2.start(config, dir.path(), "serve-2"));
  auto cp = st::connectOrDie(cp_dsn);
  std::vector<int64_t> ids;
  for (size_t i = 0; i < 5; ++i) {
    for (auto [from, to, t] : {std::tuple{"stamp-a", "stamp-b", tenants.at(db1)[i]},
                               std::tuple{"stamp-c", "stamp-d", tenants.at(db2)[i]}}) {
      int status = 0;
      json m = callJson(ids.size() % 2 ? s1 : s2, "POST", "/v1/moves",
                        json{{"tenant", std::to_string(t)}, {"from", from}, {"to", to}}.dump(),
                        &status);
      ASSERT_EQ(status, 201) << m.dump();
      ids.push_back(m["id"].get<int64_t>());
    }
  }
  ASSERT_EQ(ids.size(), 10u);
  // Watch the queue until every move is done; the most ever running at once, in all and per
  // stamp, by the control plane's own rows.
  int max_all = 0;
  std::map<std::string, int> max_stamp;
  bool done = false;
  const auto end = Clock::now() + 240s;
  while (!done && Clock::now() < end) {
    auto run = cp.query("SELECT from_stamp, to_stamp FROM stampmover_queue.moves WHERE state = 'running'");
    ASSERT_TRUE(run.isOk());
    const int n = PQntuples(run->get());
    max_all = std::max(max_all, n);
    std::map<std::string, int> per;
    for (int i = 0; i < n; ++i) {
      per[std::string("from ") + PQgetvalue(run->get(), i, 0)]++;
      per[std::string("to ") + PQgetvalue(run->get(), i, 1)]++;
    }
    for (auto& [k, v] : per) max_stamp[k] = std::max(max_stamp[k], v);
    done = st::scalar(cp, "SELECT count(*) FROM stampmover_queue.moves WHERE state IN "
                          "('queued', 'running', 'paused')") == "0";
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(done) << st::readFile(s1.log) << st::readFile(s2.log);
  EXPECT_EQ(max_all, 3) << "global limit 3";
  for (const auto& [k, v] : max_stamp) EXPECT_LE(v, 2) << k;
  EXPECT_EQ(st::scalar(cp, "SELECT count(*) FROM stampmover_queue.moves WHERE state = 'succeeded'"),
            "10")
      << st::scalar(cp, "SELECT string_agg(id || ' ' || state || ' ' || coalesce(last_error, ''), E'\\n') "
                        "FROM stampmover_queue.moves");
  // What the two processes' /metrics say about the ten moves. A move's windows are observed when
  // its run returns to the pool, a moment after the queue row says succeeded: wait for them.
  auto windows = [&] {
    return metricSum(s1, "stampmover_cutover_window_seconds_count") +
           metricSum(s2, "stampmover_cutover_window_seconds_count");
  };
  for (const auto until = Clock::now() + 10s; windows() < 10.0 && Clock::now() < until;) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_GE(windows(), 10.0);
  EXPECT_GT(metricSum(s1, "stampmover_copied_rows_total") +
                metricSum(s2, "stampmover_copied_rows_total"),
            0.0);
  EXPECT_GT(metricSum(s1, "stampmover_copied_bytes_total") +
                metricSum(s2, "stampmover_copied_bytes_total"),
            0.0);
  EXPECT_EQ(metricSum(s1, "stampmover_moves") + metricSum(s2, "stampmover_moves") > 0, true);
  // Every tenant identical on its destination, by independent dumps.
  for (const auto& db : {db1, db2}) {
    auto s = st::connectOrDie(st::sourceCluster().dsn(db));
    auto d = st::connectOrDie(st::destCluster().dsn(db));
    for (int64_t t : tenants.at(db)) {
      for (const auto& [table, order] : st::kDemoTenantTables) {
        auto a = st::tenantRows(s, table, std::to_string(t), order);
        auto b = st::tenantRows(d, table, std::to_string(t), order);
        EXPECT_EQ(a, b) << db << " tenant " << t << " table " << table;
        if (std::string(table) == "accounts") EXPECT_FALSE(a.empty()) << t;
      }
    }
  }
}

TEST(ServeCluster, ThrottledByALoadSignalAndShowSaysWhy) {
  const std::string db = st::freshDatabase(), cp_db = st::freshDatabase();
  const std::string src_dsn = st::sourceCluster().dsn(db), dst_dsn = st::destCluster().dsn(db);
  auto src = st::connectOrDie(src_dsn), dst = st::connectOrDie(dst_dsn);
  ASSERT_TRUE(stampmover::harness::createDemoSchema(src).isOk());
  ASSERT_TRUE(stampmover::harness::createDemoSchema(dst).isOk());
  st::createScratchTable(src_dsn);
  st::createScratchTable(dst_dsn);
  stampmover::harness::SeedOptions seed;
  seed.tenant_items = 300;
  seed.other_items = 300;
  ASSERT_TRUE(stampmover::harness::seedTenants(src, seed).isOk());
  // The operator's load signal: a value their monitoring keeps in a table on the source.
  st::execOrDie(src, "CREATE TABLE ops_load (v numeric NOT NULL); INSERT INTO ops_load VALUES (0)");
  st::TempDir dir;
  const std::string config = writeConfig(
      dir, {{"stamp-a", src_dsn}, {"stamp-b", dst_dsn}}, st::destCluster().dsn(cp_db),
      "  workers: 1\n  throttle_load_query: \"SELECT v FROM ops_load\"\n"
      "  throttle_load_threshold: 10\n  throttle_delay_ms: 300\n"
      // No standbys here: the lag query runs every sample (a failing one would stop the load
      // signal being read, and the test) and never throttles.
      "  throttle_source_lag_bytes: 1048576\n");
  Serve s;
  ASSERT_TRUE(s.start(config, dir.path(), "serve-t", {"--log-format", "json"}));
  int status = 0;
  json m = callJson(s, "POST", "/v1/moves",
                    R"({"tenant": "42", "from": "stamp-a", "to": "stamp-b", "cutover": "manual"})", &status);
  ASSERT_EQ(status, 201) << m.dump();
  const std::string id = std::to_string(m["id"].get<int64_t>());
  auto show = [&] { return callJson(s, "GET", "/v1/moves/" + id); };
  ASSERT_TRUE(eventually([&] { return show()["progress"]["phase"] == "catching_up"; }, 120s))
      << st::readFile(s.log);
  EXPECT_EQ(show()["progress"]["throttled"], false);
  // --log-format json: the move's lines carry its id, tenant and phase.
  EXPECT_NE(st::readFile(s.log).find(R"("move":")" + id + R"(","tenant":"42","phase":"catching_up")"),
            std::string::npos)
      << st::readFile(s.log);

  st::execOrDie(src, "UPDATE ops_load SET v = 50");
  ASSERT_TRUE(eventually([&] { return show()["progress"]["throttled"] == true; }, 20s))
      << show().dump() << st::readFile(s.log);
  const std::string reason = show()["progress"]["throttle_reason"].get<std::string>();
  EXPECT_NE(reason.find("source load signal 50 > 10"), std::string::npos) << reason;
  EXPECT_EQ(reason.rfind("since 20", 0), 0u) << reason;  // since <UTC time>
  EXPECT_NE(st::readFile(s.log).find("throttling (source load signal 50 > 10)"), std::string::npos);
  EXPECT_EQ(metricSum(s, "stampmover_throttled"), 1.0);
  // Throttled, changes still arrive (slower): each destination transaction waits 300 ms.
  const auto t0 = Clock::now();
  for (int i = 0; i < 5; ++i) {
    st::execOrDie(src, "INSERT INTO scratch VALUES (42, " + std::to_string(2000000 + i) + ", 'slow')");
  }
  ASSERT_TRUE(eventually([&] {
    return st::scalar(dst, "SELECT count(*) FROM scratch WHERE id >= 2000000") == "5";
  }, 30s));
  const double throttled_s = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_GE(throttled_s, 0.3) << "at least one throttled destination transaction";
  // The CLI's show says it too.
  writeFile(dir.path() + "/op.token", kToken + "\n");
  auto r = st::runStampmover({"move", "--api", "http://127.0.0.1:" + std::to_string(s.port),
                              "--token-file", dir.path() + "/op.token", "show", id});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("throttled:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("source load signal 50 > 10"), std::string::npos) << r.out;

  st::execOrDie(src, "UPDATE ops_load SET v = 1");
  ASSERT_TRUE(eventually([&] { return show()["progress"]["throttled"] == false; }, 20s))
      << show().dump();
  EXPECT_NE(st::readFile(s.log).find("throttle lifted"), std::string::npos);
  EXPECT_EQ(metricSum(s, "stampmover_throttled"), 0.0);
  // Cancel before the flip tears the move down.
  callJson(s, "POST", "/v1/moves/" + id + "/cancel", "", &status);
  EXPECT_EQ(status, 202);
  ASSERT_TRUE(eventually([&] { return show()["state"] == "cancelled"; }, 60s)) << show().dump();
}
