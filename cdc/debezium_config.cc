// Connector-configuration preflight: each rule below is a way Debezium's documented settings
// (or their defaults) lose or distort rows for a mover; the message says what to set instead.
#include "cdc/debezium_config.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <regex>
#include <set>

namespace stampmover::cdc {

using common::Result;
using common::Status;
using json = nlohmann::json;

namespace {

std::vector<std::string> splitList(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  for (auto& x : out) {
    x.erase(0, x.find_first_not_of(" \t"));
    x.erase(x.find_last_not_of(" \t") + 1);
  }
  out.erase(std::remove(out.begin(), out.end(), std::string()), out.end());
  return out;
}

// True when any of the comma-separated regular expressions in `list` matches `name` whole
// (Debezium anchors its include/exclude patterns). A pattern that does not compile is reported.
bool matchesAny(const std::string& list, const std::string& name, std::vector<std::string>& problems,
                const std::string& setting) {
  for (const auto& pat : splitList(list)) {
    try {
      if (std::regex_match(name, std::regex(pat, std::regex::ECMAScript | std::regex::icase)))
        return true;
    } catch (const std::regex_error&) {
      problems.push_back("connector setting " + setting + ": pattern \"" + pat +
                         "\" is not a regular expression this check understands; simplify it");
    }
  }
  return false;
}

bool isTimeType(uint32_t oid) {
  return oid == 1083 || oid == 1114 || oid == 1183 || oid == 1115;
}
bool isDecimalType(uint32_t oid) { return oid == 1700 || oid == 790 || oid == 1231 || oid == 791; }
bool isIntervalType(uint32_t oid) { return oid == 1186 || oid == 1187; }
bool isBinaryType(uint32_t oid) { return oid == 17 || oid == 1001; }
// Arrays whose unchanged-TOAST value has no placeholder form the decoder can recognise (the
// placeholder is a string; Debezium has none for arrays of numbers, booleans or times).
bool isNonStringArray(uint32_t oid) {
  static const std::set<uint32_t> k = {1000, 1005, 1007, 1016, 1021, 1022, 1231, 1028,
                                       1182, 1183, 1115, 1185, 1187, 1270, 791};
  return k.count(oid) != 0;
}

// Transforms (SMTs) that leave the envelope's fields and records as they are.
bool harmlessTransform(const std::string& type) {
  static const std::set<std::string> k = {
      "org.apache.kafka.connect.transforms.RegexRouter",
      "org.apache.kafka.connect.transforms.TimestampRouter",
      "org.apache.kafka.connect.transforms.InsertHeader",
      "org.apache.kafka.connect.transforms.DropHeaders"};
  return k.count(type) != 0;
}

}  // namespace

Result<ConnectorConfig> parseConnectorConfig(std::string_view json_text) {
  json root = json::parse(json_text, nullptr, false);
  if (root.is_discarded() || !root.is_object())
    return Status::refused("connector config: not a JSON object (give the connector's config as "
                           "Kafka Connect shows it: GET /connectors/<name>)");
  const json* cfg = &root;
  if (auto it = root.find("config"); it != root.end()) {
    if (!it->is_object()) return Status::refused("connector config: \"config\" is not an object");
    cfg = &*it;
  }
  ConnectorConfig out;
  for (auto it = cfg->begin(); it != cfg->end(); ++it) {
    if (it->is_string()) {
      out.settings[it.key()] = it->get<std::string>();
    } else if (it->is_number() || it->is_boolean()) {
      out.settings[it.key()] = it->dump();
    } else if (!it->is_null()) {
      return Status::refused("connector config: setting " + it.key() + " is not a string");
    }
  }
  return out;
}

std::vector<std::string> connectorProblems(
    const ConnectorConfig& c, const std::vector<std::shared_ptr<const common::Relation>>& tables,
    const TenantFilter& tenant) {
  std::vector<std::string> p;
  bool has_time = false, has_decimal = false, has_interval = false;
  for (const auto& t : tables)
    for (const auto& col : t->columns) {
      has_time = has_time || isTimeType(col.type_oid);
      has_decimal = has_decimal || isDecimalType(col.type_oid);
      has_interval = has_interval || isIntervalType(col.type_oid);
    }

  const std::string cls = c.get("connector.class");
  if (cls != "io.debezium.connector.postgresql.PostgresConnector")
    p.push_back("connector.class is \"" + cls +
                "\": only io.debezium.connector.postgresql.PostgresConnector is supported");
  const std::string conv = c.get("value.converter");
  if (!conv.empty() && conv != "org.apache.kafka.connect.json.JsonConverter")
    p.push_back("value.converter=" + conv +
                ": only org.apache.kafka.connect.json.JsonConverter is decoded; set it on the "
                "connector");

  // skipped.operations defaults to "t": truncates would silently not reach the destination.
  if (!c.has("skipped.operations")) {
    p.push_back("skipped.operations is not set and defaults to \"t\" (TRUNCATE events dropped): "
                "set skipped.operations=none");
  } else {
    std::string v = c.get("skipped.operations");
    if (v != "none") {
      for (const auto& op : splitList(v))
        p.push_back("skipped.operations contains \"" + op +
                    "\" (those changes never reach Kafka): set skipped.operations=none");
    }
  }

  DebeziumModes modes;
  const std::string dec = c.get("decimal.handling.mode", "precise");
  if (dec == "precise") {
    modes.decimal = DecimalMode::kPrecise;
  } else if (dec == "string") {
    modes.decimal = DecimalMode::kString;
  } else if (dec == "double") {
    if (has_decimal)
      p.push_back("decimal.handling.mode=double rounds numeric values: set "
                  "decimal.handling.mode=precise or string");
  } else {
    p.push_back("decimal.handling.mode=" + dec + " is unknown: set precise or string");
  }
  const std::string tpm = c.get("time.precision.mode", "adaptive");
  if (tpm == "adaptive") {
    modes.time = TimePrecisionMode::kAdaptive;
  } else if (tpm == "adaptive_time_microseconds") {
    modes.time = TimePrecisionMode::kAdaptiveTimeMicroseconds;
  } else if (tpm == "isostring") {
    modes.time = TimePrecisionMode::kIsoString;
  } else if (tpm == "connect") {
    if (has_time)
      p.push_back("time.precision.mode=connect truncates times and timestamps to milliseconds: "
                  "set time.precision.mode=adaptive or adaptive_time_microseconds");
  } else {
    p.push_back("time.precision.mode=" + tpm + " is unknown: set adaptive");
  }
  const std::string ivm = c.get("interval.handling.mode", "numeric");
  if (ivm != "string" && has_interval)
    p.push_back("interval.handling.mode=" + ivm + (c.has("interval.handling.mode") ? "" : " (default)") +
                " approximates months as days: set interval.handling.mode=string");
  const std::string bin = c.get("binary.handling.mode", "bytes");
  if (bin == "bytes") {
    modes.binary = BinaryMode::kBytes;
  } else if (bin == "base64") {
    modes.binary = BinaryMode::kBase64;
  } else if (bin == "base64-url-safe") {
    modes.binary = BinaryMode::kBase64UrlSafe;
  } else if (bin == "hex") {
    modes.binary = BinaryMode::kHex;
  } else {
    p.push_back("binary.handling.mode=" + bin + " is unknown: set bytes, base64 or hex");
  }
  // The placeholder: the newer name wins, the 1.x name is still read by Debezium.
  modes.placeholder = c.get("unavailable.value.placeholder",
                            c.get("toasted.value.placeholder", "__debezium_unavailable_value"));
  bool placeholder_ok = true;
  if (modes.placeholder.empty() || modes.placeholder == "hex:") {
    placeholder_ok = false;
    p.push_back("unavailable.value.placeholder is empty: an unchanged TOAST value would be an "
                "empty string or empty bytea, indistinguishable from real data; unset it");
  } else if (modes.placeholder.rfind("hex:", 0) == 0) {
    std::string hex = modes.placeholder.substr(4);
    if (hex.size() % 2 != 0 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
      placeholder_ok = false;
      p.push_back("unavailable.value.placeholder=" + modes.placeholder +
                  " is not valid hex: fix it or unset it");
    }
  }

  // Transforms that rename, drop, flatten, filter or convert fields or records.
  for (const auto& name : splitList(c.get("transforms"))) {
    const std::string type = c.get("transforms." + name + ".type");
    if (!harmlessTransform(type))
      p.push_back("transforms: \"" + name + "\" (" + (type.empty() ? "no type" : type) +
                  ") may rename, drop or filter fields or records: remove it from transforms");
  }
  for (const auto& [k, v] : c.settings) {
    if (k.rfind("column.mask.", 0) == 0 || k.rfind("column.truncate.to.", 0) == 0)
      p.push_back(k + " rewrites column values: remove it");
  }

  // Every moved table and column must be captured.
  for (const auto& t : tables) {
    const std::string q = t->schema + "." + t->name;
    if (c.has("table.include.list") && !matchesAny(c.get("table.include.list"), q, p, "table.include.list"))
      p.push_back("table.include.list does not capture " + q + ": add it");
    if (c.has("table.exclude.list") && matchesAny(c.get("table.exclude.list"), q, p, "table.exclude.list"))
      p.push_back("table.exclude.list excludes " + q + ": remove it from the list");
    if (c.has("schema.include.list") &&
        !matchesAny(c.get("schema.include.list"), t->schema, p, "schema.include.list"))
      p.push_back("schema.include.list does not capture schema " + t->schema + ": add it");
    if (c.has("schema.exclude.list") &&
        matchesAny(c.get("schema.exclude.list"), t->schema, p, "schema.exclude.list"))
      p.push_back("schema.exclude.list excludes schema " + t->schema + ": remove it");
    for (const auto& col : t->columns) {
      const std::string qc = q + "." + col.name;
      if (c.has("column.include.list") &&
          !matchesAny(c.get("column.include.list"), qc, p, "column.include.list"))
        p.push_back("column.include.list does not capture " + qc + ": add it");
      if (c.has("column.exclude.list") &&
          matchesAny(c.get("column.exclude.list"), qc, p, "column.exclude.list"))
        p.push_back("column.exclude.list excludes " + qc + ": remove it from the list");
    }

    // Keys: a delete (and an update's before) carries only the replica identity's columns.
    const std::string& tcol = tenant.columnFor(q);
    const std::string alter = "ALTER TABLE " + q + " REPLICA IDENTITY FULL";
    if (t->replica_identity == 'n') {
      p.push_back("table " + q + " has REPLICA IDENTITY NOTHING (deletes carry no key): run " +
                  alter);
      continue;
    }
    if (t->replica_identity != 'f') {
      bool tenant_in_key = false;
      for (const auto& col : t->columns) tenant_in_key = tenant_in_key || (col.part_of_key && col.name == tcol);
      if (!tenant_in_key)
        p.push_back("table " + q + " has REPLICA IDENTITY " +
                    (t->replica_identity == 'i' ? "USING INDEX" : "DEFAULT") +
                    " whose key lacks tenant column " + tcol +
                    " (a delete could not be told to be this tenant's): run " + alter);
      for (const auto& col : t->columns) {
        if (col.part_of_key) continue;
        if (isNonStringArray(col.type_oid) ||
            (isBinaryType(col.type_oid) && !placeholder_ok)) {
          p.push_back("column " + q + "." + col.name +
                      ": an unchanged TOAST value of this type has no placeholder Debezium "
                      "sends distinguishably (it would look like NULL or data): run " + alter);
        }
      }
    }
  }
  // Keys of messages: a key column outside the primary key sends a row's versions to different
  // partitions, where their order is lost.
  for (const auto& entry : splitList(c.get("message.key.columns"), ';')) {
    auto colon = entry.rfind(':');
    if (colon == std::string::npos) {
      p.push_back("message.key.columns entry \"" + entry + "\" is malformed");
      continue;
    }
    std::string pattern = entry.substr(0, colon);
    for (const auto& t : tables) {
      const std::string q = t->schema + "." + t->name;
      if (!matchesAny(pattern, q, p, "message.key.columns")) continue;
      for (const auto& kc : splitList(entry.substr(colon + 1))) {
        bool in_key = false;
        for (const auto& col : t->columns) in_key = in_key || (col.name == kc && col.part_of_key);
        if (!in_key)
          p.push_back("message.key.columns keys " + q + " by " + kc +
                      ", which is not in its key (a row's changes would be spread over "
                      "partitions and reordered): remove the entry");
      }
    }
  }
  return p;
}

Result<ConnectorSettings> checkConnectorConfig(
    const ConnectorConfig& config, const std::vector<std::shared_ptr<const common::Relation>>& tables,
    const TenantFilter& tenant) {
  auto problems = connectorProblems(config, tables, tenant);
  if (!problems.empty()) {
    std::string msg = "Debezium connector config refused: " + problems.front();
    if (problems.size() > 1) msg += " (and " + std::to_string(problems.size() - 1) + " more)";
    return Status::refused(msg);
  }
  ConnectorSettings s;
  s.topic_prefix = config.get("topic.prefix", config.get("database.server.name"));
  // Modes: recompute from the config (connectorProblems only validated them).
  DebeziumModes& m = s.modes;
  m.decimal = config.get("decimal.handling.mode", "precise") == "string" ? DecimalMode::kString
                                                                          : DecimalMode::kPrecise;
  const std::string tpm = config.get("time.precision.mode", "adaptive");
  m.time = tpm == "adaptive_time_microseconds" ? TimePrecisionMode::kAdaptiveTimeMicroseconds
           : tpm == "isostring"                ? TimePrecisionMode::kIsoString
                                               : TimePrecisionMode::kAdaptive;
  const std::string bin = config.get("binary.handling.mode", "bytes");
  m.binary = bin == "base64"            ? BinaryMode::kBase64
             : bin == "base64-url-safe" ? BinaryMode::kBase64UrlSafe
             : bin == "hex"             ? BinaryMode::kHex
                                        : BinaryMode::kBytes;
  m.placeholder = config.get("unavailable.value.placeholder",
                             config.get("toasted.value.placeholder", "__debezium_unavailable_value"));
  return s;
}

}  // namespace stampmover::cdc
