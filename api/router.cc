// The API's routes (see router.h): authentication and roles, strict JSON bodies (unknown fields
// refused), the queue's stable error codes turned into HTTP statuses, /metrics, /healthz,
// /readyz.
#include "api/router.h"

#include <spdlog/spdlog.h>

#include <strings.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <nlohmann/json.hpp>

#include "metrics/metrics.h"
#include "queue/move_queue.h"
#include "routing/routing_directory.h"

namespace stampmover::api {

namespace {
using nlohmann::json;

const std::vector<std::string> kActions = {"cutover", "rollback", "finalize",
                                           "pause",   "resume",   "cancel"};
const std::vector<std::string> kPlanActions = {"apply", "pause", "resume", "cancel"};

json moveJson(const queue::Move& m) {
  json errors = json::array();
  for (const auto& e : m.errors) {
    errors.push_back({{"attempt", e.attempt},
                      {"owner", e.owner},
                      {"epoch", e.epoch},
                      {"class", e.error_class},
                      {"message", e.message},
                      {"at", e.at}});
  }
  const auto& p = m.progress;
  json progress = {{"phase", p.phase},
                   {"rows_copied", p.rows_copied},
                   {"rows_estimated", p.rows_estimated},
                   {"bytes_copied", p.bytes_copied},
                   {"lag_bytes", p.lag_bytes >= 0 ? json(p.lag_bytes) : json(nullptr)},
                   {"lag_seconds", p.lag_seconds >= 0 ? json(p.lag_seconds) : json(nullptr)},
                   {"eta_seconds", p.eta_seconds >= 0 ? json(p.eta_seconds) : json(nullptr)},
                   {"throttled", p.throttled},
                   {"throttle_reason", p.throttle_reason},
                   {"flipped", p.flipped}};
  return {{"id", m.id},
          {"tenant", m.spec.tenant},
          {"from", m.spec.from_stamp},
          {"to", m.spec.to_stamp},
          {"cutover", m.spec.cutover == queue::CutoverMode::kManual ? "manual" : "auto"},
          {"priority", m.spec.priority},
          {"plan_id", m.spec.plan_id ? json(*m.spec.plan_id) : json(nullptr)},
          {"state", queue::moveStateName(m.state)},
          {"desired_action",
           m.desired_action ? json(queue::actionName(*m.desired_action)) : json(nullptr)},
          {"owner", m.owner},
          {"epoch", m.epoch},
          {"lease_until", m.lease_until},
          {"attempts", m.attempts},
          {"max_attempts", m.max_attempts},
          {"next_attempt_at", m.next_attempt_at},
          {"last_error", m.last_error},
          {"errors", errors},
          {"progress", progress},
          {"created_at", m.created_at},
          {"updated_at", m.updated_at}};
}

HttpResponse jsonResponse(int status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump() + "\n";
  return r;
}

HttpResponse fromQueueError(const common::Status& st) {
  return errorResponse(queue::httpStatusFor(st), queue::errorCode(st), queue::errorText(st));
}

// Parses a request body that must be a JSON object (or empty when `allow_empty`). On failure
// fills `err` with the 4xx that says what is wrong.
bool parseObject(const HttpRequest& req, bool allow_empty, json* out, HttpResponse* err) {
  if (req.body.empty() && allow_empty) {
    *out = json::object();
    return true;
  }
  if (!req.content_type.empty() && req.content_type.rfind("application/json", 0) != 0) {
    *err = errorResponse(415, "unsupported_media_type",
                         "the body must be application/json, not '" + req.content_type + "'");
    return false;
  }
  json j = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Re-parse with exceptions for the position of the error; the body itself is not echoed.
    std::string where;
    try {
      json again = json::parse(req.body);  // throws: the first parse failed
      (void)again;
    } catch (const json::parse_error& e) {
      where = " at byte " + std::to_string(e.byte);
    }
    *err = errorResponse(400, "malformed_json", "the request body is not valid JSON" + where);
    return false;
  }
  if (!j.is_object()) {
    *err = errorResponse(400, "invalid_body", "the request body must be a JSON object");
    return false;
  }
  *out = std::move(j);
  return true;
}

bool rejectUnknownFields(const json& body, const std::vector<std::string>& allowed,
                         HttpResponse* err) {
  for (const auto& [key, value] : body.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      *err = errorResponse(400, "unknown_field",
                           "unknown field '" + key + "'" +
                               (allowed.empty() ? " (this request takes no fields)"
                                                : " (expected: " + list + ")"));
      return false;
    }
  }
  return true;
}

bool stringField(const json& body, const std::string& name, bool required, bool number_ok,
                 std::string* out, HttpResponse* err) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) {
    if (required) *err = errorResponse(400, "missing_field", "field '" + name + "' is required");
    return !required;
  }
  if (it->is_string()) {
    *out = it->get<std::string>();
  } else if (number_ok && it->is_number_integer()) {
    *out = it->dump();
  } else {
    *err = errorResponse(400, "invalid_field",
                         "field '" + name + "' must be a string" +
                             (number_ok ? " or an integer" : ""));
    return false;
  }
  if (out->empty()) {
    *err = errorResponse(400, "invalid_field", "field '" + name + "' must not be empty");
    return false;
  }
  return true;
}

std::string urlDecode(std::string_view s, bool* ok) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      int v = 0;
      if (i + 2 >= s.size() ||
          std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16).ptr != s.data() + i + 3) {
        *ok = false;
        return {};
      }
      out += static_cast<char>(v);
      i += 2;
    } else if (s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<std::string> splitPath(const std::string& path) {
  std::vector<std::string> parts;
  size_t i = 1;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    parts.push_back(path.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}

bool parseId(const std::string& s, int64_t* id) {
  if (s.empty() || s.size() > 18) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *id);
  return ec == std::errc() && p == s.data() + s.size() && *id > 0;
}

}  // namespace

const std::vector<RouteSpec>& routeTable() {
  static const std::vector<RouteSpec> kRoutes = [] {
    std::vector<RouteSpec> r = {
        {"POST", "/v1/moves", Access::kOperate, "Queue a move of one tenant between stamps"},
        {"GET", "/v1/moves", Access::kRead, "List moves, newest first"},
        {"GET", "/v1/moves/{id}", Access::kRead, "One move: state, phase, progress, ETA, errors"},
    };
    for (const auto& a : kActions) {
      r.push_back({"POST", "/v1/moves/{id}/" + a, Access::kOperate, "Ask for " + a});
    }
    r.push_back({"GET", "/v1/stamps", Access::kRead,
                 "Every stamp: capacity, utilization, tenants, draining, moves in flight"});
    r.push_back({"POST", "/v1/stamps/{stamp}/drain", Access::kRead,
                 "Drain a stamp: mark it draining and enqueue its tenants' moves (operate); "
                 "with dry_run, only the plan (read)"});
    r.push_back({"GET", "/v1/schedule", Access::kRead,
                 "The rebalance schedule: paused, next run, last run, its plan id and result"});
    r.push_back({"POST", "/v1/schedule/pause", Access::kOperate, "Pause the rebalance schedule"});
    r.push_back({"POST", "/v1/schedule/resume", Access::kOperate, "Resume the rebalance schedule"});
    r.push_back({"POST", "/v1/plans", Access::kRead,
                 "Make and store a rebalance plan; nothing moves"});
    r.push_back({"GET", "/v1/plans/{id}", Access::kRead,
                 "A stored plan with its moves as the queue sees them"});
    for (const auto& a : kPlanActions) {
      r.push_back({"POST", "/v1/plans/{id}/" + a, Access::kOperate,
                   a == "apply" ? std::string("Enqueue the plan's moves")
                                : "Ask for " + a + " of every unfinished move of the plan"});
    }
    r.push_back({"GET", "/metrics", Access::kRead, "Prometheus text exposition"});
    r.push_back({"GET", "/healthz", Access::kPublic, "Liveness: the process answers"});
    r.push_back({"GET", "/readyz", Access::kPublic,
                 "Readiness: control plane reachable, schema applied, not draining"});
    return r;
  }();
  return kRoutes;
}

HttpResponse errorResponse(int status, const std::string& code, const std::string& message) {
  HttpResponse r;
  r.status = status;
  r.body = json{{"code", code}, {"message", message}}.dump() + "\n";
  return r;
}

HttpResponse Router::handle(const HttpRequest& request) const {
  try {
    return dispatch(request);
  } catch (const std::exception& e) {
    // A bug, not input: log it (never the body or the token), answer 500.
    spdlog::error("api: {} {}: unexpected exception: {}", request.method,
                  request.target.substr(0, request.target.find('?')), e.what());
    return errorResponse(500, "internal", "internal error (logged by the server)");
  }
}

HttpResponse Router::dispatch(const HttpRequest& req) const {
  // Split the target into path and query.
  std::string path = req.target;
  std::string query;
  if (auto q = path.find('?'); q != std::string::npos) {
    query = path.substr(q + 1);
    path.resize(q);
  }
  if (path.empty() || path[0] != '/') {
    return errorResponse(400, "bad_request", "the request target must be an absolute path");
  }
  if (path.size() > 1 && path.back() == '/') path.pop_back();
  const auto parts = splitPath(path);

  // Match the route template.
  std::string tmpl;
  std::string id_text;
  if (path == "/v1/moves" || path == "/metrics" || path == "/healthz" || path == "/readyz" ||
      path == "/v1/stamps" || path == "/v1/plans" || path == "/v1/schedule" ||
      path == "/v1/schedule/pause" || path == "/v1/schedule/resume") {
    tmpl = path;
  } else if (parts.size() == 4 && parts[0] == "v1" && parts[1] == "stamps" &&
             parts[3] == "drain") {
    tmpl = "/v1/stamps/{stamp}/drain";
    id_text = parts[2];
  } else if (parts.size() == 3 && parts[0] == "v1" && parts[1] == "plans") {
    tmpl = "/v1/plans/{id}";
    id_text = parts[2];
  } else if (parts.size() == 4 && parts[0] == "v1" && parts[1] == "plans" &&
             std::find(kPlanActions.begin(), kPlanActions.end(), parts[3]) !=
                 kPlanActions.end()) {
    tmpl = "/v1/plans/{id}/" + parts[3];
    id_text = parts[2];
  } else if (parts.size() == 3 && parts[0] == "v1" && parts[1] == "moves") {
    tmpl = "/v1/moves/{id}";
    id_text = parts[2];
  } else if (parts.size() == 4 && parts[0] == "v1" && parts[1] == "moves" &&
             std::find(kActions.begin(), kActions.end(), parts[3]) != kActions.end()) {
    tmpl = "/v1/moves/{id}/" + parts[3];
    id_text = parts[2];
  }
  const RouteSpec* route = nullptr;
  std::string allowed;
  for (const auto& r : routeTable()) {
    if (r.path != tmpl) continue;
    allowed += (allowed.empty() ? "" : ", ") + r.method;
    if (r.method == req.method) route = &r;
  }
  if (allowed.empty()) {
    return errorResponse(404, "route_not_found", "no route " + path + " (see api/openapi.yaml)");
  }
  if (route == nullptr) {
    HttpResponse r = errorResponse(405, "method_not_allowed",
                                   req.method + " is not allowed on " + tmpl + " (allowed: " +
                                       allowed + ")");
    r.headers.emplace_back("Allow", allowed);
    r.route = tmpl;
    return r;
  }

  HttpResponse resp = [&]() -> HttpResponse {
    // Authentication and role.
    bool operate_role = false;
    bool public_route = route->access == Access::kPublic ||
                        (route->path == "/metrics" && deps_.metrics_public);
    if (!public_route) {
      const std::string prefix = "Bearer ";
      if (req.authorization.empty()) {
        HttpResponse r = errorResponse(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)");
        r.headers.emplace_back("WWW-Authenticate", "Bearer");
        return r;
      }
      std::optional<Role> role;
      if (req.authorization.size() > prefix.size() &&
          strncasecmp(req.authorization.c_str(), prefix.c_str(), prefix.size()) == 0) {
        role = deps_.tokens->authenticate(req.authorization.substr(prefix.size()));
      }
      if (!role) {
        HttpResponse r = errorResponse(401, "unauthorized", "invalid bearer token");
        r.headers.emplace_back("WWW-Authenticate", "Bearer error=\"invalid_token\"");
        return r;
      }
      operate_role = *role == Role::kOperate;
      if (route->access == Access::kOperate && *role != Role::kOperate) {
        return errorResponse(403, "forbidden",
                             req.method + " " + tmpl + " needs the operate role; this token has read");
      }
    }

    // Query parameters: only GET /v1/moves takes any.
    std::map<std::string, std::string> params;
    if (!query.empty()) {
      size_t i = 0;
      while (i <= query.size()) {
        size_t j = query.find('&', i);
        if (j == std::string::npos) j = query.size();
        std::string kv = query.substr(i, j - i);
        i = j + 1;
        if (kv.empty()) continue;
        auto eq = kv.find('=');
        bool ok = true;
        std::string k = urlDecode(kv.substr(0, eq), &ok);
        std::string v = eq == std::string::npos ? "" : urlDecode(kv.substr(eq + 1), &ok);
        if (!ok) return errorResponse(400, "bad_request", "malformed percent-encoding in the query");
        params[k] = v;
      }
    }
    if (tmpl != "/v1/moves" || req.method != "GET") {
      if (!params.empty()) {
        return errorResponse(400, "unknown_parameter",
                             "unknown query parameter '" + params.begin()->first + "'");
      }
    }

    if (tmpl.rfind("/v1/stamps", 0) == 0 || tmpl.rfind("/v1/plans", 0) == 0 ||
        tmpl.rfind("/v1/schedule", 0) == 0) {
      if (!deps_.fleet) {
        return errorResponse(501, "not_configured", "this server does not answer " + tmpl);
      }
      if (req.method == "GET" && !req.body.empty()) {
        return errorResponse(400, "invalid_body", "GET takes no body");
      }
      if (id_text.size() > 64) {
        return errorResponse(404, "not_found", "no plan or stamp '" + id_text.substr(0, 64) + "...'");
      }
      auto [status, body] = deps_.fleet(tmpl, id_text, req.body, operate_role);
      HttpResponse r;
      r.status = status;
      r.body = std::move(body);
      return r;
    }
    if (tmpl == "/healthz") return jsonResponse(200, {{"status", "ok"}});
    if (tmpl == "/readyz") {
      if (draining()) return errorResponse(503, "draining", "the server is draining");
      queue::MoveFilter f;
      f.limit = 1;
      auto probe = deps_.queue->list(f);
      if (!probe) {
        return errorResponse(503, "not_ready",
                             "control plane: " + queue::errorText(probe.status()));
      }
      std::string why;
      if (deps_.ready_extra && !deps_.ready_extra(&why)) {
        return errorResponse(503, "not_ready", why);
      }
      return jsonResponse(200, {{"status", "ready"}});
    }
    if (tmpl == "/metrics") {
      HttpResponse r;
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      r.body = deps_.metrics->serialize();
      return r;
    }

    if (tmpl == "/v1/moves" && req.method == "GET") {
      if (!req.body.empty()) return errorResponse(400, "invalid_body", "GET takes no body");
      queue::MoveFilter f;
      for (const auto& [k, v] : params) {
        if (k == "state") {
          f.state = queue::parseMoveState(v);
          if (!f.state) {
            return errorResponse(400, "invalid_parameter",
                                 "state '" + v + "' is not one of queued, running, paused, "
                                 "succeeded, failed, cancelled");
          }
        } else if (k == "tenant") {
          f.tenant = v;
        } else if (k == "stamp") {
          f.stamp = v;
        } else if (k == "limit") {
          uint32_t n = 0;
          auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
          if (ec != std::errc() || p != v.data() + v.size() || n == 0 || n > 10000) {
            return errorResponse(400, "invalid_parameter", "limit must be an integer 1..10000");
          }
          f.limit = n;
        } else {
          return errorResponse(400, "unknown_parameter",
                               "unknown query parameter '" + k +
                                   "' (expected: state, tenant, stamp, limit)");
        }
      }
      auto moves = deps_.queue->list(f);
      if (!moves) return fromQueueError(moves.status());
      json arr = json::array();
      for (const auto& m : *moves) arr.push_back(moveJson(m));
      return jsonResponse(200, {{"moves", arr}});
    }

    if (tmpl == "/v1/moves" && req.method == "POST") {
      if (draining()) {
        return errorResponse(503, "draining", "the server is draining; send the request to another");
      }
      json body;
      HttpResponse err;
      if (!parseObject(req, false, &body, &err)) return err;
      if (!rejectUnknownFields(body, {"tenant", "from", "to", "cutover", "priority", "plan_id"},
                               &err)) {
        return err;
      }
      queue::MoveSpec spec;
      std::string cutover = "auto";
      std::string plan;
      if (!stringField(body, "tenant", true, true, &spec.tenant, &err) ||
          !stringField(body, "from", true, false, &spec.from_stamp, &err) ||
          !stringField(body, "to", true, false, &spec.to_stamp, &err) ||
          !stringField(body, "cutover", false, false, &cutover, &err) ||
          !stringField(body, "plan_id", false, false, &plan, &err)) {
        return err;
      }
      if (cutover == "manual") {
        spec.cutover = queue::CutoverMode::kManual;
      } else if (cutover != "auto") {
        return errorResponse(400, "invalid_field", "field 'cutover' must be auto or manual");
      }
      if (!plan.empty()) spec.plan_id = plan;
      if (auto it = body.find("priority"); it != body.end() && !it->is_null()) {
        if (!it->is_number_integer() || it->get<int64_t>() < -1000 || it->get<int64_t>() > 1000) {
          return errorResponse(400, "invalid_field", "field 'priority' must be an integer -1000..1000");
        }
        spec.priority = static_cast<int32_t>(it->get<int64_t>());
      }
      if (deps_.routing != nullptr) {
        // The directory knows where the tenant is served: moving it from another stamp would
        // copy nothing (or the wrong rows) and is refused here rather than in a worker.
        auto entry = deps_.routing->get(spec.tenant);
        if (!entry && entry.status().errorClass() == common::ErrorClass::kRetryable) {
          return errorResponse(503, "unavailable", "control plane: " + entry.status().message());
        }
        if (entry && entry->has_value() && (*entry)->stamp != spec.from_stamp) {
          return errorResponse(422, "tenant_not_on_stamp",
                               "tenant " + spec.tenant + " is served by stamp '" + (*entry)->stamp +
                                   "', not '" + spec.from_stamp + "'");
        }
      }
      auto created = deps_.queue->create(spec);
      if (!created) return fromQueueError(created.status());
      spdlog::info("api: move {} queued: tenant {} from {} to {} (cutover {})", created->id,
                   spec.tenant, spec.from_stamp, spec.to_stamp, cutover);
      HttpResponse r = jsonResponse(201, moveJson(*created));
      r.headers.emplace_back("Location", "/v1/moves/" + std::to_string(created->id));
      return r;
    }

    // /v1/moves/{id}[/action]
    int64_t id = 0;
    if (!parseId(id_text, &id)) {
      return errorResponse(404, "not_found", "no move '" + id_text.substr(0, 64) +
                                                 "' (move ids are positive integers)");
    }
    if (tmpl == "/v1/moves/{id}") {
      if (!req.body.empty()) return errorResponse(400, "invalid_body", "GET takes no body");
      auto m = deps_.queue->get(id);
      if (!m) return fromQueueError(m.status());
      return jsonResponse(200, moveJson(*m));
    }
    json body;
    HttpResponse err;
    if (!parseObject(req, true, &body, &err)) return err;
    if (!rejectUnknownFields(body, {}, &err)) return err;
    const std::string action_name = parts[3];
    auto action = queue::parseAction(action_name);
    if (!action) return errorResponse(404, "route_not_found", "no action " + action_name);
    auto m = deps_.queue->request(id, *action);
    if (!m) return fromQueueError(m.status());
    spdlog::info("api: move {} (tenant {}): {} requested", id, m->spec.tenant, action_name);
    return jsonResponse(202, moveJson(*m));
  }();
  resp.route = tmpl;
  return resp;
}

}  // namespace stampmover::api
