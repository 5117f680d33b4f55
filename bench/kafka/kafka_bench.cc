// Kafka source benchmark (issue 14 target: >= 0.8x of the pgoutput path, peak RSS <= 256 MiB):
// the same changes of one tenant applied to the destination (a) from a row-filtered pgoutput slot
// (the path `migrate --cdc pgoutput` follows: PgoutputSource -> PgApplier), and (b) from
// Debezium-shaped records in librdkafka's mock cluster (KafkaDebeziumSource -> PgApplier with the
// offsets in every apply transaction), in one run on the same two throwaway clusters. The
// records are produced beforehand from a second slot on the same changes (every tenant's, as a
// connector publishes them) by the test encoder, untimed. Both destinations are checked against
// the source (an md5 over the tenant's rows of every table, in primary-key order).
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "cdc/kafka_relations.h"
#include "cdc/kafka_source.h"
#include "cdc/pgoutput_source.h"
#include "common/pg.h"
#include "harness/load_writer.h"
#include "harness/local_cluster.h"
#include "harness/seed.h"
#include "mover/catalog.h"
#include "mover/kafka_offsets.h"
#include "mover/pg_applier.h"
#include "mover/source_setup.h"
#include "tests/kafka/debezium_encoder.h"
#include "tests/kafka/mock_kafka.h"

namespace {

using namespace stampmover::bench;  // NOLINT: shared benchmark helpers
using stampmover::common::PgConnection;
using stampmover::common::Result;
using stampmover::common::Status;
namespace cdc = stampmover::cdc;
namespace common = stampmover::common;
namespace harness = stampmover::harness;
namespace mover = stampmover::mover;
namespace testing = stampmover::testing;

constexpr const char* kPrefix = "bench";
constexpr int32_t kPartitions = 3;
const char* kTables[] = {"accounts", "orders", "order_items", "documents", "events"};
const char* kKeys[] = {"account_id", "order_id", "order_id, line", "doc_key", "event_id"};

// md5 over the tenant's rows of every table, in key order: equal on both sides or not.
Result<std::string> tenantDigest(PgConnection& c) {
  std::string out;
  for (size_t i = 0; i < std::size(kTables); ++i) {
    SM_ASSIGN_OR_RETURN(auto v, c.queryValue(std::string("SELECT md5(coalesce(string_agg(t::text, '|' "
                                                         "ORDER BY ") + kKeys[i] + "), '')) FROM " +
                                             kTables[i] + " t WHERE tenant_id = 42"));
    out += v.value_or("") + " ";
  }
  return out;
}

// The ceiling the mock cluster allows: a bare consumer (same assignment from the beginning, same
// fetch settings as the source, no decode, no apply) reading every record of the same topics
// until every partition reports its end.
// Returns the seconds from the consumer's creation to its last record.
Result<double> bareConsumer(const std::map<std::string, std::string>& kconf,
                            const std::vector<cdc::PartitionOffset>& parts) {
  common::KafkaConf conf(rd_kafka_conf_new());
  char err[512];
  std::map<std::string, std::string> all = {{"group.id", "bench_bare"},
                                            {"enable.auto.commit", "false"},
                                            {"enable.partition.eof", "true"}};
  for (const auto& [k, v] : cdc::KafkaDebeziumSource::fetchSettings()) all[k] = v;
  for (const auto& [k, v] : kconf) all[k] = v;
  for (const auto& [k, v] : all)
    if (rd_kafka_conf_set(conf.get(), k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
      return Status::internal("bare consumer: " + k + ": " + err);
  const auto t0 = Clock::now();
  common::KafkaHandle rk(rd_kafka_new(RD_KAFKA_CONSUMER, conf.release(), err, sizeof err));
  if (!rk) return Status::internal(std::string("bare consumer: ") + err);
  rd_kafka_poll_set_consumer(rk.get());
  {
    // Leaders known before assign(), as the source does (else a 500 ms offset-query retry).
    std::set<std::string> names;
    for (const auto& p : parts) names.insert(p.topic);
    std::vector<std::unique_ptr<rd_kafka_topic_t, decltype(&rd_kafka_topic_destroy)>> handles;
    for (const auto& t : names) handles.emplace_back(rd_kafka_topic_new(rk.get(), t.c_str(), nullptr), rd_kafka_topic_destroy);
    const rd_kafka_metadata_t* md = nullptr;
    if (rd_kafka_metadata(rk.get(), 0, nullptr, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR)
      rd_kafka_metadata_destroy(md);
  }
  common::KafkaTopicPartitionList list(rd_kafka_topic_partition_list_new(static_cast<int>(parts.size())));
  for (const auto& p : parts)
    rd_kafka_topic_partition_list_add(list.get(), p.topic.c_str(), p.partition)->offset = p.offset;
  if (rd_kafka_assign(rk.get(), list.get()) != RD_KAFKA_RESP_ERR_NO_ERROR)
    return Status::internal("bare consumer: assign failed");
  common::KafkaQueue q(rd_kafka_queue_get_consumer(rk.get()));
  std::vector<rd_kafka_message_t*> msgs(1024);
  std::set<std::pair<std::string, int32_t>> eof;
  uint64_t records = 0;
  double first = -1, last = 0;
  while (eof.size() < parts.size() && secondsSince(t0) < 60) {
    const ssize_t n = rd_kafka_consume_batch_queue(q.get(), 100, msgs.data(), msgs.size());
    for (ssize_t i = 0; i < n; ++i) {
      rd_kafka_message_t* m = msgs[i];
      if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        eof.insert({rd_kafka_topic_name(m->rkt), m->partition});
      } else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (records++ == 0) first = secondsSince(t0);
        last = secondsSince(t0);
        eof.erase({rd_kafka_topic_name(m->rkt), m->partition});
      }
      rd_kafka_message_destroy(m);
    }
  }
  const double secs = secondsSince(t0);
  say("bare consumer (mock cluster ceiling, no decode, no apply): %llu records in %.2f s: first "
      "after %.2f s, last at %.2f s, end seen at %.2f s (%.0f records/s first to last)\n",
      static_cast<unsigned long long>(records), secs, first, last, secs,
      last > first ? static_cast<double>(records) / (last - first) : 0.0);
  q.reset();
  rd_kafka_consumer_close(rk.get());
  if (records == 0) return Status::internal("bare consumer read no record");
  return last;
}

mover::ApplierOptions applierOptions(const harness::LocalCluster& src, const harness::LocalCluster& dst,
                                     const std::string& db) {
  mover::ApplierOptions ao;
  ao.dest_dsn = dst.dsn(db);
  ao.source_dsn = src.dsn("app");
  ao.origin_name = "bench_" + db;
  ao.tenant = "42";
  return ao;
}

Status run(uint64_t items, uint64_t txns) {
  std::unique_ptr<harness::LocalCluster> src, dst;
  SM_RETURN_IF_ERROR(startCluster("kbsrc", src));
  SM_RETURN_IF_ERROR(startCluster("kbdst", dst));
  SM_RETURN_IF_ERROR(src->createDatabase("app"));
  for (const char* db : {"pg_path", "kafka_path"}) SM_RETURN_IF_ERROR(dst->createDatabase(db));
  SM_ASSIGN_OR_RETURN(PgConnection s, PgConnection::connect(src->dsn("app"), "source"));
  SM_RETURN_IF_ERROR(harness::createDemoSchema(s));
  for (const char* db : {"pg_path", "kafka_path"}) {
    SM_ASSIGN_OR_RETURN(PgConnection d, PgConnection::connect(dst->dsn(db), db));
    SM_RETURN_IF_ERROR(harness::createDemoSchema(d));
  }
  SM_ASSIGN_OR_RETURN(auto tables, mover::discoverTenantTables(s, {}));
  // Both slots before any row: both paths see exactly the same changes.
  SM_RETURN_IF_ERROR(mover::createTenantPublication(s, "t42", tables, "42"));
  SM_RETURN_IF_ERROR(s.exec("CREATE PUBLICATION everything FOR ALL TABLES"));
  SM_RETURN_IF_ERROR(s.query("SELECT pg_create_logical_replication_slot('pgpath', 'pgoutput')").status());
  SM_RETURN_IF_ERROR(s.query("SELECT pg_create_logical_replication_slot('dbz', 'pgoutput')").status());
  say("loading: seed (%llu items per tenant group) and %llu writer transactions\n",
      static_cast<unsigned long long>(items), static_cast<unsigned long long>(txns));
  harness::SeedOptions seed;
  seed.tenant_items = items;
  seed.other_items = items;
  SM_RETURN_IF_ERROR(harness::seedTenants(s, seed));
  {
    harness::WriterOptions wo;
    wo.dsn = src->dsn("app");
    wo.duration = std::chrono::milliseconds(60'000);
    wo.max_transactions = txns;
    wo.truncates = false;
    harness::Writer w(wo);
    while (w.transactions() + w.errors() < txns) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  SM_RETURN_IF_ERROR(s.query("SELECT pg_logical_emit_message(true, 'bench-end', 'x')").status());

  // The connector's records, produced into the mock cluster (untimed).
  testing::MockKafka kafka;
  for (const char* t : kTables) kafka.createTopic(std::string(kPrefix) + ".public." + t, kPartitions);
  kafka.createTopic(std::string(kPrefix) + ".public.currencies", kPartitions);
  uint64_t records = 0;
  {
    cdc::PgoutputSourceOptions so;
    so.dsn = src->dsn("app");
    so.slot = "dbz";
    so.publication = "everything";
    SM_ASSIGN_OR_RETURN(auto source, cdc::PgoutputSource::start(so));
    testing::DebeziumEncoder enc(kPrefix, kPartitions);
    std::vector<testing::KafkaRecord> batch;
    uint32_t xid = 0;
    for (;;) {
      SM_ASSIGN_OR_RETURN(auto ev, source->next(std::chrono::milliseconds(100)));
      if (!ev) continue;
      if (ev->kind == common::ChangeEvent::Kind::kBegin) xid = ev->txn.xid;
      if (ev->kind == common::ChangeEvent::Kind::kMessage && ev->message.prefix == "bench-end") break;
      if (ev->kind != common::ChangeEvent::Kind::kChange) continue;
      for (auto& r : enc.encode(ev->change, ev->wal_start.value(), xid)) batch.push_back(std::move(r));
      if (batch.size() >= 5000) {
        kafka.produce(batch);
        records += batch.size();
        batch.clear();
      }
    }
    kafka.produce(batch);
    records += batch.size();
  }
  say("produced %llu Debezium records (every tenant) into the mock cluster\n",
      static_cast<unsigned long long>(records));

  // (a) the pgoutput path.
  uint64_t pg_changes = 0;
  double pg_secs = 0;
  {
    SM_ASSIGN_OR_RETURN(auto applier, mover::PgApplier::open(applierOptions(*src, *dst, "pg_path")));
    cdc::PgoutputSourceOptions so;
    so.dsn = src->dsn("app");
    so.slot = "pgpath";
    so.publication = "t42";
    const auto t0 = Clock::now();
    SM_ASSIGN_OR_RETURN(auto source, cdc::PgoutputSource::start(so));
    bool end = false;
    for (;;) {
      SM_ASSIGN_OR_RETURN(auto ev, source->next(std::chrono::milliseconds(50)));
      if (!ev) {
        SM_RETURN_IF_ERROR(applier->commitPending());
        continue;
      }
      // Ends after the marker's transaction commits (a stop inside it would leave the batch open).
      if (ev->kind == common::ChangeEvent::Kind::kMessage && ev->message.prefix == "bench-end") end = true;
      const bool commit = ev->kind == common::ChangeEvent::Kind::kCommit;
      SM_RETURN_IF_ERROR(applier->apply(std::move(*ev)));
      if (end && commit) break;
    }
    SM_RETURN_IF_ERROR(applier->commitPending());
    pg_secs = secondsSince(t0);
    pg_changes = applier->stats().changes;
    const auto& st = applier->stats();
    say("pgoutput apply: %llu source transactions in %llu destination transactions, %llu statements\n",
        static_cast<unsigned long long>(st.transactions), static_cast<unsigned long long>(st.batches),
        static_cast<unsigned long long>(st.statements));
  }
  // (b) the Kafka path, offsets in every apply transaction as migrate --cdc kafka does.
  uint64_t kafka_changes = 0;
  double kafka_secs = 0;
  double bare_secs = 0;
  {
    SM_ASSIGN_OR_RETURN(PgConnection d, PgConnection::connect(dst->dsn("kafka_path"), "kafka_path"));
    SM_RETURN_IF_ERROR(mover::ensureKafkaOffsetsTable(d));
    std::vector<std::string> names, topics;
    for (const char* t : kTables) {
      names.push_back(std::string("public.") + t);
      topics.push_back(std::string(kPrefix) + ".public." + t);
    }
    SM_ASSIGN_OR_RETURN(auto rels, cdc::describeSourceTables(s, names));
    std::map<std::string, std::string> kconf = {{"bootstrap.servers", kafka.bootstraps()}};
    cdc::KafkaSourceOptions so;
    so.kafka = kconf;
    SM_ASSIGN_OR_RETURN(so.start, cdc::KafkaDebeziumSource::partitionsOf(kconf, topics, std::chrono::seconds(10)));
    SM_ASSIGN_OR_RETURN(bare_secs, bareConsumer(so.kafka, so.start));
    auto ao = applierOptions(*src, *dst, "kafka_path");
    ao.plain_inserts = false;
    cdc::KafkaDebeziumSource* raw = nullptr;
    ao.commit_statements = [&raw]() {
      std::vector<mover::KafkaOffset> offs;
      for (const auto& p : raw->committedOffsets())
        if (p.offset >= 0) offs.push_back({p.topic, p.partition, p.offset});
      return mover::kafkaOffsetStatements("bench", offs);
    };
    {
      // The source alone (decode, no apply): where the time goes.
      const auto r0 = Clock::now();
      SM_ASSIGN_OR_RETURN(auto only, cdc::KafkaDebeziumSource::open(
                                         so, cdc::DebeziumDecoder({}, cdc::fixedRelations(rels),
                                                                  cdc::TenantFilter{"42"})));
      uint64_t events = 0;
      double first = -1, last = 0;
      for (;;) {
        SM_ASSIGN_OR_RETURN(auto ev, only->next(std::chrono::milliseconds(50)));
        if (ev) {
          if (events++ == 0) first = secondsSince(r0);
          last = secondsSince(r0);
          continue;
        }
        if (only->caughtUp()) break;
      }
      say("source alone (decode, no apply): %llu events in %.2f s: first after %.2f s (connect, "
          "metadata, offsets), last at %.2f s, end seen at %.2f s\n",
          static_cast<unsigned long long>(events), secondsSince(r0), first, last, secondsSince(r0));
    }
    // Where the stream ends, asked before the clock starts (every record is already produced):
    // the run stops once every partition's offset is applied, as a drain to known end offsets
    // does, and as the pgoutput run stops at its end marker. Waiting for every partition's
    // end-of-partition event instead adds up to fetch.wait.max.ms (see "source alone" above).
    SM_ASSIGN_OR_RETURN(auto ends, cdc::KafkaDebeziumSource::endOffsets(kconf, so.start, std::chrono::seconds(10)));
    SM_ASSIGN_OR_RETURN(auto applier, mover::PgApplier::open(ao));
    const auto t0 = Clock::now();
    SM_ASSIGN_OR_RETURN(auto source, cdc::KafkaDebeziumSource::open(
                                         so, cdc::DebeziumDecoder({}, cdc::fixedRelations(rels),
                                                                  cdc::TenantFilter{"42"})));
    raw = source.get();
    for (;;) {
      SM_ASSIGN_OR_RETURN(auto ev, source->next(std::chrono::milliseconds(50)));
      if (ev) {
        SM_RETURN_IF_ERROR(applier->apply(std::move(*ev)));
        if (source->reached(ends)) break;
        continue;
      }
      SM_RETURN_IF_ERROR(applier->commitPending());
      if (source->reached(ends)) break;
    }
    SM_RETURN_IF_ERROR(applier->commitPending());
    kafka_secs = secondsSince(t0);
    kafka_changes = applier->stats().changes;
    const auto& st = applier->stats();
    say("kafka apply: %llu records as source transactions in %llu destination transactions, %llu "
        "statements\n", static_cast<unsigned long long>(st.transactions),
        static_cast<unsigned long long>(st.batches), static_cast<unsigned long long>(st.statements));
    raw = nullptr;
  }
  SM_ASSIGN_OR_RETURN(std::string want, tenantDigest(s));
  for (const char* db : {"pg_path", "kafka_path"}) {
    SM_ASSIGN_OR_RETURN(PgConnection d, PgConnection::connect(dst->dsn(db), db));
    SM_ASSIGN_OR_RETURN(std::string got, tenantDigest(d));
    if (got != want) {
      return Status::dataLoss(std::string("tenant 42 differs from the source in ") + db +
                              " (md5 per table: source " + want + ", " + db + " " + got + ")");
    }
  }
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  const double pg_rate = static_cast<double>(pg_changes) / pg_secs;
  const double kafka_rate = static_cast<double>(kafka_changes) / kafka_secs;
  say("both destinations equal the source for tenant 42 (md5 over every table)\n");
  std::printf("changes of tenant 42: pgoutput path %llu, kafka path %llu (records read: %llu, "
              "every tenant)\n",
              static_cast<unsigned long long>(pg_changes), static_cast<unsigned long long>(kafka_changes),
              static_cast<unsigned long long>(records));
  std::printf("theirs (pgoutput slot -> applier): %.1f s, %.0f changes/s\n", pg_secs, pg_rate);
  std::printf("ours   (kafka mock -> applier):    %.1f s, %.0f changes/s\n", kafka_secs, kafka_rate);
  std::printf("ratio ours/theirs: %.2fx (target >= 0.8x)\n", kafka_rate / pg_rate);
  // Every tenant's records must be read from a topic (no row filter as in the slot): the time
  // a bare consumer needs to read them bounds what any Kafka path can reach here.
  std::printf("ceiling (bare consumer reading every record, no decode, no apply): %.2f s, at most "
              "%.0f changes/s of tenant 42 (%.2fx of theirs)\n",
              bare_secs, static_cast<double>(kafka_changes) / bare_secs,
              static_cast<double>(kafka_changes) / bare_secs / pg_rate);
  std::printf("peak RSS of the whole bench process (mock cluster and encoded records included): "
              "%.0f MiB\n", static_cast<double>(ru.ru_maxrss) / 1024.0);
  return Status::ok();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Kafka (Debezium) source vs the pgoutput path on the same changes (issue 14)"};
  uint64_t items = 2000, txns = 3000;
  app.add_option("--items", items, "Seed size per tenant group (order_items rows)")->capture_default_str();
  app.add_option("--txns", txns, "Writer transactions after the seed")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return runReportingExceptions("bench_kafka", [&]() -> int {
    Status st = run(items, txns);
    if (!st.isOk()) return reportError("bench_kafka", st.message());
    return 0;
  });
}
