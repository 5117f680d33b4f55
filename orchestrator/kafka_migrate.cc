// Kafka-sourced migrate: see kafka_migrate.h. Order of durability on every checkpoint, as for
// the slot: destination commit (rows + replication origin + each partition's next offset) ->
// destination WAL flush -> RocksDB synced write. Nothing is acknowledged to Kafka: the offsets
// stored at the destination are the truth on restart.
#include "orchestrator/kafka_migrate.h"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "cdc/debezium_config.h"
#include "cdc/kafka_relations.h"
#include "common/log.h"
#include "mover/catalog.h"
#include "mover/kafka_offsets.h"
#include "mover/pg_applier.h"
#include "mover/preflight.h"
#include "mover/progress.h"
#include "mover/snapshot_copy.h"
#include "mover/source_setup.h"
#include "orchestrator/cancel_wait.h"

namespace stampmover::orch {

using common::Lsn;
using common::PgConnection;
using common::Result;
using common::Status;

namespace {

Status savePhase(mover::CheckpointStore& store, mover::MigrationRecord& rec, const char* phase) {
  rec.phase = phase;
  rec.updated_unix_ms = common::nowUnixMs();
  mover::CheckpointBatch b;
  b.putMigration(rec);
  SM_RETURN_IF_ERROR(store.write(b));
  spdlog::info("migration {}: phase {}", rec.id, phase);
  return Status::ok();
}

std::string offsetsJson(const std::vector<cdc::PartitionOffset>& offs) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& p : offs) j.push_back({{"topic", p.topic}, {"partition", p.partition}, {"offset", p.offset}});
  return j.dump();
}

std::vector<mover::KafkaOffset> toStored(const std::vector<cdc::PartitionOffset>& offs) {
  std::vector<mover::KafkaOffset> out;
  for (const auto& p : offs) out.push_back({p.topic, p.partition, p.offset});
  return out;
}

// Everything the catch-up needs that preflight established.
struct KafkaPlan {
  std::vector<std::shared_ptr<const common::Relation>> relations;
  cdc::ConnectorSettings connector;
  std::vector<std::string> topics;               // one per moved table (+ the message topic)
  std::vector<cdc::PartitionOffset> partitions;  // every partition of `topics`
};

// Preflight of the Kafka side: the connector's configuration against the source's tables, the
// topic prefix, and the topics (each must exist: a partition assigned later would be missed).
Result<KafkaPlan> planKafka(const KafkaMigrateOptions& o, PgConnection& src,
                            const std::vector<mover::TableInfo>& tables, const std::string& tenant) {
  KafkaPlan plan;
  std::vector<std::string> names;
  for (const auto& t : tables) names.push_back(t.key());
  SM_ASSIGN_OR_RETURN(plan.relations, cdc::describeSourceTables(src, names));
  SM_ASSIGN_OR_RETURN(auto cfg, cdc::parseConnectorConfig(o.connector_config));
  cdc::TenantFilter filter;
  filter.tenant = tenant;
  filter.column = o.migrate.copy.tenant_columns.default_column;
  filter.per_table = o.migrate.copy.tenant_columns.per_table;
  // Every problem at once: an operator fixes the connector in one round, not one per run.
  if (auto problems = cdc::connectorProblems(cfg, plan.relations, filter); !problems.empty()) {
    std::string msg = "the Debezium connector configuration (--debezium-config) would lose or "
                      "distort data; fix these settings and restart the connector:";
    for (const auto& p : problems) msg += "\n  - " + p;
    return Status::refused(msg);
  }
  SM_ASSIGN_OR_RETURN(plan.connector, cdc::checkConnectorConfig(cfg, plan.relations, filter));
  std::string prefix = plan.connector.topic_prefix;
  if (!o.topic_prefix.empty()) {
    if (!prefix.empty() && prefix != o.topic_prefix) {
      return Status::refused("--topic-prefix " + o.topic_prefix + " differs from the connector's "
                             "topic.prefix " + prefix + ": pass --topic-prefix " + prefix +
                             " (or the connector.json of the connector that writes " +
                             o.topic_prefix + ".*)");
    }
    prefix = o.topic_prefix;
  }
  if (prefix.empty()) {
    return Status::refused("no topic prefix: the connector configuration sets no topic.prefix "
                           "(database.server.name for Debezium 1.x); pass --topic-prefix");
  }
  if (o.kafka.count("bootstrap.servers") == 0) {
    return Status::refused("the Kafka configuration (--kafka-config) lacks bootstrap.servers: add "
                           "bootstrap.servers=host:port[,host:port]");
  }
  for (const auto& r : plan.relations) plan.topics.push_back(prefix + "." + r->schema + "." + r->name);
  SM_ASSIGN_OR_RETURN(plan.partitions,
                      cdc::KafkaDebeziumSource::partitionsOf(o.kafka, plan.topics, o.kafka_timeout));
  return plan;
}

// The catch-up: the applier and the source, reconnected with jittered backoff on retryable
// errors (brokers, destination), until cancelled or (until_caught_up) caught up.
struct KafkaStreamer {
  const KafkaMigrateOptions& o;
  const KafkaPlan& plan;
  const mover::MigrationRecord& rec;
  mover::CheckpointStore& store;
  const std::atomic<bool>* cancel;
  MigrateReport& report;
  Lsn acked{};
  mover::ApplierStats totals{};
  cdc::KafkaSourceStats source_totals{};
  std::string last_kafka_error;
  uint64_t kafka_errors = 0;

  void status(mover::PgApplier& applier, cdc::KafkaDebeziumSource& source,
              std::chrono::steady_clock::time_point& t0, uint64_t& last_changes) {
    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - t0).count();
    const uint64_t changes = applier.stats().changes;
    const double rate = dt > 0 ? static_cast<double>(changes - last_changes) / dt : 0;
    t0 = now;
    last_changes = changes;
    const auto& h = source.health();
    const uint64_t lag = source.lagRecords();
    spdlog::info("catch-up (kafka): {} records behind, {:.0f} changes/s, {} changes applied, "
                 "{} records skipped (other tenants), {} bad event(s) dead-lettered{}",
                 mover::withCommas(lag), rate, mover::withCommas(totals.changes + changes),
                 mover::withCommas(source_totals.skipped + source.stats().skipped),
                 source_totals.bad_events + source.stats().bad_events,
                 h.failing ? "; BROKERS FAILING: " + h.last_error : std::string());
    nlohmann::json j = {{"phase", "catching_up"},
                        {"stream", "kafka"},
                        {"tenant", rec.tenant},
                        {"migration", rec.id},
                        {"applied_lsn", applier.committedLsn().toString()},
                        {"acked_lsn", acked.toString()},
                        {"lag_bytes", 0},
                        {"lag_seconds", -1},
                        {"apply_rate", rate},
                        {"changes", changes},
                        {"slot_retained_bytes", 0},
                        {"retention_warning", false},
                        {"kafka_lag_records", lag},
                        {"kafka_errors", kafka_errors + h.errors},
                        {"kafka_failing", h.failing},
                        {"kafka_last_error", h.last_error.empty() ? last_kafka_error : h.last_error},
                        {"kafka_offsets", nlohmann::json::parse(offsetsJson(source.durableOffsets()))},
                        {"updated_unix_ms", common::nowUnixMs()}};
    mover::CheckpointBatch b;
    b.putNote(rec.id, "status", j.dump());
    store.write(b).ignore();  // status is informational; the next tick writes it again
  }

  // Durable position -> RocksDB (with the offsets as of it). Kafka is told nothing.
  Status checkpoint(mover::PgApplier& applier, cdc::KafkaDebeziumSource& source) {
    SM_ASSIGN_OR_RETURN(Lsn durable, applier.durableLsn());
    if (durable <= acked) return Status::ok();
    SM_RETURN_IF_ERROR(source.acknowledge(durable));
    mover::CheckpointBatch b;
    b.putStreamPosition(rec.id, {"forward", durable, 0, rec.slot_name});
    b.putNote(rec.id, "kafka_offsets", offsetsJson(source.durableOffsets()));
    SM_RETURN_IF_ERROR(store.write(b));
    acked = durable;
    return Status::ok();
  }

  // One connected session. Returns OK when caught up (until_caught_up), kCancelled when asked.
  Status session() {
    mover::ApplierOptions ao;
    ao.dest_dsn = o.migrate.copy.destination.dsn;
    ao.dest_label = o.migrate.copy.destination.label;
    ao.source_dsn = o.migrate.copy.source.dsn;
    ao.source_label = o.migrate.copy.source.label;
    ao.origin_name = rec.slot_name;
    ao.tenant = rec.tenant;
    ao.tenant_columns = o.migrate.copy.tenant_columns;
    ao.max_batch_changes = o.migrate.max_batch_changes;
    ao.max_batch_age = o.migrate.max_batch_age;
    // Delivery is at least once and the stream starts before the snapshot: every insert may
    // meet its row already there, so every insert is an upsert.
    ao.plain_inserts = false;
    // The source is created after the applier (its first position follows the origin), and
    // the applier copies its options: the statements reach the source through this slot.
    auto source_slot = std::make_shared<cdc::KafkaDebeziumSource*>(nullptr);
    const mover::TxnStatementsFn extra = o.migrate.commit_statements;
    const std::string id = rec.id;
    ao.commit_statements = [source_slot, extra, id]() {
      std::vector<mover::TxnStatement> out;
      if (*source_slot != nullptr) {
        std::vector<mover::KafkaOffset> offs;
        for (const auto& p : (*source_slot)->committedOffsets()) {
          if (p.offset >= 0) offs.push_back({p.topic, p.partition, p.offset});
        }
        out = mover::kafkaOffsetStatements(id, offs);
      }
      if (extra) {
        auto more = extra();
        out.insert(out.end(), more.begin(), more.end());
      }
      return out;
    };
    SM_ASSIGN_OR_RETURN(auto applier, mover::PgApplier::open(ao));
    SM_ASSIGN_OR_RETURN(Lsn origin, applier->originProgress());
    // Start offsets: the destination's, committed with the rows (the truth on restart).
    SM_ASSIGN_OR_RETURN(PgConnection dst, PgConnection::connect(ao.dest_dsn, ao.dest_label));
    SM_ASSIGN_OR_RETURN(auto stored, mover::loadKafkaOffsets(dst, rec.id));
    std::map<std::pair<std::string, int32_t>, int64_t> by_part;
    for (const auto& s : stored) by_part[{s.topic, s.partition}] = s.next_offset;
    cdc::KafkaSourceOptions so;
    so.kafka = o.kafka;
    so.max_buffered_bytes = o.max_buffered_bytes;
    so.on_bad_event = o.on_bad_event;
    so.dead_letter_path = o.dead_letter_path;
    so.first_position = origin.value() + 1;
    so.give_up_after = std::chrono::milliseconds(60'000);
    for (const auto& p : plan.partitions) {
      auto it = by_part.find({p.topic, p.partition});
      if (it == by_part.end()) {
        // Recorded at the handoff for every partition that existed then: a new one means the
        // topic was repartitioned, and a key's changes may now sit in two partitions.
        return Status::refused("kafka topic " + p.topic + " partition " + std::to_string(p.partition) +
                               " has no stored offset at the " + ao.dest_label +
                               " (stampmover.kafka_offsets, migration " + rec.id +
                               "): the topic gained partitions since the migration began, so "
                               "per-key order no longer holds; start over (`stampmover cleanup "
                               "--tenant " + rec.tenant + " --purge-destination`, then migrate)");
      }
      so.start.push_back({p.topic, p.partition, it->second});
    }
    cdc::DebeziumDecoder decoder(plan.connector.modes, cdc::fixedRelations(plan.relations),
                                 cdc::TenantFilter{rec.tenant, o.migrate.copy.tenant_columns.default_column,
                                                   o.migrate.copy.tenant_columns.per_table});
    SM_ASSIGN_OR_RETURN(auto source, cdc::KafkaDebeziumSource::open(so, std::move(decoder)));
    *source_slot = source.get();
    acked = std::max(acked, origin);
    spdlog::info("kafka stream: {} partitions of {} topics from the offsets stored at the {}",
                 so.start.size(), plan.topics.size(), ao.dest_label);
    auto last_ckpt = std::chrono::steady_clock::now();
    auto last_status = std::chrono::steady_clock::time_point{};
    auto rate_t0 = std::chrono::steady_clock::now();
    uint64_t last_changes = 0;
    auto finish = [&](Status st) {
      totals.changes += applier->stats().changes;
      totals.transactions += applier->stats().transactions;
      totals.toast_repairs += applier->stats().toast_repairs;
      const auto& s = source->stats();
      source_totals.messages += s.messages;
      source_totals.changes += s.changes;
      source_totals.skipped += s.skipped;
      source_totals.tombstones += s.tombstones;
      source_totals.bad_events += s.bad_events;
      kafka_errors += source->health().errors;
      if (!source->health().last_error.empty()) last_kafka_error = source->health().last_error;
      *source_slot = nullptr;  // the applier may outlive the source in this scope's unwinding
      return st;
    };
    Status st;
    for (;;) {
      if (cancelled(cancel)) {
        st = applier->commitPending();
        if (st.isOk()) st = checkpoint(*applier, *source);
        if (st.isOk()) st = Status::cancelled("stopped at " + acked.toString() + "; rerun to resume");
        break;
      }
      auto ev = source->next(std::chrono::milliseconds(50));
      if (!ev) {
        st = ev.status();
        break;
      }
      if (*ev) {
        st = applier->apply(std::move(**ev));
      } else {
        st = applier->commitPending();
      }
      if (!st.isOk()) break;
      const auto now = std::chrono::steady_clock::now();
      if (now - last_ckpt >= o.migrate.checkpoint_interval) {
        st = checkpoint(*applier, *source);
        if (!st.isOk()) break;
        last_ckpt = now;
      }
      if (now - last_status >= o.migrate.status_interval) {
        status(*applier, *source, rate_t0, last_changes);
        last_status = now;
      }
      if (o.migrate.until_caught_up && !*ev && source->caughtUp() && !applier->inTransaction()) {
        // Every partition reported its end since its last record, and everything handed out is
        // committed: flush, checkpoint, done.
        st = applier->commitPending();
        if (st.isOk()) st = applier->forceFlush();
        if (st.isOk()) st = checkpoint(*applier, *source);
        if (st.isOk()) {
          report.caught_up = true;
          status(*applier, *source, rate_t0, last_changes);
        }
        break;
      }
    }
    return finish(st);
  }

  Status run() {
    std::mt19937_64 rng(std::random_device{}());
    auto backoff = std::chrono::milliseconds(100);
    auto failing_since = std::chrono::steady_clock::time_point{};
    for (;;) {
      Status st = session();
      if (st.isOk() || st.errorClass() != common::ErrorClass::kRetryable) return st;
      const auto now = std::chrono::steady_clock::now();
      if (failing_since == std::chrono::steady_clock::time_point{}) failing_since = now;
      if (o.migrate.give_up_after.count() > 0 && now - failing_since > o.migrate.give_up_after) {
        return st.withContext("giving up after " +
                              std::to_string(o.migrate.give_up_after.count() / 1000) +
                              " s of retries");
      }
      report.reconnects++;
      last_kafka_error = st.message();
      auto wait = (backoff + std::chrono::milliseconds(rng() % (static_cast<uint64_t>(backoff.count()) + 1))) / 2;
      spdlog::warn("kafka stream: {}; reconnecting in {} ms", st.message(), wait.count());
      sleepFor(wait, cancel);
      backoff = std::min(backoff * 2, o.migrate.max_backoff);
      if (cancelled(cancel)) return Status::cancelled("stopped while reconnecting; rerun to resume");
    }
  }
};

}  // namespace

Result<std::map<std::string, std::string>> loadKafkaProperties(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::refused("cannot read Kafka configuration " + path + ": check --kafka-config");
  std::map<std::string, std::string> out;
  std::string line;
  int n = 0;
  auto trim = [](std::string s) {
    const char* ws = " \t\r";
    s.erase(0, s.find_first_not_of(ws));
    s.erase(s.find_last_not_of(ws) + 1);
    return s;
  };
  while (std::getline(in, line)) {
    ++n;
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == '!') continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos) {
      return Status::refused("Kafka configuration " + path + " line " + std::to_string(n) +
                             ": expected key=value");
    }
    std::string key = trim(line.substr(0, eq));
    std::string value = trim(line.substr(eq + 1));
    if (value.rfind("@file:", 0) == 0) {
      std::ifstream f(value.substr(6));
      if (!f) {
        return Status::refused("Kafka configuration " + path + " line " + std::to_string(n) +
                               ": cannot read " + value.substr(6) + " (the value of " + key + ")");
      }
      value.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
      while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
    } else if (value.rfind("@env:", 0) == 0) {
      const char* v = std::getenv(value.substr(5).c_str());
      if (v == nullptr) {
        return Status::refused("Kafka configuration " + path + " line " + std::to_string(n) +
                               ": environment variable " + value.substr(5) + " (the value of " +
                               key + ") is not set");
      }
      value = v;
    }
    if (key.empty()) {
      return Status::refused("Kafka configuration " + path + " line " + std::to_string(n) +
                             ": empty key");
    }
    out[key] = value;
  }
  return out;
}

Result<MigrateReport> runKafkaMigrate(const KafkaMigrateOptions& o, const std::atomic<bool>* cancel) {
  const MigrateOptions& mo = o.migrate;
  if (mo.cutover_auto || mo.cutover_manual) {
    return Status::refused("--cutover with --cdc kafka is not supported yet (the drain through "
                           "Kafka is not wired into the cutover): run with --cutover none and "
                           "--until-caught-up, or use --cdc pgoutput for the cutover");
  }
  MigrateReport report;
  const CopyJobOptions& co = mo.copy;
  SM_ASSIGN_OR_RETURN(PgConnection src, PgConnection::connect(co.source.dsn, co.source.label));
  SM_ASSIGN_OR_RETURN(PgConnection dst, PgConnection::connect(co.destination.dsn, co.destination.label));
  SM_ASSIGN_OR_RETURN(const mover::CanonicalTenant canon,
                      mover::canonicalTenantKey(src, co.tenant_columns, co.tenant));
  const common::TenantKey& tenant = canon.key;
  SM_ASSIGN_OR_RETURN(auto store, mover::openRocksDbCheckpointStore({co.state_dir, true}));
  const std::string id = mover::migrationId(tenant, co.source.name, co.destination.name);
  SM_ASSIGN_OR_RETURN(auto existing, store->loadMigration(id));
  SM_ASSIGN_OR_RETURN(const mover::StampIdentity src_identity, mover::readStampIdentity(src));
  SM_ASSIGN_OR_RETURN(const mover::StampIdentity dst_identity, mover::readStampIdentity(dst));
  if (existing) {
    SM_ASSIGN_OR_RETURN(auto kind, store->loadNote(id, "source_kind"));
    if (kind.value_or("") != "kafka") {
      return Status::refused("migration " + id + " in " + co.state_dir + " was started with the "
                             "pgoutput source (a slot); finish it with `--cdc pgoutput`, or start "
                             "over: `stampmover cleanup --tenant " + tenant.text() +
                             " --purge-destination`");
    }
    if ((existing->source_identity.known() && !(existing->source_identity == src_identity)) ||
        (existing->destination_identity.known() && !(existing->destination_identity == dst_identity))) {
      return Status::refused("migration " + id + " was recorded against other servers (a stamp was "
                             "rebuilt or replaced at the same address); start over: `stampmover "
                             "cleanup --tenant " + tenant.text() + " --purge-destination`");
    }
    if (existing->phase == "starting") existing.reset();  // nothing copied yet: start afresh
  }
  const bool resuming = existing.has_value();
  mover::PreflightOptions po;
  po.tenant = tenant;
  po.tenant_columns = co.tenant_columns;
  po.resuming = resuming;
  po.needs_slot = false;
  SM_ASSIGN_OR_RETURN(report.copy.preflight, mover::runPreflight(src, dst, po));
  for (const auto& w : report.copy.preflight.warnings) spdlog::warn("preflight: {}", w);
  const auto& tables = report.copy.preflight.tables;
  SM_ASSIGN_OR_RETURN(const KafkaPlan plan, planKafka(o, src, tables, tenant.text()));
  spdlog::info("preflight passed: {} tenant tables, ~{} rows; connector configuration accepted; "
               "{} partitions in {} topics",
               tables.size(), mover::withCommas(report.copy.preflight.est_rows),
               plan.partitions.size(), plan.topics.size());
  SM_RETURN_IF_ERROR(mover::ensureKafkaOffsetsTable(dst));

  mover::MigrationRecord rec;
  mover::CopyEndpoints ep{co.source.dsn, co.source.label, co.destination.dsn, co.destination.label};
  mover::ProgressOptions popts;
  popts.terminal = co.progress_terminal;
  mover::Progress progress(popts);
  if (resuming && existing->phase != "copying") {
    rec = *existing;
    report.copy.already_copied = true;
    report.copy.resumed = true;
  } else {
    if (resuming) {
      rec = *existing;
    } else {
      rec.id = id;
      rec.tenant = tenant.text();
      rec.tenant_types = canon.types;
      rec.source_identity = src_identity;
      rec.destination_identity = dst_identity;
      rec.source = co.source.name;
      rec.destination = co.destination.name;
      // No slot and no publication: the name is that of the replication origin at the
      // destination (the one `cleanup` drops), the applied position's record.
      rec.slot_name = mover::replicationNameForTenant(tenant.text(), src.database());
      rec.created_unix_ms = common::nowUnixMs();
      rec.plan = mover::planChunks(tables, co.copy.chunk_bytes);
      mover::CheckpointBatch b;
      b.putNote(id, "source_kind", "kafka");
      SM_RETURN_IF_ERROR(store->write(b));
      SM_RETURN_IF_ERROR(savePhase(*store, rec, "starting"));
      // The handoff, step 1: every partition's end, read BEFORE the snapshot is taken. A change
      // committed after the snapshot is published after it, hence after this read, hence at an
      // offset at or past these. Stored at the destination in one transaction: the catch-up
      // starts there (also after a crash during the copy).
      SM_ASSIGN_OR_RETURN(auto ends, cdc::KafkaDebeziumSource::endOffsets(o.kafka, plan.partitions,
                                                                            o.kafka_timeout));
      SM_RETURN_IF_ERROR(dst.exec("BEGIN"));
      SM_RETURN_IF_ERROR(mover::dropKafkaOffsets(dst, id));
      for (const auto& s : mover::kafkaOffsetStatements(id, toStored(ends))) {
        SM_RETURN_IF_ERROR(dst.query(s.sql, s.params).status());
      }
      SM_RETURN_IF_ERROR(dst.exec("COMMIT"));
      mover::CheckpointBatch nb;
      nb.putNote(id, "kafka_start", offsetsJson(ends));
      SM_RETURN_IF_ERROR(store->write(nb));
      spdlog::info("handoff: end offsets of {} partitions recorded before the snapshot: {}",
                   ends.size(), offsetsJson(ends));
    }
    // Step 2: the snapshot (a resumed copy takes a fresh one: still after the recorded ends).
    SM_ASSIGN_OR_RETURN(PgConnection snap_conn, PgConnection::connect(co.source.dsn, co.source.label));
    SM_RETURN_IF_ERROR(snap_conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
    SM_ASSIGN_OR_RETURN(auto snap, snap_conn.queryValue("SELECT pg_export_snapshot()"));
    if (!snap) return Status::internal("pg_export_snapshot() returned NULL");
    SM_ASSIGN_OR_RETURN(auto wal, snap_conn.queryValue("SELECT pg_current_wal_insert_lsn()::text"));
    mover::CheckpointBatch sb;
    sb.putNote(id, "snapshot_lsn", wal.value_or(""));
    SM_RETURN_IF_ERROR(store->write(sb));
    SM_RETURN_IF_ERROR(savePhase(*store, rec, "copying"));
    spdlog::info("copying {} chunks under snapshot {} (source WAL at {})", rec.plan.size(), *snap,
                 wal.value_or("?"));
    SM_ASSIGN_OR_RETURN(report.copy.copy,
                        mover::copySnapshot(ep, tables, rec, tenant.text(), *snap, resuming,
                                            *store, co.copy, &progress, cancel));
    snap_conn.exec("COMMIT").ignore();  // read-only transaction: nothing to keep
    for (const auto& t : tables) {
      Status analyzed = dst.exec("ANALYZE " + t.quoted());
      if (!analyzed.isOk()) spdlog::warn("ANALYZE {} at the destination: {}", t.key(), analyzed.message());
    }
    SM_RETURN_IF_ERROR(savePhase(*store, rec, "copied"));
    report.copy.resumed = resuming;
  }
  report.copy.record = rec;
  SM_RETURN_IF_ERROR(savePhase(*store, rec, "catching_up"));
  const auto t0 = std::chrono::steady_clock::now();
  KafkaStreamer streamer{o, plan, rec, *store, cancel, report};
  Status st = streamer.run();
  report.changes = streamer.totals.changes;
  report.transactions = streamer.totals.transactions;
  report.toast_repairs = streamer.totals.toast_repairs;
  report.applied = streamer.acked;
  report.catchup_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("kafka stream: {} records read, {} changes of tenant {}, {} skipped (other tenants "
               "or tables), {} tombstones, {} bad event(s) dead-lettered",
               streamer.source_totals.messages, streamer.source_totals.changes, rec.tenant,
               streamer.source_totals.skipped, streamer.source_totals.tombstones,
               streamer.source_totals.bad_events);
  if (!st.isOk()) {
    if (st.errorClass() == common::ErrorClass::kCancelled) spdlog::info("{}", st.message());
    return st;
  }
  return report;
}

}  // namespace stampmover::orch
