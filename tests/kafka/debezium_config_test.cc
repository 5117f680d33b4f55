// Unit tests of the connector-config preflight. The configurations are written in the shape
// Kafka Connect's REST API returns (GET /connectors/<name>), with setting names and defaults
// from Debezium's PostgreSQL connector documentation ("Connector properties").
#include "cdc/debezium_config.h"

#include <gtest/gtest.h>

namespace stampmover::cdc {
namespace {

std::shared_ptr<const common::Relation> table(const std::string& name, char identity,
                                              bool tenant_in_key,
                                              std::vector<common::RelationColumn> extra = {}) {
  auto r = std::make_shared<common::Relation>();
  r->schema = "public";
  r->name = name;
  r->replica_identity = identity;
  r->columns = {{"tenant_id", 20, -1, tenant_in_key}, {"id", 20, -1, true}};
  for (auto& c : extra) r->columns.push_back(c);
  return r;
}

const char* kGood = R"J({"name":"stamp-a","config":{
  "connector.class":"io.debezium.connector.postgresql.PostgresConnector",
  "topic.prefix":"stamp_a","plugin.name":"pgoutput","skipped.operations":"none",
  "decimal.handling.mode":"string","time.precision.mode":"adaptive_time_microseconds",
  "interval.handling.mode":"string","binary.handling.mode":"hex",
  "table.include.list":"public\\.(items|orders)",
  "transforms":"route","transforms.route.type":"org.apache.kafka.connect.transforms.RegexRouter",
  "tasks.max":1}})J";

std::vector<std::shared_ptr<const common::Relation>> tables() {
  return {table("items", 'd', true, {{"price", 1700, -1, false}, {"at", 1114, -1, false},
                                     {"span", 1186, -1, false}, {"data", 17, -1, false}}),
          table("orders", 'f', false)};
}

std::vector<std::string> problems(const std::string& patch_key, const std::string& patch_value,
                                  bool erase = false) {
  auto cfg = parseConnectorConfig(kGood);
  EXPECT_TRUE(cfg.isOk());
  if (erase) {
    cfg->settings.erase(patch_key);
  } else if (!patch_key.empty()) {
    cfg->settings[patch_key] = patch_value;
  }
  return connectorProblems(*cfg, tables(), TenantFilter{"42"});
}

bool mentions(const std::vector<std::string>& p, const std::string& what) {
  for (const auto& s : p)
    if (s.find(what) != std::string::npos) return true;
  return false;
}

TEST(DebeziumConfig, AcceptsASafeConfigAndDerivesModes) {
  auto cfg = parseConnectorConfig(kGood);
  ASSERT_TRUE(cfg.isOk());
  EXPECT_EQ(cfg->get("tasks.max"), "1");
  auto s = checkConnectorConfig(*cfg, tables(), TenantFilter{"42"});
  ASSERT_TRUE(s.isOk()) << s.status().message();
  EXPECT_EQ(s->topic_prefix, "stamp_a");
  EXPECT_EQ(s->modes.decimal, DecimalMode::kString);
  EXPECT_EQ(s->modes.time, TimePrecisionMode::kAdaptiveTimeMicroseconds);
  EXPECT_EQ(s->modes.binary, BinaryMode::kHex);
  EXPECT_EQ(s->modes.placeholder, "__debezium_unavailable_value");
}

TEST(DebeziumConfig, FlatShapeParses) {
  auto cfg = parseConnectorConfig(R"({"connector.class":"x","skipped.operations":"none"})");
  ASSERT_TRUE(cfg.isOk());
  EXPECT_EQ(cfg->get("skipped.operations"), "none");
  EXPECT_FALSE(parseConnectorConfig("[1]").isOk());
}

TEST(DebeziumConfig, SkippedOperationsDefaultDropsTruncates) {
  auto p = problems("skipped.operations", "", true);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_TRUE(mentions(p, "skipped.operations=none"));
  EXPECT_TRUE(mentions(problems("skipped.operations", "t"), "\"t\""));
  EXPECT_EQ(problems("skipped.operations", "u,d").size(), 2u);
}

TEST(DebeziumConfig, LossyModesAreRefused) {
  EXPECT_TRUE(mentions(problems("decimal.handling.mode", "double"), "decimal.handling.mode=precise"));
  EXPECT_TRUE(mentions(problems("time.precision.mode", "connect"), "time.precision.mode=adaptive"));
  EXPECT_TRUE(mentions(problems("interval.handling.mode", "numeric"), "interval.handling.mode=string"));
  // The interval default (numeric) is refused too, since the table has an interval column.
  EXPECT_TRUE(mentions(problems("interval.handling.mode", "", true), "(default)"));
  EXPECT_TRUE(mentions(problems("binary.handling.mode", "raw"), "binary.handling.mode"));
  EXPECT_TRUE(problems("decimal.handling.mode", "precise").empty());
  EXPECT_TRUE(problems("time.precision.mode", "adaptive").empty());
}

TEST(DebeziumConfig, PlaceholderFormsIndistinguishableFromDataAreRefused) {
  auto p = problems("unavailable.value.placeholder", "");
  EXPECT_TRUE(mentions(p, "unavailable.value.placeholder is empty"));
  // ...and the bytea column of a REPLICA IDENTITY DEFAULT table is named too.
  EXPECT_TRUE(mentions(p, "public.items.data"));
  EXPECT_TRUE(mentions(problems("unavailable.value.placeholder", "hex:zz"), "not valid hex"));
  EXPECT_TRUE(problems("unavailable.value.placeholder", "hex:00ff").empty());
  auto cfg = parseConnectorConfig(kGood);
  auto arr = connectorProblems(*cfg, {table("t", 'd', true, {{"ids", 1016, -1, false}})},
                               TenantFilter{"42"});
  EXPECT_TRUE(mentions(arr, "public.t.ids"));
  EXPECT_TRUE(mentions(arr, "REPLICA IDENTITY FULL"));
}

TEST(DebeziumConfig, TransformsThatRewriteFieldsAreRefused) {
  auto cfg = parseConnectorConfig(kGood);
  cfg->settings["transforms"] = "route,unwrap";
  cfg->settings["transforms.unwrap.type"] = "io.debezium.transforms.ExtractNewRecordState";
  auto p = connectorProblems(*cfg, tables(), TenantFilter{"42"});
  ASSERT_EQ(p.size(), 1u);
  EXPECT_TRUE(mentions(p, "\"unwrap\""));
  EXPECT_TRUE(mentions(problems("column.mask.with.12.chars", "public.items.name"), "column.mask"));
  EXPECT_TRUE(mentions(problems("column.exclude.list", "public\\.items\\.price"),
                       "public.items.price"));
}

TEST(DebeziumConfig, TablesMustBeCapturedAndKeyedByTheTenant) {
  EXPECT_TRUE(mentions(problems("table.include.list", "public\\.items"), "public.orders"));
  auto cfg = parseConnectorConfig(kGood);
  auto p = connectorProblems(*cfg, {table("events", 'd', false)}, TenantFilter{"42"});
  EXPECT_TRUE(mentions(p, "public.events has REPLICA IDENTITY DEFAULT whose key lacks tenant column"));
  EXPECT_TRUE(mentions(p, "REPLICA IDENTITY FULL"));
  // The per-table tenant column is the one checked.
  TenantFilter per{"42"};
  per.per_table["public.events"] = "id";
  cfg->settings["table.include.list"] = ".*";
  auto none = connectorProblems(*cfg, {table("events", 'd', false)}, per);
  EXPECT_TRUE(none.empty()) << none.front();
  EXPECT_TRUE(mentions(connectorProblems(*cfg, {table("n", 'n', true)}, TenantFilter{"42"}),
                       "NOTHING"));
  cfg->settings["message.key.columns"] = "public.events:tenant_id,payload";
  EXPECT_TRUE(mentions(connectorProblems(*cfg, {table("events", 'd', true)}, TenantFilter{"42"}),
                       "message.key.columns"));
  auto refused = checkConnectorConfig(*cfg, {table("events", 'd', false)}, TenantFilter{"42"});
  ASSERT_FALSE(refused.isOk());
  EXPECT_EQ(refused.status().errorClass(), common::ErrorClass::kRefused);
}

}  // namespace
}  // namespace stampmover::cdc
