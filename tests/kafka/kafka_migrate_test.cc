// `stampmover migrate --cdc kafka` end to end: real source and destination clusters (harness),
// librdkafka's mock cluster on loopback, and a stand-in for the Debezium connector: a thread
// that reads every change of the source from a pgoutput slot (all tenants, all tables) and
// publishes the records Debezium would (tests/kafka/debezium_encoder.h) into the mock. The
// binary copies the tenant under a snapshot while a concurrent writer runs, hands off to the
// topics at the offsets recorded before the snapshot, and catches up; a second run resumes from
// the offsets stored at the destination. The destination is compared with the source by
// independent ordered SELECTs of both sides. Also: refusals of bad Kafka/connector input, and
// a bad event stopping the run (naming topic, partition, offset) or dead-lettered.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include <signal.h>

#include "cdc/connect_offsets.h"
#include "cdc/kafka_relations.h"
#include "cdc/kafka_source.h"
#include "cdc/pgoutput_source.h"
#include "mover/checkpoint_store.h"
#include "mover/kafka_offsets.h"
#include "mover/pg_applier.h"
#include "mover/source_setup.h"
#include "harness/seed.h"
#include "tests/kafka/debezium_encoder.h"
#include "tests/kafka/fake_debezium.h"
#include "tests/kafka/mock_kafka.h"
#include "tests/support/test_support.h"
#include "tests/support/writer.h"

using namespace stampmover::testing;
using stampmover::common::PgConnection;
namespace cdc = stampmover::cdc;
namespace common = stampmover::common;
namespace harness = stampmover::harness;

namespace {

constexpr int32_t kPartitions = 3;
constexpr const char* kPrefix = "stamp_a";
const char* kTables[] = {"accounts", "orders", "order_items", "documents", "events", "scratch",
                         "currencies"};

struct Env {
  std::string db;
  std::string slot;
  PgConnection src;
  PgConnection dst;
  TempDir dir;
  std::string kafka_config;
  std::string connector_config;
};

void writeFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

std::unique_ptr<Env> setUpEnv(MockKafka& kafka) {
  auto e = std::make_unique<Env>();
  e->db = freshDatabase();
  e->slot = "dbz_" + e->db;
  e->src = connectOrDie(sourceCluster().dsn(e->db));
  e->dst = connectOrDie(destCluster().dsn(e->db));
  for (auto* c : {&e->src, &e->dst}) EXPECT_TRUE(harness::createDemoSchema(*c).isOk());
  createScratchTable(sourceCluster().dsn(e->db));
  createScratchTable(destCluster().dsn(e->db));
  // The connector captures every tenant of every table, from before the first row.
  execOrDie(e->src, "CREATE PUBLICATION " + e->slot + " FOR ALL TABLES");
  execOrDie(e->src, "SELECT pg_create_logical_replication_slot('" + e->slot + "', 'pgoutput')");
  for (const char* t : kTables) kafka.createTopic(std::string(kPrefix) + ".public." + t, kPartitions);
  e->kafka_config = e->dir.path() + "/kafka.properties";
  writeFile(e->kafka_config, "# the mock cluster\nbootstrap.servers=" + kafka.bootstraps() + "\n");
  e->connector_config = e->dir.path() + "/connector.json";
  writeFile(e->connector_config,
            R"({"name": "stamp-a", "config": {"connector.class": )"
            R"("io.debezium.connector.postgresql.PostgresConnector", "topic.prefix": "stamp_a", )"
            R"("plugin.name": "pgoutput", "skipped.operations": "none", "tasks.max": "1"}})");
  return e;
}

void seed(Env& e, uint64_t items) {
  harness::SeedOptions s;
  s.tenant_items = items;
  s.other_items = items;
  ASSERT_TRUE(harness::seedTenants(e.src, s).isOk());
  execOrDie(e.src, "INSERT INTO scratch SELECT t, g, 'init' FROM unnest(ARRAY[42, 1]) t, "
                   "generate_series(1, 100) g");
}

// The migrate command line; `set` replaces an option's value (or adds the option; {"-"} leaves
// it out).
std::vector<std::string> migrateArgs(const Env& e, std::map<std::string, std::vector<std::string>> set = {}) {
  std::vector<std::pair<std::string, std::vector<std::string>>> opts = {
      {"--tenant", {"42"}},
      {"--source-dsn", {sourceCluster().dsn(e.db)}},
      {"--dest-dsn", {destCluster().dsn(e.db)}},
      {"--state-dir", {e.dir.path() + "/state"}},
      {"--progress", {"log"}},
      {"--until-caught-up", {}},
      {"--cdc", {"kafka"}},
      {"--kafka-config", {e.kafka_config}},
      {"--debezium-config", {e.connector_config}},
      {"--topic-prefix", {kPrefix}}};
  for (auto& [k, v] : opts) {
    auto it = set.find(k);
    if (it != set.end()) v = it->second, set.erase(it);
  }
  for (auto& [k, v] : set) opts.push_back({k, v});
  std::vector<std::string> a = {"migrate"};
  for (const auto& [k, v] : opts) {
    if (v.size() == 1 && v[0] == "-") continue;  // option left out
    a.push_back(k);
    a.insert(a.end(), v.begin(), v.end());
  }
  return a;
}

void expectTenantEqual(PgConnection& src, PgConnection& dst) {
  ASSERT_NO_FATAL_FAILURE(expectDemoTenantEqual(src, dst));
  for (const auto& [table, order] : kDemoTenantTables) {
    EXPECT_EQ(scalar(dst, std::string("SELECT count(*) FROM ") + table + " WHERE tenant_id <> 42"), "0")
        << "other tenants' rows reached the destination in " << table;
  }
}

class KafkaMigrateTest : public ::testing::Test {
 protected:
  void TearDown() override {
    dbz_.reset();
    if (env_ && env_->src.valid())
      (void)env_->src.exec("SELECT pg_drop_replication_slot('" + env_->slot + "')");
  }
  // The environment, the stand-in connector started, `items` rows per tenant seeded and
  // published to the topics.
  void startSeeded(uint64_t items) {
    env_ = setUpEnv(kafka_);
    dbz_ = std::make_unique<FakeDebezium>(sourceCluster().dsn(env_->db), env_->slot, kafka_, kPrefix,
                                          kPartitions);
    ASSERT_NO_FATAL_FAILURE(seed(*env_, items));
    ASSERT_TRUE(dbz_->sync(env_->src, "seeded"));
  }
  MockKafka kafka_;
  std::unique_ptr<Env> env_;
  std::unique_ptr<FakeDebezium> dbz_;
};

TEST_F(KafkaMigrateTest, CopiesAndFollowsTopicsUnderConcurrentWriter) {
  ASSERT_NO_FATAL_FAILURE(startSeeded(2000));
  Env& e = *env_;
  WriterOptions wo;
  wo.dsn = sourceCluster().dsn(e.db);
  wo.duration = std::chrono::milliseconds(6000);
  wo.seed = 11;
  // Bounded so that every partition stays within the mock's retention (5 MiB per partition:
  // past it, the stored offsets fall out of range and migrate stops with kDataLoss).
  wo.max_transactions = 1500;
  wo.pause = std::chrono::microseconds(2000);
  // A TRUNCATE event has no key; Debezium sends it to one partition, so its order against
  // row events of other partitions is not kept (see the README): not written here.
  wo.truncates = false;
  Writer writer(wo);
  auto r = runStampmover(migrateArgs(e));  // copies under the writer, then catches up
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("caught up"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("handoff: end offsets"), std::string::npos) << r.err;
  writer.stop();
  ASSERT_GT(writer.transactions(), 100u);
  ASSERT_TRUE(dbz_->sync(e.src, "writer-done"));
  // Resumes from the offsets the destination stored with the rows (already copied).
  auto r2 = runStampmover(migrateArgs(e));
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_NE(r2.out.find("already copied"), std::string::npos) << r2.out;
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e.src, e.dst));
  // Offsets live at the destination, one row per partition of every moved table's topic.
  EXPECT_EQ(scalar(e.dst, "SELECT count(*) FROM stampmover.kafka_offsets"),
            std::to_string(6 * kPartitions));
  // No slot of stampmover's on the source: only the connector's.
  EXPECT_EQ(scalar(e.src, "SELECT count(*) FROM pg_replication_slots"), "1");
  auto st = runStampmover({"status", "--state-dir", e.dir.path() + "/state", "--tenant", "42"});
  EXPECT_EQ(st.exit_code, 0) << st.err;
  EXPECT_NE(st.out.find("phase catching_up"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find("kafka: 0 records behind"), std::string::npos) << st.out;
}

TEST_F(KafkaMigrateTest, KilledMidCatchUpResumesFromStoredOffsets) {
  ASSERT_NO_FATAL_FAILURE(startSeeded(1000));
  Env& e = *env_;
  WriterOptions wo;
  wo.dsn = sourceCluster().dsn(e.db);
  wo.duration = std::chrono::milliseconds(8000);
  wo.seed = 23;
  wo.max_transactions = 1500;
  wo.pause = std::chrono::microseconds(3000);
  wo.truncates = false;
  Writer writer(wo);
  // Follows without end; killed with SIGKILL while it applies the writer's changes.
  const std::string log = e.dir.path() + "/migrate.log";
  ChildProcess child(spawnStampmover(migrateArgs(e, {{"--until-caught-up", {"-"}}}), log));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (readFile(log).find("changes applied") == std::string::npos) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << readFile(log);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_EQ(kill(child.pid(), SIGKILL), 0);
  EXPECT_EQ(child.wait(), -SIGKILL);
  const std::string at_kill = scalar(e.dst, "SELECT sum(next_offset) FROM stampmover.kafka_offsets");
  writer.stop();
  ASSERT_TRUE(dbz_->sync(e.src, "writer-done"));
  auto r = runStampmover(migrateArgs(e));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("already copied"), std::string::npos) << r.out;
  EXPECT_NE(scalar(e.dst, "SELECT sum(next_offset) FROM stampmover.kafka_offsets"), at_kill)
      << "the rerun went on from the stored offsets";
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e.src, e.dst));
}

TEST_F(KafkaMigrateTest, BadEventStopsNamingItThenDeadLetterGoesOn) {
  ASSERT_NO_FATAL_FAILURE(startSeeded(200));
  Env& e = *env_;
  auto r = runStampmover(migrateArgs(e));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // A malformed record for tenant 42 (no primary key columns) lands on orders partition 1.
  KafkaRecord bad;
  bad.topic = std::string(kPrefix) + ".public.orders";
  bad.partition = 1;
  bad.key = "{}";
  bad.value = R"({"op":"c","after":{"tenant_id":42},"source":{"schema":"public","table":"orders"}})";
  const std::string at = scalar(e.dst, "SELECT next_offset FROM stampmover.kafka_offsets WHERE "
                                       "topic = $1 AND partition = 1", {bad.topic});
  ASSERT_FALSE(at.empty());
  kafka_.produce({bad});
  execOrDie(e.src, "UPDATE orders SET status = 'after-bad' WHERE tenant_id = 42");
  ASSERT_TRUE(dbz_->sync(e.src, "after-bad"));
  auto stopped = runStampmover(migrateArgs(e));
  EXPECT_NE(stopped.exit_code, 0) << stopped.err;
  EXPECT_NE(stopped.err.find("topic " + bad.topic + " partition 1 offset " + at), std::string::npos)
      << stopped.err;
  // Its partition stopped at it: nothing there was skipped.
  EXPECT_EQ(scalar(e.dst, "SELECT next_offset FROM stampmover.kafka_offsets WHERE topic = $1 AND "
                          "partition = 1", {bad.topic}),
            at);
  const std::string dead = e.dir.path() + "/dead.jsonl";
  auto went_on = runStampmover(migrateArgs(e, {{"--on-bad-event", {"dead-letter", dead}}}));
  ASSERT_EQ(went_on.exit_code, 0) << went_on.err;
  std::string text = readFile(dead);
  ASSERT_FALSE(text.empty());
  auto line = nlohmann::json::parse(text.substr(0, text.find('\n')));
  EXPECT_EQ(line["topic"], bad.topic);
  EXPECT_EQ(line["partition"], 1);
  EXPECT_EQ(std::to_string(line["offset"].get<int64_t>()), at);
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e.src, e.dst));
}

TEST_F(KafkaMigrateTest, RefusalsNameTheSettingAndTheFix) {
  env_ = setUpEnv(kafka_);
  Env& e = *env_;
  ASSERT_NO_FATAL_FAILURE(seed(e, 50));
  // Debezium's default skipped.operations=t drops truncates.
  const std::string lossy = e.dir.path() + "/lossy.json";
  writeFile(lossy, R"({"connector.class": "io.debezium.connector.postgresql.PostgresConnector", )"
                   R"("topic.prefix": "stamp_a", "decimal.handling.mode": "double"})");
  auto a = runStampmover(migrateArgs(e, {{"--debezium-config", {lossy}}}));
  EXPECT_EQ(a.exit_code, 2) << a.err;
  EXPECT_NE(a.err.find("decimal.handling.mode"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("skipped.operations"), std::string::npos) << "every problem at once: " << a.err;
  // A prefix that is not the connector's.
  auto b = runStampmover(migrateArgs(e, {{"--topic-prefix", {"stamp_b"}}}));
  EXPECT_EQ(b.exit_code, 2) << b.err;
  EXPECT_NE(b.err.find("topic.prefix"), std::string::npos) << b.err;
  // Kafka options without --cdc kafka.
  auto c = runStampmover({"migrate", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db),
                          "--dest-dsn", destCluster().dsn(e.db), "--state-dir", e.dir.path() + "/s2",
                          "--kafka-config", e.kafka_config});
  EXPECT_EQ(c.exit_code, 2) << c.err;
  EXPECT_NE(c.err.find("--cdc kafka"), std::string::npos) << c.err;
  // No bootstrap.servers.
  const std::string empty = e.dir.path() + "/empty.properties";
  writeFile(empty, "# nothing\nclient.id=x\n");
  auto d = runStampmover(migrateArgs(e, {{"--kafka-config", {empty}}}));
  EXPECT_EQ(d.exit_code, 2) << d.err;
  EXPECT_NE(d.err.find("bootstrap.servers"), std::string::npos) << d.err;
  // A cutover's drain needs the connector to commit a position past a marker message: a
  // connector that filters the marker out and sends no heartbeats is refused up front.
  const std::string nomsg = e.dir.path() + "/nomsg.json";
  writeFile(nomsg, R"({"name": "stamp-a", "config": {"connector.class": )"
                   R"("io.debezium.connector.postgresql.PostgresConnector", "topic.prefix": "stamp_a", )"
                   R"("skipped.operations": "none", "message.prefix.include.list": "audit-.*"}})");
  auto f = runStampmover(migrateArgs(e, {{"--debezium-config", {nomsg}}, {"--cutover", {"auto"}},
                                         {"--control-plane-dsn", {"host=127.0.0.1"}}}));
  EXPECT_EQ(f.exit_code, 2) << f.err;
  EXPECT_NE(f.err.find("message.prefix.include.list"), std::string::npos) << f.err;
  EXPECT_NE(f.err.find("heartbeat.interval.ms"), std::string::npos) << f.err;
  // The drain reads the connector's offsets by its name: a flat connector config without a name
  // needs --connector-name.
  const std::string noname = e.dir.path() + "/noname.json";
  writeFile(noname, R"({"connector.class": "io.debezium.connector.postgresql.PostgresConnector", )"
                    R"("topic.prefix": "stamp_a", "skipped.operations": "none"})");
  auto g = runStampmover(migrateArgs(e, {{"--debezium-config", {noname}}, {"--cutover", {"auto"}},
                                         {"--control-plane-dsn", {"host=127.0.0.1"}}}));
  EXPECT_EQ(g.exit_code, 2) << g.err;
  EXPECT_NE(g.err.find("--connector-name"), std::string::npos) << g.err;
  // Nothing was changed at the destination by any of them.
  EXPECT_EQ(scalar(e.dst, "SELECT count(*) FROM orders"), "0");
  EXPECT_EQ(scalar(e.dst, "SELECT to_regclass('stampmover.kafka_offsets') IS NULL"), "t");
}

TEST_F(KafkaMigrateTest, DrainReachesEverythingCommittedBeforeTheFence) {
  ASSERT_NO_FATAL_FAILURE(startSeeded(500));
  Env& e = *env_;
  auto r = runStampmover(migrateArgs(e));  // copy + catch-up to the topics' ends
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Follow the topics in-process (as the migrate's catch-up does) while a writer runs.
  std::map<std::string, std::string> kconf = {{"bootstrap.servers", kafka_.bootstraps()}};
  std::vector<std::string> topics;
  for (int i = 0; i < 6; ++i) topics.push_back(std::string(kPrefix) + ".public." + kTables[i]);
  auto parts = cdc::KafkaDebeziumSource::partitionsOf(kconf, topics, std::chrono::seconds(10));
  ASSERT_TRUE(parts.isOk()) << parts.status().message();
  const std::string migration = scalar(e.dst, "SELECT min(migration) FROM stampmover.kafka_offsets");
  auto stored = stampmover::mover::loadKafkaOffsets(e.dst, migration);
  ASSERT_TRUE(stored.isOk()) << stored.status().message();
  ASSERT_EQ(stored->size(), parts->size());
  cdc::KafkaSourceOptions so;
  so.kafka = kconf;
  for (const auto& s : *stored) so.start.push_back({s.topic, s.partition, s.next_offset});
  std::vector<std::string> names;
  for (int i = 0; i < 6; ++i) names.push_back(std::string("public.") + kTables[i]);
  auto rels = cdc::describeSourceTables(e.src, names);
  ASSERT_TRUE(rels.isOk());
  stampmover::mover::ApplierOptions ao;
  ao.dest_dsn = destCluster().dsn(e.db);
  ao.source_dsn = sourceCluster().dsn(e.db);
  ao.origin_name = stampmover::mover::replicationNameForTenant("42", e.db);
  ao.tenant = "42";
  ao.plain_inserts = false;
  auto applier = stampmover::mover::PgApplier::open(ao);
  ASSERT_TRUE(applier.isOk()) << applier.status().message();
  auto origin = (*applier)->originProgress();
  ASSERT_TRUE(origin.isOk());
  so.first_position = origin->value() + 1;
  auto source = cdc::KafkaDebeziumSource::open(
      so, cdc::DebeziumDecoder({}, cdc::fixedRelations(*rels), cdc::TenantFilter{"42"}));
  ASSERT_TRUE(source.isOk()) << source.status().message();
  auto step = [&]() {
    auto ev = (*source)->next(std::chrono::milliseconds(5));
    ASSERT_TRUE(ev.isOk()) << ev.status().message();
    if (*ev) {
      ASSERT_TRUE((*applier)->apply(std::move(**ev)).isOk());
    } else {
      ASSERT_TRUE((*applier)->commitPending().isOk());
    }
  };
  WriterOptions wo;
  wo.dsn = sourceCluster().dsn(e.db);
  wo.duration = std::chrono::milliseconds(4000);
  wo.seed = 5;
  wo.max_transactions = 1000;
  wo.pause = std::chrono::microseconds(2000);
  wo.truncates = false;
  {
    Writer writer(wo);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (std::chrono::steady_clock::now() < until) ASSERT_NO_FATAL_FAILURE(step());
    writer.stop();  // the fence: nothing commits on the source after this
    ASSERT_GT(writer.transactions(), 50u);
  }
  // The drain, as the cutover runs it: the WAL position after the fence, a marker past it, the
  // connector's committed position at or past it, then every partition up to its end.
  const auto t0 = std::chrono::steady_clock::now();
  auto fence = stampmover::common::Lsn::parse(scalar(e.src, "SELECT pg_current_wal_insert_lsn()::text"));
  ASSERT_TRUE(fence.has_value());
  execOrDie(e.src, "SELECT pg_logical_emit_message(true, 'stampmover-drain', 'm1')");
  auto target = cdc::drainTarget(kconf, kOffsetsTopic, kConnectorName, kPrefix, *parts, *fence,
                                 std::chrono::steady_clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(target.isOk()) << target.status().message();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!(*source)->reached(*target)) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "drain did not reach the target";
    ASSERT_NO_FATAL_FAILURE(step());
  }
  ASSERT_TRUE((*applier)->commitPending().isOk());
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("drain through kafka (connector position + ends + apply): %.1f ms\n", ms);
  // Compared at once, without waiting for the connector: the drain alone brought every change.
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e.src, e.dst));
  // The drain's own cost with the connector caught up (what a cutover window pays for it).
  for (int i = 0; i < 3; ++i) {
    const auto t1 = std::chrono::steady_clock::now();
    auto f = stampmover::common::Lsn::parse(scalar(e.src, "SELECT pg_current_wal_insert_lsn()::text"));
    ASSERT_TRUE(f.has_value());
    execOrDie(e.src, "SELECT pg_logical_emit_message(true, 'stampmover-drain', 'm2')");
    auto t = cdc::drainTarget(kconf, kOffsetsTopic, kConnectorName, kPrefix, *parts, *f,
                              std::chrono::steady_clock::now() + std::chrono::seconds(30), std::chrono::milliseconds(5));
    ASSERT_TRUE(t.isOk()) << t.status().message();
    while (!(*source)->reached(*t)) ASSERT_NO_FATAL_FAILURE(step());
    ASSERT_TRUE((*applier)->commitPending().isOk());
    std::printf("drain through kafka, connector caught up: %.1f ms\n",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count());
  }
}

// The brokers' retained range of one partition, asked directly (not through stampmover's code).
std::pair<int64_t, int64_t> watermarks(const std::string& bootstraps, const std::string& topic,
                                       int32_t partition) {
  char err[512];
  common::KafkaConf conf(rd_kafka_conf_new());
  rd_kafka_conf_set(conf.get(), "bootstrap.servers", bootstraps.c_str(), err, sizeof err);
  common::KafkaHandle rk(rd_kafka_new(RD_KAFKA_CONSUMER, conf.release(), err, sizeof err));
  int64_t low = -1, high = -1;
  EXPECT_EQ(rd_kafka_query_watermark_offsets(rk.get(), topic.c_str(), partition, &low, &high, 10000),
            RD_KAFKA_RESP_ERR_NO_ERROR);
  return {low, high};
}

TEST_F(KafkaMigrateTest, StoredOffsetPastRetentionStopsWithDataLossNamingTheFix) {
  ASSERT_NO_FATAL_FAILURE(startSeeded(200));
  Env& e = *env_;
  auto r = runStampmover(migrateArgs(e));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string topic = std::string(kPrefix) + ".public.orders";
  const std::string stored = scalar(e.dst, "SELECT next_offset FROM stampmover.kafka_offsets WHERE "
                                           "topic = $1 AND partition = 0", {topic});
  ASSERT_FALSE(stored.empty());
  // Changes of tenant 42 the migration has not applied yet (some on partition 0)...
  execOrDie(e.src, "UPDATE orders SET status = 'lost-to-retention' WHERE tenant_id = 42");
  ASSERT_TRUE(dbz_->sync(e.src, "updated"));
  // ...then more than the mock's retention (5 MiB per partition) lands on partition 0: the
  // brokers delete its oldest records, those changes among them.
  std::vector<KafkaRecord> flood;
  for (int i = 0; i < 80; ++i) {
    KafkaRecord big;
    big.topic = topic;
    big.partition = 0;
    big.key = "{\"filler\":" + std::to_string(i) + ",\"pad\":\"" + std::string(100 << 10, 'x') + "\"}";
    flood.push_back(std::move(big));  // tombstones: skipped even if they were read
  }
  kafka_.produce(flood);
  const auto [low, high] = watermarks(kafka_.bootstraps(), topic, 0);
  ASSERT_GT(low, std::stoll(stored)) << "the mock kept the stored offset; high " << high;
  auto lost = runStampmover(migrateArgs(e));
  EXPECT_EQ(lost.exit_code, 4) << lost.err;
  EXPECT_NE(lost.err.find("topic " + topic + " partition 0: stored offset " + stored),
            std::string::npos) << lost.err;
  EXPECT_NE(lost.err.find("retain only offsets " + std::to_string(low) + ".."), std::string::npos)
      << lost.err;
  EXPECT_NE(lost.err.find("stampmover cleanup --tenant 42 --purge-destination"), std::string::npos)
      << lost.err;
  std::printf("%s\n", lost.err.substr(lost.err.find("stampmover: error")).c_str());
  // Partition 0 stopped at the hole: its stored offset did not move past it. (The other
  // partitions are independent and may have gone on; the migration is stopped either way.)
  EXPECT_EQ(scalar(e.dst, "SELECT next_offset FROM stampmover.kafka_offsets WHERE topic = $1 AND "
                          "partition = 0", {topic}),
            stored);
  // The changes deleted by retention are indeed missing at the destination.
  const std::string updated = scalar(e.src, "SELECT count(*) FROM orders WHERE tenant_id = 42");
  EXPECT_LT(std::stoll(scalar(e.dst, "SELECT count(*) FROM orders WHERE status = 'lost-to-retention'")),
            std::stoll(updated));
  // The fix the message gives works: purge, migrate again (a new snapshot), equal.
  auto clean = runStampmover({"cleanup", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db),
                              "--dest-dsn", destCluster().dsn(e.db), "--state-dir",
                              e.dir.path() + "/state", "--purge-destination"});
  ASSERT_EQ(clean.exit_code, 0) << clean.err;
  auto again = runStampmover(migrateArgs(e));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e.src, e.dst));
  EXPECT_NE(scalar(e.dst, "SELECT count(*) FROM orders WHERE status = 'lost-to-retention'"), "0");
}

TEST_F(KafkaMigrateTest, VerifyAfterMigrationIsIdenticalAndCleanupRemovesStoredOffsets) {
  ASSERT_NO_FATAL_FAILURE(startSeeded(1000));
  Env& e = *env_;
  WriterOptions wo;
  wo.dsn = sourceCluster().dsn(e.db);
  wo.duration = std::chrono::milliseconds(3000);
  wo.seed = 31;
  wo.max_transactions = 800;
  wo.pause = std::chrono::microseconds(2000);
  wo.truncates = false;  // see CopiesAndFollowsTopicsUnderConcurrentWriter
  Writer writer(wo);
  auto r = runStampmover(migrateArgs(e));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  writer.stop();
  ASSERT_GT(writer.transactions(), 50u);
  ASSERT_TRUE(dbz_->sync(e.src, "writer-done"));
  auto r2 = runStampmover(migrateArgs(e));  // the writer stopped, the connector synced: caught up
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e.src, e.dst));  // our own ordered SELECTs first
  const std::string report = e.dir.path() + "/verify.json";
  auto v = runStampmover({"verify", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db),
                          "--dest-dsn", destCluster().dsn(e.db), "--state-dir",
                          e.dir.path() + "/state", "--report", report, "--progress", "log"});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  EXPECT_NE(v.out.find("result: IDENTICAL"), std::string::npos) << v.out;
  auto j = nlohmann::json::parse(readFile(report));
  EXPECT_EQ(j["identical"], true);
  EXPECT_GT(j["source_rows"].get<uint64_t>(), 2000u);
  // Cleanup after a Kafka migration: rows, origin and the stored offsets of this migration go.
  const std::string migration = scalar(e.dst, "SELECT min(migration) FROM stampmover.kafka_offsets");
  ASSERT_FALSE(migration.empty());
  // Another migration's offsets at the same destination stay.
  execOrDie(e.dst, "INSERT INTO stampmover.kafka_offsets (migration, topic, partition, next_offset) "
                   "VALUES ('someone-else', 'stamp_c.public.orders', 0, 7)");
  auto clean = runStampmover({"cleanup", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db),
                              "--dest-dsn", destCluster().dsn(e.db), "--state-dir",
                              e.dir.path() + "/state", "--purge-destination"});
  ASSERT_EQ(clean.exit_code, 0) << clean.err;
  EXPECT_EQ(scalar(e.dst, "SELECT count(*) FROM stampmover.kafka_offsets WHERE migration = $1",
                   {migration}),
            "0");
  EXPECT_EQ(scalar(e.dst, "SELECT string_agg(migration, ',') FROM stampmover.kafka_offsets"),
            "someone-else");
  EXPECT_EQ(scalar(e.dst, "SELECT count(*) FROM orders WHERE tenant_id = 42"), "0");
  EXPECT_EQ(scalar(e.dst, "SELECT count(*) FROM pg_replication_origin WHERE roname = $1",
                   {stampmover::mover::replicationNameForTenant("42", e.db)}),
            "0");
  // Idempotent: a second cleanup finds nothing and fails on nothing.
  auto again = runStampmover({"cleanup", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db),
                              "--dest-dsn", destCluster().dsn(e.db), "--state-dir",
                              e.dir.path() + "/state", "--purge-destination"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
}

TEST_F(KafkaMigrateTest, VerifyListsTheRowsOfDeadLetteredEvents) {
  ASSERT_NO_FATAL_FAILURE(startSeeded(200));
  Env& e = *env_;
  auto r = runStampmover(migrateArgs(e));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string changed = scalar(e.src, "SELECT min(order_id) FROM orders WHERE tenant_id = 42");
  const std::string untouched = scalar(e.src, "SELECT max(order_id) FROM orders WHERE tenant_id = 42");
  const std::string other = scalar(e.src, "SELECT min(order_id) FROM orders WHERE tenant_id = 1");
  ASSERT_NE(changed, untouched);
  // A change of order (42, changed) whose event reaches Kafka corrupted: the connector is
  // stopped so that only the corrupted record is published.
  dbz_.reset();
  execOrDie(e.src, "UPDATE orders SET status = 'changed-under-a-bad-event' WHERE tenant_id = 42 AND "
                   "order_id = " + changed);
  const std::string topic = std::string(kPrefix) + ".public.orders";
  auto bad = [&](const std::string& tenant, const std::string& order) {
    KafkaRecord rec;
    rec.topic = topic;
    rec.partition = 1;
    rec.key = R"({"tenant_id":)" + tenant + R"(,"order_id":)" + order + "}";
    rec.value = R"({"op":"u","after":{"tenant_id":)" + tenant +
                R"(},"source":{"schema":"public","table":"orders"}})";
    return rec;
  };
  // The same corruption for a row that did not change, and for another tenant's row (skipped by
  // the tenant filter before it is decoded further: never dead-lettered).
  kafka_.produce({bad("42", changed), bad("42", untouched), bad("1", other)});
  const std::string dead = e.dir.path() + "/dead.jsonl";
  auto went_on = runStampmover(migrateArgs(e, {{"--on-bad-event", {"dead-letter", dead}}}));
  ASSERT_EQ(went_on.exit_code, 0) << went_on.err;
  // The dead-letter lines carry the record's key.
  std::ifstream lines(dead);
  std::string first;
  ASSERT_TRUE(std::getline(lines, first));
  auto line = nlohmann::json::parse(first);
  EXPECT_EQ(line["key"]["order_id"].dump(), changed) << first;
  EXPECT_EQ(line["key"]["tenant_id"], 42) << first;
  EXPECT_EQ(readFile(dead).find(R"("tenant_id":1,)"), std::string::npos) << readFile(dead);
  // A line for another tenant's row (a corruption the tenant filter could not see) is not
  // this tenant's concern.
  std::ofstream(dead, std::ios::app)
      << nlohmann::json{{"topic", topic}, {"partition", 2}, {"offset", 3}, {"reason", "test"},
                        {"key", {{"tenant_id", 1}, {"order_id", std::stoll(other)}}}}.dump()
      << "\n";
  // Independently: the row differs at the destination, the untouched one does not.
  const std::string row_sql = "SELECT status FROM orders WHERE tenant_id = 42 AND order_id = $1";
  EXPECT_EQ(scalar(e.src, row_sql, {changed}), "changed-under-a-bad-event");
  EXPECT_NE(scalar(e.dst, row_sql, {changed}), "changed-under-a-bad-event");
  EXPECT_EQ(scalar(e.dst, row_sql, {untouched}), scalar(e.src, row_sql, {untouched}));
  const std::string report = e.dir.path() + "/verify.json";
  auto v = runStampmover({"verify", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db),
                          "--dest-dsn", destCluster().dsn(e.db), "--state-dir",
                          e.dir.path() + "/state", "--report", report, "--progress", "log",
                          "--dead-letter", dead});
  EXPECT_EQ(v.exit_code, 1) << v.out << v.err;
  EXPECT_NE(v.out.find("DIFFERENT public.orders (tenant_id=42, order_id=" + changed + "): the rows "
                       "differ; dead-lettered topic " + topic + " partition 1 offset"),
            std::string::npos) << v.out;
  EXPECT_NE(v.out.find("equal     public.orders (tenant_id=42, order_id=" + untouched + ")"),
            std::string::npos) << v.out;
  EXPECT_EQ(v.out.find("(tenant_id=1, "), std::string::npos) << "another tenant's: " << v.out;
  EXPECT_NE(v.out.find("dead letters: FAILED"), std::string::npos) << v.out;
  auto j = nlohmann::json::parse(readFile(report));
  const auto& dl = j["dead_letters"];
  EXPECT_EQ(dl["events"], 3);
  EXPECT_EQ(dl["differing"], 1);
  EXPECT_EQ(dl["equal"], 1);
  EXPECT_EQ(dl["other_tenants"], 1);
  EXPECT_EQ(dl["rows"][0]["table"], "public.orders");
  EXPECT_EQ(dl["rows"][0]["key"]["order_id"], changed);
  EXPECT_EQ(dl["rows"][0]["state"], "different");
  EXPECT_EQ(j["failed"], true);
  // Once the row is repaired at the destination, the dead letters no longer fail verify.
  execOrDie(e.dst, "UPDATE orders SET status = 'changed-under-a-bad-event' WHERE tenant_id = 42 "
                   "AND order_id = " + changed);
  auto v2 = runStampmover({"verify", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db),
                           "--dest-dsn", destCluster().dsn(e.db), "--state-dir",
                           e.dir.path() + "/state", "--progress", "log", "--dead-letter", dead});
  EXPECT_EQ(v2.exit_code, 0) << v2.out << v2.err;
  EXPECT_NE(v2.out.find("equal     public.orders (tenant_id=42, order_id=" + changed + ")"),
            std::string::npos) << v2.out;
  // Without --dead-letter, verify reads the files the migration recorded in its state (migrate
  // with --on-bad-event dead-letter notes the file's absolute path).
  {
    auto store = stampmover::mover::openRocksDbCheckpointStore({e.dir.path() + "/state", false});
    ASSERT_TRUE(store.isOk()) << store.status().message();
    auto recs = (*store)->listMigrations();
    ASSERT_TRUE(recs.isOk());
    ASSERT_EQ(recs->size(), 1u);
    auto note = (*store)->loadNote(recs->front().id, "dead_letter_files");
    ASSERT_TRUE(note.isOk() && note->has_value()) << "migrate did not record its dead-letter file";
    EXPECT_EQ(**note, nlohmann::json::array({dead}).dump());
  }
  execOrDie(e.dst, "UPDATE orders SET status = 'broken-again' WHERE tenant_id = 42 AND order_id = " +
                       changed);
  auto v3 = runStampmover({"verify", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db),
                           "--dest-dsn", destCluster().dsn(e.db), "--state-dir",
                           e.dir.path() + "/state", "--progress", "log"});
  EXPECT_EQ(v3.exit_code, 1) << v3.out << v3.err;
  EXPECT_NE(v3.out.find("dead-lettered events (" + dead + "): 3"), std::string::npos) << v3.out;
  EXPECT_NE(v3.out.find("DIFFERENT public.orders (tenant_id=42, order_id=" + changed + ")"),
            std::string::npos) << v3.out;
}

TEST_F(KafkaMigrateTest, VerifyDeadLetterKeysInEveryFormOrUnidentifiable) {
  ASSERT_NO_FATAL_FAILURE(startSeeded(100));
  Env& e = *env_;
  auto r = runStampmover(migrateArgs(e));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_NO_FATAL_FAILURE(expectTenantEqual(e.src, e.dst));
  const std::string order = scalar(e.src, "SELECT min(order_id) FROM orders WHERE tenant_id = 42");
  const std::string topic = std::string(kPrefix) + ".public.orders";
  // Dead-letter lines as migrate writes them, with the key in each form a record may carry.
  auto lineWith = [&](const std::string& t, const nlohmann::json& key) {
    return nlohmann::json{{"topic", t}, {"partition", 0}, {"offset", 1}, {"reason", "test"},
                          {"key", key}, {"value", "{}"}}.dump() + "\n";
  };
  const int64_t id = std::stoll(order);
  std::string text;
  // Debezium's JSON converter with schemas: {"schema": ..., "payload": {...}}.
  text += lineWith(topic, {{"schema", {{"type", "struct"}}},
                           {"payload", {{"tenant_id", 42}, {"order_id", id}}}});
  // A key that was not JSON when read is kept as text; this one is JSON text.
  text += lineWith(topic, nlohmann::json{{"tenant_id", 42}, {"order_id", id}}.dump());
  text += lineWith(topic, {{"tenant_id", 42}});                              // lacks order_id
  text += lineWith(topic, {{"tenant_id", 42}, {"order_id", "not-a-number"}});  // bigint rejects it
  text += lineWith("stamp_a.public.no_such_table", {{"tenant_id", 42}, {"order_id", id}});
  text += lineWith(topic, nullptr);                                          // no key
  text += "not json\n";
  const std::string dead = e.dir.path() + "/dead.jsonl";
  writeFile(dead, text);
  const std::string report = e.dir.path() + "/verify.json";
  auto v = runStampmover({"verify", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db),
                          "--dest-dsn", destCluster().dsn(e.db), "--state-dir",
                          e.dir.path() + "/state", "--report", report, "--progress", "log",
                          "--dead-letter", dead});
  // The tenant's rows are identical, but five events cannot be tied to a row: not vouched for.
  EXPECT_EQ(v.exit_code, 1) << v.out << v.err;
  EXPECT_NE(v.out.find("result: IDENTICAL"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("UNKNOWN   line 3, topic " + topic + " partition 0 offset 1: the record key "
                       "lacks primary-key column order_id"),
            std::string::npos) << v.out;
  EXPECT_NE(v.out.find("UNKNOWN   line 4"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("is not a valid key of public.orders"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("no_such_table is not the topic of a tenant table"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("the record has no key"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("line 7 is not a JSON object"), std::string::npos) << v.out;
  auto j = nlohmann::json::parse(readFile(report));
  const auto& dl = j["dead_letters"];
  EXPECT_EQ(dl["events"], 7);
  EXPECT_EQ(dl["equal"], 2);
  EXPECT_EQ(dl["differing"], 0);
  EXPECT_EQ(dl["unidentified"], 5);
  EXPECT_EQ(dl["rows"][0]["key"]["order_id"], order);
  EXPECT_EQ(dl["rows"][1]["state"], "equal");
  EXPECT_EQ(j["identical"], true);
  EXPECT_EQ(j["failed"], true);
  // A file that is not there: refused before anything is compared.
  auto missing = runStampmover({"verify", "--tenant", "42", "--source-dsn", sourceCluster().dsn(e.db),
                                "--dest-dsn", destCluster().dsn(e.db), "--dead-letter",
                                e.dir.path() + "/nope.jsonl"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE((missing.out + missing.err).find("nope.jsonl"), std::string::npos) << missing.err;
}

}  // namespace
