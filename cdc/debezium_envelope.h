// Decodes Debezium PostgreSQL change events (Kafka Connect JsonConverter output, with or without
// the {"schema","payload"} wrapper) into the change type the applier takes: values become
// PostgreSQL text, the unavailable-value placeholder becomes the unchanged-TOAST marker.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/change.h"
#include "common/lsn.h"
#include "common/status.h"

namespace stampmover::cdc {

class JsonDocument;

// How the connector encodes values (its *.handling.mode settings). Only modes that can be
// decoded exactly have a value here; lossy ones (decimal double, interval numeric,
// time.precision connect) are refused by the config preflight (cdc/debezium_config.h).
enum class DecimalMode : uint8_t { kPrecise, kString };
enum class TimePrecisionMode : uint8_t { kAdaptive, kAdaptiveTimeMicroseconds, kIsoString };
enum class BinaryMode : uint8_t { kBytes, kBase64, kBase64UrlSafe, kHex };

struct DebeziumModes {
  DecimalMode decimal = DecimalMode::kPrecise;                // Default: precise (Debezium's)
  TimePrecisionMode time = TimePrecisionMode::kAdaptive;      // Default: adaptive (Debezium's)
  BinaryMode binary = BinaryMode::kBytes;                     // Default: bytes (Debezium's)
  // interval.handling.mode must be "string" (ISO 8601, exact); "numeric" is refused upstream.
  // unavailable.value.placeholder as configured ("hex:..." = raw bytes, as Debezium reads it).
  std::string placeholder = "__debezium_unavailable_value";  // Default: Debezium's
};

// The source's description of a table (columns with type OIDs and key flags), or nullptr when
// the table is not one this migration moves (its events are skipped). Errors are passed on.
using RelationResolver = std::function<common::Result<std::shared_ptr<const common::Relation>>(
    const std::string& schema, const std::string& table)>;

struct TenantFilter {
  std::string tenant;                  // Default: none (required): canonical tenant text
  std::string column = "tenant_id";    // Default: "tenant_id"
  std::map<std::string, std::string> per_table;  // Default: empty; "schema.table" -> column
  const std::string& columnFor(const std::string& table_key) const {
    auto it = per_table.find(table_key);
    return it == per_table.end() ? column : it->second;
  }
};

// One decoded Kafka record.
struct DebeziumRecord {
  enum class Kind : uint8_t {
    kTombstone,  // null value after a delete (log compaction marker): nothing to apply
    kChange,     // change holds a row change or a truncate
    kMessage,    // op "m": a logical decoding message (pg_logical_emit_message)
    kSkipped,    // a row of another tenant, or a table this migration does not move
  };
  Kind kind = Kind::kTombstone;
  char op = 0;                 // c, u, d, r, t, m (0 for a tombstone)
  common::Change change;       // kChange
  common::LogicalMessage message;  // kMessage
  std::string skip_reason;     // kSkipped
  std::shared_ptr<const common::Relation> relation;  // kChange (also truncate), kSkipped rows
  std::optional<common::Lsn> lsn;                 // source.lsn: the change's own LSN
  std::optional<common::Lsn> last_committed_lsn;  // source.sequence[0]
  std::optional<common::Lsn> current_lsn;         // source.sequence[1]
  std::optional<uint64_t> txid;                   // source.txId
  int64_t ts_ms = 0;                              // source.ts_ms
  bool snapshot = false;                          // source.snapshot is true/first/last/...
  // Header __debezium.newkey: this delete is the first half of a primary-key change (the
  // create of the new key follows, maybe on another partition).
  bool pk_change = false;
};

// Kafka record headers the decoder looks at.
struct RecordHeaders {
  bool newkey = false;  // __debezium.newkey present (delete half of a PK change)
  bool oldkey = false;  // __debezium.oldkey present (create half of a PK change)
};

// Not thread-safe (caches the wrapper's field schemas per relation). Owns nothing external.
class DebeziumDecoder {
 public:
  DebeziumDecoder(DebeziumModes modes, RelationResolver relations, TenantFilter tenant);
  ~DebeziumDecoder();
  DebeziumDecoder(DebeziumDecoder&&) noexcept;
  DebeziumDecoder& operator=(DebeziumDecoder&&) noexcept;

  // Decodes one record value (JSON text; empty = tombstone). Errors: kInternal for malformed
  // JSON or an envelope that does not match the table (the message says which field and why),
  // kRefused for a value in an encoding that cannot be decoded exactly (names the column and
  // the connector setting), and whatever the resolver returns.
  common::Result<DebeziumRecord> decode(std::string_view value, const RecordHeaders& headers = {});

  const DebeziumModes& modes() const { return modes_; }

 private:
  DebeziumModes modes_;
  RelationResolver relations_;
  TenantFilter tenant_;
  std::string placeholder_bytes_;  // the placeholder as bytes (bytea columns)
  std::unique_ptr<JsonDocument> doc_;  // reused by every decode(): its buffers stay allocated
};

// Semantic schema of one field, as the wrapper gives it (empty when there is no wrapper).
struct FieldSchema {
  std::string type;  // Connect type: int32, int64, string, bytes, struct, array, ...
  std::string name;  // semantic name: io.debezium.time.MicroTimestamp, ...Decimal, ...
  std::optional<int32_t> scale;  // Decimal's "scale" parameter
};

// Value of one column as PostgreSQL text (type OID and typmod from the source catalog), or the
// unchanged-TOAST marker for the placeholder, or NULL. Exposed for unit tests. Errors as decode().
common::Result<common::Datum> debeziumValueToDatum(const std::string& json_value, uint32_t type_oid,
                                                   int32_t type_modifier,
                                                   const FieldSchema& schema,
                                                   const DebeziumModes& modes);

}  // namespace stampmover::cdc
