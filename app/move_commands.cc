// The `move` verbs (see move_commands.h): build the request, call the API with the client of
// api/client.h, print the answer for a human (or as JSON with --json), map failures to exit codes.
#include "app/move_commands.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "api/client.h"

namespace {
using nlohmann::json;
using stampmover::common::Status;

const char* kActions[] = {"cutover", "rollback", "finalize", "pause", "resume", "cancel"};

int exitFor(const Status& st) {
  std::fprintf(stderr, "stampmover: error: %s\n", st.message().c_str());
  switch (st.errorClass()) {
    case stampmover::common::ErrorClass::kRefused: return 2;
    case stampmover::common::ErrorClass::kRetryable: return 3;
    default: return 1;
  }
}

std::string str(const json& j, const char* k) {
  auto it = j.find(k);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string human(double seconds) {
  if (seconds < 0) return "-";
  char buf[32];
  if (seconds < 120) std::snprintf(buf, sizeof buf, "%.0fs", seconds);
  else if (seconds < 7200) std::snprintf(buf, sizeof buf, "%.0fm", seconds / 60);
  else std::snprintf(buf, sizeof buf, "%.1fh", seconds / 3600);
  return buf;
}

std::string phaseOf(const json& m) {
  std::string phase = m["progress"].value("phase", "");
  return phase.empty() ? "-" : phase;
}

std::string progressOf(const json& m) {
  const auto& p = m["progress"];
  uint64_t done = p.value("rows_copied", 0ull), est = p.value("rows_estimated", 0ull);
  if (est == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f%%", 100.0 * static_cast<double>(std::min(done, est)) / est);
  return buf;
}

double num(const json& j, const char* k) {
  auto it = j.find(k);
  return it != j.end() && it->is_number() ? it->get<double>() : -1;
}

void printMove(const json& m) {
  const auto& p = m["progress"];
  std::printf("move %s: tenant %s, %s -> %s (cutover %s)\n", str(m, "id").c_str(),
              str(m, "tenant").c_str(), str(m, "from").c_str(), str(m, "to").c_str(),
              str(m, "cutover").c_str());
  std::printf("  state:      %s%s\n", str(m, "state").c_str(),
              m["desired_action"].is_null() ? "" : (" (requested: " + str(m, "desired_action") + ")").c_str());
  std::printf("  phase:      %s%s\n", phaseOf(m).c_str(), p.value("flipped", false) ? " (flipped)" : "");
  std::printf("  copied:     %s rows of ~%s (%s), %s bytes\n", str(p, "rows_copied").c_str(),
              str(p, "rows_estimated").c_str(), progressOf(m).c_str(), str(p, "bytes_copied").c_str());
  std::printf("  lag:        %s bytes, %s\n", p["lag_bytes"].is_null() ? "-" : str(p, "lag_bytes").c_str(),
              human(num(p, "lag_seconds")).c_str());
  std::printf("  eta:        %s\n", human(num(p, "eta_seconds")).c_str());
  if (p.value("throttled", false)) std::printf("  throttled:  %s\n", str(p, "throttle_reason").c_str());
  if (!str(m, "owner").empty()) {
    std::printf("  owner:      %s (epoch %s, lease until %s)\n", str(m, "owner").c_str(),
                str(m, "epoch").c_str(), str(m, "lease_until").c_str());
  }
  std::printf("  attempts:   %s of %s%s\n", str(m, "attempts").c_str(), str(m, "max_attempts").c_str(),
              str(m, "next_attempt_at").empty() ? "" : (", next at " + str(m, "next_attempt_at")).c_str());
  if (!str(m, "last_error").empty()) std::printf("  last error: %s\n", str(m, "last_error").c_str());
  for (const auto& e : m["errors"]) {
    std::printf("  attempt %s (%s, epoch %s, %s): %s: %s\n", str(e, "attempt").c_str(),
                str(e, "owner").c_str(), str(e, "epoch").c_str(), str(e, "at").c_str(),
                str(e, "class").c_str(), str(e, "message").c_str());
  }
  std::printf("  created:    %s, updated %s\n", str(m, "created_at").c_str(), str(m, "updated_at").c_str());
}

std::string urlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace

CLI::App* addMoveCommands(CLI::App& app, MoveCliArgs& a) {
  auto* move = app.add_subcommand(
      "move", "Moves run by `stampmover serve` workers, through its API: create, list, show, "
              "cutover, rollback, finalize, pause, resume, cancel");
  move->require_subcommand(1);
  move->fallthrough();
  move->add_option("--api", a.api, "API server (https://host:port)")
      ->envname("STAMPMOVER_API")
      ->capture_default_str();
  move->add_option("--token-file", a.token_file, "File holding the bearer token (else $STAMPMOVER_TOKEN)");
  move->add_option("--ca-file", a.ca_file, "CA certificate(s) that signed the server's certificate");
  move->add_option("--timeout", a.timeout_s, "Seconds to wait for the API")->capture_default_str();
  move->add_flag("--json", a.json, "Print the API's JSON answer as is");

  auto* create = move->add_subcommand("create", "Queue a move of one tenant");
  create->add_option("--tenant", a.tenant, "Tenant key")->required();
  create->add_option("--from", a.from, "Source stamp")->required();
  create->add_option("--to", a.to, "Destination stamp")->required();
  create->add_option("--cutover", a.cutover,
                     "auto: cut over once caught up; manual: wait for `move cutover ID`")
      ->check(CLI::IsMember({"auto", "manual"}))
      ->capture_default_str();
  create->add_option("--priority", a.priority, "Higher is claimed first (-1000..1000)");

  auto* list = move->add_subcommand("list", "List moves, newest first");
  list->add_option("--state", a.state, "Only moves in this state (queued, running, paused, "
                                       "succeeded, failed, cancelled)");
  list->add_option("--tenant", a.tenant, "Only this tenant");
  list->add_option("--stamp", a.stamp, "Only moves from or to this stamp");

  auto* show = move->add_subcommand("show", "One move: state, phase, progress, ETA, errors");
  show->add_option("id", a.id, "Move id")->required();
  for (const char* verb : kActions) {
    auto* c = move->add_subcommand(verb, std::string("Ask for ") + verb + " of a move");
    c->add_option("id", a.id, "Move id")->required();
  }
  return move;
}

int runMoveCommand(MoveCliArgs& a) {
  stampmover::api::ClientOptions co;
  co.base_url = a.api;
  co.ca_file = a.ca_file;
  co.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  if (!a.token_file.empty()) {
    std::ifstream in(a.token_file);
    if (!in) return exitFor(Status::refused("--token-file " + a.token_file + ": cannot be read"));
    std::getline(in, co.token);
    while (!co.token.empty() && (co.token.back() == '\r' || co.token.back() == ' ')) co.token.pop_back();
  } else if (const char* t = std::getenv("STAMPMOVER_TOKEN")) {
    co.token = t;
  }
  if (co.token.empty()) {
    return exitFor(Status::refused("no API token: pass --token-file FILE or set $STAMPMOVER_TOKEN"));
  }

  std::string method = "GET", path, body;
  if (a.verb == "create") {
    method = "POST";
    path = "/v1/moves";
    json b = {{"tenant", a.tenant}, {"from", a.from}, {"to", a.to}, {"cutover", a.cutover}};
    if (a.priority != 0) b["priority"] = a.priority;
    body = b.dump();
  } else if (a.verb == "list") {
    path = "/v1/moves";
    std::string q;
    auto add = [&](const char* k, const std::string& v) {
      if (!v.empty()) q += (q.empty() ? "?" : "&") + std::string(k) + "=" + urlEncode(v);
    };
    add("state", a.state);
    add("tenant", a.tenant);
    add("stamp", a.stamp);
    path += q;
  } else if (a.verb == "show") {
    path = "/v1/moves/" + urlEncode(a.id);
  } else {
    method = "POST";
    path = "/v1/moves/" + urlEncode(a.id) + "/" + a.verb;
  }

  auto res = stampmover::api::httpRequest(co, method, path, body);
  if (!res) return exitFor(res.status());
  json j = json::parse(res->body, nullptr, false);
  if (res->status >= 400) {
    std::string code = j.is_object() ? str(j, "code") : "";
    std::string msg = j.is_object() ? str(j, "message") : res->body.substr(0, 200);
    std::fprintf(stderr, "stampmover: error: %s%s (HTTP %d)\n", code.empty() ? "" : (code + ": ").c_str(),
                 msg.c_str(), res->status);
    if (res->status == 500) return 1;
    if (res->status >= 500) return 3;
    return 2;
  }
  if (j.is_discarded()) {
    return exitFor(Status::internal("the API answered HTTP " + std::to_string(res->status) +
                                    " with a body that is not JSON"));
  }
  if (a.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  if (a.verb == "create") {
    std::printf("move %s queued: tenant %s, %s -> %s (cutover %s)\n", str(j, "id").c_str(),
                str(j, "tenant").c_str(), str(j, "from").c_str(), str(j, "to").c_str(),
                str(j, "cutover").c_str());
  } else if (a.verb == "list") {
    std::printf("%-6s %-12s %-12s %-12s %-10s %-10s %-6s %-8s %s\n", "ID", "TENANT", "FROM", "TO",
                "STATE", "PHASE", "COPY", "ETA", "UPDATED");
    for (const auto& m : j["moves"]) {
      std::printf("%-6s %-12s %-12s %-12s %-10s %-10s %-6s %-8s %s\n", str(m, "id").c_str(),
                  str(m, "tenant").c_str(), str(m, "from").c_str(), str(m, "to").c_str(),
                  str(m, "state").c_str(), phaseOf(m).c_str(), progressOf(m).c_str(),
                  human(num(m["progress"], "eta_seconds")).c_str(), str(m, "updated_at").c_str());
    }
  } else if (a.verb == "show") {
    printMove(j);
  } else {
    std::printf("move %s: %s requested (state %s, phase %s)\n", str(j, "id").c_str(), a.verb.c_str(),
                str(j, "state").c_str(), phaseOf(j).c_str());
  }
  return 0;
}
