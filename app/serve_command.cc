// `stampmover serve` (see serve_command.h): settings from the config's `serve:` section and flags,
// the control-plane queue, the API server, the worker pool, a metrics refresher, and the drain.
#include "app/serve_command.h"
#include "app/rebalance_command.h"

#include <spdlog/spdlog.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "api/router.h"
#include "api/server.h"
#include "api/tokens.h"
#include "metrics/metrics.h"
#include "orchestrator/config.h"
#include "orchestrator/migrate_job.h"
#include "queue/move_queue.h"
#include "queue/worker_pool.h"
#include "routing/routing_directory.h"

namespace {

using stampmover::common::Result;
using stampmover::common::Status;
namespace orch = stampmover::orch;
namespace q = stampmover::queue;
namespace api = stampmover::api;

int fail(const Status& st) {
  std::fprintf(stderr, "stampmover: error: %s\n", st.message().c_str());
  switch (st.errorClass()) {
    case stampmover::common::ErrorClass::kRefused: return 2;
    case stampmover::common::ErrorClass::kRetryable: return 3;
    case stampmover::common::ErrorClass::kCancelled: return 130;
    default: return 1;
  }
}

// Reads the stamps part of `path` (everything but `serve:`, which orch::loadConfig does not know)
// and returns the `serve:` section (null when absent).
Result<std::pair<orch::Config, YAML::Node>> loadServeConfig(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return Status::refused(path + ": " + e.what());
  }
  YAML::Node serve;
  if (root.IsMap() && root["serve"]) {
    serve = YAML::Clone(root["serve"]);
    root.remove("serve");
  }
  if (!serve || serve.IsNull()) {
    SM_ASSIGN_OR_RETURN(orch::Config c, orch::loadConfig(path));
    return std::make_pair(std::move(c), serve);
  }
  // The stamps loader rejects keys it does not know: hand it the file without `serve:` through
  // a private temporary copy (0600; stamps files hold no inline passwords, but still).
  char tmpl[] = "/tmp/stampmover-serve-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd < 0) return Status::internal("serve: cannot create a temporary file in /tmp");
  YAML::Emitter out;
  out << root;
  std::string text = out.c_str();
  text += "\n";
  bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  Result<orch::Config> cfg = written ? orch::loadConfig(tmpl)
                                     : Result<orch::Config>(Status::internal("serve: cannot write a temporary file"));
  ::unlink(tmpl);
  if (!cfg) {
    // Name the real file in the message, not the temporary copy.
    std::string msg = cfg.status().message();
    for (size_t p; (p = msg.find(tmpl)) != std::string::npos;) msg.replace(p, sizeof(tmpl) - 1, path);
    return Status::refused(msg);
  }
  cfg->path = path;
  return std::make_pair(std::move(*cfg), serve);
}

// Applies the `serve:` section to `f` unless the flag was given. Unknown keys are refused.
Status applyServeSection(const YAML::Node& s, const std::string& path, ServeFlags& f) {
  if (!s || s.IsNull()) return Status::ok();  // absent (a default Node is Null, not undefined)
  if (!s.IsMap()) return Status::refused(path + ": serve: expected a mapping");
  auto given = [&](const char* flag) { return f.cmd != nullptr && f.cmd->count(flag) > 0; };
  try {
    for (const auto& kv : s) {
      const std::string k = kv.first.as<std::string>();
      const YAML::Node& v = kv.second;
      auto set = [&](const char* flag, auto& field) {
        if (!given(flag)) field = v.as<std::remove_reference_t<decltype(field)>>();
      };
      if (k == "listen") set("--listen", f.listen);
      else if (k == "tls_cert") set("--tls-cert", f.tls_cert);
      else if (k == "tls_key") set("--tls-key", f.tls_key);
      else if (k == "tokens_file") set("--tokens-file", f.tokens_file);
      else if (k == "insecure_plaintext") set("--insecure-plaintext", f.insecure_plaintext);
      else if (k == "control_plane_dsn") set("--control-plane-dsn", f.control_plane_dsn);
      else if (k == "control_plane") set("--control-plane", f.control_plane);
      else if (k == "workers") set("--workers", f.workers);
      else if (k == "max_moves") set("--max-moves", f.max_moves);
      else if (k == "max_per_source") set("--max-per-source", f.max_per_source);
      else if (k == "max_per_destination") set("--max-per-destination", f.max_per_destination);
      else if (k == "max_per_stamp") set("--max-per-stamp", f.max_per_stamp);
      else if (k == "lease_ttl_seconds") set("--lease-ttl", f.lease_ttl_s);
      else if (k == "max_body_bytes") set("--max-body-bytes", f.max_body_bytes);
      else if (k == "max_header_bytes") set("--max-header-bytes", f.max_header_bytes);
      else if (k == "max_connections") set("--max-connections", f.max_connections);
      else if (k == "request_timeout_seconds") set("--request-timeout", f.request_timeout_s);
      else if (k == "api_threads") set("--api-threads", f.api_threads);
      else if (k == "drain_timeout_seconds") set("--drain-timeout", f.drain_timeout_s);
      else if (k == "soak_seconds") set("--soak", f.soak_s);
      else if (k == "metrics_public") set("--metrics-public", f.metrics_public);
      else if (k == "owner") set("--owner", f.owner);
      else if (k == "throttle_source_lag_bytes") set("--throttle-source-lag-bytes", f.throttle_source_lag_bytes);
      else if (k == "throttle_load_query") set("--throttle-load-query", f.throttle_load_query);
      else if (k == "throttle_load_threshold") set("--throttle-load-threshold", f.throttle_load_threshold);
      else if (k == "throttle_delay_ms") set("--throttle-delay-ms", f.throttle_delay_ms);
      else {
        return Status::refused(path + ": serve." + k +
                               ": unknown key (expected listen, tls_cert, tls_key, tokens_file, "
                               "insecure_plaintext, control_plane, control_plane_dsn, workers, "
                               "max_moves, max_per_source, max_per_destination, max_per_stamp, "
                               "lease_ttl_seconds, "
                               "max_body_bytes, max_header_bytes, max_connections, "
                               "request_timeout_seconds, api_threads, drain_timeout_seconds, "
                               "soak_seconds, metrics_public, owner, throttle_source_lag_bytes, "
                               "throttle_load_query, throttle_load_threshold, throttle_delay_ms)");
      }
    }
  } catch (const YAML::Exception& e) {
    return Status::refused(path + ": serve: " + e.what());
  }
  return Status::ok();
}

Result<std::pair<std::string, uint16_t>> splitListen(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size()) {
    return Status::refused("--listen '" + listen + "': expected host:port (e.g. 0.0.0.0:8443)");
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  char* end = nullptr;
  long port = std::strtol(listen.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port < 0 || port > 65535) {
    return Status::refused("--listen '" + listen + "': port must be 0..65535");
  }
  return std::make_pair(host.empty() ? std::string("0.0.0.0") : host, static_cast<uint16_t>(port));
}

std::chrono::milliseconds secs(double s) {
  return std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
}

}  // namespace

void addServeOptions(CLI::App* cmd, ServeFlags& f) {
  f.cmd = cmd;
  cmd->add_option("--listen", f.listen, "host:port to listen on (default 127.0.0.1:8443)");
  cmd->add_option("--tls-cert", f.tls_cert, "PEM certificate chain: TLS on");
  cmd->add_option("--tls-key", f.tls_key, "PEM private key of --tls-cert");
  cmd->add_flag("--insecure-plaintext", f.insecure_plaintext,
                "Allow plaintext HTTP on a non-loopback address (tokens travel in clear)");
  cmd->add_option("--tokens-file", f.tokens_file,
                  "API tokens: one `<token> <role>` per line, roles read and operate");
  cmd->add_option("--control-plane-dsn", f.control_plane_dsn,
                  "Control-plane PostgreSQL (queue and routing directory)")
      ->envname("STAMPMOVER_CONTROL_PLANE_DSN");
  cmd->add_option("--control-plane", f.control_plane,
                  "Control-plane stamp name from the stamps file, instead of the DSN");
  cmd->add_option("--workers", f.workers, "Moves this process runs at once (0: API only)")
      ->capture_default_str();
  cmd->add_option("--max-moves", f.max_moves, "Running moves in the whole queue")->capture_default_str();
  cmd->add_option("--max-per-source", f.max_per_source, "Running moves out of one stamp")
      ->capture_default_str();
  cmd->add_option("--max-per-destination", f.max_per_destination, "Running moves into one stamp")
      ->capture_default_str();
  cmd->add_option("--max-per-stamp", f.max_per_stamp,
                  "Running moves touching one stamp, as source or destination (a move counts "
                  "against both; 0: off)")
      ->capture_default_str();
  cmd->add_option("--lease-ttl", f.lease_ttl_s, "Seconds a worker's lease lasts unless renewed")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-body-bytes", f.max_body_bytes, "Largest request body (413 above)")
      ->capture_default_str();
  cmd->add_option("--max-header-bytes", f.max_header_bytes, "Largest request header block (431 above)")
      ->capture_default_str();
  cmd->add_option("--max-connections", f.max_connections, "Open API connections at most")
      ->capture_default_str();
  cmd->add_option("--request-timeout", f.request_timeout_s,
                  "Seconds to read a request (and, apart, to write its answer)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--api-threads", f.api_threads, "I/O threads of the API server")->capture_default_str();
  cmd->add_option("--drain-timeout", f.drain_timeout_s,
                  "Seconds SIGTERM waits for requests and moves to stop")
      ->capture_default_str();
  cmd->add_option("--soak", f.soak_s, "Seconds of dual-write soak after each flip")->capture_default_str();
  cmd->add_flag("--metrics-public", f.metrics_public, "Serve /metrics without a token");
  cmd->add_option("--owner", f.owner, "Worker identity in leases (default host:pid)");
  cmd->add_option("--throttle-source-lag-bytes", f.throttle_source_lag_bytes,
                  "Slow a move's copy and apply while the source's physical standbys lag more "
                  "than this many bytes of WAL (0: off)")
      ->capture_default_str();
  cmd->add_option("--throttle-load-query", f.throttle_load_query,
                  "SQL run on the source every 2 s returning one number, the load signal "
                  "(e.g. \"SELECT count(*) FROM pg_stat_activity WHERE state = 'active'\")");
  cmd->add_option("--throttle-load-threshold", f.throttle_load_threshold,
                  "Throttle while the load signal is above this")
      ->capture_default_str();
  cmd->add_option("--throttle-delay-ms", f.throttle_delay_ms,
                  "Wait before each destination transaction of a throttled move (at most 1000)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1000.0));
}

int runServe(const ServeFlags& flags_in, const std::string& config_path, const std::string& state_dir_in,
             const std::atomic<bool>& cancel) {
  ServeFlags f = flags_in;
  if (config_path.empty()) {
    return fail(Status::refused("serve needs the stamps file (--config stampmover.yaml): moves name "
                                "stamps, and the file may carry a serve: section"));
  }
  auto loaded = loadServeConfig(config_path);
  if (!loaded) return fail(loaded.status());
  orch::Config cfg = std::move(loaded->first);
  if (Status st = applyServeSection(loaded->second, config_path, f); !st) return fail(st);
  if (f.listen.empty()) f.listen = "127.0.0.1:8443";
  auto hp = splitListen(f.listen);
  if (!hp) return fail(hp.status());
  if (f.tokens_file.empty()) {
    return fail(Status::refused("serve needs --tokens-file (or serve.tokens_file): every route but "
                                "/healthz and /readyz takes a bearer token"));
  }
  auto tokens = api::TokenStore::load(f.tokens_file);
  if (!tokens) return fail(tokens.status());

  std::string cp_dsn = f.control_plane_dsn;
  if (!f.control_plane.empty() && !cp_dsn.empty()) {
    return fail(Status::refused("give either --control-plane or --control-plane-dsn, not both"));
  }
  if (!f.control_plane.empty()) {
    auto r = orch::resolveDsn(cfg, f.control_plane);
    if (!r) return fail(r.status());
    cp_dsn = *r;
  }
  if (cp_dsn.empty()) {
    return fail(Status::refused("serve needs the control plane: --control-plane <stamp>, "
                                "--control-plane-dsn, $STAMPMOVER_CONTROL_PLANE_DSN or "
                                "serve.control_plane in the config"));
  }
  const std::string state_dir = state_dir_in.empty()
                                    ? (cfg.state_dir.empty() ? orch::defaultStateDir() : cfg.state_dir)
                                    : state_dir_in;

  q::QueueOptions qo;
  qo.lease_ttl = secs(f.lease_ttl_s);
  for (const auto& [name, stamp] : cfg.stamps) qo.known_stamps.push_back(name);

  // The control plane may come up after us (a pod starting beside its database): retry what is
  // retryable until it answers or we are told to stop.
  std::unique_ptr<q::MoveQueue> queue;
  for (std::chrono::milliseconds backoff{500};;) {
    auto opened = q::MoveQueue::open(cp_dsn, qo);
    if (opened) {
      queue = std::move(*opened);
      break;
    }
    if (opened.status().errorClass() != stampmover::common::ErrorClass::kRetryable) {
      return fail(opened.status());
    }
    spdlog::warn("serve: control plane not reachable yet ({}); retrying in {} ms",
                 q::errorText(opened.status()), backoff.count());
    for (auto until = std::chrono::steady_clock::now() + backoff;
         std::chrono::steady_clock::now() < until;) {
      if (cancel.load()) return 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    backoff = std::min(backoff * 2, std::chrono::milliseconds(10000));
  }

  auto& registry = stampmover::metrics::defaultRegistry();
  stampmover::routing::PgRoutingDirectory routing(cp_dsn);
  api::RouterDeps deps;
  deps.queue = queue.get();
  deps.tokens = &*tokens;
  deps.metrics = &registry;
  deps.routing = &routing;
  deps.metrics_public = f.metrics_public;
  deps.fleet = [config_path, cp_dsn](const std::string& route, const std::string& id,
                                     const std::string& body, bool operate) {
    return plannerApi(config_path, cp_dsn, route, id, body, operate);
  };
  api::Router router(deps);

  api::ServerOptions so;
  so.listen_address = hp->first;
  so.port = hp->second;
  so.tls_cert_file = f.tls_cert;
  so.tls_key_file = f.tls_key;
  so.insecure_plaintext = f.insecure_plaintext;
  so.max_body_bytes = f.max_body_bytes;
  so.max_header_bytes = f.max_header_bytes;
  so.max_connections = f.max_connections;
  so.request_timeout = secs(f.request_timeout_s);
  so.threads = f.api_threads;
  auto server = api::Server::start(so, router);
  if (!server) return fail(server.status());
  // Tests and scripts read the bound port (with --listen 127.0.0.1:0) from this line.
  std::printf("serve: listening on %s:%u (%s)\n", so.listen_address.c_str(), (*server)->port(),
              (*server)->tls() ? "tls" : "plaintext");
  std::fflush(stdout);

  std::unique_ptr<q::WorkerPool> pool;
  if (f.workers > 0) {
    q::WorkerPoolOptions po;
    char host[256] = "host";
    gethostname(host, sizeof host - 1);
    po.owner = f.owner.empty() ? std::string(host) + ":" + std::to_string(getpid()) : f.owner;
    po.concurrency = f.workers;
    po.limits.global = f.max_moves;
    po.limits.per_source = f.max_per_source;
    po.limits.per_destination = f.max_per_destination;
    po.limits.per_stamp = f.max_per_stamp;
    po.throttle_source_lag_bytes = f.throttle_source_lag_bytes;
    po.throttle_load_query = f.throttle_load_query;
    po.throttle_load_threshold = f.throttle_load_threshold;
    po.throttle_delay = std::chrono::milliseconds(static_cast<int64_t>(f.throttle_delay_ms));
    const double soak_s = f.soak_s;
    po.migrate_options = [cfg, state_dir, cp_dsn, soak_s](const q::Move& m) -> Result<orch::MigrateOptions> {
      orch::MigrateOptions o;
      o.copy.tenant = m.spec.tenant;
      // One directory per move: serve processes sharing a state volume (one host, or a
      // ReadWriteMany volume) open only the stores of the moves they hold, so a move taken over
      // after its owner died resumes from that owner's checkpoints.
      o.copy.state_dir = state_dir + "/moves/" + std::to_string(m.id);
      o.copy.tenant_columns = cfg.tenant_columns;
      SM_ASSIGN_OR_RETURN(std::string src, orch::resolveDsn(cfg, m.spec.from_stamp));
      SM_ASSIGN_OR_RETURN(std::string dst, orch::resolveDsn(cfg, m.spec.to_stamp));
      o.copy.source = orch::Endpoint{m.spec.from_stamp, src, "source stamp '" + m.spec.from_stamp + "'"};
      o.copy.destination = orch::Endpoint{m.spec.to_stamp, dst, "destination stamp '" + m.spec.to_stamp + "'"};
      o.control_plane_dsn = cp_dsn;
      o.soak = std::chrono::milliseconds(static_cast<int64_t>(soak_s * 1000));
      return o;
    };
    // Metrics of the moves this process runs: copy volume and applied changes as counters (the
    // deltas of each move's running totals), lag and apply rate per move, cutover windows,
    // rollbacks and errors by class when a run ends.
    struct Seen {
      uint64_t rows = 0, bytes = 0, changes = 0;
      std::chrono::steady_clock::time_point at = std::chrono::steady_clock::now();
    };
    auto seen = std::make_shared<std::pair<std::mutex, std::map<int64_t, Seen>>>();
    po.on_progress = [&registry, seen](int64_t id, const q::MoveProgress& p) {
      const std::string mid = std::to_string(id);
      std::lock_guard<std::mutex> g(seen->first);
      Seen& s = seen->second[id];
      auto delta = [](uint64_t now, uint64_t& last) {
        const uint64_t d = now >= last ? now - last : now;  // a new run counts from zero
        last = now;
        return d;
      };
      registry.setThrottled(mid, p.throttled);
      registry.addRowsCopied(delta(p.rows_copied, s.rows));
      registry.addBytesCopied(delta(p.bytes_copied, s.bytes));
      const uint64_t dc = delta(p.changes_applied, s.changes);
      registry.addAppliedChanges(dc);
      const auto now = std::chrono::steady_clock::now();
      const double dt = std::chrono::duration<double>(now - s.at).count();
      if (dt > 0.5) {
        registry.setApplyRate(mid, static_cast<double>(dc) / dt);
        s.at = now;
      }
      if (p.lag_bytes >= 0 || p.lag_seconds >= 0) {
        registry.setApplyLag(mid, static_cast<uint64_t>(std::max<int64_t>(p.lag_bytes, 0)),
                             std::max(p.lag_seconds, 0.0));
      }
    };
    po.on_finished = [&registry, seen](int64_t id, const q::MoveRunResult& r) {
      for (double w : r.cutover_windows_ms) registry.observeCutoverWindow(w / 1000.0);
      if (r.rolled_back) registry.incRollbacks();
      if (!r.status.isOk()) registry.incErrors(stampmover::common::errorClassName(r.status.errorClass()));
      registry.forgetMove(std::to_string(id));
      std::lock_guard<std::mutex> g(seen->first);
      seen->second.erase(id);
    };
    // A queued move of a rebalance or drain plan is re-checked when its turn comes.
    po.skip_check = [config_path, cp_dsn](const q::Move& m) -> Result<std::string> {
      return recheckPlannedMove(config_path, cp_dsn, m.id, *m.spec.plan_id, m.spec.tenant);
    };
    pool = std::make_unique<q::WorkerPool>(*queue, po);
    if (Status st = pool->start(); !st) return fail(st);
    spdlog::info("serve: worker pool {} runs up to {} moves", po.owner, f.workers);
  } else {
    spdlog::info("serve: API only (--workers 0)");
  }

  // The rebalance schedule (`rebalance:` in the stamps file): plan + apply every period, one
  // serve process per period (decided in the control plane).
  std::atomic<bool> schedule_stop{false};
  std::thread schedule_thread;
  {
    auto sc = loadScheduleConfig(config_path);
    if (!sc) return fail(sc.status());
    if (sc->present) {
      char host[256] = "host";
      gethostname(host, sizeof host - 1);
      const std::string owner =
          f.owner.empty() ? std::string(host) + ":" + std::to_string(getpid()) : f.owner;
      spdlog::info("serve: rebalance schedule every {} s in window {:02d}:{:02d}-{:02d}:{:02d} UTC",
                   sc->every_s, sc->window_from_min / 60, sc->window_from_min % 60,
                   sc->window_to_min / 60, sc->window_to_min % 60);
      schedule_thread = std::thread([config_path, cp_dsn, s = *sc, owner, &schedule_stop] {
        runRebalanceSchedule(config_path, cp_dsn, s, owner, schedule_stop);
      });
    }
  }

  // Moves by state and lease takeovers, refreshed for /metrics while serving.
  uint64_t takeovers_seen = 0;
  auto refresh = [&] {
    auto moves = queue->list(q::MoveFilter{std::nullopt, std::nullopt, std::nullopt, 10000});
    if (moves) {
      std::map<std::string, double> by;
      for (auto s : {q::MoveState::kQueued, q::MoveState::kRunning, q::MoveState::kPaused,
                     q::MoveState::kSucceeded, q::MoveState::kFailed, q::MoveState::kCancelled}) {
        by[q::moveStateName(s)] = 0;
      }
      for (const auto& m : *moves) {
        by[m.state == q::MoveState::kRunning && !m.progress.phase.empty() ? m.progress.phase
                                                                          : q::moveStateName(m.state)] += 1;
      }
      for (const auto& [phase, n] : by) registry.setMovesInPhase(phase, n);
    }
    uint64_t t = queue->counters().lease_takeovers;
    for (; takeovers_seen < t; ++takeovers_seen) registry.incLeaseTakeovers();
  };
  auto next_refresh = std::chrono::steady_clock::now();
  while (!cancel.load()) {
    if (std::chrono::steady_clock::now() >= next_refresh) {
      refresh();
      next_refresh = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  schedule_stop = true;
  if (schedule_thread.joinable()) schedule_thread.join();
  spdlog::info("serve: draining: no new connections, finishing in-flight requests");
  (*server)->beginDrain();
  const auto drain_timeout = secs(f.drain_timeout_s);
  bool requests_done = (*server)->waitDrained(drain_timeout);
  if (!requests_done) spdlog::warn("serve: API connections still open at the drain timeout");
  Status pool_st;
  if (pool) {
    spdlog::info("serve: draining the worker pool: moves stop at a checkpoint, leases released");
    pool_st = pool->drain(drain_timeout);
    if (!pool_st) spdlog::warn("serve: worker pool drain: {}", pool_st.message());
  }
  spdlog::info("serve: drained; exiting");
  std::printf("serve: drained\n");
  std::fflush(stdout);
  return requests_done && pool_st.isOk() ? 0 : 1;
}
