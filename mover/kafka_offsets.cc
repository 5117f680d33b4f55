// stampmover.kafka_offsets: keyed by (migration, topic, partition); see kafka_offsets.h.
#include "mover/kafka_offsets.h"

#include <cstdlib>

namespace stampmover::mover {

using common::Result;
using common::Status;

namespace {

// A PostgreSQL array literal of text elements, every element quoted (any content is safe).
std::string textArray(const std::vector<std::string>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';
    out += '"';
    for (char c : items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

}  // namespace

Status ensureKafkaOffsetsTable(common::PgConnection& dest) {
  return dest.exec(
      "CREATE SCHEMA IF NOT EXISTS stampmover; "
      "CREATE TABLE IF NOT EXISTS stampmover.kafka_offsets (migration text NOT NULL, "
      "topic text NOT NULL, partition integer NOT NULL, next_offset bigint NOT NULL, "
      "updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (migration, topic, partition)); "
      "CREATE TABLE IF NOT EXISTS stampmover.kafka_applied (origin text PRIMARY KEY, "
      "migration text NOT NULL, source_lsn pg_lsn NOT NULL, "
      "updated_at timestamptz NOT NULL DEFAULT now())");
}

Status resetKafkaWatermark(common::PgConnection& dest, const std::string& migration,
                           const std::string& origin) {
  auto res = dest.query(
      "INSERT INTO stampmover.kafka_applied (origin, migration, source_lsn) VALUES ($1, $2, '0/0') "
      "ON CONFLICT (origin) DO UPDATE SET migration = EXCLUDED.migration, source_lsn = '0/0', "
      "updated_at = now()",
      {origin, migration});
  return res.isOk() ? Status::ok() : res.status();
}

Status ensureKafkaWatermark(common::PgConnection& dest, const std::string& migration,
                            const std::string& origin) {
  auto res = dest.query(
      "INSERT INTO stampmover.kafka_applied (origin, migration, source_lsn) VALUES ($1, $2, '0/0') "
      "ON CONFLICT (origin) DO NOTHING",
      {origin, migration});
  return res.isOk() ? Status::ok() : res.status();
}

Status storeKafkaWatermark(common::PgConnection& dest, const std::string& origin, common::Lsn lsn) {
  auto res = dest.query(
      "UPDATE stampmover.kafka_applied SET source_lsn = $2::pg_lsn, updated_at = now() "
      "WHERE origin = $1 AND source_lsn < $2::pg_lsn",
      {origin, lsn.toString()});
  return res.isOk() ? Status::ok() : res.status();
}

Result<std::optional<common::Lsn>> loadKafkaWatermark(common::PgConnection& dest,
                                                      const std::string& origin) {
  SM_ASSIGN_OR_RETURN(auto exists,
                      dest.queryValue("SELECT to_regclass('stampmover.kafka_applied') IS NOT NULL"));
  if (exists.value_or("f") != "t") return std::optional<common::Lsn>();
  SM_ASSIGN_OR_RETURN(auto v, dest.queryValue("SELECT source_lsn::text FROM "
                                              "stampmover.kafka_applied WHERE origin = $1",
                                              {origin}));
  if (!v) return std::optional<common::Lsn>();
  auto l = common::Lsn::parse(*v);
  if (!l) return Status::internal("unparseable stampmover.kafka_applied.source_lsn '" + *v + "'");
  return std::optional<common::Lsn>(*l);
}

namespace {

// Which of the two tables exist (a destination written by an older version has only offsets).
Result<std::pair<bool, bool>> kafkaTables(common::PgConnection& dest) {
  SM_ASSIGN_OR_RETURN(auto v, dest.queryValue(
                                  "SELECT (to_regclass('stampmover.kafka_offsets') IS NOT NULL)::text "
                                  "|| (to_regclass('stampmover.kafka_applied') IS NOT NULL)::text"));
  const std::string t = v.value_or("falsefalse");
  return std::make_pair(t.rfind("true", 0) == 0, t.size() >= 4 && t.compare(t.size() - 4, 4, "true") == 0);
}

}  // namespace

Result<bool> kafkaStateExists(common::PgConnection& dest, const std::string& migration) {
  SM_ASSIGN_OR_RETURN(auto tables, kafkaTables(dest));
  if (tables.first) {
    SM_ASSIGN_OR_RETURN(auto v, dest.queryValue("SELECT EXISTS (SELECT 1 FROM stampmover.kafka_offsets "
                                                "WHERE migration = $1)",
                                                {migration}));
    if (v.value_or("f") == "t") return true;
  }
  if (tables.second) {
    SM_ASSIGN_OR_RETURN(auto v, dest.queryValue("SELECT EXISTS (SELECT 1 FROM stampmover.kafka_applied "
                                                "WHERE migration = $1)",
                                                {migration}));
    if (v.value_or("f") == "t") return true;
  }
  return false;
}

Status dropKafkaState(common::PgConnection& dest, const std::string& migration) {
  SM_ASSIGN_OR_RETURN(auto tables, kafkaTables(dest));
  if (tables.first) SM_RETURN_IF_ERROR(dropKafkaOffsets(dest, migration));
  if (tables.second) {
    auto res = dest.query("DELETE FROM stampmover.kafka_applied WHERE migration = $1", {migration});
    if (!res) return res.status();
  }
  return Status::ok();
}

Result<std::vector<KafkaOffset>> loadKafkaOffsets(common::PgConnection& dest,
                                                  const std::string& migration) {
  SM_ASSIGN_OR_RETURN(
      auto res, dest.query("SELECT topic, partition, next_offset FROM stampmover.kafka_offsets "
                           "WHERE migration = $1 ORDER BY topic, partition",
                           {migration}));
  std::vector<KafkaOffset> out;
  for (int r = 0; r < PQntuples(res.get()); ++r) {
    out.push_back({common::cell(res, r, 0),
                   static_cast<int32_t>(std::strtol(common::cell(res, r, 1).c_str(), nullptr, 10)),
                   std::strtoll(common::cell(res, r, 2).c_str(), nullptr, 10)});
  }
  return out;
}

std::vector<TxnStatement> kafkaOffsetStatements(const std::string& migration,
                                                const std::vector<KafkaOffset>& offsets) {
  if (offsets.empty()) return {};
  std::vector<std::string> topics;
  std::string parts = "{", offs = "{";
  for (size_t i = 0; i < offsets.size(); ++i) {
    topics.push_back(offsets[i].topic);
    parts += (i ? "," : "") + std::to_string(offsets[i].partition);
    offs += (i ? "," : "") + std::to_string(offsets[i].next_offset);
  }
  TxnStatement s;
  s.sql =
      "INSERT INTO stampmover.kafka_offsets AS k (migration, topic, partition, next_offset) "
      "SELECT $1, t, p, o FROM unnest($2::text[], $3::integer[], $4::bigint[]) AS u(t, p, o) "
      "ON CONFLICT (migration, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, "
      "updated_at = now() WHERE k.next_offset IS DISTINCT FROM EXCLUDED.next_offset";
  s.params = {migration, textArray(topics), parts + "}", offs + "}"};
  return {std::move(s)};
}

Status dropKafkaOffsets(common::PgConnection& dest, const std::string& migration) {
  auto res = dest.query("DELETE FROM stampmover.kafka_offsets WHERE migration = $1", {migration});
  return res.isOk() ? Status::ok() : res.status();
}

}  // namespace stampmover::mover
