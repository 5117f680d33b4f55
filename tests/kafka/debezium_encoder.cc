// Debezium's encodings of the demo schema's PostgreSQL types (see debezium_encoder.h).
#include "tests/kafka/debezium_encoder.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <functional>

namespace stampmover::testing {

using json = nlohmann::json;

namespace {

const char* kPlaceholder = "__debezium_unavailable_value";

std::string b64(const std::string& in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t)in[i] << 16 | (uint8_t)in[i + 1] << 8 | (uint8_t)in[i + 2];
    for (int s = 18; s >= 0; s -= 6) out += k[(v >> s) & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = (uint8_t)in[i] << 16;
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t)in[i] << 16 | (uint8_t)in[i + 1] << 8;
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// Connect's Decimal: the unscaled value as big-endian two's complement, minimal length.
std::pair<std::string, int> unscaled(const std::string& text) {
  bool neg = !text.empty() && text[0] == '-';
  std::string digits;
  int scale = 0;
  bool frac = false;
  for (char c : text) {
    if (c == '.') frac = true;
    else if (c >= '0' && c <= '9') {
      digits += c;
      if (frac) ++scale;
    }
  }
  std::vector<uint8_t> mag = {0};
  for (char d : digits) {
    int carry = d - '0';
    for (size_t i = mag.size(); i-- > 0;) {
      int v = mag[i] * 10 + carry;
      mag[i] = v & 0xff;
      carry = v >> 8;
    }
    while (carry) {
      mag.insert(mag.begin(), carry & 0xff);
      carry >>= 8;
    }
  }
  while (mag.size() > 1 && mag[0] == 0 && !(mag[1] & 0x80)) mag.erase(mag.begin());
  if (mag[0] & 0x80) mag.insert(mag.begin(), 0);
  if (neg) {
    for (auto& b : mag) b = ~b;
    for (size_t i = mag.size(); i-- > 0;)
      if (++mag[i] != 0) break;
  }
  return {std::string(mag.begin(), mag.end()), scale};
}

int64_t daysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

// "YYYY-MM-DD HH:MM:SS[.ffffff]" -> microseconds since the Unix epoch.
int64_t timestampMicros(const std::string& t) {
  int y, mo, d, h, mi, s;
  EXPECT_EQ(std::sscanf(t.c_str(), "%d-%d-%d %d:%d:%d", &y, &mo, &d, &h, &mi, &s), 6) << t;
  int64_t us = 0;
  auto dot = t.find('.');
  if (dot != std::string::npos) {
    std::string f = t.substr(dot + 1, 6);
    while (f.size() < 6) f += '0';
    us = std::stoll(f);
  }
  return (daysFromCivil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) * 1'000'000LL + us;
}

// A one-dimensional PostgreSQL array literal of text -> JSON array.
json textArray(const std::string& lit) {
  json out = json::array();
  size_t i = 1;
  while (i < lit.size() && lit[i] != '}') {
    if (lit[i] == '"') {
      std::string v;
      for (++i; lit[i] != '"'; ++i) {
        if (lit[i] == '\\') ++i;
        v += lit[i];
      }
      ++i;
      out.push_back(v);
    } else {
      size_t e = lit.find_first_of(",}", i);
      std::string v = lit.substr(i, e - i);
      if (v == "NULL") out.push_back(nullptr);
      else out.push_back(v);
      i = e;
    }
    if (lit[i] == ',') ++i;
  }
  return out;
}

json valueOf(const common::RelationColumn& col, const common::Datum& d) {
  if (d.kind == common::Datum::Kind::kNull) return nullptr;
  if (d.kind == common::Datum::Kind::kUnchangedToast) {
    if (col.type_oid == 17) return b64(kPlaceholder);
    if (col.type_oid == 1009) return json::array({kPlaceholder});
    return kPlaceholder;
  }
  const std::string& t = d.text;
  switch (col.type_oid) {
    case 16: return t == "t";
    case 20: case 21: case 23: case 26: return std::stoll(t);  // oid: INT64 in Debezium
    case 700: case 701:
      if (t == "NaN" || t == "Infinity" || t == "-Infinity") return t;
      return json::parse(t);
    case 1700: {
      auto [raw, scale] = unscaled(t);
      if (col.type_modifier >= 4) return b64(raw);
      return json{{"scale", scale}, {"value", b64(raw)}};
    }
    case 17: {  // "\x..." -> bytes
      std::string raw;
      for (size_t i = 2; i + 1 < t.size(); i += 2) raw += static_cast<char>(std::stoi(t.substr(i, 2), nullptr, 16));
      return b64(raw);
    }
    case 1114: return timestampMicros(t);
    case 1184: {  // "2024-01-02 03:04:05.123+00" -> ZonedTimestamp "2024-01-02T03:04:05.123Z"
      if (t == "infinity" || t == "-infinity") return t;  // stampmover's own fence tables
      std::string z = t;
      z[10] = 'T';
      auto plus = z.rfind('+');
      EXPECT_NE(plus, std::string::npos) << t;
      return z.substr(0, plus) + "Z";
    }
    case 1009: return textArray(t);
    case 25: case 1043: case 2950: case 3802: case 114: return t;
    default:
      ADD_FAILURE() << "encoder: type oid " << col.type_oid << " of " << col.name;
      return t;
  }
}

json rowOf(const common::Relation& rel, const common::Tuple& tuple, bool key_only) {
  json row = json::object();
  for (size_t i = 0; i < rel.columns.size() && i < tuple.size(); ++i) {
    if (key_only && !rel.columns[i].part_of_key) {
      row[rel.columns[i].name] = nullptr;
      continue;
    }
    row[rel.columns[i].name] = valueOf(rel.columns[i], tuple[i]);
  }
  return row;
}

json keyOf(const common::Relation& rel, const common::Tuple& tuple) {
  json key = json::object();
  for (size_t i = 0; i < rel.columns.size(); ++i)
    if (rel.columns[i].part_of_key) key[rel.columns[i].name] = valueOf(rel.columns[i], tuple[i]);
  return key;
}

}  // namespace

std::vector<KafkaRecord> DebeziumEncoder::encode(const common::Change& ch, uint64_t lsn,
                                                 uint32_t xid, bool snapshot) {
  std::vector<KafkaRecord> out;
  auto envelope = [&](const common::Relation& rel, const char* op, json before, json after) {
    json src = {{"version", "2.1.2.Final"}, {"connector", "postgresql"}, {"name", prefix_},
                {"ts_ms", 1700000000000LL}, {"snapshot", snapshot ? "true" : "false"},
                {"db", "app"},
                {"sequence", "[\"" + std::to_string(last_commit_lsn_) + "\",\"" +
                                 std::to_string(lsn) + "\"]"},
                {"schema", rel.schema}, {"table", rel.name}, {"txId", xid}, {"lsn", lsn},
                {"xmin", nullptr}};
    json v = {{"before", std::move(before)}, {"after", std::move(after)}, {"source", src},
              {"op", op}, {"ts_ms", 1700000000100LL}, {"transaction", nullptr}};
    return v.dump();
  };
  auto record = [&](const common::Relation& rel, const json& key, std::optional<std::string> value) {
    KafkaRecord r;
    r.topic = topicOf(rel.name);
    r.key = key.dump();
    r.partition = static_cast<int32_t>(std::hash<std::string>()(r.key) % partitions_);
    r.value = std::move(value);
    return r;
  };
  switch (ch.op) {
    case common::ChangeOp::kInsert: {
      const auto& rel = *ch.relation;
      out.push_back(record(rel, keyOf(rel, ch.new_tuple),
                           envelope(rel, snapshot ? "r" : "c", nullptr, rowOf(rel, ch.new_tuple, false))));
      break;
    }
    case common::ChangeOp::kUpdate: {
      const auto& rel = *ch.relation;
      json new_key = keyOf(rel, ch.new_tuple);
      if (ch.old_tuple && !ch.old_is_full) {
        // The key changed: delete (newkey header), tombstone, create (oldkey header).
        json old_key = keyOf(rel, *ch.old_tuple);
        auto del = record(rel, old_key, envelope(rel, "d", rowOf(rel, *ch.old_tuple, true), nullptr));
        del.headers.push_back({"__debezium.newkey", new_key.dump()});
        out.push_back(del);
        out.push_back(record(rel, old_key, std::nullopt));
        auto cr = record(rel, new_key, envelope(rel, "c", nullptr, rowOf(rel, ch.new_tuple, false)));
        cr.headers.push_back({"__debezium.oldkey", old_key.dump()});
        out.push_back(cr);
      } else {
        out.push_back(record(rel, new_key, envelope(rel, "u", nullptr, rowOf(rel, ch.new_tuple, false))));
      }
      break;
    }
    case common::ChangeOp::kDelete: {
      const auto& rel = *ch.relation;
      json key = keyOf(rel, *ch.old_tuple);
      out.push_back(record(rel, key, envelope(rel, "d", rowOf(rel, *ch.old_tuple, !ch.old_is_full), nullptr)));
      out.push_back(record(rel, key, std::nullopt));
      break;
    }
    case common::ChangeOp::kTruncate:
      for (const auto& rel : ch.truncated) {
        auto r = record(*rel, json::object(), envelope(*rel, "t", nullptr, nullptr));
        r.key = "null";
        r.partition = 0;
        out.push_back(r);
      }
      break;
  }
  return out;
}

KafkaRecord DebeziumEncoder::message(const std::string& prefix, const std::string& content,
                                     uint64_t lsn) {
  json src = {{"version", "2.1.2.Final"}, {"connector", "postgresql"}, {"name", prefix_},
              {"ts_ms", 1700000000000LL}, {"snapshot", "false"}, {"db", "app"},
              {"schema", ""}, {"table", ""}, {"txId", nullptr}, {"lsn", lsn}};
  json v = {{"op", "m"}, {"ts_ms", 1700000000100LL}, {"source", src},
            {"message", {{"prefix", prefix}, {"content", b64(content)}}}};
  KafkaRecord r;
  r.topic = prefix_ + ".message";
  r.partition = 0;
  r.key = json{{"prefix", prefix}}.dump();
  r.value = v.dump();
  return r;
}

}  // namespace stampmover::testing
