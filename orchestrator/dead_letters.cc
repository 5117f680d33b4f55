// checkDeadLetters(): see dead_letters.h. Keys arrive as Debezium encodes them (JSON, with or
// without the schema wrapper); integer, text and uuid keys are taken as they are, and a key value
// its column's type rejects marks the event unidentified instead of failing the verify.
#include "orchestrator/dead_letters.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

namespace stampmover::orch {

using common::PgConnection;
using common::PgParam;
using common::Result;
using common::Status;

namespace {

const mover::TableInfo* tableOfTopic(const std::vector<mover::TableInfo>& tables,
                                     const std::string& topic) {
  const mover::TableInfo* best = nullptr;
  for (const auto& t : tables) {
    const std::string suffix = "." + t.schema + "." + t.name;
    if (topic.size() > suffix.size() &&
        topic.compare(topic.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        (best == nullptr || t.key().size() > best->key().size())) {
      best = &t;
    }
  }
  return best;
}

// Fills row.table/key/verdict from one parsed dead-letter line.
void identify(const nlohmann::json& j, const std::vector<mover::TableInfo>& tables,
              const std::string& tenant, DeadLetterRow& row, const mover::TableInfo** table) {
  *table = tableOfTopic(tables, row.topic);
  if (*table == nullptr) {
    row.why = "topic " + row.topic + " is not the topic of a tenant table";
    return;
  }
  row.table = (*table)->key();
  nlohmann::json key = j.contains("key") ? j["key"] : nlohmann::json();
  if (key.is_string()) {
    auto parsed = nlohmann::json::parse(key.get<std::string>(), nullptr, false);
    if (!parsed.is_discarded()) key = std::move(parsed);
  }
  if (key.is_object() && key.contains("payload") && key.contains("schema")) key = key["payload"];
  if (!j.contains("key")) {
    row.why = "the line has no key (written before dead-letter lines carried the record key)";
    return;
  }
  if (!key.is_object()) {
    row.why = key.is_null() ? "the record has no key" : "the record key is not a JSON object";
    return;
  }
  for (const auto& col : (*table)->primary_key) {
    if (!key.contains(col)) {
      row.key.clear();
      row.why = "the record key lacks primary-key column " + col;
      return;
    }
    const auto& v = key[col];
    if (v.is_null()) {
      row.key.emplace_back(col, std::nullopt);
    } else if (v.is_string()) {
      row.key.emplace_back(col, v.get<std::string>());
    } else if (v.is_number() || v.is_boolean()) {
      row.key.emplace_back(col, v.dump());
    } else {
      row.key.clear();
      row.why = "primary-key column " + col + " is not a plain value in the record key";
      return;
    }
  }
  for (const auto& [col, v] : row.key) {
    if (col == (*table)->tenant_column && v != tenant) {
      row.verdict = DeadLetterRow::Verdict::kOtherTenant;
      return;
    }
  }
  row.verdict = DeadLetterRow::Verdict::kRow;
}

}  // namespace

Result<std::vector<DeadLetterRow>> checkDeadLetters(const std::string& path, PgConnection& src,
                                                    PgConnection& dst,
                                                    const std::vector<mover::TableInfo>& tables,
                                                    const std::string& tenant) {
  std::ifstream in(path);
  if (!in) {
    return Status::refused(
        "cannot read dead-letter file " + path +
        " (--dead-letter: the FILE given to migrate --on-bad-event dead-letter)");
  }
  std::vector<DeadLetterRow> rows;
  std::map<const mover::TableInfo*, std::vector<size_t>> by_table;  // rows to compare
  std::string text;
  uint64_t n = 0;
  while (std::getline(in, text)) {
    ++n;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    DeadLetterRow row;
    row.file = path;
    row.line = n;
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      row.why = "line " + std::to_string(n) + " is not a JSON object";
      rows.push_back(std::move(row));
      continue;
    }
    row.topic = j.value("topic", std::string());
    row.partition = j.value("partition", int32_t{0});
    row.offset = j.value("offset", int64_t{-1});
    row.reason = j.value("reason", std::string());
    const mover::TableInfo* table = nullptr;
    identify(j, tables, tenant, row, &table);
    rows.push_back(std::move(row));
    if (rows.back().verdict == DeadLetterRow::Verdict::kRow)
      by_table[table].push_back(rows.size() - 1);
  }
  for (const auto& [table, idx] : by_table) {
    std::vector<std::vector<PgParam>> keys;
    for (size_t i : idx) {
      std::vector<PgParam> k;
      for (const auto& [col, v] : rows[i].key) k.push_back(v);
      keys.push_back(std::move(k));
    }
    auto states = compareRowsByKey(src, dst, *table, keys, tenant);
    if (states) {
      for (size_t i = 0; i < idx.size(); ++i) rows[idx[i]].state = (*states)[i];
      continue;
    }
    // A key value its column's type rejects (class 22: data exception) fails the whole
    // statement: compare key by key to find which events are not identifiable.
    if (states.status().sqlState().rfind("22", 0) != 0) return states.status();
    for (size_t i = 0; i < idx.size(); ++i) {
      auto one = compareRowsByKey(src, dst, *table, {keys[i]}, tenant);
      if (one) {
        rows[idx[i]].state = (*one)[0];
      } else if (one.status().sqlState().rfind("22", 0) == 0) {
        rows[idx[i]].verdict = DeadLetterRow::Verdict::kUnidentified;
        rows[idx[i]].why = "the record key is not a valid key of " + table->key() + " (" +
                           one.status().message() + ")";
      } else {
        return one.status();
      }
    }
  }
  return rows;
}

}  // namespace stampmover::orch
