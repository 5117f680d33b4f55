// The API of `stampmover serve` against real processes: tokens and roles, strict bodies, limits,
// stable error codes, TLS with a certificate made here, the move verbs of the CLI, /metrics in
// the exposition format, the OpenAPI document against the route table, and the SIGTERM drain.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

#include "api/client.h"
#include "api/router.h"
#include "harness/seed.h"
#include "metrics/metrics.h"
#include "tests/support/test_support.h"

namespace st = stampmover::testing;
using nlohmann::json;
using stampmover::api::ClientOptions;
using stampmover::api::httpRequest;

namespace {

const std::string kOperateToken = "operate-token-0123456789abcdef";
const std::string kReadToken = "read-token-0123456789abcdef0000";

void writeFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

// A `serve` process on 127.0.0.1 with its own stamps file (the harness's two clusters, the
// control plane on the source cluster's fresh database) and tokens file.
struct Serve {
  st::TempDir dir;
  std::string log;
  std::unique_ptr<st::ChildProcess> child;
  int port = 0;

  // Starts serve with `extra` flags and waits for its "listening" line. Returns false (with the
  // log in the failure) when it exits or does not listen within 60 s.
  bool start(const std::vector<std::string>& extra, const std::string& db,
             const std::string& extra_yaml = "") {
    writeFile(dir.path() + "/tokens", "# test tokens\n" + kOperateToken + " operate\n" + kReadToken + " read\n");
    writeFile(dir.path() + "/stamps.yaml",
              "state_dir: " + dir.path() + "/state\n"
              "stamps:\n"
              "  stamp-a:\n    dsn: \"" + st::sourceCluster().dsn(db) + "\"\n"
              "  stamp-b:\n    dsn: \"" + st::destCluster().dsn(db) + "\"\n"
              "serve:\n"
              "  tokens_file: " + dir.path() + "/tokens\n"
              "  control_plane: stamp-a\n"
              "  workers: 0\n"
              "  drain_timeout_seconds: 10\n" + extra_yaml);
    std::vector<std::string> args = {"--config", dir.path() + "/stamps.yaml", "serve", "--listen",
                                     "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    log = dir.path() + "/serve.log";
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
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "serve did not start:\n" << st::readFile(log);
    return false;
  }

  ClientOptions client(const std::string& token, bool tls = false) const {
    ClientOptions o;
    o.base_url = std::string(tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(port);
    o.token = token;
    o.timeout = std::chrono::seconds(20);
    return o;
  }
};

struct Answer {
  int status = 0;
  json body;
  std::string raw;
};

Answer call(const ClientOptions& o, const std::string& method, const std::string& path,
            const std::string& body = "") {
  auto r = httpRequest(o, method, path, body);
  EXPECT_TRUE(r.isOk()) << method << " " << path << ": " << r.status().message();
  if (!r) return {};
  return {r->status, json::parse(r->body, nullptr, false), r->body};
}

std::string code(const Answer& a) {
  return a.body.is_object() && a.body.contains("code") ? a.body["code"].get<std::string>() : "";
}

}  // namespace

TEST(ApiTest, TokensRolesBodiesAndErrorCodes) {
  std::string db = st::freshDatabase();
  Serve s;
  ASSERT_TRUE(s.start({}, db));
  auto op = s.client(kOperateToken);
  auto rd = s.client(kReadToken);

  EXPECT_EQ(call(s.client(""), "GET", "/healthz").status, 200);
  Answer ready = call(s.client(""), "GET", "/readyz");
  EXPECT_EQ(ready.status, 200) << ready.raw;

  Answer a = call(s.client(""), "GET", "/v1/moves");
  EXPECT_EQ(a.status, 401);
  EXPECT_EQ(code(a), "unauthorized");
  a = call(s.client("wrong-token-0123456789abcdef"), "GET", "/v1/moves");
  EXPECT_EQ(a.status, 401);
  EXPECT_EQ(code(a), "unauthorized");
  // The tokens never reach the log.
  EXPECT_EQ(st::readFile(s.log).find("wrong-token"), std::string::npos);

  const std::string good = R"({"tenant": 42, "from": "stamp-a", "to": "stamp-b", "cutover": "manual"})";
  a = call(rd, "POST", "/v1/moves", good);
  EXPECT_EQ(a.status, 403);
  EXPECT_EQ(code(a), "forbidden");

  a = call(op, "POST", "/v1/moves", R"({"tenant": 42, "from": )");
  EXPECT_EQ(a.status, 400);
  EXPECT_EQ(code(a), "malformed_json");
  a = call(op, "POST", "/v1/moves", R"({"tenant": 42, "from": "stamp-a", "to": "stamp-b", "speed": 9})");
  EXPECT_EQ(a.status, 400);
  EXPECT_EQ(code(a), "unknown_field");
  EXPECT_NE(a.body["message"].get<std::string>().find("speed"), std::string::npos);
  a = call(op, "POST", "/v1/moves", R"({"tenant": 42, "to": "stamp-b"})");
  EXPECT_EQ(a.status, 400);
  EXPECT_EQ(code(a), "missing_field");
  a = call(op, "POST", "/v1/moves", R"([1, 2])");
  EXPECT_EQ(a.status, 400);
  EXPECT_EQ(code(a), "invalid_body");
  a = call(op, "POST", "/v1/moves", R"({"tenant": 42, "from": "stamp-a", "to": "stamp-zz"})");
  EXPECT_EQ(a.status, 422);
  EXPECT_EQ(code(a), "unknown_stamp");
  a = call(op, "GET", "/v1/nothing");
  EXPECT_EQ(a.status, 404);
  EXPECT_EQ(code(a), "route_not_found");
  a = call(op, "DELETE", "/v1/moves");
  EXPECT_EQ(a.status, 405);
  EXPECT_EQ(code(a), "method_not_allowed");
  a = call(op, "GET", "/v1/moves/999999");
  EXPECT_EQ(a.status, 404);
  EXPECT_EQ(code(a), "not_found");
  a = call(op, "GET", "/v1/moves?color=red");
  EXPECT_EQ(a.status, 400);
  EXPECT_EQ(code(a), "unknown_parameter");

  // Larger than the default 64 KiB limit.
  std::string big = R"({"tenant": ")" + std::string(100 * 1024, 'x') + R"(", "from": "stamp-a", "to": "stamp-b"})";
  a = call(op, "POST", "/v1/moves", big);
  EXPECT_EQ(a.status, 413);
  EXPECT_EQ(code(a), "payload_too_large");

  // A header block larger than the default 8 KiB limit, from an independent client (curl).
  {
    std::string curl = "curl -sS -o /dev/null -w '%{http_code}' -H 'X-Padding: " +
                       std::string(10 * 1024, 'p') + "' http://127.0.0.1:" +
                       std::to_string(s.port) + "/healthz";
    FILE* f = popen(curl.c_str(), "r");
    ASSERT_NE(f, nullptr);
    char buf[16] = {};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    pclose(f);
    EXPECT_EQ(std::string(buf, n), "431");
  }

  // A real move: queued (no workers here), shown, refused transitions, pause and resume.
  a = call(op, "POST", "/v1/moves", good);
  ASSERT_EQ(a.status, 201) << a.raw;
  const std::string id = std::to_string(a.body["id"].get<int64_t>());
  EXPECT_EQ(a.body["tenant"], "42");
  EXPECT_EQ(a.body["state"], "queued");
  a = call(rd, "GET", "/v1/moves/" + id);
  ASSERT_EQ(a.status, 200) << a.raw;
  EXPECT_EQ(a.body["from"], "stamp-a");
  EXPECT_EQ(a.body["cutover"], "manual");
  a = call(op, "POST", "/v1/moves", good);
  EXPECT_EQ(a.status, 409) << a.raw;
  EXPECT_EQ(code(a), "tenant_busy");
  a = call(op, "POST", "/v1/moves/" + id + "/cutover");
  EXPECT_EQ(a.status, 409) << a.raw;
  EXPECT_EQ(code(a), "illegal_transition");
  a = call(op, "POST", "/v1/moves/" + id + "/finalize", R"({"now": true})");
  EXPECT_EQ(a.status, 400);
  EXPECT_EQ(code(a), "unknown_field");
  a = call(op, "POST", "/v1/moves/" + id + "/pause");
  EXPECT_EQ(a.status, 202) << a.raw;
  EXPECT_EQ(call(rd, "GET", "/v1/moves/" + id).body["state"], "paused");
  a = call(op, "POST", "/v1/moves/" + id + "/resume", "{}");
  EXPECT_EQ(a.status, 202) << a.raw;
  EXPECT_EQ(call(rd, "GET", "/v1/moves/" + id).body["state"], "queued");
  a = call(rd, "GET", "/v1/moves?state=queued&tenant=42");
  ASSERT_EQ(a.status, 200);
  ASSERT_EQ(a.body["moves"].size(), 1u);

  // Every route of the table is served (none answers route_not_found).
  for (const auto& r : stampmover::api::routeTable()) {
    std::string path = std::regex_replace(r.path, std::regex("\\{id\\}"), id);
    Answer x = call(op, r.method, path);
    EXPECT_NE(code(x), "route_not_found") << r.method << " " << r.path;
  }
  // Still serving after all of it.
  EXPECT_EQ(call(s.client(""), "GET", "/healthz").status, 200);
}

// A running move's illegal transitions: the test stands in for the worker and writes the
// move's state and progress in the control plane, as a worker's claim and progress writes do.
TEST(ApiTest, IllegalTransitionsOfARunningMove) {
  std::string db = st::freshDatabase();
  Serve s;
  ASSERT_TRUE(s.start({}, db));
  auto op = s.client(kOperateToken);
  Answer a = call(op, "POST", "/v1/moves",
                  R"({"tenant": "9", "from": "stamp-a", "to": "stamp-b", "cutover": "manual"})");
  ASSERT_EQ(a.status, 201) << a.raw;
  const std::string id = std::to_string(a.body["id"].get<int64_t>());
  auto cp = st::connectOrDie(st::sourceCluster().dsn(db));
  auto setRunning = [&](const std::string& progress, bool flipped) {
    st::execOrDie(cp, "UPDATE stampmover_queue.moves SET state = 'running', owner = 'test-worker', "
                      "epoch = epoch + 1, lease_until = now() + interval '1 hour', progress = '" +
                          progress + "', flipped = " + (flipped ? "true" : "false") +
                          " WHERE id = " + id);
  };
  setRunning(R"({"phase": "copying", "rows_copied": 10, "rows_estimated": 100})", false);
  a = call(op, "POST", "/v1/moves/" + id + "/cutover");
  EXPECT_EQ(a.status, 409) << a.raw;
  EXPECT_EQ(code(a), "illegal_transition");
  EXPECT_NE(a.raw.find("still copying"), std::string::npos) << a.raw;
  a = call(op, "POST", "/v1/moves/" + id + "/finalize");
  EXPECT_EQ(a.status, 409) << a.raw;
  EXPECT_EQ(code(a), "illegal_transition");
  a = call(op, "POST", "/v1/moves/" + id + "/resume");
  EXPECT_EQ(a.status, 409) << a.raw;
  EXPECT_EQ(code(a), "illegal_transition");
  // Caught up: a manual cutover is accepted (filed for the worker).
  setRunning(R"({"phase": "catching_up", "lag_bytes": 0})", false);
  a = call(op, "POST", "/v1/moves/" + id + "/cutover");
  EXPECT_EQ(a.status, 202) << a.raw;
  // After the flip: cancel and pause are refused, rollback and finalize are the ways out.
  setRunning(R"({"phase": "dual_write", "flipped": true})", true);
  a = call(op, "POST", "/v1/moves/" + id + "/cancel");
  EXPECT_EQ(a.status, 409) << a.raw;
  EXPECT_EQ(code(a), "illegal_transition");
  EXPECT_NE(a.raw.find("cancel after flip"), std::string::npos) << a.raw;
  a = call(op, "POST", "/v1/moves/" + id + "/pause");
  EXPECT_EQ(a.status, 409) << a.raw;
  EXPECT_EQ(code(a), "illegal_transition");
  a = call(op, "POST", "/v1/moves/" + id + "/cutover");
  EXPECT_EQ(a.status, 409) << a.raw;
  a = call(op, "POST", "/v1/moves/" + id + "/finalize");
  EXPECT_EQ(a.status, 202) << a.raw;
  // Nothing above changed the move's owner or epoch: requests never take a lease.
  EXPECT_EQ(st::scalar(cp, "SELECT owner || ':' || epoch FROM stampmover_queue.moves WHERE id = " + id),
            "test-worker:3");
}

TEST(ApiTest, TlsWithSelfSignedCertificate) {
  std::string db = st::freshDatabase();
  Serve s;
  const std::string crt = s.dir.path() + "/tls.crt", key = s.dir.path() + "/tls.key";
  std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                    "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " + key +
                    " -out " + crt + " 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  ASSERT_TRUE(s.start({"--tls-cert", crt, "--tls-key", key}, db));
  EXPECT_NE(st::readFile(s.log).find("(tls)"), std::string::npos);

  auto o = s.client(kReadToken, true);
  o.ca_file = crt;
  Answer a = call(o, "GET", "/v1/moves");
  EXPECT_EQ(a.status, 200) << a.raw;
  // Without the CA the certificate does not verify: refused, not retried.
  auto no_ca = s.client(kReadToken, true);
  auto r = httpRequest(no_ca, "GET", "/v1/moves");
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().errorClass(), stampmover::common::ErrorClass::kRefused) << r.status().message();
  // Plain HTTP to the TLS port gets no answer.
  auto plain = s.client(kReadToken, false);
  plain.timeout = std::chrono::seconds(5);
  auto p = httpRequest(plain, "GET", "/v1/moves");
  EXPECT_TRUE(!p.isOk() || p->status == 400) << (p ? p->body : "");
  // An independent client: curl with the same CA.
  std::string curl = "curl -sS --cacert " + crt + " -H 'Authorization: Bearer " + kReadToken +
                     "' -o /dev/null -w '%{http_code}' https://127.0.0.1:" + std::to_string(s.port) +
                     "/v1/moves";
  FILE* f = popen(curl.c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buf[16] = {};
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  pclose(f);
  EXPECT_EQ(std::string(buf, n), "200");
}

TEST(ApiTest, RefusesPlaintextOnANonLoopbackAddress) {
  std::string db = st::freshDatabase();
  Serve s;
  ASSERT_TRUE(s.start({}, db));  // writes the files; this one is fine
  auto r = st::runStampmover({"--config", s.dir.path() + "/stamps.yaml", "serve", "--listen", "0.0.0.0:0"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("without TLS"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--insecure-plaintext"), std::string::npos) << r.err;

  // Bad settings: refused at start with the key or the file named, exit 2.
  const std::string cfg = s.dir.path() + "/stamps.yaml";
  std::string text = st::readFile(cfg);
  writeFile(s.dir.path() + "/bad.yaml", text + "  throttle_lag: 5\n");
  r = st::runStampmover(
      {"--config", s.dir.path() + "/bad.yaml", "serve", "--listen", "127.0.0.1:0"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("serve.throttle_lag: unknown key"), std::string::npos) << r.err;
  r = st::runStampmover(
      {"--config", cfg, "serve", "--listen", "127.0.0.1:0", "--throttle-delay-ms", "5000"});
  EXPECT_NE(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("--throttle-delay-ms"), std::string::npos) << r.err;
  r = st::runStampmover({"--config", cfg, "serve", "--listen", "127.0.0.1:0", "--tokens-file",
                         s.dir.path() + "/missing-tokens"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("missing-tokens"), std::string::npos) << r.err;
  // A stamps file without a serve: section is read (every setting from flags): the error is
  // the first missing flag, not the section.
  ASSERT_NE(text.find("\nserve:"), std::string::npos) << text;
  writeFile(s.dir.path() + "/no-serve.yaml", text.substr(0, text.find("\nserve:") + 1));
  r = st::runStampmover(
      {"--config", s.dir.path() + "/no-serve.yaml", "serve", "--listen", "127.0.0.1:0"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_EQ(r.err.find("expected a mapping"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--tokens-file"), std::string::npos) << r.err;
  // A tokens file with a short token: refused, naming the line, never echoing the token.
  writeFile(s.dir.path() + "/short-tokens", "sekrit operate\n");
  r = st::runStampmover({"--config", cfg, "serve", "--listen", "127.0.0.1:0", "--tokens-file",
                         s.dir.path() + "/short-tokens"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_EQ(r.err.find("sekrit"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("short-tokens"), std::string::npos) << r.err;
}

TEST(ApiTest, MetricsAreValidExposition) {
  std::string db = st::freshDatabase();
  Serve s;
  ASSERT_TRUE(s.start({}, db));
  call(s.client(kReadToken), "GET", "/v1/moves");  // at least one request counted
  EXPECT_EQ(call(s.client(""), "GET", "/metrics").status, 401);
  auto r = httpRequest(s.client(kReadToken), "GET", "/metrics");
  ASSERT_TRUE(r.isOk()) << r.status().message();
  ASSERT_EQ(r->status, 200);
  std::regex comment(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*$)");
  std::regex sample(
      R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)( -?[0-9]+)?$)");
  std::set<std::string> names;
  std::istringstream lines(r->body);
  std::string line;
  int samples = 0;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      EXPECT_TRUE(std::regex_match(line, comment)) << line;
      continue;
    }
    EXPECT_TRUE(std::regex_match(line, sample)) << line;
    names.insert(line.substr(0, line.find_first_of("{ ")));
    ++samples;
  }
  EXPECT_GT(samples, 10);
  for (const auto& n : stampmover::metrics::Registry::metricNames()) {
    bool present = false;
    for (const auto& seen : names) present |= seen.rfind(n, 0) == 0;
    EXPECT_TRUE(present || n.find("apply_") != std::string::npos ||
                n.find("verify") != std::string::npos || n == "stampmover_throttled" || n == "stampmover_moves")
        << n;
  }
  EXPECT_TRUE(names.count("stampmover_http_requests_total"));
  EXPECT_TRUE(names.count("stampmover_errors_total"));
  EXPECT_TRUE(names.count("stampmover_cutover_window_seconds_bucket"));
}

TEST(ApiTest, OpenApiDocumentListsExactlyTheServedRoutes) {
  YAML::Node doc = YAML::LoadFile(std::string(STAMPMOVER_SOURCE_DIR) + "/api/openapi.yaml");
  ASSERT_TRUE(doc["paths"].IsMap());
  std::set<std::string> documented, served;
  for (const auto& p : doc["paths"]) {
    for (const auto& m : p.second) {
      std::string method = m.first.as<std::string>();
      if (method == "parameters" || method == "summary" || method == "description") continue;
      for (auto& c : method) c = static_cast<char>(std::toupper(c));
      documented.insert(method + " " + p.first.as<std::string>());
    }
  }
  for (const auto& r : stampmover::api::routeTable()) served.insert(r.method + " " + r.path);
  EXPECT_EQ(documented, served);
}

// The schemas of the document against what the server sends and takes: a move's fields and its
// progress's fields are exactly the documented properties, and a request with every documented
// property is accepted.
TEST(ApiTest, OpenApiSchemasMatchTheServedJson) {
  YAML::Node doc = YAML::LoadFile(std::string(STAMPMOVER_SOURCE_DIR) + "/api/openapi.yaml");
  auto props = [&](const std::string& schema) {
    std::set<std::string> out;
    for (const auto& p : doc["components"]["schemas"][schema]["properties"]) {
      out.insert(p.first.as<std::string>());
    }
    return out;
  };
  std::string db = st::freshDatabase();
  Serve s;
  ASSERT_TRUE(s.start({}, db));
  json req = {{"tenant", "77"}, {"from", "stamp-a"}, {"to", "stamp-b"}, {"cutover", "manual"},
              {"priority", 5}, {"plan_id", "plan-1"}};
  std::set<std::string> sent;
  for (const auto& [k, v] : req.items()) sent.insert(k);
  EXPECT_EQ(sent, props("MoveRequest"));
  Answer a = call(s.client(kOperateToken), "POST", "/v1/moves", req.dump());
  ASSERT_EQ(a.status, 201) << a.raw;
  a = call(s.client(kReadToken), "GET", "/v1/moves/" + std::to_string(a.body["id"].get<int64_t>()));
  ASSERT_EQ(a.status, 200) << a.raw;
  std::set<std::string> move_keys, progress_keys;
  for (const auto& [k, v] : a.body.items()) move_keys.insert(k);
  for (const auto& [k, v] : a.body["progress"].items()) progress_keys.insert(k);
  EXPECT_EQ(move_keys, props("Move"));
  EXPECT_EQ(progress_keys, props("Progress"));
  EXPECT_EQ(a.body["priority"], 5);
  EXPECT_EQ(a.body["plan_id"], "plan-1");
}

TEST(ApiTest, MoveVerbsOfTheCli) {
  std::string db = st::freshDatabase();
  Serve s;
  ASSERT_TRUE(s.start({}, db));
  writeFile(s.dir.path() + "/op.token", kOperateToken + "\n");
  writeFile(s.dir.path() + "/read.token", kReadToken + "\n");
  const std::string api = "http://127.0.0.1:" + std::to_string(s.port);
  auto cli = [&](const std::string& token, std::vector<std::string> args) {
    std::vector<std::string> all = {"move", "--api", api, "--token-file", s.dir.path() + "/" + token};
    all.insert(all.end(), args.begin(), args.end());
    return st::runStampmover(all);
  };
  auto r = cli("op.token", {"create", "--tenant", "7", "--from", "stamp-a", "--to", "stamp-b", "--cutover", "manual"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("move ([0-9]+) queued"))) << r.out;
  const std::string id = m[1];
  r = cli("read.token", {"show", id});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("tenant 7, stamp-a -> stamp-b (cutover manual)"), std::string::npos) << r.out;
  r = cli("read.token", {"list"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("stamp-a"), std::string::npos) << r.out;
  r = cli("read.token", {"pause", id});
  EXPECT_EQ(r.exit_code, 2) << r.err;  // read role
  EXPECT_NE(r.err.find("forbidden"), std::string::npos) << r.err;
  r = cli("op.token", {"cutover", id});
  EXPECT_EQ(r.exit_code, 2) << r.err;  // still queued
  EXPECT_NE(r.err.find("illegal_transition"), std::string::npos) << r.err;
  r = cli("op.token", {"show", "123456"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = cli("op.token", {"cancel", id});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // An API that is not there: retryable.
  r = st::runStampmover({"move", "--api", "http://127.0.0.1:1", "--token-file", s.dir.path() + "/op.token", "list"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
}

TEST(ApiTest, SigtermDrainsAndExits) {
  std::string db = st::freshDatabase();
  Serve s;
  ASSERT_TRUE(s.start({"--log-format", "json"}, db));
  // An idle keep-alive connection must not hold the drain up.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(s.port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(s.child->pid(), SIGTERM), 0);
  int rc = s.child->wait();
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  close(fd);
  EXPECT_EQ(rc, 0) << st::readFile(s.log);
  EXPECT_LT(took, 8.0);
  std::string log = st::readFile(s.log);
  EXPECT_NE(log.find("serve: drained"), std::string::npos) << log;
  // --log-format json: log lines are JSON objects.
  EXPECT_NE(log.find("{\"ts\":\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"msg\":\"serve: draining"), std::string::npos) << log;
  // Nothing listens any more.
  auto r = httpRequest(s.client(""), "GET", "/healthz");
  EXPECT_FALSE(r.isOk());
}

// "The same through the API" (issue 13): the fleet routes of a real serve process over two
// stamps (the harness's two clusters, configured differently), four tenants all on stamp-a.
// Happy path: stamps, a plan (nothing moves), the plan by id, apply (moves queued, the plan
// shows them), pause. Refusals: an unknown plan id is 404 naming it, a read token may plan and
// read but not apply (403), an unknown body field is 400 naming it; nothing is queued by them.
// The demo schema on both stamps of `db`, four tenants of different sizes on stamp-a.
void seedFourTenantsOnA(const std::string& db) {
  for (auto* cl : {&st::sourceCluster(), &st::destCluster()}) {
    auto c = st::connectOrDie(cl->dsn(db));
    ASSERT_TRUE(stampmover::harness::createDemoSchema(c).isOk());
  }
  {
    auto c = st::connectOrDie(st::sourceCluster().dsn(db));
    for (uint64_t t = 1; t <= 4; ++t) {
      stampmover::harness::SeedOptions so;
      so.tenant = t;
      so.tenant_items = 50 + 30 * t;
      so.others = {};
      so.other_items = 0;
      ASSERT_TRUE(stampmover::harness::seedTenants(c, so).isOk());
    }
    st::execOrDie(c, "ANALYZE");
  }
}

TEST(ApiTest, RebalanceRoutes) {
  std::string db = st::freshDatabase();
  ASSERT_NO_FATAL_FAILURE(seedFourTenantsOnA(db));
  Serve s;
  ASSERT_TRUE(s.start({}, db));
  auto op = s.client(kOperateToken);
  auto rd = s.client(kReadToken);

  Answer stamps = call(rd, "GET", "/v1/stamps");
  ASSERT_EQ(stamps.status, 200) << stamps.raw;
  ASSERT_EQ(stamps.body.size(), 2u) << stamps.raw;
  EXPECT_EQ(stamps.body[0]["stamp"], "stamp-a");
  EXPECT_EQ(stamps.body[0]["tenants"], 4);
  EXPECT_EQ(stamps.body[1]["tenants"], 0);
  {
    YAML::Node doc = YAML::LoadFile(std::string(STAMPMOVER_SOURCE_DIR) + "/api/openapi.yaml");
    std::set<std::string> documented, served;
    for (const auto& p : doc["components"]["schemas"]["Stamp"]["properties"]) {
      documented.insert(p.first.as<std::string>());
    }
    for (const auto& [k, v] : stamps.body[0].items()) served.insert(k);
    EXPECT_EQ(documented, served);
  }

  Answer bad = call(rd, "POST", "/v1/plans", R"({"max_movez": 3})");
  EXPECT_EQ(bad.status, 400) << bad.raw;
  EXPECT_NE(bad.raw.find("max_movez"), std::string::npos) << bad.raw;

  Answer plan = call(rd, "POST", "/v1/plans", R"({"max_moves": 2, "seed": 1})");
  ASSERT_EQ(plan.status, 201) << plan.raw;
  const std::string id = plan.body["id"];
  ASSERT_EQ(plan.body["moves"].size(), 2u) << plan.raw;
  Answer moves = call(rd, "GET", "/v1/moves");
  ASSERT_EQ(moves.status, 200);
  EXPECT_TRUE(moves.body["moves"].empty()) << "planning queued something: " << moves.raw;

  Answer unknown = call(rd, "GET", "/v1/plans/plan-00000000000000ff");
  EXPECT_EQ(unknown.status, 404) << unknown.raw;
  EXPECT_EQ(code(unknown), "not_found");
  EXPECT_NE(unknown.raw.find("plan-00000000000000ff"), std::string::npos) << unknown.raw;
  unknown = call(op, "POST", "/v1/plans/plan-00000000000000ff/apply");
  EXPECT_EQ(unknown.status, 404) << unknown.raw;
  EXPECT_NE(unknown.raw.find("plan-00000000000000ff"), std::string::npos) << unknown.raw;

  Answer forbidden = call(rd, "POST", "/v1/plans/" + id + "/apply");
  EXPECT_EQ(forbidden.status, 403) << forbidden.raw;
  EXPECT_EQ(code(forbidden), "forbidden");
  moves = call(rd, "GET", "/v1/moves");
  EXPECT_TRUE(moves.body["moves"].empty()) << "a refused apply queued something: " << moves.raw;

  Answer shown = call(rd, "GET", "/v1/plans/" + id);
  ASSERT_EQ(shown.status, 200) << shown.raw;
  EXPECT_EQ(shown.body["applied_at"], "");
  EXPECT_TRUE(shown.body["queued_moves"].empty());

  Answer applied = call(op, "POST", "/v1/plans/" + id + "/apply");
  ASSERT_EQ(applied.status, 202) << applied.raw;
  EXPECT_NE(applied.body["applied_at"], "");
  ASSERT_EQ(applied.body["queued_moves"].size(), 2u) << applied.raw;
  std::set<std::string> planned, queued;
  for (const auto& m : plan.body["moves"]) planned.insert(m["tenant"].get<std::string>());
  for (const auto& m : applied.body["queued_moves"]) {
    queued.insert(m["tenant"].get<std::string>());
    EXPECT_EQ(m["state"], "queued");
    EXPECT_EQ(m["from"], "stamp-a");
    EXPECT_EQ(m["to"], "stamp-b");
  }
  EXPECT_EQ(planned, queued);
  moves = call(rd, "GET", "/v1/moves");
  EXPECT_EQ(moves.body["moves"].size(), 2u) << moves.raw;

  Answer paused = call(op, "POST", "/v1/plans/" + id + "/pause");
  ASSERT_EQ(paused.status, 202) << paused.raw;
  for (const auto& m : paused.body["queued_moves"]) EXPECT_EQ(m["state"], "paused") << paused.raw;
  Answer cancelled = call(op, "POST", "/v1/plans/" + id + "/cancel");
  ASSERT_EQ(cancelled.status, 202) << cancelled.raw;

  // Drain: an unknown stamp is refused naming it; a read token may only dry-run.
  Answer nostamp = call(op, "POST", "/v1/stamps/stamp-zz/drain");
  EXPECT_EQ(nostamp.status, 404) << nostamp.raw;
  EXPECT_EQ(code(nostamp), "unknown_stamp");
  EXPECT_NE(nostamp.raw.find("stamp-zz"), std::string::npos) << nostamp.raw;
  Answer dry = call(rd, "POST", "/v1/stamps/stamp-a/drain", R"({"dry_run": true})");
  ASSERT_EQ(dry.status, 200) << dry.raw;
  EXPECT_EQ(dry.body["kind"], "drain") << dry.raw;
  Answer rdrain = call(rd, "POST", "/v1/stamps/stamp-b/drain");
  EXPECT_EQ(rdrain.status, 403) << rdrain.raw;
  stamps = call(rd, "GET", "/v1/stamps");
  EXPECT_EQ(stamps.body[1]["draining"], false) << "a refused drain marked the stamp";
  Answer drained = call(op, "POST", "/v1/stamps/stamp-b/drain");
  ASSERT_EQ(drained.status, 202) << drained.raw;
  stamps = call(rd, "GET", "/v1/stamps");
  EXPECT_EQ(stamps.body[1]["draining"], true) << stamps.raw;
  {
    YAML::Node doc = YAML::LoadFile(std::string(STAMPMOVER_SOURCE_DIR) + "/api/openapi.yaml");
    std::set<std::string> documented, served;
    for (const auto& p : doc["components"]["schemas"]["PlanStatus"]["properties"]["queued_moves"]
                            ["items"]["properties"]) {
      documented.insert(p.first.as<std::string>());
    }
    for (const auto& [k, v] : cancelled.body["queued_moves"][0].items()) served.insert(k);
    EXPECT_EQ(documented, served);
  }
}

// The rebalance schedule (issue 13): `rebalance: {every: 2s, window: 00:00-24:00}` makes serve
// plan and apply by itself (moves queued, the last run's plan id shown by the API and the CLI);
// pause (operate only) stops further runs; resume from the CLI.
TEST(ApiTest, RebalanceScheduleRunsAndPauseStopsIt) {
  std::string db = st::freshDatabase();
  ASSERT_NO_FATAL_FAILURE(seedFourTenantsOnA(db));
  // Two serve processes over one control plane: one run per period between them.
  const std::string schedule = "rebalance:\n  every: 2s\n  window: \"00:00-24:00\"\n";
  const auto t0 = std::chrono::steady_clock::now();
  Serve s, s2;
  ASSERT_TRUE(s.start({}, db, schedule));
  ASSERT_TRUE(s2.start({"--owner", "second"}, db, schedule));
  auto op = s.client(kOperateToken);
  auto rd = s.client(kReadToken);
  Answer sched;
  for (int i = 0; i < 200; ++i) {
    sched = call(rd, "GET", "/v1/schedule");
    if (sched.status == 200 && sched.body["last_plan_id"] != "") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(sched.status, 200) << sched.raw;
  const std::string plan_id = sched.body["last_plan_id"];
  ASSERT_FALSE(plan_id.empty()) << sched.raw << st::readFile(s.log);
  EXPECT_EQ(sched.body["paused"], false);
  EXPECT_NE(sched.body["last_result"].get<std::string>().find("move(s) queued"), std::string::npos)
      << sched.raw;
  Answer plan = call(rd, "GET", "/v1/plans/" + plan_id);
  ASSERT_EQ(plan.status, 200) << plan.raw;
  EXPECT_NE(plan.body["applied_at"], "");
  EXPECT_FALSE(plan.body["queued_moves"].empty()) << plan.raw;
  EXPECT_NE(st::readFile(s.log).find("rebalance schedule: plan '" + plan_id + "'"),
            std::string::npos);

  Answer refused = call(rd, "POST", "/v1/schedule/pause");
  EXPECT_EQ(refused.status, 403) << refused.raw;
  Answer paused = call(op, "POST", "/v1/schedule/pause");
  ASSERT_EQ(paused.status, 202) << paused.raw;
  EXPECT_EQ(paused.body["paused"], true);
  const std::string last_run = paused.body["last_run_at"];
  const double active_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto runs = [&] {
    size_t n = 0;
    for (const std::string log : {st::readFile(s.log), st::readFile(s2.log)}) {
      for (size_t at = 0; (at = log.find("rebalance schedule: plan '", at)) != std::string::npos;
           ++at) {
        ++n;
      }
    }
    return n;
  };
  const size_t runs_before_pause = runs();
  EXPECT_GE(runs_before_pause, 1u);
  EXPECT_LE(runs_before_pause, static_cast<size_t>(active_s / 2) + 1)
      << "more than one run per 2 s period in " << active_s << " s";
  std::this_thread::sleep_for(std::chrono::seconds(5));  // two and a half periods
  sched = call(rd, "GET", "/v1/schedule");
  EXPECT_EQ(sched.body["last_run_at"], last_run) << "ran while paused: " << sched.raw;
  EXPECT_EQ(runs(), runs_before_pause);
  {
    YAML::Node doc = YAML::LoadFile(std::string(STAMPMOVER_SOURCE_DIR) + "/api/openapi.yaml");
    std::set<std::string> documented, served;
    for (const auto& p : doc["components"]["schemas"]["Schedule"]["properties"]) {
      documented.insert(p.first.as<std::string>());
    }
    for (const auto& [k, v] : sched.body.items()) served.insert(k);
    EXPECT_EQ(documented, served);
  }

  const std::vector<std::string> cp = {"--config", s.dir.path() + "/stamps.yaml",
                                       "--control-plane", "stamp-a"};
  auto cli = [&](const std::string& verb) {
    std::vector<std::string> args = {"rebalance", "schedule", verb};
    args.insert(args.end(), cp.begin(), cp.end());
    return st::runStampmover(args);
  };
  auto shown = cli("show");
  EXPECT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find("rebalance schedule: paused"), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find(plan_id), std::string::npos) << shown.out;
  auto resumed = cli("resume");
  EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("rebalance schedule: active"), std::string::npos) << resumed.out;
  sched = call(rd, "GET", "/v1/schedule");
  EXPECT_EQ(sched.body["paused"], false) << sched.raw;

  // A bad schedule is refused naming the key; serve does not start with it.
  std::string bad_yaml = st::readFile(s.dir.path() + "/stamps.yaml");
  ASSERT_NE(bad_yaml.find("every: 2s"), std::string::npos);
  bad_yaml.replace(bad_yaml.find("every: 2s"), 9, "every: soon");
  writeFile(s.dir.path() + "/bad.yaml", bad_yaml);
  auto bad = st::runStampmover({"rebalance", "schedule", "show", "--config",
                                s.dir.path() + "/bad.yaml", "--control-plane", "stamp-a"});
  EXPECT_EQ(bad.exit_code, 2) << bad.out;
  EXPECT_NE(bad.err.find("rebalance.every"), std::string::npos) << bad.err;
}

// Outside its window the schedule does not run, even when due: the window is the next hour
// (UTC) from now, wrapping midnight when it must.
TEST(ApiTest, RebalanceScheduleWaitsForItsWindow) {
  std::string db = st::freshDatabase();
  ASSERT_NO_FATAL_FAILURE(seedFourTenantsOnA(db));
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  const int from = (utc.tm_hour * 60 + utc.tm_min + 120) % 1440;
  const int to = (from + 60) % 1440;
  char window[32];
  std::snprintf(window, sizeof window, "%02d:%02d-%02d:%02d", from / 60, from % 60, to / 60,
                to % 60);
  Serve s;
  ASSERT_TRUE(s.start({}, db,
                      std::string("rebalance:\n  every: 1s\n  window: \"") + window + "\"\n"));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  Answer sched = call(s.client(kReadToken), "GET", "/v1/schedule");
  ASSERT_EQ(sched.status, 200) << sched.raw;
  EXPECT_EQ(sched.body["last_run_at"], "") << "ran outside " << window << ": " << sched.raw;
  EXPECT_TRUE(call(s.client(kReadToken), "GET", "/v1/moves").body["moves"].empty());
}
