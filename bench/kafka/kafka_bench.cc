// Kafka source benchmark (issue 14 target: >= 0.8x of the pgoutput path, peak RSS <= 256 MiB):
// the same changes of one tenant applied to the destination (a) from a row-filtered pgoutput slot
// (the path `migrate --cdc pgoutput` follows: PgoutputSource -> PgApplier), and (b) from
// Debezium-shaped records in librdkafka's mock cluster (KafkaDebeziumSource -> PgApplier with the
// offsets in every apply transaction), in one run on the same two throwaway clusters. The
// records are produced beforehand from a second slot on the same changes (every tenant's, as a
// connector publishes them) by the test encoder, untimed. Both destinations are checked against
// the source (an md5 over the tenant's rows of every table, in primary-key order).
// The Kafka path runs in a child process (this binary with --apply-child), so its peak RSS is
// its own: the mock cluster holding the whole backlog stays in this process.
// Run as `bench_cdc --source kafka [options]` or as bench_kafka directly.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
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
constexpr auto kChildTimeout = std::chrono::minutes(10);
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

// Peak RSS of this process since its exec (VmHWM): what the Kafka path itself used. The
// ru_maxrss a parent gets from wait4() is not that: Linux carries the high-water mark across
// exec, so it includes the pages the child shared with the benchmark (the mock cluster holding
// the backlog) between fork and exec.
uint64_t peakRssKib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

struct ChildArgs {
  std::string bootstrap;
  std::string source_dsn;
  std::string dest_dsn;
  std::string origin;
};

// The Kafka path alone, in its own process (--apply-child): from the partitions' beginning up to
// their ends as asked before the clock starts, with the offsets in every apply transaction as
// `migrate --cdc kafka` does. Prints "kafka-path <changes> <seconds> <transactions> <batches>
// <statements>".
Status applyChild(const ChildArgs& a) {
  SM_ASSIGN_OR_RETURN(PgConnection s, PgConnection::connect(a.source_dsn, "source"));
  std::vector<std::string> names, topics;
  for (const char* t : kTables) {
    names.push_back(std::string("public.") + t);
    topics.push_back(std::string(kPrefix) + ".public." + t);
  }
  SM_ASSIGN_OR_RETURN(auto rels, cdc::describeSourceTables(s, names));
  std::map<std::string, std::string> kconf = {{"bootstrap.servers", a.bootstrap}};
  cdc::KafkaSourceOptions so;
  so.kafka = kconf;
  SM_ASSIGN_OR_RETURN(so.start, cdc::KafkaDebeziumSource::partitionsOf(kconf, topics, std::chrono::seconds(10)));
  // Where the stream ends, asked before the clock starts (every record is already produced):
  // the run stops once every partition's offset is applied, as a drain to known end offsets
  // does, and as the pgoutput run stops at its end marker.
  SM_ASSIGN_OR_RETURN(auto ends, cdc::KafkaDebeziumSource::endOffsets(kconf, so.start, std::chrono::seconds(10)));
  mover::ApplierOptions ao;
  ao.dest_dsn = a.dest_dsn;
  ao.source_dsn = a.source_dsn;
  ao.origin_name = a.origin;
  ao.tenant = "42";
  ao.plain_inserts = false;
  cdc::KafkaDebeziumSource* raw = nullptr;
  ao.commit_statements = [&raw]() {
    std::vector<mover::KafkaOffset> offs;
    for (const auto& p : raw->committedOffsets())
      if (p.offset >= 0) offs.push_back({p.topic, p.partition, p.offset});
    return mover::kafkaOffsetStatements("bench", offs);
  };
  SM_ASSIGN_OR_RETURN(auto applier, mover::PgApplier::open(ao));
  const auto t0 = Clock::now();
  SM_ASSIGN_OR_RETURN(auto source, cdc::KafkaDebeziumSource::open(
                                       so, cdc::DebeziumDecoder({}, cdc::fixedRelations(rels),
                                                                cdc::TenantFilter{"42"})));
  raw = source.get();
  double waiting = 0;  // in next(): the source (consume + decode) behind the applier
  uint64_t events = 0;
  common::Lsn acked;
  // As migrate does on its checkpoint tick: the durable position acknowledged to the source
  // (which then forgets the offsets before it).
  auto acknowledge = [&]() -> Status {
    SM_ASSIGN_OR_RETURN(common::Lsn durable, applier->durableLsn());
    if (durable <= acked) return Status::ok();
    acked = durable;
    return source->acknowledge(durable);
  };
  // The loop migrate runs (an idle source for 50 ms commits the batch), except that the end is
  // looked for every 5 ms of idleness and after each record's Commit (reached() compares every
  // partition: once per record, not per event), so the run stops within 5 ms of the last record
  // even when that record was skipped (another tenant's) inside a next() that then waited.
  auto idle = std::chrono::milliseconds(0);
  for (;;) {
    const auto w0 = Clock::now();
    SM_ASSIGN_OR_RETURN(auto ev, source->next(std::chrono::milliseconds(5)));
    waiting += secondsSince(w0);
    if (ev) {
      idle = std::chrono::milliseconds(0);
      const bool commit = ev->kind == common::ChangeEvent::Kind::kCommit;
      SM_RETURN_IF_ERROR(applier->apply(std::move(*ev)));
      if (commit && source->reached(ends)) break;
      if (++events % 30'000 == 0) SM_RETURN_IF_ERROR(acknowledge());
      continue;
    }
    if (source->reached(ends)) break;
    idle += std::chrono::milliseconds(5);
    if (idle >= std::chrono::milliseconds(50)) {
      SM_RETURN_IF_ERROR(applier->commitPending());
      SM_RETURN_IF_ERROR(acknowledge());
      idle = std::chrono::milliseconds(0);
    }
  }
  SM_RETURN_IF_ERROR(applier->commitPending());
  const double secs = secondsSince(t0);
  const mover::ApplierStats st = applier->stats();  // a copy: the applier is closed below
  raw = nullptr;
  source.reset();  // its thread and librdkafka's buffers count in the peak too
  applier.reset();
  std::printf("kafka-path %llu %.6f %llu %llu %llu %.6f %llu\n",
              static_cast<unsigned long long>(st.changes), secs,
              static_cast<unsigned long long>(st.transactions),
              static_cast<unsigned long long>(st.batches),
              static_cast<unsigned long long>(st.statements), waiting,
              static_cast<unsigned long long>(peakRssKib()));
  std::fflush(stdout);
  return Status::ok();
}

// Fails when the mock cluster no longer holds a partition from offset 0: librdkafka 2.0.2's mock
// keeps a bounded log per partition and drops the oldest records past it, which would make the
// two paths apply different changes.
Status checkNothingDropped(const std::string& bootstrap, const std::vector<cdc::PartitionOffset>& parts,
                           uint64_t& records) {
  common::KafkaConf conf(rd_kafka_conf_new());
  char err[512];
  rd_kafka_conf_set(conf.get(), "bootstrap.servers", bootstrap.c_str(), err, sizeof err);
  common::KafkaHandle rk(rd_kafka_new(RD_KAFKA_CONSUMER, conf.release(), err, sizeof err));
  if (!rk) return Status::internal(std::string("watermarks: ") + err);
  records = 0;
  for (const auto& p : parts) {
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk.get(), p.topic.c_str(), p.partition,
                                                             &low, &high, 10'000);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
      return Status::internal("watermarks of " + p.topic + ": " + rd_kafka_err2str(e));
    if (low != 0) {
      return Status::refused("the mock cluster dropped the oldest " + std::to_string(low) +
                             " records of " + p.topic + " partition " + std::to_string(p.partition) +
                             " (it keeps a bounded log per partition): raise --partitions");
    }
    records += static_cast<uint64_t>(high);
  }
  return Status::ok();
}

// One timed path: changes applied, seconds, and for the Kafka child its peak RSS, the time its
// applier waited for the source and its CPU.
struct PathRun {
  uint64_t changes = 0;
  double secs = 0;
  long rss_kib = 0;
  double waiting = 0;
  double cpu = 0;
  double rate() const { return secs > 0 ? static_cast<double>(changes) / secs : 0; }
};

// (a) the pgoutput path: a row-filtered slot into PgApplier, up to the end marker's commit.
Result<PathRun> pgoutputPath(const harness::LocalCluster& src, const harness::LocalCluster& dst,
                             const std::string& slot, const std::string& db) {
  SM_ASSIGN_OR_RETURN(auto applier, mover::PgApplier::open(applierOptions(src, dst, db)));
  cdc::PgoutputSourceOptions so;
  so.dsn = src.dsn("app");
  so.slot = slot;
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
  PathRun r;
  r.secs = secondsSince(t0);
  r.changes = applier->stats().changes;
  return r;
}

// (b) the Kafka path in its own process (applyChild), into database `db`.
Result<PathRun> kafkaPath(const harness::LocalCluster& src, const harness::LocalCluster& dst,
                          const std::string& bootstrap, const std::string& db) {
  SM_ASSIGN_OR_RETURN(std::string dir, makeTempDir("bench_kafka"));
  RemoveDir cleanup{dir};
  const std::string log = dir + "/apply_child.log";
  SM_ASSIGN_OR_RETURN(ChildResult cr,
                      runChild({"/proc/self/exe", "--apply-child", "--bootstrap", bootstrap,
                                "--source-dsn", src.dsn("app"), "--dest-dsn", dst.dsn(db),
                                "--origin", "bench_" + db},
                               log, std::chrono::duration_cast<std::chrono::seconds>(kChildTimeout),
                               /*follow_log=*/false));
  SM_RETURN_IF_ERROR(childStatus(cr, "the Kafka path (--apply-child)", log));
  const std::string out = readFile(log);
  const auto at = out.find("kafka-path ");
  unsigned long long changes = 0, txns_applied = 0, batches = 0, statements = 0, hwm_kib = 0;
  PathRun r;
  if (at == std::string::npos ||
      std::sscanf(out.c_str() + at, "kafka-path %llu %lf %llu %llu %llu %lf %llu", &changes,
                  &r.secs, &txns_applied, &batches, &statements, &r.waiting, &hwm_kib) != 7) {
    return Status::internal("the Kafka path's child printed no result: " + tailLines(out, 5));
  }
  r.changes = changes;
  r.rss_kib = static_cast<long>(hwm_kib);
  r.cpu = cr.cpu_seconds;
  return r;
}

Status run(uint64_t items, uint64_t txns, int32_t partitions, uint32_t repeat) {
  std::unique_ptr<harness::LocalCluster> src, dst;
  SM_RETURN_IF_ERROR(startCluster("kbsrc", src));
  SM_RETURN_IF_ERROR(startCluster("kbdst", dst));
  SM_RETURN_IF_ERROR(src->createDatabase("app"));
  auto pgDb = [](uint32_t i) { return "pg_path_" + std::to_string(i); };
  auto kafkaDb = [](uint32_t i) { return "kafka_path_" + std::to_string(i); };
  SM_ASSIGN_OR_RETURN(PgConnection s, PgConnection::connect(src->dsn("app"), "source"));
  SM_RETURN_IF_ERROR(harness::createDemoSchema(s));
  for (uint32_t i = 1; i <= repeat; ++i) {
    for (const std::string& db : {pgDb(i), kafkaDb(i)}) {
      SM_RETURN_IF_ERROR(dst->createDatabase(db));
      SM_ASSIGN_OR_RETURN(PgConnection d, PgConnection::connect(dst->dsn(db), db));
      SM_RETURN_IF_ERROR(harness::createDemoSchema(d));
      SM_RETURN_IF_ERROR(mover::ensureKafkaOffsetsTable(d));
    }
  }
  SM_ASSIGN_OR_RETURN(auto tables, mover::discoverTenantTables(s, {}));
  // Every slot before any row: every run sees exactly the same changes.
  SM_RETURN_IF_ERROR(mover::createTenantPublication(s, "t42", tables, "42"));
  SM_RETURN_IF_ERROR(s.exec("CREATE PUBLICATION everything FOR ALL TABLES"));
  for (uint32_t i = 1; i <= repeat; ++i) {
    SM_RETURN_IF_ERROR(s.query("SELECT pg_create_logical_replication_slot('pgpath_" +
                               std::to_string(i) + "', 'pgoutput')").status());
  }
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
    wo.duration = std::chrono::minutes(10);
    wo.max_transactions = txns;
    wo.truncates = false;
    harness::Writer w(wo);
    const auto w0 = Clock::now();
    while (w.transactions() + w.errors() < txns) {
      if (secondsSince(w0) > 600) return Status::internal("the writer did not finish in 10 minutes");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  SM_RETURN_IF_ERROR(s.query("SELECT pg_logical_emit_message(true, 'bench-end', 'x')").status());

  // The connector's records, produced into the mock cluster (untimed).
  testing::MockKafka kafka;
  for (const char* t : kTables) kafka.createTopic(std::string(kPrefix) + ".public." + t, partitions);
  kafka.createTopic(std::string(kPrefix) + ".public.currencies", partitions);
  uint64_t records = 0;
  uint64_t value_bytes = 0;
  {
    cdc::PgoutputSourceOptions so;
    so.dsn = src->dsn("app");
    so.slot = "dbz";
    so.publication = "everything";
    SM_ASSIGN_OR_RETURN(auto source, cdc::PgoutputSource::start(so));
    testing::DebeziumEncoder enc(kPrefix, partitions);
    std::vector<testing::KafkaRecord> batch;
    uint32_t xid = 0;
    for (;;) {
      SM_ASSIGN_OR_RETURN(auto ev, source->next(std::chrono::milliseconds(100)));
      if (!ev) continue;
      if (ev->kind == common::ChangeEvent::Kind::kBegin) xid = ev->txn.xid;
      if (ev->kind == common::ChangeEvent::Kind::kMessage && ev->message.prefix == "bench-end") break;
      if (ev->kind != common::ChangeEvent::Kind::kChange) continue;
      for (auto& r : enc.encode(ev->change, ev->wal_start.value(), xid)) {
        value_bytes += r.value ? r.value->size() : 0;
        batch.push_back(std::move(r));
      }
      if (batch.size() >= 5000) {
        kafka.produce(batch);
        records += batch.size();
        batch.clear();
      }
    }
    kafka.produce(batch);
    records += batch.size();
  }
  say("produced %llu Debezium records (every tenant, %s of values) into the mock cluster, %d "
      "partitions per topic\n",
      static_cast<unsigned long long>(records), humanBytes(value_bytes).c_str(), partitions);

  double bare_secs = 0;
  {
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
    uint64_t held = 0;
    SM_RETURN_IF_ERROR(checkNothingDropped(kafka.bootstraps(), so.start, held));
    say("the mock cluster holds all %llu records of the moved tables' topics from offset 0\n",
        static_cast<unsigned long long>(held));
    SM_ASSIGN_OR_RETURN(bare_secs, bareConsumer(so.kafka, so.start));
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
  }
  // Paired runs, in alternating order (each on its own slot and databases); medians reported.
  std::vector<PathRun> theirs, ours;
  std::vector<double> ratios;
  for (uint32_t i = 1; i <= repeat; ++i) {
    PathRun pg, kf;
    for (int leg = 0; leg < 2; ++leg) {
      const bool kafka_leg = (leg == 0) == (i % 2 == 0);
      if (kafka_leg) {
        SM_ASSIGN_OR_RETURN(kf, kafkaPath(*src, *dst, kafka.bootstraps(), kafkaDb(i)));
      } else {
        SM_ASSIGN_OR_RETURN(pg, pgoutputPath(*src, *dst, "pgpath_" + std::to_string(i), pgDb(i)));
      }
    }
    say("run %u/%u (%s first): pgoutput %.2f s, %.0f changes/s; kafka %.2f s, %.0f changes/s "
        "(its applier waited %.2f s for the source; %.2f s of CPU; peak RSS %.0f MiB): %.2fx\n",
        i, repeat, i % 2 == 0 ? "kafka" : "pgoutput", pg.secs, pg.rate(), kf.secs, kf.rate(),
        kf.waiting, kf.cpu, static_cast<double>(kf.rss_kib) / 1024.0, kf.rate() / pg.rate());
    theirs.push_back(pg);
    ours.push_back(kf);
    ratios.push_back(kf.rate() / pg.rate());
  }
  SM_ASSIGN_OR_RETURN(std::string want, tenantDigest(s));
  for (uint32_t i = 1; i <= repeat; ++i) {
    for (const std::string& db : {pgDb(i), kafkaDb(i)}) {
      SM_ASSIGN_OR_RETURN(PgConnection d, PgConnection::connect(dst->dsn(db), db));
      SM_ASSIGN_OR_RETURN(std::string got, tenantDigest(d));
      if (got != want) {
        return Status::dataLoss("tenant 42 differs from the source in " + db +
                                " (md5 per table: source " + want + ", " + db + " " + got + ")");
      }
    }
  }
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  std::vector<double> pg_rates, kafka_rates;
  long rss_kib = 0;
  for (const auto& r : theirs) pg_rates.push_back(r.rate());
  for (const auto& r : ours) {
    kafka_rates.push_back(r.rate());
    rss_kib = std::max(rss_kib, r.rss_kib);
  }
  const double pg_rate = median(pg_rates);
  const double kafka_rate = median(kafka_rates);
  say("every destination equals the source for tenant 42 (md5 over every table)\n");
  std::printf("changes of tenant 42: pgoutput path %llu, kafka path %llu (records read: %llu, "
              "every tenant)\n",
              static_cast<unsigned long long>(theirs.front().changes),
              static_cast<unsigned long long>(ours.front().changes),
              static_cast<unsigned long long>(records));
  std::printf("theirs (pgoutput slot -> applier): median of %u runs %.0f changes/s\n", repeat, pg_rate);
  std::printf("ours   (kafka mock -> applier):    median of %u runs %.0f changes/s\n", repeat, kafka_rate);
  std::printf("ratio ours/theirs: median %.2fx (target >= 0.8x)\n", median(ratios));
  // Every tenant's records must be read from a topic (no row filter as in the slot): the time
  // a bare consumer needs to read them bounds what any Kafka path can reach here.
  std::printf("ceiling (bare consumer reading every record, no decode, no apply): %.2f s, at most "
              "%.0f changes/s of tenant 42 (%.2fx of theirs)\n",
              bare_secs, static_cast<double>(ours.front().changes) / bare_secs,
              static_cast<double>(ours.front().changes) / bare_secs / pg_rate);
  std::printf("peak RSS of the Kafka path (its own process: source, decoder, applier): %.0f MiB "
              "(target <= 256 MiB) for a backlog of %s of record values\n",
              static_cast<double>(rss_kib) / 1024.0, humanBytes(value_bytes).c_str());
  std::printf("peak RSS of this process (the mock cluster holding the backlog, the pgoutput path): "
              "%.0f MiB\n", static_cast<double>(ru.ru_maxrss) / 1024.0);
  return Status::ok();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_kafka (also `bench_cdc --source kafka`): the Kafka (Debezium) source vs the "
               "pgoutput path on the same changes of tenant 42, in one run on two throwaway local "
               "clusters and librdkafka's mock cluster (127.0.0.1); prints both rates, the ratio "
               "(issue 14 target >= 0.8x) and the Kafka path's peak RSS (target <= 256 MiB). Both "
               "destinations are checked against the source."};
  uint64_t items = 8000, txns = 12000;  // ~61k records, ~30k changes of tenant 42: ~20 s in all
  int32_t partitions = 3;
  uint32_t repeat = 3;
  bool child = false;
  ChildArgs ca;
  app.add_option("--items", items, "Seed size per tenant group (order_items rows)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{5'000'000}));
  app.add_option("--txns", txns, "Writer transactions after the seed (every tenant; the backlog)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{2'000'000}));
  app.add_option("--partitions", partitions,
                 "Partitions per topic (librdkafka 2.0.2's mock cluster keeps a bounded log per "
                 "partition: a large backlog needs more; the benchmark fails if any was dropped)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--repeat", repeat,
                 "Paired runs (each path on its own slot and databases, in alternating order); "
                 "the medians are the result")
      ->capture_default_str()
      ->check(CLI::Range(1, 9));
  auto* child_flag = app.add_flag("--apply-child", child, "Internal: the Kafka path's own process");
  app.add_option("--bootstrap", ca.bootstrap)->needs(child_flag)->group("");
  app.add_option("--source-dsn", ca.source_dsn)->needs(child_flag)->group("");
  app.add_option("--dest-dsn", ca.dest_dsn)->needs(child_flag)->group("");
  app.add_option("--origin", ca.origin)->needs(child_flag)->group("");
  child_flag->group("");
  CLI11_PARSE(app, argc, argv);
  if (child) {
    Status st = applyChild(ca);
    if (!st.isOk()) return reportError("bench_kafka --apply-child", st.message());
    return 0;
  }
  return runReportingExceptions("bench_kafka", [&]() -> int {
    Status st = run(items, txns, partitions, repeat);
    if (!st.isOk()) return reportError("bench_kafka", st.message());
    return 0;
  });
}
