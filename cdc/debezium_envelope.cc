// Debezium envelope decoding: JSON (cdc/json_view.h) to common::Change with PostgreSQL text values.
// The PostgreSQL type of each column comes from the source catalog (the resolver), the wire
// encoding from the wrapper's semantic schema when present, otherwise from the connector's
// handling modes and the column's typmod (as Debezium chooses it: see valueToText below).
#include "cdc/debezium_envelope.h"

#include <nlohmann/json.hpp>

#include "cdc/json_view.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <unordered_map>

namespace stampmover::cdc {

using common::Datum;
using common::Result;
using common::Status;

namespace {

// Type OIDs (pg_type.dat); stable across PostgreSQL versions.
constexpr uint32_t kBool = 16, kBytea = 17, kName = 19, kInt8 = 20, kInt2 = 21, kInt4 = 23,
                   kText = 25, kOid = 26, kJson = 114, kXml = 142, kFloat4 = 700,
                   kFloat8 = 701, kMoney = 790, kBpchar = 1042, kVarchar = 1043, kDate = 1082,
                   kTime = 1083, kTimestamp = 1114, kTimestamptz = 1184, kInterval = 1186,
                   kTimetz = 1266, kBit = 1560, kNumeric = 1700, kUuid = 2950, kJsonb = 3802,
                   kInet = 869, kCidr = 650, kMacaddr = 829, kFirstUserOid = 16384;

// Array type OID -> element type OID, for the arrays of the types above.
uint32_t arrayElement(uint32_t oid) {
  static const std::unordered_map<uint32_t, uint32_t> k = {
      {1000, kBool},      {1001, kBytea},       {1003, kName},      {1005, kInt2},
      {1007, kInt4},      {1016, kInt8},        {1009, kText},      {1028, kOid},
      {199, kJson},       {143, kXml},          {1021, kFloat4},    {1022, kFloat8},
      {791, kMoney},      {1014, kBpchar},      {1015, kVarchar},   {1182, kDate},
      {1183, kTime},      {1115, kTimestamp},   {1185, kTimestamptz}, {1187, kInterval},
      {1270, kTimetz},    {1231, kNumeric},     {2951, kUuid},      {3807, kJsonb},
      {1041, kInet},      {651, kCidr},         {1040, kMacaddr}};
  auto it = k.find(oid);
  return it == k.end() ? 0 : it->second;
}

bool isStringType(uint32_t oid) {
  switch (oid) {
    case kText: case kVarchar: case kBpchar: case kName: case kJson: case kJsonb: case kXml:
    case kUuid: case kInet: case kCidr: case kMacaddr: case kTimestamptz: case kTimetz:
    case kInterval:
      return true;
    default:
      return false;
  }
}

Status bad(const std::string& what) { return Status::internal("Debezium event: " + what); }

Result<std::string> base64Decode(std::string_view in, bool url_safe) {
  auto val = [url_safe](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == (url_safe ? '-' : '+')) return 62;
    if (c == (url_safe ? '_' : '/')) return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    int v = val(c);
    if (v < 0) return bad("invalid base64 character");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

Result<std::string> hexDecode(std::string_view in) {
  if (in.size() % 2 != 0) return bad("odd-length hex string");
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(in.size() / 2);
  for (size_t i = 0; i < in.size(); i += 2) {
    int h = nib(in[i]), l = nib(in[i + 1]);
    if (h < 0 || l < 0) return bad("invalid hex character");
    out.push_back(static_cast<char>(h * 16 + l));
  }
  return out;
}

std::string byteaText(std::string_view bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out = "\\x";
  out.reserve(2 + bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

// Big-endian two's complement integer (Connect's Decimal encoding) scaled by 10^-scale.
std::string unscaledToText(std::string_view be, int32_t scale) {
  bool neg = !be.empty() && (static_cast<unsigned char>(be[0]) & 0x80);
  std::vector<uint8_t> mag(be.begin(), be.end());
  if (neg) {  // magnitude = ~x + 1
    for (auto& b : mag) b = static_cast<uint8_t>(~b);
    for (size_t i = mag.size(); i-- > 0;) {
      if (++mag[i] != 0) break;
    }
  }
  // Repeated division by 10^9 of the base-256 number.
  std::string digits;
  while (true) {
    bool zero = true;
    uint64_t rem = 0;
    for (auto& b : mag) {
      uint64_t cur = (rem << 8) | b;
      b = static_cast<uint8_t>(cur / 1'000'000'000u);
      rem = cur % 1'000'000'000u;
      if (b != 0) zero = false;
    }
    char buf[16];
    int n = std::snprintf(buf, sizeof buf, "%09llu", static_cast<unsigned long long>(rem));
    digits.insert(0, buf, static_cast<size_t>(n));
    if (zero) break;
  }
  size_t nz = digits.find_first_not_of('0');
  digits = nz == std::string::npos ? "0" : digits.substr(nz);
  if (scale > 0) {
    if (digits.size() <= static_cast<size_t>(scale))
      digits.insert(0, static_cast<size_t>(scale) + 1 - digits.size(), '0');
    digits.insert(digits.size() - static_cast<size_t>(scale), ".");
  } else if (scale < 0 && digits != "0") {
    digits.append(static_cast<size_t>(-scale), '0');
  }
  return (neg && digits.find_first_not_of("0.") != std::string::npos ? "-" : "") + digits;
}

// Proleptic Gregorian civil date from days since 1970-01-01 (the well-known era algorithm).
void civilFromDays(int64_t z, int64_t& y, unsigned& m, unsigned& d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  y = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y += (m <= 2);
}

std::string dateText(int64_t days, bool& bc) {
  int64_t y;
  unsigned m, d;
  civilFromDays(days, y, m, d);
  bc = y <= 0;  // year 0 is 1 BC in PostgreSQL's notation
  if (bc) y = 1 - y;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02u", static_cast<long long>(y), m, d);
  return buf;
}

std::string timeOfDay(int64_t micros) {  // 0 <= micros <= 86400e6 (24:00:00 is valid)
  char buf[32];
  int64_t s = micros / 1'000'000;
  std::snprintf(buf, sizeof buf, "%02lld:%02lld:%02lld.%06lld", static_cast<long long>(s / 3600),
                static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60),
                static_cast<long long>(micros % 1'000'000));
  return buf;
}

int64_t floorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

std::string timestampText(int64_t micros) {
  int64_t days = floorDiv(micros, 86'400'000'000LL);
  int64_t rest = micros - days * 86'400'000'000LL;
  bool bc = false;
  std::string out = dateText(days, bc) + " " + timeOfDay(rest);
  if (bc) out += " BC";
  return out;
}

// Typmod-derived precision of time/timestamp columns: -1 means the default (6).
int timePrecision(int32_t typmod) { return typmod < 0 ? 6 : typmod; }

std::string floatText(double v, bool single) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  auto r = single ? std::to_chars(buf, buf + sizeof buf, static_cast<float>(v))
                  : std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

Result<int64_t> integerOf(const JsonValue& v, const char* what) {
  if (v.isInteger()) return v.asInt64();
  return bad(std::string("expected an integer for ") + what);
}

struct Ctx {
  uint32_t oid;
  int32_t typmod;
  const FieldSchema& schema;
  const DebeziumModes& modes;
  const std::string& placeholder_bytes;
};

Result<std::string> decodeBytes(const JsonValue& v, const DebeziumModes& modes) {
  if (!v.isString()) return bad("expected a string for a binary value");
  const std::string_view s = v.str();
  switch (modes.binary) {
    case BinaryMode::kBytes:  // JsonConverter writes BYTES as base64
    case BinaryMode::kBase64:
      return base64Decode(s, false);
    case BinaryMode::kBase64UrlSafe:
      return base64Decode(s, true);
    case BinaryMode::kHex:
      return hexDecode(s);
  }
  return bad("unknown binary mode");
}

Result<std::string> decimalText(const JsonValue& v, const Ctx& c) {
  if (v.isString() && c.modes.decimal == DecimalMode::kString) return std::string(v.str());
  if (v.isObject()) {  // io.debezium.data.VariableScaleDecimal {scale, value}
    const JsonValue* sc = v.find("scale");
    const JsonValue* val = v.find("value");
    if (sc == nullptr || val == nullptr || !val->isString())
      return bad("VariableScaleDecimal without scale/value");
    SM_ASSIGN_OR_RETURN(int64_t scale, integerOf(*sc, "VariableScaleDecimal.scale"));
    SM_ASSIGN_OR_RETURN(std::string raw, base64Decode(val->str(), false));
    return unscaledToText(raw, static_cast<int32_t>(scale));
  }
  if (v.isString()) {  // org.apache.kafka.connect.data.Decimal: base64 unscaled, fixed scale
    int32_t scale = 0;
    if (c.schema.scale) {
      scale = *c.schema.scale;
    } else if (c.oid == kMoney) {
      scale = 2;  // Debezium's money.fraction.digits default
    } else if (c.typmod >= 4) {
      scale = (c.typmod - 4) & 0xffff;
    } else {
      return bad("a numeric without typmod must come as VariableScaleDecimal {scale, value}");
    }
    SM_ASSIGN_OR_RETURN(std::string raw, base64Decode(v.str(), false));
    return unscaledToText(raw, scale);
  }
  if (v.isNumber()) {
    return Status::refused(
        "a numeric value arrived as a JSON number (decimal.handling.mode=double is lossy); set "
        "decimal.handling.mode=precise or string on the connector");
  }
  return bad("unexpected JSON type for a numeric value");
}

Result<std::string> scalarText(const JsonValue& v, const Ctx& c);

// A JSON array as a PostgreSQL array literal (one dimension, every element quoted).
Result<std::string> arrayText(const JsonValue& v, const Ctx& c, uint32_t elem) {
  if (!v.isArray()) return bad("expected a JSON array");
  std::string out = "{";
  bool first = true;
  FieldSchema none;
  Ctx ec{elem, -1, none, c.modes, c.placeholder_bytes};
  for (const auto& e : v) {
    if (!first) out += ',';
    first = false;
    if (e.isNull()) {
      out += "NULL";
      continue;
    }
    SM_ASSIGN_OR_RETURN(std::string t, scalarText(e, ec));
    out += '"';
    for (char ch : t) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  return out + "}";
}

// nlohmann's text of a number or boolean (its dump()), kept as the form domains have always got.
std::string dumpPrimitive(const JsonValue& v) {
  switch (v.type()) {
    case JsonValue::Type::kBool: return v.boolean() ? "true" : "false";
    case JsonValue::Type::kInt: return std::to_string(v.asInt64());
    case JsonValue::Type::kUint: return std::to_string(v.asUint64());
    default: return nlohmann::json(v.asDouble()).dump();
  }
}

Result<std::string> scalarText(const JsonValue& v, const Ctx& c) {
  const std::string& sem = c.schema.name;
  switch (c.oid) {
    case kBool:
      if (!v.isBool()) return bad("expected a boolean");
      return std::string(v.boolean() ? "t" : "f");
    case kBit:
      if (v.isBool() && c.typmod == 1) return std::string(v.boolean() ? "1" : "0");
      return Status::refused("bit(n>1) columns (io.debezium.data.Bits) are not supported");
    case kInt2: case kInt4: case kInt8: case kOid: {
      SM_ASSIGN_OR_RETURN(int64_t i, integerOf(v, "an integer column"));
      return std::to_string(i);
    }
    case kFloat4: case kFloat8:
      if (v.isNumber()) return floatText(v.asDouble(), c.oid == kFloat4);
      if (v.isString()) {  // Jackson quotes NaN and the infinities
        const std::string_view s = v.str();
        if (s == "NaN" || s == "Infinity" || s == "-Infinity") return std::string(s);
      }
      return bad("expected a number for a float column");
    case kNumeric: case kMoney:
      return decimalText(v, c);
    case kBytea: {
      SM_ASSIGN_OR_RETURN(std::string raw, decodeBytes(v, c.modes));
      return byteaText(raw);
    }
    case kDate: {
      if (v.isString()) return std::string(v.str());  // isostring
      SM_ASSIGN_OR_RETURN(int64_t days, integerOf(v, "a date column"));
      bool bc = false;
      std::string d = dateText(days, bc);
      return bc ? d + " BC" : d;
    }
    case kTime: {
      if (v.isString()) return std::string(v.str());  // isostring
      SM_ASSIGN_OR_RETURN(int64_t n, integerOf(v, "a time column"));
      // io.debezium.time.Time is milliseconds, MicroTime microseconds, NanoTime nanoseconds;
      // without a wrapper the connector's choice follows the mode and the column's precision.
      bool millis = sem.empty() ? (c.modes.time == TimePrecisionMode::kAdaptive &&
                                   timePrecision(c.typmod) <= 3)
                                : sem == "io.debezium.time.Time";
      if (sem == "io.debezium.time.NanoTime") n /= 1000;
      if (sem == "org.apache.kafka.connect.data.Time")
        return Status::refused("time.precision.mode=connect is lossy; set adaptive");
      if (millis) n *= 1000;
      if (n < 0 || n > 86'400'000'000LL) return bad("time of day out of range");
      return timeOfDay(n);
    }
    case kTimestamp: {
      if (v.isString()) return std::string(v.str());  // isostring
      SM_ASSIGN_OR_RETURN(int64_t n, integerOf(v, "a timestamp column"));
      if (sem == "org.apache.kafka.connect.data.Timestamp")
        return Status::refused("time.precision.mode=connect is lossy; set adaptive");
      bool millis = sem.empty() ? timePrecision(c.typmod) <= 3 : sem == "io.debezium.time.Timestamp";
      if (sem == "io.debezium.time.NanoTimestamp") n = floorDiv(n, 1000);
      if (millis) n *= 1000;
      return timestampText(n);
    }
    default:
      break;
  }
  if (v.isString()) {
    if (isStringType(c.oid) || c.oid >= kFirstUserOid) return std::string(v.str());
  } else if (c.oid >= kFirstUserOid && (v.isNumber() || v.isBool())) {
    return dumpPrimitive(v);  // domains over numeric types: JSON's text is their input form
  }
  return Status::refused("type oid " + std::to_string(c.oid) +
                         " is not supported by the Debezium decoder (value " +
                         std::string(v.typeName()) + ")");
}

bool isPlaceholder(const JsonValue& v, const Ctx& c) {
  if (v.isString()) {
    const std::string_view s = v.str();
    if (c.oid == kBytea || arrayElement(c.oid) == kBytea) {
      auto raw = decodeBytes(v, c.modes);
      if (raw && *raw == c.placeholder_bytes) return true;
    }
    return s == c.modes.placeholder;
  }
  if (v.isArray() && v.size() == 1 && v[0].isString()) {
    // Arrays of strings carry the placeholder as their only element.
    return v[0].str() == c.modes.placeholder;
  }
  return false;
}

Result<Datum> datumOf(const JsonValue& v, const Ctx& c) {
  if (v.isNull()) return Datum::null();
  if (isPlaceholder(v, c)) return Datum::unchangedToast();
  uint32_t elem = arrayElement(c.oid);
  if (elem != 0) {
    SM_ASSIGN_OR_RETURN(std::string t, arrayText(v, c, elem));
    return Datum::value(std::move(t));
  }
  SM_ASSIGN_OR_RETURN(std::string t, scalarText(v, c));
  return Datum::value(std::move(t));
}

std::optional<common::Lsn> lsnOf(const JsonValue& v) {
  if (v.isInteger()) return common::Lsn(v.asUint64());
  if (v.isString()) {
    const std::string_view s = v.str();
    uint64_t n = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), n);
    if (r.ec == std::errc() && r.ptr == s.data() + s.size()) return common::Lsn(n);
  }
  return std::nullopt;
}

// A member's string value, or "" when it is absent or not a string.
std::string stringOf(const JsonValue& obj, std::string_view name) {
  const JsonValue* v = obj.find(name);
  return v != nullptr && v->isString() ? std::string(v->str()) : std::string();
}

// Field schemas of the "after" (or "before") struct of a wrapped envelope.
std::unordered_map<std::string, FieldSchema> rowSchema(const JsonValue& schema) {
  std::unordered_map<std::string, FieldSchema> out;
  const JsonValue* fields = schema.find("fields");
  if (fields == nullptr || !fields->isArray()) return out;
  for (const auto& f : *fields) {
    const JsonValue* name = f.find("field");
    if (name == nullptr || !name->isString()) continue;
    if (name->str() != "after" && name->str() != "before") continue;
    const JsonValue* cols = f.find("fields");
    if (cols == nullptr || !cols->isArray()) continue;
    for (const auto& col : *cols) {
      FieldSchema fs;
      fs.type = stringOf(col, "type");
      fs.name = stringOf(col, "name");
      const JsonValue* params = col.find("parameters");
      if (params != nullptr && params->isObject()) {
        const JsonValue* sc = params->find("scale");
        if (sc != nullptr && sc->isString()) {
          int32_t s = 0;
          const std::string_view t = sc->str();
          if (std::from_chars(t.data(), t.data() + t.size(), s).ec == std::errc()) fs.scale = s;
        }
      }
      out.emplace(stringOf(col, "field"), std::move(fs));
    }
    break;
  }
  return out;
}

}  // namespace

Result<Datum> debeziumValueToDatum(const std::string& json_value, uint32_t type_oid,
                                   int32_t type_modifier, const FieldSchema& schema,
                                   const DebeziumModes& modes) {
  JsonDocument doc;
  if (!doc.parse(json_value)) return bad("malformed JSON value");
  std::string pb = modes.placeholder;
  if (pb.rfind("hex:", 0) == 0) {
    auto raw = hexDecode(std::string_view(pb).substr(4));
    if (raw) pb = *raw;
  }
  Ctx c{type_oid, type_modifier, schema, modes, pb};
  return datumOf(doc.root(), c);
}

DebeziumDecoder::DebeziumDecoder(DebeziumModes modes, RelationResolver relations,
                                 TenantFilter tenant)
    : modes_(std::move(modes)), relations_(std::move(relations)), tenant_(std::move(tenant)),
      doc_(std::make_unique<JsonDocument>()) {
  placeholder_bytes_ = modes_.placeholder;
  if (placeholder_bytes_.rfind("hex:", 0) == 0) {
    auto raw = hexDecode(std::string_view(placeholder_bytes_).substr(4));
    if (raw) placeholder_bytes_ = *raw;  // a malformed hex: placeholder is refused by preflight
  }
}

DebeziumDecoder::~DebeziumDecoder() = default;
DebeziumDecoder::DebeziumDecoder(DebeziumDecoder&&) noexcept = default;
DebeziumDecoder& DebeziumDecoder::operator=(DebeziumDecoder&&) noexcept = default;

Result<DebeziumRecord> DebeziumDecoder::decode(std::string_view value,
                                               const RecordHeaders& headers) {
  DebeziumRecord rec;
  if (value.empty() || value == "null") return rec;  // tombstone
  JsonDocument& doc = *doc_;
  if (!doc.parse(value)) return bad("value is not valid JSON (" + doc.error() + ")");
  const JsonValue& root = doc.root();
  if (!root.isObject()) return bad("value is not a JSON object");
  const JsonValue* payload = &root;
  std::unordered_map<std::string, FieldSchema> schemas;
  const JsonValue* wrapped_schema = root.find("schema");
  const JsonValue* wrapped_payload = root.find("payload");
  if (wrapped_schema != nullptr && wrapped_payload != nullptr) {
    payload = wrapped_payload;
    if (payload->isNull()) return rec;  // a wrapped tombstone
    if (wrapped_schema->isObject()) schemas = rowSchema(*wrapped_schema);
  }
  if (!payload->isObject()) return bad("payload is not an object");
  const JsonValue* op_it = payload->find("op");
  if (op_it == nullptr || !op_it->isString() || op_it->str().size() != 1)
    return bad("missing or malformed \"op\" (is a transform such as ExtractNewRecordState "
               "flattening the envelope?)");
  rec.op = op_it->str()[0];

  const JsonValue* src_it = payload->find("source");
  if (src_it == nullptr || !src_it->isObject()) return bad("missing \"source\" block");
  const JsonValue& src = *src_it;
  if (const JsonValue* it = src.find("lsn")) rec.lsn = lsnOf(*it);
  if (const JsonValue* it = src.find("txId"); it != nullptr && it->isNumber()) rec.txid = it->asUint64();
  if (const JsonValue* it = src.find("ts_ms"); it != nullptr && it->isNumber()) rec.ts_ms = it->asInt64();
  if (const JsonValue* it = src.find("snapshot")) {
    if (it->isString()) rec.snapshot = it->str() != "false";
    if (it->isBool()) rec.snapshot = it->boolean();
  }
  if (const JsonValue* it = src.find("sequence"); it != nullptr && it->isString()) {
    // A JSON array in a string: ["<last committed lsn>", "<current lsn>"], entries may be null.
    JsonDocument seq_doc;
    if (!seq_doc.parse(it->str())) return bad("source.sequence is not a two-element array");
    const JsonValue& seq = seq_doc.root();
    if (!seq.isArray() || seq.size() != 2) return bad("source.sequence is not a two-element array");
    if (!seq[0].isNull()) rec.last_committed_lsn = lsnOf(seq[0]);
    if (!seq[1].isNull()) rec.current_lsn = lsnOf(seq[1]);
  }

  if (rec.op == 'm') {
    const JsonValue* m = payload->find("message");
    if (m == nullptr || !m->isObject()) return bad("op m without \"message\"");
    rec.kind = DebeziumRecord::Kind::kMessage;
    rec.message.prefix = stringOf(*m, "prefix");
    const JsonValue* content = m->find("content");
    if (content != nullptr && content->isString()) {
      // The content is BYTES: base64 as JsonConverter writes it (binary mode does not apply).
      SM_ASSIGN_OR_RETURN(rec.message.content, base64Decode(content->str(), false));
    }
    rec.message.transactional = payload->find("transaction") != nullptr || rec.txid.has_value();
    if (rec.lsn) rec.message.lsn = *rec.lsn;
    return rec;
  }

  std::string schema_name = stringOf(src, "schema");
  std::string table_name = stringOf(src, "table");
  if (schema_name.empty() || table_name.empty()) return bad("source.schema/source.table missing");
  SM_ASSIGN_OR_RETURN(auto rel, relations_(schema_name, table_name));
  if (rel == nullptr) {
    rec.kind = DebeziumRecord::Kind::kSkipped;
    rec.skip_reason = "table " + schema_name + "." + table_name + " is not moved";
    return rec;
  }
  rec.relation = rel;
  const std::string key = rel->key();

  if (rec.op == 't') {
    rec.kind = DebeziumRecord::Kind::kChange;
    rec.change.op = common::ChangeOp::kTruncate;
    rec.change.truncated.push_back(rel);
    return rec;
  }

  auto tuple = [&](const char* field, bool required) -> Result<std::optional<common::Tuple>> {
    const JsonValue* it = payload->find(field);
    if (it == nullptr || it->isNull()) {
      if (required) return bad(std::string("op ") + rec.op + " without \"" + field + "\" for " + key);
      return std::optional<common::Tuple>();
    }
    if (!it->isObject()) return bad(std::string("\"") + field + "\" is not an object");
    common::Tuple t(rel->columns.size());
    size_t seen = 0;
    for (size_t i = 0; i < rel->columns.size(); ++i) {
      const auto& col = rel->columns[i];
      const JsonValue* v = it->find(col.name);
      if (v == nullptr) continue;  // absent: stays NULL; checked below for key columns
      ++seen;
      static const FieldSchema kNone;
      auto s = schemas.empty() ? schemas.end() : schemas.find(col.name);
      Ctx c{col.type_oid, col.type_modifier, s == schemas.end() ? kNone : s->second, modes_,
            placeholder_bytes_};
      auto d = datumOf(*v, c);
      if (!d) return d.status().withContext("column " + key + "." + col.name);
      t[i] = std::move(*d);
    }
    if (it->size() > seen) {
      // A field the source table lacks: a renaming transform or schema drift. Never guess.
      for (const auto& f : *it) {
        bool known = false;
        for (const auto& col : rel->columns) known = known || col.name == f.key();
        if (!known)
          return Status::refused("Debezium event for " + key + " carries field \"" +
                                 std::string(f.key()) +
                                 "\" that the source table lacks (a transform renaming fields, "
                                 "or schema drift); fix the connector or the schema, then rerun");
      }
    }
    return std::optional<common::Tuple>(std::move(t));
  };

  rec.kind = DebeziumRecord::Kind::kChange;
  common::Change& ch = rec.change;
  ch.relation = rel;
  const std::string& tenant_col = tenant_.columnFor(key);
  int tenant_idx = -1;
  for (size_t i = 0; i < rel->columns.size(); ++i)
    if (rel->columns[i].name == tenant_col) tenant_idx = static_cast<int>(i);
  if (tenant_idx < 0) return Status::refused("table " + key + " has no tenant column " + tenant_col);

  {
    // Another tenant's row (most records of a shared topic): decided from its tenant column
    // alone, before the other columns are decoded. Anything unusual (the column absent, NULL,
    // a placeholder, undecodable) goes the full way below, which reports it.
    const char* side = rec.op == 'd' ? "before" : (rec.op == 'c' || rec.op == 'r' || rec.op == 'u') ? "after" : nullptr;
    const JsonValue* obj = side ? payload->find(side) : nullptr;
    if (obj != nullptr && obj->isObject()) {
      const JsonValue* v = obj->find(tenant_col);
      if (v != nullptr && v->isPrimitive() && !v->isNull()) {
        static const FieldSchema kNone;
        auto s = schemas.empty() ? schemas.end() : schemas.find(tenant_col);
        const auto& col = rel->columns[static_cast<size_t>(tenant_idx)];
        Ctx c{col.type_oid, col.type_modifier, s == schemas.end() ? kNone : s->second, modes_,
              placeholder_bytes_};
        auto d = datumOf(*v, c);
        if (d && d->kind == Datum::Kind::kText && d->text != tenant_.tenant) {
          rec.kind = DebeziumRecord::Kind::kSkipped;
          rec.skip_reason = "row of another tenant";
          return rec;
        }
      }
    }
  }

  const common::Tuple* checked = nullptr;
  switch (rec.op) {
    case 'c':
    case 'r':
    case 'u': {
      SM_ASSIGN_OR_RETURN(auto after, tuple("after", true));
      ch.new_tuple = std::move(*after);
      SM_ASSIGN_OR_RETURN(auto before, tuple("before", false));
      bool toast = false;
      for (const auto& d : ch.new_tuple) toast = toast || d.kind == Datum::Kind::kUnchangedToast;
      // A create that carries unchanged-TOAST placeholders is the second half of a primary-key
      // change (Debezium splits the update): it goes as an update of a missing row, which the
      // applier repairs from the source instead of writing the placeholder.
      ch.op = (rec.op == 'u' || toast) ? common::ChangeOp::kUpdate : common::ChangeOp::kInsert;
      if (rec.op == 'u' && before) {
        ch.old_is_full = rel->replica_identity == 'f';
        ch.old_tuple = std::move(*before);
      }
      checked = &ch.new_tuple;
      break;
    }
    case 'd': {
      SM_ASSIGN_OR_RETURN(auto before, tuple("before", true));
      ch.op = common::ChangeOp::kDelete;
      ch.old_is_full = rel->replica_identity == 'f';
      ch.old_tuple = std::move(*before);
      rec.pk_change = headers.newkey;
      checked = &*ch.old_tuple;
      break;
    }
    default:
      return bad(std::string("unknown op \"") + rec.op + "\"");
  }
  // Every key column must be present (a delete under REPLICA IDENTITY DEFAULT carries only the
  // key; the tenant column must be among them, which the config preflight checks).
  for (size_t i = 0; i < rel->columns.size(); ++i) {
    if (rel->columns[i].part_of_key && (*checked)[i].kind != Datum::Kind::kText)
      return bad("key column " + key + "." + rel->columns[i].name + " is null or missing");
  }
  const Datum& t = (*checked)[static_cast<size_t>(tenant_idx)];
  if (t.kind != Datum::Kind::kText) {
    return Status::refused("Debezium event for " + key + " lacks tenant column " + tenant_col +
                           " (REPLICA IDENTITY DEFAULT without it in the key?): set REPLICA "
                           "IDENTITY FULL on the source table, then rerun");
  }
  if (t.text != tenant_.tenant) {
    rec.kind = DebeziumRecord::Kind::kSkipped;
    rec.skip_reason = "row of another tenant";
    rec.change = {};
  }
  return rec;
}

}  // namespace stampmover::cdc
