// Preflight of a Debezium PostgreSQL connector's configuration (connector.json as Kafka Connect
// shows it): refuses every setting that would lose or distort a tenant's data on its way to the
// destination, naming the setting and the fix, and derives the decoder's handling modes.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cdc/debezium_envelope.h"
#include "common/change.h"
#include "common/status.h"

namespace stampmover::cdc {

// The connector's settings, flat ("decimal.handling.mode" -> "string").
struct ConnectorConfig {
  std::map<std::string, std::string> settings;
  // The value of `key`, or `fallback` when the connector does not set it (Debezium's default).
  std::string get(const std::string& key, const std::string& fallback = "") const {
    auto it = settings.find(key);
    return it == settings.end() ? fallback : it->second;
  }
  bool has(const std::string& key) const { return settings.count(key) != 0; }
};

// Parses either shape Kafka Connect's REST API shows: {"name": ..., "config": {...}} (GET
// /connectors/<name>) or the flat map (GET /connectors/<name>/config). Values must be strings
// (numbers and booleans are accepted and kept as their JSON text). Errors: kRefused naming what
// is malformed.
common::Result<ConnectorConfig> parseConnectorConfig(std::string_view json_text);

// What the migration learns from an accepted configuration.
struct ConnectorSettings {
  DebeziumModes modes;        // for DebeziumDecoder
  std::string topic_prefix;   // topic.prefix (2.x) or database.server.name (1.x)
};

// Checks `config` against the tables this migration moves (`tables`: the source catalog's
// description: columns with type OIDs, key flags = replica identity, replica_identity) and the
// tenant column of each (`tenant`). Returns every problem found, each one line naming the
// setting (or table) and the fix; empty when the configuration is safe. Pure: no I/O.
std::vector<std::string> connectorProblems(
    const ConnectorConfig& config, const std::vector<std::shared_ptr<const common::Relation>>& tables,
    const TenantFilter& tenant);

// connectorProblems() as a Status: kRefused with the first problem (and how many more), or the
// derived settings. Thread-safe (pure).
common::Result<ConnectorSettings> checkConnectorConfig(
    const ConnectorConfig& config, const std::vector<std::shared_ptr<const common::Relation>>& tables,
    const TenantFilter& tenant);

}  // namespace stampmover::cdc
