// The Kafka (Debezium) change source end to end, on librdkafka's mock cluster (started on
// loopback by each test and destroyed by it) and real PostgreSQL: real changes of a harness
// source are read from a pgoutput slot and turned into the records Debezium would produce
// (tests/kafka/debezium_encoder.h documents the shapes), produced to the mock, consumed by
// KafkaDebeziumSource and applied by PgApplier, whose transactions also store each partition's
// next offset (stampmover.kafka_offsets). The destination is compared with the source by
// independent SELECT t::text dumps. Hazards: restart from stored offsets (nothing lost or
// doubled), duplicates and a replayed snapshot (op r), brokers down and up and leader changes,
// bad events (stop naming the offset, or dead-letter and go on).
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <thread>

#include "cdc/debezium_config.h"
#include "cdc/kafka_relations.h"
#include "cdc/kafka_source.h"
#include "cdc/pgoutput_source.h"
#include "common/kafka.h"
#include "harness/seed.h"
#include "mover/kafka_offsets.h"
#include "mover/pg_applier.h"
#include "tests/kafka/debezium_encoder.h"
#include "tests/kafka/mock_kafka.h"
#include "tests/support/test_support.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;
using stampmover::common::Result;
using stampmover::common::Status;
namespace cdc = stampmover::cdc;
namespace common = stampmover::common;
namespace harness = stampmover::harness;
namespace mover = stampmover::mover;
using json = nlohmann::json;

namespace {

constexpr int32_t kPartitions = 3;
constexpr const char* kPrefix = "stamp_a";
const char* kTables[] = {"accounts", "orders", "order_items", "documents", "events"};

struct Env {
  std::string db;
  std::string slot;
  PgConnection src;
  PgConnection dst;
  std::vector<std::shared_ptr<const common::Relation>> relations;
  std::vector<KafkaRecord> records;  // the stream, in source order
  std::map<std::pair<std::string, int32_t>, int64_t> ends;  // records per partition
  uint64_t tenant_changes = 0;  // records that are changes of tenant 42's rows
};

// Counts one produced record into the expectations.
void account(Env& e, const KafkaRecord& r) {
  e.ends[{r.topic, r.partition}]++;
  if (!r.value) return;
  json v = json::parse(*r.value);
  if (v.value("op", "") == "m") return;
  const json& row = v["after"].is_null() ? v["before"] : v["after"];
  if (!row.is_null() && row.value("tenant_id", 0) == 42) e.tenant_changes++;
}

constexpr const char* kBig =
    "(SELECT string_agg(md5(g::text || 'big'), '') FROM generate_series(1, 400) g)";

std::unique_ptr<Env> setUpEnv() {
  auto e = std::make_unique<Env>();
  e->db = freshDatabase();
  e->slot = "kafka_" + e->db;
  e->src = connectOrDie(sourceCluster().dsn(e->db));
  e->dst = connectOrDie(destCluster().dsn(e->db));
  for (auto* c : {&e->src, &e->dst}) EXPECT_TRUE(harness::createDemoSchema(*c).isOk());
  // Debezium captures every tenant: a publication without a row filter.
  execOrDie(e->src, "CREATE PUBLICATION " + e->slot + " FOR ALL TABLES");
  execOrDie(e->src, "SELECT pg_create_logical_replication_slot('" + e->slot + "', 'pgoutput')");
  std::vector<std::string> names;
  for (const char* t : kTables) names.push_back(std::string("public.") + t);
  auto rels = cdc::describeSourceTables(e->src, names);
  EXPECT_TRUE(rels.isOk()) << rels.status().message();
  if (rels) e->relations = *rels;
  EXPECT_TRUE(mover::ensureKafkaOffsetsTable(e->dst).isOk());
  return e;
}

// Writes the workload on the source: seeded tenants, updates (some leaving TOASTed values
// unchanged), a primary-key change of a row with a TOASTed value, deletes, key reuse.
void workload(Env& e) {
  harness::SeedOptions seed;
  seed.tenant_items = 150;
  seed.other_items = 150;
  ASSERT_TRUE(harness::seedTenants(e.src, seed).isOk());
  execOrDie(e.src, std::string("INSERT INTO documents VALUES (42, 'big0', 'old', ") + kBig +
                       ", '{\"v\": 0}', now()), (42, 'big1', 'to rename', " + kBig +
                       ", NULL, now()), (1, 'big0', 'other', " + kBig + ", NULL, now())");
  execOrDie(e.src, R"SQL(
UPDATE documents SET title = 'new title' WHERE tenant_id = 42;
UPDATE documents SET doc_key = 'big1-renamed' WHERE tenant_id = 42 AND doc_key = 'big1';
UPDATE orders SET status = 'shipped', ratio = 0.1 WHERE tenant_id IN (1, 42) AND order_id % 3 = 0;
DELETE FROM order_items WHERE tenant_id IN (2, 42) AND line = 1;
UPDATE accounts SET balance = -balance, tags = ARRAY['a"b', 'c\d', NULL, '{x}'] WHERE tenant_id = 42 AND account_id % 4 = 0;
DELETE FROM events WHERE tenant_id = 42 AND kind = 'login';
UPDATE events SET event_id = gen_random_uuid() WHERE tenant_id = 42 AND event_id IN
  (SELECT event_id FROM events WHERE tenant_id = 42 ORDER BY event_id LIMIT 10);
INSERT INTO documents VALUES (42, 'churn', 'x', 'y', NULL, '2001-02-03 04:05:06.000007');
DELETE FROM documents WHERE tenant_id = 42 AND doc_key = 'churn';
INSERT INTO documents VALUES (42, 'churn', 'again', 'z', '[1, 2]', '1999-12-31 23:59:59.999999');
)SQL");
  execOrDie(e.src, "SELECT pg_logical_emit_message(true, 'kafka-test-end', 'x')");
}

// Reads the slot up to the end marker and encodes every change as Debezium would.
void collect(Env& e) {
  cdc::PgoutputSourceOptions so;
  so.dsn = sourceCluster().dsn(e.db);
  so.slot = e.slot;
  so.publication = e.slot;
  auto source = cdc::PgoutputSource::start(so);
  ASSERT_TRUE(source.isOk()) << source.status().message();
  DebeziumEncoder enc(kPrefix, kPartitions);
  uint32_t xid = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (;;) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "slot read timed out";
    auto ev = (*source)->next(std::chrono::milliseconds(100));
    ASSERT_TRUE(ev.isOk()) << ev.status().message();
    if (!ev->has_value()) continue;
    const common::ChangeEvent& c = **ev;
    if (c.kind == common::ChangeEvent::Kind::kBegin) xid = c.txn.xid;
    if (c.kind == common::ChangeEvent::Kind::kMessage) {
      if (c.message.prefix == "kafka-test-end") {
        e.records.push_back(enc.message("kafka-test-end", c.message.content, c.message.lsn.value()));
        break;
      }
      continue;
    }
    if (c.kind != common::ChangeEvent::Kind::kChange) continue;
    for (auto& r : enc.encode(c.change, c.wal_start.value(), xid)) e.records.push_back(std::move(r));
  }
  for (const auto& r : e.records) account(e, r);
}

void createTopics(MockKafka& k) {
  for (const char* t : kTables) k.createTopic(std::string(kPrefix) + ".public." + t, kPartitions);
  k.createTopic(std::string(kPrefix) + ".public.currencies", kPartitions);
  k.createTopic(std::string(kPrefix) + ".message", 1);
}

std::vector<std::string> topics() {
  std::vector<std::string> out;
  for (const char* t : kTables) out.push_back(std::string(kPrefix) + ".public." + t);
  out.push_back(std::string(kPrefix) + ".message");
  return out;
}

struct RunOptions {
  uint64_t stop_after_changes = UINT64_MAX;  // stop (cleanly) after this many changes applied
  cdc::BadEventPolicy on_bad_event = cdc::BadEventPolicy::kStop;
  std::string dead_letter_path;
  // Fault injection: once this many changes were applied, poll_hook is called before every
  // read until it returns true; the run does not end as caught up before that.
  uint64_t hook_after = UINT64_MAX;
  std::function<bool(cdc::KafkaDebeziumSource&)> poll_hook;
};

struct RunResult {
  uint64_t changes = 0;
  cdc::KafkaHealth health;
  cdc::KafkaSourceStats stats;
};

// Start offsets: the destination's stored ones, the beginning for partitions without any.
std::vector<cdc::PartitionOffset> startOffsets(Env& e, MockKafka& k) {
  std::map<std::string, std::string> conf = {{"bootstrap.servers", k.bootstraps()}};
  auto parts = cdc::KafkaDebeziumSource::partitionsOf(conf, topics(), std::chrono::seconds(10));
  EXPECT_TRUE(parts.isOk()) << parts.status().message();
  auto stored = mover::loadKafkaOffsets(e.dst, "m1");
  EXPECT_TRUE(stored.isOk()) << stored.status().message();
  std::vector<cdc::PartitionOffset> out = parts.isOk() ? *parts : std::vector<cdc::PartitionOffset>{};
  for (auto& p : out)
    for (const auto& s : *stored)
      if (s.topic == p.topic && s.partition == p.partition) p.offset = s.next_offset;
  return out;
}

// Consumes from the stored offsets and applies until every partition is at its end (or
// stop_after_changes), committing offsets with the rows.
Result<RunResult> consume(Env& e, MockKafka& k, const RunOptions& ro = {}) {
  cdc::KafkaSourceOptions so;
  so.kafka = {{"bootstrap.servers", k.bootstraps()}};
  so.start = startOffsets(e, k);
  so.max_buffered_bytes = 1u << 20;
  so.on_bad_event = ro.on_bad_event;
  so.dead_letter_path = ro.dead_letter_path;
  so.give_up_after = std::chrono::seconds(60);
  mover::ApplierOptions ao;
  ao.dest_dsn = destCluster().dsn(e.db);
  ao.source_dsn = sourceCluster().dsn(e.db);
  ao.origin_name = e.slot;
  ao.tenant = "42";
  ao.plain_inserts = false;  // at-least-once delivery: every insert is an upsert
  ao.max_batch_changes = 200;
  // The offsets ride in the applier's transactions; the source is opened after the applier
  // (its first position follows the origin), so the callback reads it through this pointer.
  cdc::KafkaDebeziumSource* src = nullptr;
  ao.commit_statements = [&src]() {
    std::vector<mover::KafkaOffset> offs;
    if (src != nullptr)
      for (const auto& p : src->committedOffsets())
        if (p.offset >= 0) offs.push_back({p.topic, p.partition, p.offset});
    return mover::kafkaOffsetStatements("m1", offs);
  };
  // The previous run's session releases the origin when its backend exits, a moment after it
  // disconnected (55000: the origin is still active there).
  auto opened = mover::PgApplier::open(ao);
  for (int i = 0; i < 100 && !opened.isOk() && opened.status().sqlState() == "55000"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    opened = mover::PgApplier::open(ao);
  }
  SM_ASSIGN_OR_RETURN(auto applier, std::move(opened));
  SM_ASSIGN_OR_RETURN(auto origin, applier->originProgress());
  so.first_position = origin.value() + 1;
  cdc::DebeziumDecoder decoder({}, cdc::fixedRelations(e.relations), cdc::TenantFilter{"42"});
  SM_ASSIGN_OR_RETURN(auto source, cdc::KafkaDebeziumSource::open(so, std::move(decoder)));
  src = source.get();
  RunResult out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
  bool hook_done = !ro.poll_hook;
  int idle = 0;
  // Stops only between records (after a Commit): a stop inside one would leave its source
  // transaction, and so the applier's open batch, uncommitted.
  for (;;) {
    if (std::chrono::steady_clock::now() > deadline) return Status::internal("consume timed out");
    if (!hook_done && out.changes >= ro.hook_after) hook_done = ro.poll_hook(*src);
    SM_ASSIGN_OR_RETURN(auto ev, src->next(std::chrono::milliseconds(50)));
    if (ev) {
      idle = 0;
      if (ev->kind == common::ChangeEvent::Kind::kChange) out.changes++;
      SM_RETURN_IF_ERROR(applier->apply(std::move(*ev)));
      if (ev->kind == common::ChangeEvent::Kind::kCommit && out.changes >= ro.stop_after_changes) break;
    } else {
      SM_RETURN_IF_ERROR(applier->commitPending());
      if (hook_done && src->caughtUp() && ++idle >= 3) break;
    }
  }
  SM_RETURN_IF_ERROR(applier->commitPending());
  SM_ASSIGN_OR_RETURN(auto durable, applier->durableLsn());
  SM_RETURN_IF_ERROR(src->acknowledge(durable));
  out.health = src->health();
  out.stats = src->stats();
  return out;
}

void expectTenantEqual(Env& e) {
  for (const auto& [table, order] : kDemoTenantTables) {
    if (std::string(table) == "scratch") continue;
    auto a = tenantRows(e.src, table, "42", order);
    auto b = tenantRows(e.dst, table, "42", order);
    ASSERT_EQ(a.size(), b.size()) << table;
    ASSERT_FALSE(a.empty()) << table;
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << table << " row " << i;
    EXPECT_EQ(scalar(e.dst, std::string("SELECT count(*) FROM ") + table + " WHERE tenant_id <> 42"), "0")
        << table;
  }
}

// Every partition's stored next offset is its end: nothing left, nothing past it.
void expectOffsetsAtEnd(Env& e) {
  auto stored = mover::loadKafkaOffsets(e.dst, "m1");
  ASSERT_TRUE(stored.isOk());
  std::map<std::pair<std::string, int32_t>, int64_t> got;
  for (const auto& s : *stored) got[{s.topic, s.partition}] = s.next_offset;
  const auto consumed = topics();
  for (const auto& [part, end] : e.ends) {
    if (std::find(consumed.begin(), consumed.end(), part.first) == consumed.end()) continue;
    EXPECT_EQ(got[part], end) << part.first << "/" << part.second;
  }
}

class KafkaSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_ = setUpEnv();
    ASSERT_NO_FATAL_FAILURE(workload(*env_));
    ASSERT_NO_FATAL_FAILURE(collect(*env_));
    ASSERT_NO_FATAL_FAILURE(createTopics(kafka_));
  }
  void TearDown() override {
    if (env_ && env_->src.valid())
      (void)env_->src.exec("SELECT pg_drop_replication_slot('" + env_->slot + "')");
  }
  std::unique_ptr<Env> env_;
  MockKafka kafka_;
};

TEST_F(KafkaSourceTest, StreamAppliedEqualsSource) {
  Env& e = *env_;
  // Primary-key changes arrive as a delete (header __debezium.newkey) and a create (header
  // __debezium.oldkey) keyed by different keys: at least one pair sits on two partitions.
  int split = 0;
  for (size_t i = 0; i < e.records.size(); ++i) {
    const auto& d = e.records[i];
    if (d.headers.empty() || d.headers[0].first != "__debezium.newkey") continue;
    for (size_t j = i + 1; j < e.records.size(); ++j) {
      const auto& c = e.records[j];
      if (!c.headers.empty() && c.headers[0].first == "__debezium.oldkey" && c.key == d.headers[0].second) {
        split += c.partition != d.partition;
        break;
      }
    }
  }
  EXPECT_GT(split, 0) << "no primary-key change split across partitions in the workload";
  ASSERT_NO_FATAL_FAILURE(kafka_.produce(e.records));
  auto run = consume(e, kafka_);
  ASSERT_TRUE(run.isOk()) << run.status().message();
  EXPECT_EQ(run->changes, e.tenant_changes);
  EXPECT_GT(run->stats.skipped, 0u) << "other tenants' rows are in the topics";
  EXPECT_GT(run->stats.tombstones, 0u);
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e));
  ASSERT_NO_FATAL_FAILURE(expectOffsetsAtEnd(e));
}

TEST_F(KafkaSourceTest, RestartFromStoredOffsetsLosesAndDoublesNothing) {
  Env& e = *env_;
  ASSERT_NO_FATAL_FAILURE(kafka_.produce(e.records));
  RunOptions first;
  first.stop_after_changes = e.tenant_changes / 3;
  auto a = consume(e, kafka_, first);
  ASSERT_TRUE(a.isOk()) << a.status().message();
  ASSERT_LT(a->changes, e.tenant_changes);
  auto b = consume(e, kafka_);
  ASSERT_TRUE(b.isOk()) << b.status().message();
  // Offsets committed with the rows: the second run starts exactly after the first.
  EXPECT_EQ(a->changes + b->changes, e.tenant_changes);
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e));
  ASSERT_NO_FATAL_FAILURE(expectOffsetsAtEnd(e));
}

TEST_F(KafkaSourceTest, DuplicatesAndReplayedSnapshotConverge) {
  Env& e = *env_;
  // At-least-once: the connector restarted and sent the whole stream again, then re-snapshotted
  // the tables (op r of the current rows, every tenant's).
  std::vector<KafkaRecord> all = e.records;
  all.insert(all.end(), e.records.begin(), e.records.end());
  DebeziumEncoder enc(kPrefix, kPartitions);
  for (const auto& rel : e.relations) {
    std::string cols;
    for (const auto& c : rel->columns) cols += (cols.empty() ? "" : ", ") + common::quoteIdent(c.name) + "::text";
    auto res = e.src.query("SELECT " + cols + " FROM " + common::quoteIdent(rel->name));
    ASSERT_TRUE(res.isOk());
    for (int r = 0; r < PQntuples(res->get()); ++r) {
      common::Change ch;
      ch.op = common::ChangeOp::kInsert;
      ch.relation = rel;
      for (int c = 0; c < PQnfields(res->get()); ++c)
        ch.new_tuple.push_back(common::cellIsNull(*res, r, c) ? common::Datum::null()
                                                              : common::Datum::value(common::cell(*res, r, c)));
      for (auto& rec : enc.encode(ch, 1, 1, /*snapshot=*/true)) all.push_back(std::move(rec));
    }
  }
  e.ends.clear();
  e.tenant_changes = 0;
  for (const auto& r : all) account(e, r);
  ASSERT_NO_FATAL_FAILURE(kafka_.produce(all));
  auto run = consume(e, kafka_);
  ASSERT_TRUE(run.isOk()) << run.status().message();
  EXPECT_EQ(run->changes, e.tenant_changes);
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e));
  ASSERT_NO_FATAL_FAILURE(expectOffsetsAtEnd(e));
}

TEST_F(KafkaSourceTest, BrokersDownAndUpAndLeaderChange) {
  Env& e = *env_;
  // The first half of the stream is there from the start; the brokers go down mid-way, stay
  // down while the source keeps polling (the outage must show in health()), come back with
  // new partition leaders, and only then is the second half produced: reading it proves the
  // consumer recovered by itself.
  const size_t half = e.records.size() / 2;
  std::vector<KafkaRecord> first(e.records.begin(), e.records.begin() + static_cast<long>(half));
  std::vector<KafkaRecord> second(e.records.begin() + static_cast<long>(half), e.records.end());
  ASSERT_NO_FATAL_FAILURE(kafka_.produce(first));
  RunOptions ro;
  ro.hook_after = 1;
  rd_kafka_mock_cluster_t* mc = kafka_.cluster();
  int state = 0;
  std::chrono::steady_clock::time_point down_at;
  uint64_t errors_before = 0;
  bool outage_visible = false;
  ro.poll_hook = [&](cdc::KafkaDebeziumSource& src) {
    if (state == 0) {
      errors_before = src.health().errors;
      for (int32_t b = 1; b <= 3; ++b) EXPECT_EQ(rd_kafka_mock_broker_set_down(mc, b), RD_KAFKA_RESP_ERR_NO_ERROR);
      down_at = std::chrono::steady_clock::now();
      state = 1;
      return false;
    }
    if (std::chrono::steady_clock::now() - down_at < std::chrono::seconds(3)) return false;
    outage_visible = src.health().errors > errors_before && src.health().failing &&
                     !src.health().last_error.empty();
    for (const char* t : kTables)
      for (int p = 0; p < kPartitions; ++p)
        rd_kafka_mock_partition_set_leader(mc, (std::string(kPrefix) + ".public." + t).c_str(), p,
                                           1 + (p + 1) % 3);
    for (int32_t b = 1; b <= 3; ++b) EXPECT_EQ(rd_kafka_mock_broker_set_up(mc, b), RD_KAFKA_RESP_ERR_NO_ERROR);
    kafka_.produce(second);
    return true;
  };
  auto run = consume(e, kafka_, ro);
  ASSERT_TRUE(run.isOk()) << run.status().message();
  EXPECT_TRUE(outage_visible) << "the outage shows in health(): " << run->health.last_error;
  EXPECT_FALSE(run->health.failing) << "recovered: " << run->health.last_error;
  EXPECT_EQ(run->changes, e.tenant_changes);
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e));
  ASSERT_NO_FATAL_FAILURE(expectOffsetsAtEnd(e));
}

TEST_F(KafkaSourceTest, FetchRequestErrorsAreRetried) {
  Env& e = *env_;
  ASSERT_NO_FATAL_FAILURE(kafka_.produce(e.records));
  // Every broker answers its next Fetch requests with errors (leadership moved, timeouts):
  // librdkafka retries them with its backoff; the stream must still arrive whole, once.
  rd_kafka_mock_push_request_errors(kafka_.cluster(), 1 /* Fetch */, 6,
                                    RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                    RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                    RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                    RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
                                    RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                    RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
  auto run = consume(e, kafka_);
  ASSERT_TRUE(run.isOk()) << run.status().message();
  EXPECT_EQ(run->changes, e.tenant_changes);
  EXPECT_GT(run->health.errors, 0u) << "the request errors are visible in health()";
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e));
  ASSERT_NO_FATAL_FAILURE(expectOffsetsAtEnd(e));
}

TEST_F(KafkaSourceTest, BadEventStopsNamingItsOffsetOrIsDeadLettered) {
  Env& e = *env_;
  KafkaRecord bad;
  bad.topic = std::string(kPrefix) + ".public.orders";
  bad.partition = 1;
  bad.key = "{}";
  bad.value = R"({"op":"c","after":{"tenant_id":42},"source":{"schema":"public","table":"orders"}})";
  std::vector<KafkaRecord> all = e.records;
  const size_t bad_index = all.size() / 2;
  all.insert(all.begin() + static_cast<long>(bad_index), bad);
  int64_t bad_offset = 0;  // records before it in its partition
  for (size_t i = 0; i < bad_index; ++i)
    if (all[i].topic == bad.topic && all[i].partition == 1) bad_offset++;
  e.ends[{bad.topic, 1}]++;
  ASSERT_NO_FATAL_FAILURE(kafka_.produce(all));
  auto stopped = consume(e, kafka_);
  ASSERT_FALSE(stopped.isOk());
  EXPECT_NE(stopped.status().message().find("topic " + bad.topic + " partition 1 offset " +
                                            std::to_string(bad_offset)),
            std::string::npos)
      << stopped.status().message();
  TempDir dir;
  RunOptions ro;
  ro.on_bad_event = cdc::BadEventPolicy::kDeadLetter;
  ro.dead_letter_path = dir.path() + "/dead.jsonl";
  auto run = consume(e, kafka_, ro);
  ASSERT_TRUE(run.isOk()) << run.status().message();
  EXPECT_EQ(run->stats.bad_events, 1u);
  std::string dead = readFile(ro.dead_letter_path);
  json line = json::parse(dead.substr(0, dead.find('\n')));
  EXPECT_EQ(line["topic"], bad.topic);
  EXPECT_EQ(line["partition"], 1);
  EXPECT_EQ(line["offset"], bad_offset);
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e));
  ASSERT_NO_FATAL_FAILURE(expectOffsetsAtEnd(e));
}

TEST_F(KafkaSourceTest, TruncateOnAMultiPartitionTopicStopsNamingIt) {
  Env& e = *env_;
  // The rows up to here, then a TRUNCATE of orders (3 partitions): its order against rows on
  // the other partitions is unknown, so the source stops there instead of deleting rows.
  common::Change t;
  t.op = common::ChangeOp::kTruncate;
  for (const auto& r : e.relations)
    if (r->name == "orders") t.truncated.push_back(r);
  DebeziumEncoder enc(kPrefix, kPartitions);
  std::vector<KafkaRecord> all = e.records;
  for (auto& r : enc.encode(t, 1, 1)) all.push_back(std::move(r));
  ASSERT_NO_FATAL_FAILURE(kafka_.produce(all));
  auto run = consume(e, kafka_);
  ASSERT_FALSE(run.isOk());
  EXPECT_EQ(run.status().errorClass(), common::ErrorClass::kRefused);
  EXPECT_NE(run.status().message().find("TRUNCATE of public.orders"), std::string::npos)
      << run.status().message();
  EXPECT_NE(run.status().message().find("partition 0 offset"), std::string::npos)
      << run.status().message();
  // Its partition's stored offset never passed it (it was not applied).
  const std::string orders = std::string(kPrefix) + ".public.orders";
  const int64_t truncate_offset = e.ends[{orders, 0}];
  auto stored = mover::loadKafkaOffsets(e.dst, "m1");
  ASSERT_TRUE(stored.isOk());
  for (const auto& o : *stored)
    if (o.topic == orders && o.partition == 0) EXPECT_LE(o.next_offset, truncate_offset);
}

TEST_F(KafkaSourceTest, ConnectorPreflightOfTheDemoTables) {
  // The demo tables (REPLICA IDENTITY DEFAULT, tenant in every primary key) pass with a safe
  // config; Debezium's defaults are refused for skipped.operations.
  auto cfg = cdc::parseConnectorConfig(
      R"({"connector.class":"io.debezium.connector.postgresql.PostgresConnector",)"
      R"("topic.prefix":"stamp_a","skipped.operations":"none"})");
  ASSERT_TRUE(cfg.isOk());
  auto ok = cdc::checkConnectorConfig(*cfg, env_->relations, cdc::TenantFilter{"42"});
  EXPECT_TRUE(ok.isOk()) << ok.status().message();
  cfg->settings.erase("skipped.operations");
  EXPECT_FALSE(cdc::checkConnectorConfig(*cfg, env_->relations, cdc::TenantFilter{"42"}).isOk());
  execOrDie(env_->src, "ALTER TABLE events DROP CONSTRAINT events_pkey, ADD PRIMARY KEY (event_id)");
  auto rels = cdc::describeSourceTables(env_->src, {"public.events"});
  ASSERT_TRUE(rels.isOk());
  cfg->settings["skipped.operations"] = "none";
  auto refused = cdc::checkConnectorConfig(*cfg, *rels, cdc::TenantFilter{"42"});
  ASSERT_FALSE(refused.isOk());
  EXPECT_NE(refused.status().message().find("public.events"), std::string::npos);
}

}  // namespace

// The source's contract with its consumer thread decoding ahead, on the mock cluster alone
// (hand-written records of one table; no PostgreSQL needed): offsets never run ahead of the
// events handed out, an offset the brokers no longer have is data loss, unreachable brokers end
// in a retryable error after give_up_after, and destruction with the thread blocked is prompt.
namespace {

std::shared_ptr<const common::Relation> itemsRelation() {
  auto r = std::make_shared<common::Relation>();
  r->id = 16600;
  r->schema = "public";
  r->name = "items";
  r->columns = {{"tenant_id", 20, -1, true}, {"id", 20, -1, true}, {"name", 25, -1, false}};
  return r;
}

cdc::DebeziumDecoder itemsDecoder() {
  return cdc::DebeziumDecoder({}, cdc::fixedRelations({itemsRelation()}), cdc::TenantFilter{"42"});
}

KafkaRecord itemRecord(const std::string& topic, int tenant, int id) {
  KafkaRecord r;
  r.topic = topic;
  r.partition = 0;
  r.key = "{\"id\":" + std::to_string(id) + "}";
  r.value = "{\"op\":\"c\",\"after\":{\"tenant_id\":" + std::to_string(tenant) + ",\"id\":" +
            std::to_string(id) + ",\"name\":\"item " + std::to_string(id) +
            "\"},\"source\":{\"schema\":\"public\",\"table\":\"items\",\"lsn\":" +
            std::to_string(1000 + id) + ",\"txId\":7,\"ts_ms\":1700000000000}}";
  return r;
}

int64_t committedOf(const cdc::KafkaDebeziumSource& src) {
  auto offs = src.committedOffsets();
  return offs.size() == 1 ? offs[0].offset : -100;
}

TEST(KafkaSourceContract, OffsetsNeverRunAheadOfTheEventsHandedOut) {
  MockKafka kafka;
  const std::string topic = "contract.public.items";
  kafka.createTopic(topic, 1);
  // Every fifth record is another tenant's (skipped: committed as soon as next() passes it).
  std::vector<KafkaRecord> records;
  for (int i = 0; i < 200; ++i) records.push_back(itemRecord(topic, i % 5 == 4 ? 7 : 42, i));
  ASSERT_NO_FATAL_FAILURE(kafka.produce(records));
  cdc::KafkaSourceOptions so;
  so.kafka = {{"bootstrap.servers", kafka.bootstraps()}};
  so.start = {{topic, 0, cdc::kOffsetBeginning}};
  so.max_decoded_bytes = 8 * 1024;  // a few records: the thread waits for room again and again
  auto src = cdc::KafkaDebeziumSource::open(so, itemsDecoder());
  ASSERT_TRUE(src.isOk()) << src.status().message();
  // Let the consumer thread decode as far as its queue allows before anything is taken.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(committedOf(**src), cdc::kOffsetBeginning) << "nothing handed out, nothing committed";
  int64_t record = -1;  // offset of the record whose events are being handed out
  int commits = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (commits < 100 && std::chrono::steady_clock::now() < deadline) {
    auto ev = (*src)->next(std::chrono::milliseconds(200));
    ASSERT_TRUE(ev.isOk()) << ev.status().message();
    if (!*ev) continue;
    switch ((*ev)->kind) {
      case common::ChangeEvent::Kind::kBegin:
        // Skipped records before this one are committed; this one is not.
        // (The first record leaves the start offset as it was.)
        record = record + 1 + ((record + 1) % 5 == 4 ? 1 : 0);
        EXPECT_EQ(committedOf(**src), record == 0 ? cdc::kOffsetBeginning : record)
            << "at the Begin of offset " << record;
        break;
      case common::ChangeEvent::Kind::kChange:
        EXPECT_EQ((*ev)->change.new_tuple[1].text, std::to_string(record));
        EXPECT_EQ(committedOf(**src), record == 0 ? cdc::kOffsetBeginning : record)
            << "the record's Commit is not handed out yet";
        break;
      case common::ChangeEvent::Kind::kCommit:
        ++commits;
        EXPECT_EQ(committedOf(**src), record + 1) << "after the Commit of offset " << record;
        EXPECT_EQ((*src)->position().value(), (*ev)->txn.commit_lsn.value());
        break;
      default:
        break;
    }
  }
  EXPECT_EQ(commits, 100);
  EXPECT_FALSE((*src)->caughtUp()) << "records are still queued or unread";
  auto stats = (*src)->stats();
  EXPECT_EQ(stats.changes, 100u);
  EXPECT_GE(stats.skipped, 24u);
  // Destroyed here with its thread waiting for room: must return promptly.
  const auto t0 = std::chrono::steady_clock::now();
  src->reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST(KafkaSourceContract, AnOffsetTheBrokersDoNotHaveIsDataLoss) {
  MockKafka kafka;
  const std::string topic = "contract.public.items";
  kafka.createTopic(topic, 1);
  std::vector<KafkaRecord> records;
  for (int i = 0; i < 5; ++i) records.push_back(itemRecord(topic, 42, i));
  ASSERT_NO_FATAL_FAILURE(kafka.produce(records));
  cdc::KafkaSourceOptions so;
  so.kafka = {{"bootstrap.servers", kafka.bootstraps()}};
  so.start = {{topic, 0, 1000}};  // past the log: out of range, never reset silently
  auto src = cdc::KafkaDebeziumSource::open(so, itemsDecoder());
  ASSERT_TRUE(src.isOk()) << src.status().message();
  Status got;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (got.isOk() && std::chrono::steady_clock::now() < deadline) {
    auto ev = (*src)->next(std::chrono::milliseconds(200));
    if (!ev.isOk()) got = ev.status();
    else EXPECT_FALSE(ev->has_value()) << "no record may be read from a reset position";
  }
  ASSERT_FALSE(got.isOk()) << "no error within 20 s";
  EXPECT_EQ(got.errorClass(), common::ErrorClass::kDataLoss) << got.message();
  EXPECT_NE(got.message().find("topic " + topic + " partition 0"), std::string::npos) << got.message();
  auto again = (*src)->next(std::chrono::milliseconds(10));
  ASSERT_FALSE(again.isOk());
  EXPECT_EQ(again.status().errorClass(), common::ErrorClass::kDataLoss) << "the error stays";
  EXPECT_EQ(committedOf(**src), 1000) << "the start offset is kept";
}

TEST(KafkaSourceContract, UnreachableBrokersEndInARetryableError) {
  MockKafka kafka;
  const std::string topic = "contract.public.items";
  kafka.createTopic(topic, 1);
  for (int b = 1; b <= 3; ++b) rd_kafka_mock_broker_set_down(kafka.cluster(), b);
  cdc::KafkaSourceOptions so;
  so.kafka = {{"bootstrap.servers", kafka.bootstraps()}};
  so.start = {{topic, 0, cdc::kOffsetBeginning}};
  so.give_up_after = std::chrono::seconds(2);
  auto src = cdc::KafkaDebeziumSource::open(so, itemsDecoder());
  ASSERT_TRUE(src.isOk()) << src.status().message();
  Status got;
  const auto t0 = std::chrono::steady_clock::now();
  while (got.isOk() && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) {
    auto ev = (*src)->next(std::chrono::milliseconds(200));
    if (!ev.isOk()) got = ev.status();
  }
  ASSERT_FALSE(got.isOk()) << "no error within 30 s";
  EXPECT_EQ(got.errorClass(), common::ErrorClass::kRetryable) << got.message();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2)) << "not before give_up_after";
  const cdc::KafkaHealth h = (*src)->health();
  EXPECT_TRUE(h.failing);
  EXPECT_GT(h.errors, 0u);
  EXPECT_FALSE(h.last_error.empty());
}

}  // namespace
