// Kafka-sourced migrate: see kafka_migrate.h. Order of durability on every checkpoint, as for
// the slot: destination commit (rows + replication origin + each partition's next offset) ->
// destination WAL flush -> RocksDB synced write. Nothing is acknowledged to Kafka: the offsets
// stored at the destination are the truth on restart.
#include "orchestrator/kafka_migrate.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "cdc/connect_offsets.h"
#include "cdc/debezium_config.h"
#include "cdc/kafka_relations.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "mover/catalog.h"
#include "mover/kafka_offsets.h"
#include "mover/pg_applier.h"
#include "mover/preflight.h"
#include "mover/progress.h"
#include "mover/snapshot_copy.h"
#include "mover/source_setup.h"
#include "orchestrator/cancel_wait.h"
#include "orchestrator/ledger.h"
#include "orchestrator/migrate_phases.h"
#include "orchestrator/phase.h"
#include "orchestrator/verify_job.h"

namespace stampmover::orch {

using common::Lsn;
using common::PgConnection;
using common::Result;
using common::Status;

namespace {

// The copy's phases, before the phase machine takes over: `rec` keeps the phase it was saved with.
Status savePhase(mover::CheckpointStore& store, mover::MigrationRecord& rec, const char* phase) {
  rec.phase = phase;
  rec.updated_unix_ms = common::nowUnixMs();
  SM_RETURN_IF_ERROR(saveRecordPhase(store, rec, phase));
  return common::failpoint(std::string("phase.") + phase);  // a phase boundary, as runMigrate's
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

// A marker written into the source's WAL (pg_logical_emit_message) right after a position is
// read, so the connector has an event at or past it to process and commit even when no captured
// table changes. Its prefix is not the pgoutput heartbeat's: appliers of other migrations ignore it.
constexpr const char* kMarkerPrefix = "stampmover-kafka-marker";

// Everything the catch-up needs that preflight established.
struct KafkaPlan {
  std::vector<std::shared_ptr<const common::Relation>> relations;
  cdc::ConnectorSettings connector;
  std::vector<std::string> topics;               // one per moved table (+ the message topic)
  std::vector<cdc::PartitionOffset> partitions;  // every partition of `topics`
  std::string connector_name;  // Kafka Connect's name of the connector (its offsets' key)
  std::string server;          // the topic prefix (the "server" of its offsets' key)
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
  plan.server = prefix;
  plan.connector_name = o.connector_name;
  if (plan.connector_name.empty()) {
    auto j = nlohmann::json::parse(o.connector_config, nullptr, false);
    if (j.is_object() && j.contains("name") && j["name"].is_string()) {
      plan.connector_name = j["name"].get<std::string>();
    }
  }
  const bool cutover = o.migrate.cutover_auto || o.migrate.cutover_manual;
  if (cutover && plan.connector_name.empty()) {
    return Status::refused("the cutover's drain reads the connector's committed position from "
                           "Kafka Connect's offsets topic, keyed by the connector's name: pass "
                           "--connector-name NAME, or the connector.json Kafka Connect shows at "
                           "GET /connectors/NAME (it carries \"name\")");
  }
  if (cutover) {
    // The drain needs the connector to commit a position past a marker written after the
    // fence: it must see logical decoding messages, or send heartbeats.
    const std::string include = cfg.get("message.prefix.include.list");
    const std::string exclude = cfg.get("message.prefix.exclude.list");
    const bool heartbeats = std::atol(cfg.get("heartbeat.interval.ms", "0").c_str()) > 0;
    auto lists = [](const std::string& list, const char* prefix) {
      // Debezium's lists are comma-separated regular expressions matched against the prefix.
      size_t start = 0;
      while (start <= list.size()) {
        size_t end = list.find(',', start);
        if (end == std::string::npos) end = list.size();
        std::string item = list.substr(start, end - start);
        item.erase(0, item.find_first_not_of(" \t"));
        item.erase(item.find_last_not_of(" \t") + 1);
        try {
          if (!item.empty() && std::regex_match(prefix, std::regex(item))) return true;
        } catch (const std::regex_error&) {
        }
        start = end + 1;
      }
      return false;
    };
    const bool messages = (include.empty() || lists(include, kMarkerPrefix)) &&
                          !(!exclude.empty() && lists(exclude, kMarkerPrefix));
    if (!messages && !heartbeats) {
      return Status::refused(
          "the connector would not move its committed position past the cutover's marker: its "
          "message.prefix.include.list/exclude.list filter out the logical decoding message "
          "prefix " + std::string(kMarkerPrefix) + " and heartbeat.interval.ms is not set; "
          "let that prefix through (add it to message.prefix.include.list) or set "
          "heartbeat.interval.ms (e.g. 1000), then restart the connector");
    }
  }
  for (const auto& r : plan.relations) plan.topics.push_back(prefix + "." + r->schema + "." + r->name);
  SM_ASSIGN_OR_RETURN(plan.partitions,
                      cdc::KafkaDebeziumSource::partitionsOf(o.kafka, plan.topics, o.kafka_timeout));
  return plan;
}

// The forward stream from the Debezium topics: the applier and the source, reconnected with
// jittered backoff on retryable errors (brokers, destination), driven by the phase machine
// (migrate_phases.h). Besides applying, it keeps the watermark (mover/kafka_offsets.h): about
// once per heartbeat interval it reads the source's WAL position W, writes a marker past it,
// waits (without blocking the apply) for the connector to commit a position at or past W, reads
// every partition's end, and once everything up to those ends is committed at the destination
// records W. The cutover's drain is the same steps, blocking, inside the window.
class KafkaForward final : public ForwardStream {
 public:
  KafkaForward(const KafkaMigrateOptions& o, const KafkaPlan& plan, const ForwardContext& fc,
               const std::atomic<bool>* cancel)
      : o_(o), plan_(plan), rec_(fc.rec), store_(fc.store), report_(fc.report), sink_(fc.sink),
        cutover_(fc.cutover), cancel_(cancel) {}

  ~KafkaForward() override {
    closeLive();
    if (source_totals_.messages > 0 || source_totals_.bad_events > 0) {
      spdlog::info("kafka stream: {} records read, {} changes of tenant {}, {} skipped (other "
                   "tenants or tables), {} tombstones, {} bad event(s) dead-lettered",
                   source_totals_.messages, source_totals_.changes, rec_.tenant,
                   source_totals_.skipped, source_totals_.tombstones, source_totals_.bad_events);
    }
  }

  Status run() override {
    yielded_ = false;
    std::mt19937_64 rng(std::random_device{}());
    auto backoff = std::chrono::milliseconds(100);
    auto failing_since = std::chrono::steady_clock::time_point{};
    for (;;) {
      Status st;
      if (applier_ && source_) {
        st = pending_.isOk() ? session() : pending_;  // resuming after a yield
        pending_ = Status::ok();
      } else {
        closeLive();
        st = connectOnce();
      }
      if (st.isOk() && yielded_) return st;
      closeLive();
      if (st.isOk() || st.errorClass() != common::ErrorClass::kRetryable) return st;
      const auto now = std::chrono::steady_clock::now();
      if (failing_since == std::chrono::steady_clock::time_point{}) failing_since = now;
      if (o_.migrate.give_up_after.count() > 0 && now - failing_since > o_.migrate.give_up_after) {
        return st.withContext("giving up after " +
                              std::to_string(o_.migrate.give_up_after.count() / 1000) +
                              " s of retries");
      }
      report_.reconnects++;
      last_kafka_error_ = st.message();
      sink_.update([&](MigrateProgress& p) { p.last_error = st.message(); });
      auto wait = (backoff + std::chrono::milliseconds(rng() % (static_cast<uint64_t>(backoff.count()) + 1))) / 2;
      spdlog::warn("kafka stream: {}; reconnecting in {} ms", st.message(), wait.count());
      sleepFor(wait, cancel_);
      backoff = std::min(backoff * 2, o_.migrate.max_backoff);
      if (cancelled(cancel_)) return Status::cancelled("stopped while reconnecting; rerun to resume");
      if (connected_once_) {
        // The session that just failed had connected: a new run of failures starts here (an
        // outage hours after the last one must not count toward --give-up-after).
        failing_since = {};
        backoff = std::chrono::milliseconds(100);
        connected_once_ = false;
      }
    }
  }

  bool yielded() const override { return yielded_; }
  mover::PgApplier& liveApplier() override { return *applier_; }

  // Inside the window the source is fenced: the position read now is past every transaction
  // that committed before the fence; the connector's committed position at or past it, then
  // every partition's end, bound all their records (cdc/connect_offsets.h says why exactly).
  Result<std::chrono::microseconds> drain(std::chrono::steady_clock::time_point deadline) override {
    const auto t0 = std::chrono::steady_clock::now();
    SM_ASSIGN_OR_RETURN(Lsn w, markSource());
    SM_RETURN_IF_ERROR(ensureWatch());
    auto us = [&] {
      return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
    };
    SM_ASSIGN_OR_RETURN(auto ends, watch_->drainTarget(plan_.partitions, w, deadline));
    const auto connector_us = us();
    while (!source_->reached(ends)) {
      if (std::chrono::steady_clock::now() >= deadline) {
        return Status::retryable("drain: the kafka stream did not reach the partitions' ends in time");
      }
      SM_ASSIGN_OR_RETURN(auto ev, source_->next(std::chrono::milliseconds(5)));
      if (ev) {
        SM_RETURN_IF_ERROR(applier_->apply(std::move(*ev)));
      } else {
        SM_RETURN_IF_ERROR(applier_->commitPending());
      }
    }
    SM_RETURN_IF_ERROR(applier_->commitPending());
    SM_RETURN_IF_ERROR(applier_->forceFlush());
    for (;;) {
      SM_ASSIGN_OR_RETURN(Lsn durable, applier_->durableLsn());
      if (durable >= applier_->committedLsn()) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        return Status::retryable("destination flush did not reach the drained position in time");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    SM_RETURN_IF_ERROR(checkpoint());
    drained_through_ = w;  // recorded as the watermark outside the window (next session step)
    spdlog::info("kafka drain to source position {}: connector {} committed past it and the "
                 "partition ends were read after {:.1f} ms; applied and flushed {:.1f} ms later",
                 w.toString(), plan_.connector_name, static_cast<double>(connector_us) / 1e3,
                 static_cast<double>(us() - connector_us) / 1e3);
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  }

  Status finishLive() override {
    Status st = applier_ && source_ ? finish() : Status::ok();
    closeLive();
    return st;
  }
  void closeLive() override {
    if (source_) {
      const auto& s = source_->stats();
      source_totals_.messages += s.messages;
      source_totals_.changes += s.changes;
      source_totals_.skipped += s.skipped;
      source_totals_.tombstones += s.tombstones;
      source_totals_.bad_events += s.bad_events;
      kafka_errors_ += source_->health().errors;
      if (!source_->health().last_error.empty()) last_kafka_error_ = source_->health().last_error;
    }
    *source_slot_ = nullptr;  // the applier's commit callback must not read a closed source
    source_.reset();
    if (applier_) {
      carried_touched_ = applier_->takeTouched();
      const auto& s = applier_->stats();
      totals_.changes += s.changes;
      totals_.transactions += s.transactions;
      totals_.toast_repairs += s.toast_repairs;
      applier_.reset();
    }
    mark_ = {};
  }
  void failLive(Status st) override { pending_ = std::move(st); }
  mover::ApplierStats totals() const override { return totals_; }
  Lsn acked() const override { return acked_; }

 private:
  // Reads the source's WAL insert position and writes a marker past it. Returns the position.
  Result<Lsn> markSource() {
    if (!src_conn_.valid()) {
      SM_ASSIGN_OR_RETURN(src_conn_, PgConnection::connect(o_.migrate.copy.source.dsn,
                                                           o_.migrate.copy.source.label + " (marker)"));
    }
    auto w = src_conn_.queryValue("SELECT pg_current_wal_insert_lsn()::text");
    if (!w) {
      src_conn_ = PgConnection();
      return w.status();
    }
    auto lsn = Lsn::parse(w->value_or(""));
    if (!lsn) return Status::internal("unparseable pg_current_wal_insert_lsn() '" + w->value_or("") + "'");
    auto m = src_conn_.query("SELECT pg_logical_emit_message(true, $1, $2)",
                             {std::string(kMarkerPrefix), rec_.id});
    if (!m) {
      src_conn_ = PgConnection();
      return m.status();
    }
    return *lsn;
  }

  // The watermark's steps, one at a time and never blocking the apply for long (see the class
  // comment). Failures are logged: the watermark only serves live verify, and lags meanwhile.
  Status watermarkStep(std::chrono::steady_clock::time_point now) {
    if (!drained_through_.isZero() && !applier_->inTransaction()) {
      // The cutover's drain proved it; the window is over by now.
      SM_RETURN_IF_ERROR(applier_->commitPending());
      SM_RETURN_IF_ERROR(storeWatermark(drained_through_));
      drained_through_ = Lsn();
    }
    if (mark_.ends) {
      if (!source_->reached(*mark_.ends) || applier_->inTransaction()) return Status::ok();
      SM_RETURN_IF_ERROR(applier_->commitPending());
      SM_RETURN_IF_ERROR(storeWatermark(mark_.w));
      // The round trip source -> connector -> Kafka -> destination: the pgoutput heartbeat's
      // counterpart, and what "caught up" means for this source.
      const auto rtt = now - mark_.marked_at;
      report_.last_lag_seconds = std::chrono::duration<double>(rtt).count();
      if (rtt < o_.migrate.caught_up_lag) fresh_ = true;
      mark_ = {};
      return Status::ok();
    }
    if (mark_.w.isZero()) {
      if (now - last_mark_at_ < o_.migrate.heartbeat_interval) return Status::ok();
      last_mark_at_ = now;
      auto w = markSource();
      if (!w) {
        spdlog::warn("kafka watermark: marking the source: {}", w.status().message());
        return Status::ok();
      }
      mark_.w = *w;
      mark_.marked_at = now;
      return Status::ok();
    }
    // Waiting for the connector: reading what the offsets topic's consumer already fetched
    // costs no request, so it is looked at often.
    if (now - last_poll_ < std::chrono::milliseconds(20)) return Status::ok();
    last_poll_ = now;
    if (Status opened = ensureWatch(); !opened.isOk()) {
      spdlog::warn("kafka watermark: {}", opened.message());
      mark_ = {};
      return Status::ok();
    }
    auto pos = watch_->position(std::chrono::milliseconds(0));
    if (!pos) {
      spdlog::warn("kafka watermark: {}", pos.status().message());
      return Status::ok();
    }
    if (!*pos || (*pos)->processed < mark_.w) {
      if (now - mark_.marked_at > std::chrono::seconds(60)) {
        spdlog::warn("kafka watermark: connector {} has not committed a source position past {} "
                     "in 60 s (last: {}); is it running, and does its Connect worker commit "
                     "offsets (offset.flush.interval.ms)? Live verify and the cutover wait for it",
                     plan_.connector_name, mark_.w.toString(),
                     *pos ? (*pos)->processed.toString() : std::string("none"));
        mark_ = {};  // marked again at the next interval
      }
      return Status::ok();
    }
    auto ends = watch_->ends(plan_.partitions, o_.kafka_timeout);
    if (!ends) {
      spdlog::warn("kafka watermark: {}", ends.status().message());
      return Status::ok();
    }
    mark_.ends = std::move(*ends);
    return Status::ok();
  }

  // The connection to Kafka Connect's offsets topic, opened once and kept across sessions.
  Status ensureWatch() {
    if (watch_) return Status::ok();
    SM_ASSIGN_OR_RETURN(watch_, cdc::ConnectorWatch::open(o_.kafka, o_.offsets_topic,
                                                          plan_.connector_name, plan_.server,
                                                          o_.kafka_timeout));
    return Status::ok();
  }

  Status storeWatermark(Lsn w) {
    SM_RETURN_IF_ERROR(dst_conn_.valid() ? Status::ok() : connectDestination());
    Status st = mover::storeKafkaWatermark(dst_conn_, rec_.slot_name, w);
    if (!st.isOk()) dst_conn_ = PgConnection();
    return st;
  }

  Status connectDestination() {
    SM_ASSIGN_OR_RETURN(dst_conn_, PgConnection::connect(o_.migrate.copy.destination.dsn,
                                                         o_.migrate.copy.destination.label));
    return Status::ok();
  }

  void status(std::chrono::steady_clock::time_point now) {
    const double dt = std::chrono::duration<double>(now - rate_t0_).count();
    const uint64_t changes = applier_->stats().changes;
    const double rate = dt > 0 ? static_cast<double>(changes - last_changes_) / dt : 0;
    rate_t0_ = now;
    last_changes_ = changes;
    const auto& h = source_->health();
    const uint64_t lag = source_->lagRecords();
    spdlog::info("catch-up (kafka): {} records behind, {:.0f} changes/s, {} changes applied, "
                 "{} records skipped (other tenants), {} bad event(s) dead-lettered{}",
                 mover::withCommas(lag), rate, mover::withCommas(totals_.changes + changes),
                 mover::withCommas(source_totals_.skipped + source_->stats().skipped),
                 source_totals_.bad_events + source_->stats().bad_events,
                 h.failing ? "; BROKERS FAILING: " + h.last_error : std::string());
    nlohmann::json j = {{"phase", "catching_up"},
                        {"stream", "kafka"},
                        {"tenant", rec_.tenant},
                        {"migration", rec_.id},
                        {"applied_lsn", applier_->committedLsn().toString()},
                        {"acked_lsn", acked_.toString()},
                        {"lag_bytes", 0},
                        {"lag_seconds", -1},
                        {"apply_rate", rate},
                        {"changes", changes},
                        {"slot_retained_bytes", 0},
                        {"retention_warning", false},
                        {"kafka_lag_records", lag},
                        {"kafka_errors", kafka_errors_ + h.errors},
                        {"kafka_failing", h.failing},
                        {"kafka_last_error", h.last_error.empty() ? last_kafka_error_ : h.last_error},
                        {"kafka_offsets", nlohmann::json::parse(offsetsJson(source_->durableOffsets()))},
                        {"updated_unix_ms", common::nowUnixMs()}};
    mover::CheckpointBatch b;
    b.putNote(rec_.id, "status", j.dump());
    store_.write(b).ignore();  // status is informational; the next tick writes it again
    const uint64_t applied = totals_.changes + changes;
    sink_.update([&](MigrateProgress& p) {
      p.changes_applied = applied;
      p.eta_seconds = lag == 0 ? 0 : -1;
    });
  }

  // Durable position -> RocksDB (with the offsets as of it). Kafka is told nothing.
  Status checkpoint() {
    SM_ASSIGN_OR_RETURN(Lsn durable, applier_->durableLsn());
    if (durable <= acked_) return Status::ok();
    SM_RETURN_IF_ERROR(source_->acknowledge(durable));
    mover::CheckpointBatch b;
    b.putStreamPosition(rec_.id, {"forward", durable, 0, rec_.slot_name});
    b.putNote(rec_.id, "kafka_offsets", offsetsJson(source_->durableOffsets()));
    SM_RETURN_IF_ERROR(store_.write(b));
    acked_ = durable;
    return Status::ok();
  }

  // The end of the stream: everything applied committed and flushed, then checkpointed.
  Status finish() {
    SM_RETURN_IF_ERROR(applier_->commitPending());
    SM_RETURN_IF_ERROR(applier_->forceFlush());
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      SM_ASSIGN_OR_RETURN(Lsn durable, applier_->durableLsn());
      if (durable >= applier_->committedLsn()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return checkpoint();
  }

  // Opens the applier and the source at the offsets stored at the destination, then runs.
  Status connectOnce() {
    mover::ApplierOptions ao;
    ao.dest_dsn = o_.migrate.copy.destination.dsn;
    ao.dest_label = o_.migrate.copy.destination.label;
    ao.source_dsn = o_.migrate.copy.source.dsn;
    ao.source_label = o_.migrate.copy.source.label;
    ao.origin_name = rec_.slot_name;
    ao.tenant = rec_.tenant;
    ao.tenant_columns = o_.migrate.copy.tenant_columns;
    ao.max_batch_changes = o_.migrate.max_batch_changes;
    ao.max_batch_age = o_.migrate.max_batch_age;
    ao.track_touched = cutover_;
    // Delivery is at least once and the stream starts before the snapshot: every insert may
    // meet its row already there, so every insert is an upsert.
    ao.plain_inserts = false;
    // The statements reach the source through source_slot_ (the applier copies its options).
    const mover::TxnStatementsFn extra = o_.migrate.commit_statements;
    ao.commit_statements = [slot = source_slot_, extra, id = rec_.id]() {
      std::vector<mover::TxnStatement> out;
      if (*slot != nullptr) {
        std::vector<mover::KafkaOffset> offs;
        for (const auto& p : (*slot)->committedOffsets()) {
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
    SM_ASSIGN_OR_RETURN(applier_, mover::PgApplier::open(ao));
    applier_->restoreTouched(std::move(carried_touched_));
    carried_touched_ = mover::TouchedKeys();
    SM_ASSIGN_OR_RETURN(Lsn origin, applier_->originProgress());
    // Start offsets: the destination's, committed with the rows (the truth on restart).
    SM_RETURN_IF_ERROR(dst_conn_.valid() ? Status::ok() : connectDestination());
    SM_ASSIGN_OR_RETURN(auto stored, mover::loadKafkaOffsets(dst_conn_, rec_.id));
    SM_RETURN_IF_ERROR(mover::ensureKafkaWatermark(dst_conn_, rec_.id, rec_.slot_name));
    std::map<std::pair<std::string, int32_t>, int64_t> by_part;
    for (const auto& s : stored) by_part[{s.topic, s.partition}] = s.next_offset;
    cdc::KafkaSourceOptions so;
    so.kafka = o_.kafka;
    so.max_buffered_bytes = o_.max_buffered_bytes;
    so.on_bad_event = o_.on_bad_event;
    so.dead_letter_path = o_.dead_letter_path;
    so.first_position = origin.value() + 1;
    so.give_up_after = std::chrono::milliseconds(60'000);
    for (const auto& p : plan_.partitions) {
      auto it = by_part.find({p.topic, p.partition});
      if (it == by_part.end()) {
        // Recorded at the handoff for every partition that existed then: a new one means the
        // topic was repartitioned, and a key's changes may now sit in two partitions.
        return Status::refused("kafka topic " + p.topic + " partition " + std::to_string(p.partition) +
                               " has no stored offset at the " + ao.dest_label +
                               " (stampmover.kafka_offsets, migration " + rec_.id +
                               "): the topic gained partitions since the migration began, so "
                               "per-key order no longer holds; start over (`stampmover cleanup "
                               "--tenant " + rec_.tenant + " --purge-destination`, then migrate)");
      }
      so.start.push_back({p.topic, p.partition, it->second});
    }
    cdc::DebeziumDecoder decoder(plan_.connector.modes, cdc::fixedRelations(plan_.relations),
                                 cdc::TenantFilter{rec_.tenant, o_.migrate.copy.tenant_columns.default_column,
                                                   o_.migrate.copy.tenant_columns.per_table});
    SM_ASSIGN_OR_RETURN(source_, cdc::KafkaDebeziumSource::open(so, std::move(decoder)));
    *source_slot_ = source_.get();
    connected_once_ = true;
    acked_ = std::max(acked_, origin);
    spdlog::info("kafka stream: {} partitions of {} topics from the offsets stored at the {}",
                 so.start.size(), plan_.topics.size(), ao.dest_label);
    last_ckpt_ = std::chrono::steady_clock::now();
    rate_t0_ = last_ckpt_;
    last_changes_ = 0;
    return session();
  }

  // One connected session: returns when cancelled, when the hook stops or yields, or on error.
  Status session() {
    for (;;) {
      if (cancelled(cancel_)) {
        if (!applier_->inTransaction()) SM_RETURN_IF_ERROR(applier_->commitPending());
        SM_RETURN_IF_ERROR(checkpoint());
        return Status::cancelled("stopped at " + acked_.toString() + "; rerun to resume");
      }
      SM_ASSIGN_OR_RETURN(auto ev, source_->next(std::chrono::milliseconds(50)));
      const bool got = ev.has_value();
      if (got) {
        SM_RETURN_IF_ERROR(applier_->apply(std::move(*ev)));
      } else {
        SM_RETURN_IF_ERROR(applier_->commitPending());
      }
      const auto now = std::chrono::steady_clock::now();
      if (now - last_ckpt_ >= o_.migrate.checkpoint_interval) {
        SM_RETURN_IF_ERROR(checkpoint());
        last_ckpt_ = now;
      }
      if (now - last_status_ >= o_.migrate.status_interval) {
        status(now);
        last_status_ = now;
      }
      if (Status w = watermarkStep(now); !w.isOk()) {
        if (w.errorClass() != common::ErrorClass::kRetryable) return w;
        spdlog::warn("kafka watermark: {}", w.message());
      }
      if (prune_touched && !applier_->inTransaction() && !applier_->touched().overflowed &&
          applier_->touched().count >= o_.migrate.touched_prune_keys + prune_floor_) {
        SM_RETURN_IF_ERROR(applier_->commitPending());
        Status pruned = prune_touched(*applier_);
        if (!pruned.isOk()) spdlog::warn("re-check of changed rows: {}", pruned.message());
        prune_floor_ = applier_->touched().count;
      }
      // Caught up: a watermark made the round trip source -> connector -> Kafka -> destination
      // within caught_up_lag, or every partition is read to its end; everything handed out is
      // committed. The hook is asked at most once per heartbeat interval (it may query the
      // control plane).
      if (on_caught_up && (fresh_ || (!got && source_->caughtUp())) &&
          !applier_->inTransaction() && now - last_hook_ >= o_.migrate.heartbeat_interval) {
        last_hook_ = now;
        fresh_ = false;
        report_.caught_up = true;
        SM_ASSIGN_OR_RETURN(CaughtUp next, on_caught_up(*applier_));
        if (next == CaughtUp::kYield) {
          yielded_ = true;
          return Status::ok();
        }
        if (next == CaughtUp::kStop) {
          SM_RETURN_IF_ERROR(finish());
          status(now);
          return Status::ok();
        }
      }
    }
  }

  const KafkaMigrateOptions& o_;
  const KafkaPlan& plan_;
  const mover::MigrationRecord& rec_;
  mover::CheckpointStore& store_;
  MigrateReport& report_;
  ProgressSink& sink_;
  const bool cutover_;
  const std::atomic<bool>* cancel_;
  std::unique_ptr<mover::PgApplier> applier_;
  std::unique_ptr<cdc::KafkaDebeziumSource> source_;
  // The applier's commit callback reads the live source's offsets through this.
  std::shared_ptr<cdc::KafkaDebeziumSource*> source_slot_ =
      std::make_shared<cdc::KafkaDebeziumSource*>(nullptr);
  std::unique_ptr<cdc::ConnectorWatch> watch_;
  PgConnection src_conn_;  // markers
  PgConnection dst_conn_;  // stored offsets, watermark
  struct Mark {
    std::chrono::steady_clock::time_point marked_at{};
    Lsn w;                                                  // 0: none written yet
    std::optional<std::vector<cdc::PartitionOffset>> ends;  // once the connector passed w
  } mark_;
  std::chrono::steady_clock::time_point last_mark_at_{}, last_poll_{};
  bool fresh_ = false;  // a watermark's round trip was under caught_up_lag (the hook consumes it)
  Lsn drained_through_;  // a cutover drain's position, recorded after the window
  bool yielded_ = false;
  bool connected_once_ = false;  // a session connected since the last backoff (run())
  Status pending_ = Status::ok();
  Lsn acked_{};
  mover::ApplierStats totals_{};
  cdc::KafkaSourceStats source_totals_{};
  std::string last_kafka_error_;
  uint64_t kafka_errors_ = 0;
  mover::TouchedKeys carried_touched_{};
  size_t prune_floor_ = 0;
  std::chrono::steady_clock::time_point last_ckpt_{}, last_status_{}, last_hook_{}, rate_t0_{};
  uint64_t last_changes_ = 0;
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
  MigrateReport report;
  ProgressSink sink(mo.on_progress);
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
  // Past the flip the topics are not read again (the forward stream is over): a finalize or
  // rollback must not wait for brokers.
  const auto existing_phase = existing ? parsePhase(existing->phase) : std::optional<Phase>();
  const bool past_flip = existing_phase && (isPastFlip(*existing_phase) || isTerminal(*existing_phase) ||
                                            *existing_phase == Phase::kAborting);
  KafkaPlan plan;
  if (!past_flip) {
    SM_ASSIGN_OR_RETURN(plan, planKafka(o, src, tables, tenant.text()));
    spdlog::info("preflight passed: {} tenant tables, ~{} rows; connector configuration accepted; "
                 "{} partitions in {} topics",
                 tables.size(), mover::withCommas(report.copy.preflight.est_rows),
                 plan.partitions.size(), plan.topics.size());
  }
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
      {
        // Recorded before they are created: every teardown (finalize, rollback, abort, cleanup)
        // removes the origin and the offsets/watermark rows.
        SM_ASSIGN_OR_RETURN(auto ledger, Ledger::open(*store, id));
        SM_RETURN_IF_ERROR(ledger->intend(kafkaForwardLedgerEntries(rec.slot_name, id)));
      }
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
      SM_RETURN_IF_ERROR(mover::resetKafkaWatermark(dst, id, rec.slot_name));
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
  if (o.on_bad_event == cdc::BadEventPolicy::kDeadLetter) {
    // Recorded so that `stampmover verify` lists the rows of dead-lettered events by itself.
    SM_ASSIGN_OR_RETURN(auto note, store->loadNote(rec.id, kDeadLetterFilesNote));
    auto files = note ? nlohmann::json::parse(*note, nullptr, false) : nlohmann::json::array();
    if (!files.is_array()) files = nlohmann::json::array();
    const std::string path = std::filesystem::absolute(o.dead_letter_path).string();
    if (std::find(files.begin(), files.end(), path) == files.end()) {
      files.push_back(path);
      mover::CheckpointBatch b;
      b.putNote(rec.id, kDeadLetterFilesNote, files.dump());
      SM_RETURN_IF_ERROR(store->write(b));
    }
  }
  auto make_forward = [&o, &plan, cancel](const ForwardContext& fc) -> std::unique_ptr<ForwardStream> {
    return std::make_unique<KafkaForward>(o, plan, fc, cancel);
  };
  return runMigrationPhases(mo, std::move(report), *store, sink,
                            kafkaForwardLedgerEntries(rec.slot_name, rec.id), make_forward, cancel);
}

}  // namespace stampmover::orch
