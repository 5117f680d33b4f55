// The stampmover binary: argument parsing and wiring only. Exit codes: 0 success,
// 1 internal error, 2 refused (bad input, preflight), 3 retryable failure (server unreachable,
// connection lost: rerun resumes), 4 data mismatch/loss, 130 cancelled (SIGINT/SIGTERM).
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "app/commands.h"
#include "app/move_commands.h"
#include "app/rebalance_command.h"
#include "app/serve_command.h"
#include "common/log.h"
#include "common/pg.h"
#include "metrics/log_context.h"
#include "orchestrator/config.h"
#include "orchestrator/copy_job.h"
#include "orchestrator/kafka_data_loss.h"
#include "orchestrator/kafka_migrate.h"
#include "orchestrator/migrate_job.h"

namespace {

using stampmover::common::ErrorClass;
using stampmover::common::Status;
namespace orch = stampmover::orch;

std::atomic<bool> g_cancel{false};

void onSignal(int) { g_cancel.store(true); }

int exitCodeFor(const Status& st) {
  switch (st.errorClass()) {
    case ErrorClass::kRefused: return 2;
    case ErrorClass::kRetryable: return 3;
    case ErrorClass::kDataLoss: return 4;
    case ErrorClass::kCancelled: return 130;
    case ErrorClass::kInternal: return 1;
  }
  return 1;
}

int fail(const Status& st) {
  std::fprintf(stderr, "stampmover: error: %s\n", st.message().c_str());
  return exitCodeFor(st);
}

struct EndpointArgs {
  std::string tenant;
  std::string from;
  std::string to;
  std::string source_dsn;
  std::string dest_dsn;
  std::string tenant_column;
  std::vector<std::string> table_columns;  // schema.table=column
};

void addEndpointOptions(CLI::App* cmd, EndpointArgs& a, bool need_dest) {
  cmd->add_option("--tenant", a.tenant, "Tenant key (integer, text or uuid, as stored)")->required();
  cmd->add_option("--from", a.from, "Source stamp name from the stamps file");
  cmd->add_option("--source-dsn", a.source_dsn,
                  "Source libpq DSN instead of --from (prefer PGPASSFILE/PGPASSWORD for secrets)");
  if (need_dest) {
    cmd->add_option("--to", a.to, "Destination stamp name from the stamps file");
    cmd->add_option("--dest-dsn", a.dest_dsn, "Destination libpq DSN instead of --to");
  }
  cmd->add_option("--tenant-column", a.tenant_column,
                  "Column holding the tenant key (default: tenant_id, or the config's)");
  cmd->add_option("--table-tenant-column", a.table_columns,
                  "Per-table override, repeatable: schema.table=column");
}

stampmover::common::Result<orch::Endpoint> endpoint(const orch::Config* cfg,
                                                    const std::string& stamp,
                                                    const std::string& dsn, const char* role,
                                                    const char* stamp_flag, const char* dsn_flag) {
  if (!stamp.empty() && !dsn.empty()) {
    return Status::refused(std::string("give either ") + stamp_flag + " or " + dsn_flag + ", not both");
  }
  if (!dsn.empty()) {
    // A stamp given by DSN is named by where it is (host:port/dbname): stable across runs,
    // distinct for source and destination, and free of secrets.
    return orch::Endpoint{stampmover::common::dsnLocation(dsn), dsn,
                          std::string(role) + " " + stampmover::common::dsnLocation(dsn)};
  }
  if (stamp.empty()) {
    return Status::refused(std::string("no ") + role + ": pass " + stamp_flag + " <stamp> with --config, or " +
                           dsn_flag + " '<libpq dsn>'");
  }
  if (cfg == nullptr) {
    return Status::refused(std::string(stamp_flag) + " " + stamp +
                           " needs a stamps file: pass --config stamps.yaml (or set STAMPMOVER_CONFIG)");
  }
  SM_ASSIGN_OR_RETURN(std::string resolved, orch::resolveDsn(*cfg, stamp));
  return orch::Endpoint{stamp, resolved, std::string(role) + " stamp '" + stamp + "'"};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "stampmover: move one tenant's data between PostgreSQL deployment stamps while it stays "
      "online.\n\nTypical use:\n"
      "  stampmover preflight --tenant 42 --from stamp-a --to stamp-b --config stamps.yaml\n"
      "  stampmover copy      --tenant 42 --from stamp-a --to stamp-b --config stamps.yaml\n"
      "  stampmover migrate   --tenant 42 --from stamp-a --to stamp-b --config stamps.yaml\n"
      "  stampmover status    --tenant 42          # while migrate runs, from another shell\n"
      "  stampmover cleanup   --tenant 42 --from stamp-a --config stamps.yaml\n"
      "  stampmover demo      # local throwaway stamps, seeded tenant, full run\n"
      "  stampmover serve --config stampmover.yaml   # API + workers (issue 12)\n"
      "  stampmover move create --tenant 42 --from stamp-a --to stamp-b --api https://host:8443\n"
      "  stampmover rebalance plan --threshold 0.10   # then: rebalance apply PLAN_ID\n"
      "  stampmover drain stamp-c [--dry-run]        # empty a stamp; stampmover stamps\n"};
  app.footer(
      "Exit codes: 0 ok, 1 internal error, 2 refused (bad input or preflight: nothing was "
      "changed), 3 retryable failure (rerun resumes), 4 data mismatch, 130 interrupted.\n"
      "Secrets: DSN passwords are never logged; in the stamps file use password_file or "
      "password_env.");
  app.require_subcommand(1);
  app.fallthrough();  // global options (--config, --state-dir, --log-level) work after the subcommand
  std::string config_path;
  std::string state_dir;
  std::string log_level = "info";
  app.add_option("--config", config_path, "Stamps file (YAML); also $STAMPMOVER_CONFIG")
      ->envname("STAMPMOVER_CONFIG");
  app.add_option("--state-dir", state_dir,
                 "Worker state directory (RocksDB); default $STAMPMOVER_STATE_DIR or "
                 "~/.local/state/stampmover");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  std::string log_format = "text";
  app.add_option("--log-format", log_format,
                 "text, or json: one JSON object per line with the move id, tenant and phase "
                 "where known")
      ->check(CLI::IsMember({"text", "json"}));

  EndpointArgs pre_args;
  auto* pre = app.add_subcommand("preflight",
                                 "Check that a tenant can be moved; changes nothing on any server");
  addEndpointOptions(pre, pre_args, true);

  EndpointArgs copy_args;
  stampmover::mover::CopyOptions copy_opts;
  uint64_t chunk_mb = copy_opts.chunk_bytes >> 20;
  uint64_t chunk_kb = 0;
  std::string progress_mode = "auto";
  auto* copy = app.add_subcommand(
      "copy",
      "Preflight, then create the tenant's publication and slot and copy its rows under the "
      "slot's snapshot. Interrupted copies resume where they stopped when rerun.");
  addEndpointOptions(copy, copy_args, true);
  copy->add_option("--jobs", copy_opts.jobs,
                   "Concurrent COPY streams (0 = auto: one per core, at least 2; the work is in "
                   "the servers, so raise it when they have cores to spare)")
      ->capture_default_str();
  copy->add_option("--chunk-mb", chunk_mb, "Heap MiB per CTID chunk (resume granularity)")
      ->capture_default_str();
  copy->add_option("--chunk-kb", chunk_kb, "Heap KiB per chunk (overrides --chunk-mb; for tests)");
  double max_rate_mb = 0;
  copy->add_option("--max-rate", max_rate_mb,
                   "Cap on copy throughput in MB/s over all jobs, to spare the source (0 = none)")
      ->check(CLI::NonNegativeNumber);
  copy->add_flag("!--no-binary", copy_opts.allow_binary, "Use text COPY even for built-in types");
  copy->add_option("--progress", progress_mode, "auto (bars on a terminal), bars, or log")
      ->check(CLI::IsMember({"auto", "bars", "log"}));

  EndpointArgs mig_args;
  orch::MigrateOptions mig_opts;
  double caught_up_lag_s = 1.0;
  auto* migrate = app.add_subcommand(
      "migrate",
      "Preflight, copy (or resume the copy), then follow the source's changes live: stream the "
      "slot, apply idempotently, checkpoint. Runs until stopped (SIGINT/SIGTERM stop it at a "
      "checkpoint; a rerun resumes) or, with --until-caught-up, until lag is small.");
  addEndpointOptions(migrate, mig_args, true);
  migrate->add_flag("--until-caught-up", mig_opts.until_caught_up,
                    "Exit 0 once the heartbeat round trip is under --caught-up-lag");
  migrate->add_option("--caught-up-lag", caught_up_lag_s, "Lag (seconds) that counts as caught up")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  migrate->add_option("--jobs", copy_opts.jobs, "Concurrent COPY streams for the copy phase (0 = auto)");
  migrate->add_option("--max-batch", mig_opts.max_batch_changes,
                      "Changes per destination transaction")
      ->capture_default_str();
  migrate->add_option("--recheck-keys", mig_opts.touched_prune_keys,
                      "With --cutover: whenever this many rows changed during catch-up are "
                      "waiting for the cutover's re-check, compare them now (outside the window) "
                      "and keep only those that still differ; keeps the window short")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  uint64_t retention_warn_mb = mig_opts.retention_warn_bytes >> 20;
  migrate->add_option("--retention-warn-mb", retention_warn_mb,
                      "Warn when the slot retains more WAL than this (MiB)")
      ->capture_default_str();
  double give_up_s = 0;
  migrate->add_option("--give-up-after", give_up_s,
                      "Stop after this many seconds of failed reconnects (0 = retry forever)");
  migrate->add_option("--progress", progress_mode, "auto (bars on a terminal), bars, or log")
      ->check(CLI::IsMember({"auto", "bars", "log"}));
  std::string cutover_mode = "none";
  migrate->add_option("--cutover", cutover_mode,
                      "none: follow only; auto: once caught up, freeze/drain/verify/flip, soak "
                      "with the reverse stream, then finalize; manual: follow, and act on "
                      "`stampmover cutover|rollback|finalize`")
      ->check(CLI::IsMember({"none", "auto", "manual"}))
      ->capture_default_str();
  migrate->add_option("--control-plane-dsn", mig_opts.control_plane_dsn,
                      "Control-plane PostgreSQL holding the routing directory (for --cutover)")
      ->envname("STAMPMOVER_CONTROL_PLANE_DSN");
  migrate->add_flag("--purge-source", mig_opts.purge_source,
                    "After finalize, delete the tenant's rows from the source in small batches");
  double soak_s = 10;
  migrate->add_option("--soak", soak_s, "Seconds of dual-write soak after the flip")->capture_default_str();
  double window_ms = 2000;
  migrate->add_option("--window-timeout-ms", window_ms,
                      "Hard limit on the freeze -> flip window; past it the cutover rolls back")
      ->capture_default_str();
  double precheck_ms = 500;
  migrate->add_option("--precheck-ms", precheck_ms,
                      "Freeze only when a drain just before it took less than this (ms); with "
                      "--cdc kafka the drain includes the Connect worker's offset commit "
                      "(offset.flush.interval.ms), so raise this and --window-timeout-ms above it")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  migrate->add_option("--cutover-attempts", mig_opts.cutover_attempts,
                      "Freeze attempts (each refused pre-check or rolled-back window counts) "
                      "before migrate stops, leaving the tenant on the source")
      ->check(CLI::Range(1u, 1000u))
      ->capture_default_str();
  migrate->add_flag("--rollback-after-soak", mig_opts.rollback_after_soak,
                    "After the soak, cut back to the source instead of finalizing");
  migrate->add_flag("!--no-finalize", mig_opts.finalize,
                    "Keep dual-write (reverse stream) after the soak instead of finalizing");
  // Kafka (Debezium) change source instead of a slot (issue 14).
  std::string cdc_kind = "pgoutput";
  std::string kafka_config_path, debezium_config_path, topic_prefix, connector_name;
  std::string kafka_offsets_topic = "connect-offsets";
  std::vector<std::string> on_bad_event_args;
  migrate->add_option("--cdc", cdc_kind,
                      "Where the source's changes come from: pgoutput (a slot that stampmover "
                      "creates on the source) or kafka (the topics a Debezium PostgreSQL connector "
                      "already writes; no slot is opened on the source)")
      ->check(CLI::IsMember({"pgoutput", "kafka"}))
      ->capture_default_str();
  migrate->add_option("--kafka-config", kafka_config_path,
                      "With --cdc kafka: librdkafka properties file (bootstrap.servers, "
                      "security.protocol, ssl.*, sasl.*; a value @file:PATH or @env:NAME is read "
                      "from there, so secrets stay out of the file)");
  migrate->add_option("--debezium-config", debezium_config_path,
                      "With --cdc kafka: the connector's configuration as Kafka Connect shows it "
                      "(GET /connectors/NAME or /connectors/NAME/config); settings that would lose "
                      "or distort data are refused, each naming the setting and the fix");
  migrate->add_option("--topic-prefix", topic_prefix,
                      "With --cdc kafka: the connector's topic.prefix (topics PREFIX.schema.table); "
                      "default: taken from --debezium-config");
  migrate->add_option("--kafka-offsets-topic", kafka_offsets_topic,
                      "With --cdc kafka and a cutover: Kafka Connect's offsets topic (the worker's "
                      "offset.storage.topic); the drain waits there for the connector to commit a "
                      "source position past the fence")
      ->capture_default_str();
  migrate->add_option("--connector-name", connector_name,
                      "With --cdc kafka and a cutover: the connector's name in Kafka Connect (the "
                      "key of its offsets); default: \"name\" of --debezium-config");
  migrate->add_option("--on-bad-event", on_bad_event_args,
                      "With --cdc kafka: stop (default: the migration stops naming topic, "
                      "partition, offset and reason) or `dead-letter FILE` (the event is appended "
                      "to FILE as a JSON line with the record key, and skipped; `verify "
                      "--dead-letter FILE` then lists the rows it affected)")
      ->expected(1, 2);

  OperatorArgs op_args;
  std::string op_cp;
  bool purge_source_req = false;
  CLI::App* op_cmds[3];
  const char* op_names[3] = {"cutover", "rollback", "finalize"};
  const char* op_help[3] = {
      "Ask the worker of a --cutover manual migration to cut over now (freeze, drain, verify, "
      "flip to dual_write); waits for the outcome",
      "Ask the worker to roll the tenant back to the source: before the flip it drops what the "
      "migration created; during the soak it runs the cutover backwards",
      "Ask the worker to finalize: stop the reverse stream, drop slots, publications and fences, "
      "routing active on the destination"};
  for (int i = 0; i < 3; ++i) {
    op_cmds[i] = app.add_subcommand(op_names[i], op_help[i]);
    op_cmds[i]->add_option("--tenant", op_args.tenant, "Tenant key")->required();
    op_cmds[i]->add_option("--control-plane-dsn", op_cp, "Control-plane PostgreSQL")
        ->envname("STAMPMOVER_CONTROL_PLANE_DSN");
    op_cmds[i]->add_option("--wait", op_args.wait_seconds, "Seconds to wait for the worker")
        ->capture_default_str();
  }
  op_cmds[2]->add_flag("--purge-source", purge_source_req,
                       "Then delete the tenant's rows from the source, in small batches, after a "
                       "last comparison");

  std::string status_tenant;
  std::string status_cp;
  auto* status = app.add_subcommand(
      "status", "Show each migration in the state directory: phase, checkpoint, lag (bytes, "
                "seconds), apply rate, WAL retained by the slot. Safe while migrate runs.");
  status->add_option("--tenant", status_tenant, "Only this tenant");
  status->add_option("--control-plane-dsn", status_cp,
                     "Also list every migration registered in the control plane (phase, last "
                     "cutover window, pending request)")
      ->envname("STAMPMOVER_CONTROL_PLANE_DSN");

  EndpointArgs clean_args;
  bool purge_destination = false;
  auto* cleanup = app.add_subcommand(
      "cleanup", "Drop the tenant's replication slot and publication on the source and forget "
                 "its local state (for an abandoned migration)");
  addEndpointOptions(cleanup, clean_args, true);
  cleanup->add_flag("--purge-destination", purge_destination,
                    "Also delete the tenant's rows from the destination (needs --to/--dest-dsn); "
                    "refused when the routing entry points at the destination");
  std::string cleanup_cp;
  cleanup->add_option("--control-plane-dsn", cleanup_cp,
                      "Routing directory: decides what may be torn down (never the rows or the "
                      "fence of the stamp that serves the tenant)")
      ->envname("STAMPMOVER_CONTROL_PLANE_DSN");

  DemoArgs demo_args;
  auto* demo = app.add_subcommand(
      "demo", "Start two throwaway local stamps (PostgreSQL on 127.0.0.1), seed a tenant among "
              "others, migrate it and print the report. Everything is removed at the end.");
  demo->add_option("--rows", demo_args.tenant_items,
                   "Rows of the tenant in its largest table (about 3x that in all)")
      ->capture_default_str();
  demo->add_option("--jobs", demo_args.jobs, "Concurrent COPY streams (0 = auto)")->capture_default_str();
  demo->add_option("--writer-seconds", demo_args.writer_seconds,
                   "How long the tenant keeps writing during the migration")
      ->capture_default_str();

  RoutesArgs routes_args;
  auto* routes = app.add_subcommand(
      "routes", "Print the routing directory of the control plane: tenant, stamp, epoch, state, "
                "shadow stamp, last change. Read-only.");
  routes->add_option("--tenant", routes_args.tenant, "Only this tenant");
  routes->add_option("--control-plane-dsn", routes_args.control_plane_dsn,
                     "Control-plane libpq DSN (prefer PGPASSFILE/PGPASSWORD for secrets)")
      ->envname("STAMPMOVER_CONTROL_PLANE_DSN");
  routes->add_option("--control-plane", routes_args.control_plane,
                     "Control-plane stamp name from the stamps file, instead of the DSN");

  EndpointArgs verify_ep;
  VerifyArgs verify_args;
  auto* verify = app.add_subcommand(
      "verify", "Prove that the destination holds exactly the source's rows of the tenant, or list "
                "every difference. Read-only. Exit 0 identical, 1 differences, 2 could not verify, "
                "3 retryable.");
  addEndpointOptions(verify, verify_ep, true);
  addVerifyOptions(verify, verify_args);

  ServeFlags serve_flags;
  auto* serve = app.add_subcommand(
      "serve", "Run the service: the HTTP API (TLS, bearer tokens) and a pool of workers that "
               "claim moves from the control plane's queue. SIGTERM drains and exits 0.");
  addServeOptions(serve, serve_flags);

  MoveCliArgs move_args;
  auto* move = addMoveCommands(app, move_args);

  PlannerCliArgs planner_args;
  addPlannerCommands(app, planner_args);

  CLI11_PARSE(app, argc, argv);
  stampmover::common::setupLogging(log_level);
  if (log_format == "json") stampmover::metrics::useJsonLogFormat();

  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  if (*demo) return runDemo(demo_args, g_cancel);
  if (*serve) return runServe(serve_flags, config_path, state_dir, g_cancel);
  if (plannerCommandChosen(planner_args)) return runPlannerCommand(planner_args, config_path, g_cancel);
  if (*move) {
    for (auto* sub : move->get_subcommands()) move_args.verb = sub->get_name();
    return runMoveCommand(move_args);
  }
  if (*routes) {
    routes_args.config_path = config_path;
    routes_args.state_dir = state_dir.empty() ? orch::defaultStateDir() : state_dir;
    Status st = runRoutes(routes_args);
    return st ? 0 : fail(st);
  }

  std::optional<orch::Config> cfg;
  if (!config_path.empty()) {
    auto loaded = orch::loadConfig(config_path);
    if (!loaded) return fail(loaded.status());
    cfg = std::move(*loaded);
  }
  if (state_dir.empty()) state_dir = cfg && !cfg->state_dir.empty() ? cfg->state_dir : orch::defaultStateDir();

  auto build = [&](const EndpointArgs& a, bool need_dest) -> stampmover::common::Result<orch::CopyJobOptions> {
    orch::CopyJobOptions o;
    o.tenant = a.tenant;
    o.state_dir = state_dir;
    if (cfg) o.tenant_columns = cfg->tenant_columns;
    if (!a.tenant_column.empty()) o.tenant_columns.default_column = a.tenant_column;
    for (const auto& tc : a.table_columns) {
      auto eq = tc.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == tc.size() ||
          tc.substr(0, eq).find('.') == std::string::npos) {
        return Status::refused("--table-tenant-column '" + tc + "': expected schema.table=column");
      }
      o.tenant_columns.per_table[tc.substr(0, eq)] = tc.substr(eq + 1);
    }
    const orch::Config* c = cfg ? &*cfg : nullptr;
    SM_ASSIGN_OR_RETURN(o.source, endpoint(c, a.from, a.source_dsn, "source", "--from", "--source-dsn"));
    if (need_dest) {
      SM_ASSIGN_OR_RETURN(o.destination, endpoint(c, a.to, a.dest_dsn, "destination", "--to", "--dest-dsn"));
    }
    return o;
  };

  if (*verify) {
    auto o = build(verify_ep, true);
    if (!o) return fail(o.status());
    return runVerifyCommand(verify_args, *o, g_cancel);
  }
  if (*pre) {
    auto o = build(pre_args, true);
    if (!o) return fail(o.status());
    auto r = orch::runPreflightOnly(*o);
    if (!r) return fail(r.status());
    std::fputs(orch::formatPreflight(*r, *o).c_str(), stdout);
    return 0;
  }
  if (*copy) {
    auto o = build(copy_args, true);
    if (!o) return fail(o.status());
    copy_opts.chunk_bytes = chunk_kb ? chunk_kb << 10 : chunk_mb << 20;
    if (copy_opts.chunk_bytes == 0) return fail(Status::refused("--chunk-mb must be at least 1"));
    copy_opts.max_bytes_per_sec = max_rate_mb * 1e6;
    o->copy = copy_opts;
    o->progress_terminal = progress_mode == "bars" || (progress_mode == "auto" && isatty(STDERR_FILENO));
    auto r = orch::runCopyJob(*o, &g_cancel);
    if (!r) return fail(r.status());
    std::fputs(orch::formatCopyReport(*r).c_str(), stdout);
    return 0;
  }
  if (*migrate && cdc_kind != "kafka" &&
      (!kafka_config_path.empty() || !debezium_config_path.empty() || !topic_prefix.empty() ||
       !on_bad_event_args.empty() || !connector_name.empty() ||
       kafka_offsets_topic != "connect-offsets")) {
    return fail(Status::refused("--kafka-config, --debezium-config, --topic-prefix, "
                                "--connector-name, --kafka-offsets-topic and --on-bad-event "
                                "belong to --cdc kafka: add --cdc kafka"));
  }
  if (*migrate) {
    auto o = build(mig_args, true);
    if (!o) return fail(o.status());
    o->copy = copy_opts;
    o->progress_terminal = progress_mode == "bars" || (progress_mode == "auto" && isatty(STDERR_FILENO));
    mig_opts.copy = *o;
    mig_opts.caught_up_lag = std::chrono::milliseconds(static_cast<int64_t>(caught_up_lag_s * 1000));
    mig_opts.retention_warn_bytes = retention_warn_mb << 20;
    mig_opts.give_up_after = std::chrono::milliseconds(static_cast<int64_t>(give_up_s * 1000));
    mig_opts.cutover_auto = cutover_mode == "auto";
    mig_opts.cutover_manual = cutover_mode == "manual";
    mig_opts.soak = std::chrono::milliseconds(static_cast<int64_t>(soak_s * 1000));
    mig_opts.cutover.window_timeout = std::chrono::milliseconds(static_cast<int64_t>(window_ms));
    mig_opts.cutover.lag_precheck = std::chrono::milliseconds(static_cast<int64_t>(precheck_ms));
    if (mig_opts.cutover.lag_precheck >= mig_opts.cutover.window_timeout) {
      return fail(Status::refused("--precheck-ms " + std::to_string(static_cast<int64_t>(precheck_ms)) +
                                  " must be below --window-timeout-ms " +
                                  std::to_string(static_cast<int64_t>(window_ms)) +
                                  ": a drain that slow before the freeze would not fit in the window"));
    }
    if (cdc_kind == "kafka") {
      orch::KafkaMigrateOptions ko;
      ko.migrate = mig_opts;
      if (kafka_config_path.empty() || debezium_config_path.empty()) {
        return fail(Status::refused("--cdc kafka needs --kafka-config FILE (librdkafka properties) "
                                    "and --debezium-config FILE (the connector's configuration)"));
      }
      auto props = orch::loadKafkaProperties(kafka_config_path);
      if (!props) return fail(props.status());
      ko.kafka = std::move(*props);
      std::ifstream dc(debezium_config_path);
      if (!dc) {
        return fail(Status::refused("cannot read --debezium-config " + debezium_config_path));
      }
      ko.connector_config.assign(std::istreambuf_iterator<char>(dc), std::istreambuf_iterator<char>());
      ko.topic_prefix = topic_prefix;
      ko.offsets_topic = kafka_offsets_topic;
      ko.connector_name = connector_name;
      if (!on_bad_event_args.empty()) {
        if (on_bad_event_args[0] == "dead-letter" && on_bad_event_args.size() == 2) {
          ko.on_bad_event = stampmover::cdc::BadEventPolicy::kDeadLetter;
          ko.dead_letter_path = on_bad_event_args[1];
        } else if (on_bad_event_args[0] != "stop" || on_bad_event_args.size() != 1) {
          return fail(Status::refused("--on-bad-event: expected `stop` or `dead-letter FILE`"));
        }
      }
      auto r = orch::runKafkaMigrate(ko, &g_cancel);
      if (!r) return fail(orch::explainKafkaDataLoss(ko, r.status()));
      std::fputs(orch::formatMigrateReport(*r).c_str(), stdout);
      return 0;
    }
    auto r = orch::runMigrate(mig_opts, &g_cancel);
    if (!r) return fail(r.status());
    std::fputs(orch::formatMigrateReport(*r).c_str(), stdout);
    return 0;
  }
  for (int i = 0; i < 3; ++i) {
    if (*op_cmds[i]) {
      op_args.action = op_names[i];
      if (i == 2 && purge_source_req) op_args.action = "finalize_purge";
      op_args.control_plane_dsn = op_cp;
      op_args.state_dir = state_dir;
      Status st = runOperatorRequest(op_args);
      return st.isOk() ? 0 : fail(st);
    }
  }
  if (*status) {
    if (!status_cp.empty()) {
      Status st = runBoardStatus(status_cp, status_tenant, state_dir);
      if (!st.isOk()) return fail(st);
    }
    // The records keep the canonical key and the tenant columns' types: `--tenant 042` finds
    // the migration of 42 exactly when the column is an integer.
    std::vector<std::string> shown = {status_tenant};
    if (!status_tenant.empty()) {
      auto keys = orch::tenantKeysFromState(state_dir, status_tenant);
      if (!keys) return fail(keys.status());
      if (!keys->empty()) shown.clear();
      for (const auto& k : *keys) shown.push_back(k.text());
    }
    stampmover::common::Result<std::string> r = std::string();
    for (const auto& t : shown) {
      auto one = orch::readStatus(state_dir, t);
      if (!one) {
        r = one.status();
        break;
      }
      r = *r + *one;
    }
    if (!r) {
      if (!status_cp.empty()) return 0;  // the control plane answered; no local state here
      return fail(r.status());
    }
    std::fputs(r->c_str(), stdout);
    return 0;
  }
  if (*cleanup) {
    bool need_dest = purge_destination;
    auto o = build(clean_args, need_dest);
    if (!o) return fail(o.status());
    auto r = orch::runCleanup(*o, purge_destination, cleanup_cp);
    if (!r) return fail(r.status());
    std::printf("cleanup of tenant %s: slot %s, publication %s, %u local record(s) removed",
                r->tenant.c_str(), r->dropped_slot ? "dropped" : "absent",
                r->dropped_publication ? "dropped" : "absent", r->records_removed);
    if (purge_destination) {
      std::printf(", %llu destination rows deleted",
                  static_cast<unsigned long long>(r->destination_rows_deleted));
    }
    std::printf("\n");
    return 0;
  }
  return 0;
}
