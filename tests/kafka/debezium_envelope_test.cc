// Unit tests of the Debezium envelope decoder. Fixture shapes follow the change-event examples
// of Debezium's PostgreSQL connector documentation ("Data change events": create/update/delete
// with and without the JsonConverter schema wrapper, the `source` block with lsn, sequence,
// txId; "Data type mappings" for each handling mode; "Toasted values" for the placeholder;
// "truncate" and "message" events). Values are written here by hand in those shapes.
#include "cdc/debezium_envelope.h"

#include <gtest/gtest.h>

namespace stampmover::cdc {
namespace {

using common::Datum;

std::shared_ptr<const common::Relation> itemsRel(char identity = 'd') {
  auto r = std::make_shared<common::Relation>();
  r->id = 16500;
  r->schema = "public";
  r->name = "items";
  r->replica_identity = identity;
  r->columns = {{"tenant_id", 20, -1, true},   {"id", 20, -1, true},
                {"name", 25, -1, false},       {"price", 1700, (10 << 16 | 2) + 4, false},
                {"blob", 17, -1, false},       {"at", 1114, -1, false},
                {"tags", 1009, -1, false}};
  return r;
}

DebeziumDecoder decoder(DebeziumModes modes = {}, char identity = 'd') {
  auto rel = itemsRel(identity);
  return DebeziumDecoder(
      modes,
      [rel](const std::string& s, const std::string& t)
          -> common::Result<std::shared_ptr<const common::Relation>> {
        if (s == "public" && t == "items") return rel;
        return std::shared_ptr<const common::Relation>();
      },
      TenantFilter{"42"});
}

const char* kSource =
    R"("source":{"version":"2.1.2.Final","connector":"postgresql","name":"stamp_a",)"
    R"("ts_ms":1700000000000,"snapshot":"false","db":"app","sequence":"[\"24023119\",\"24023128\"]",)"
    R"("schema":"public","table":"items","txId":555,"lsn":24023128,"xmin":null})";

std::string envelope(const std::string& op, const std::string& before, const std::string& after) {
  return R"({"before":)" + before + R"(,"after":)" + after + "," + kSource + R"(,"op":")" + op +
         R"(","ts_ms":1700000000100,"transaction":null})";
}

const char* kRow =
    R"({"tenant_id":42,"id":7,"name":"lamp","price":"EtaH","blob":"aGVsbG8=",)"
    R"("at":1700000000123456,"tags":["a","b \"q\""]})";

TEST(DebeziumEnvelope, CreateWithoutWrapper) {
  auto d = decoder();
  auto r = d.decode(envelope("c", "null", kRow));
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_EQ(r->kind, DebeziumRecord::Kind::kChange);
  EXPECT_EQ(r->change.op, common::ChangeOp::kInsert);
  const auto& t = r->change.new_tuple;
  ASSERT_EQ(t.size(), 7u);
  EXPECT_EQ(t[0], Datum::value("42"));
  EXPECT_EQ(t[2], Datum::value("lamp"));
  EXPECT_EQ(t[3], Datum::value("12345.67"));
  EXPECT_EQ(t[4], Datum::value("\\x68656c6c6f"));
  EXPECT_EQ(t[5], Datum::value("2023-11-14 22:13:20.123456"));
  EXPECT_EQ(t[6], Datum::value(R"({"a","b \"q\""})"));
  EXPECT_EQ(r->lsn, common::Lsn(24023128));
  EXPECT_EQ(r->last_committed_lsn, common::Lsn(24023119));
  EXPECT_EQ(r->current_lsn, common::Lsn(24023128));
  EXPECT_EQ(r->txid, 555u);
  EXPECT_FALSE(r->snapshot);
}

TEST(DebeziumEnvelope, WrappedEnvelopeUsesSemanticSchema) {
  // With schemas.enable=true the value is {"schema":..., "payload":...}; the schema says the
  // timestamp is io.debezium.time.Timestamp (milliseconds) and the numeric's scale.
  std::string v = R"({"schema":{"type":"struct","fields":[{"type":"struct","optional":true,)"
                  R"("field":"after","fields":[{"type":"int64","field":"tenant_id"},)"
                  R"({"type":"int64","field":"id"},)"
                  R"({"type":"bytes","name":"org.apache.kafka.connect.data.Decimal",)"
                  R"("parameters":{"scale":"3","connect.decimal.precision":"10"},"field":"price"},)"
                  R"({"type":"int64","name":"io.debezium.time.Timestamp","field":"at"}]}]},)"
                  R"("payload":)" +
                  envelope("r", "null", R"({"tenant_id":42,"id":1,"price":"/2o=","at":86400001})") +
                  "}";
  auto d = decoder();
  auto r = d.decode(v);
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_EQ(r->op, 'r');
  EXPECT_EQ(r->change.new_tuple[3], Datum::value("-0.150"));
  EXPECT_EQ(r->change.new_tuple[5], Datum::value("1970-01-02 00:00:00.001000"));
  EXPECT_EQ(r->change.new_tuple[2], Datum::null());  // absent field: NULL
}

TEST(DebeziumEnvelope, TombstonesAreSkipped) {
  auto d = decoder();
  for (const char* v : {"", "null", R"({"schema":null,"payload":null})"}) {
    auto r = d.decode(v);
    ASSERT_TRUE(r.isOk()) << v;
    EXPECT_EQ(r->kind, DebeziumRecord::Kind::kTombstone) << v;
  }
}

TEST(DebeziumEnvelope, UpdateWithPlaceholderBecomesUnchangedToast) {
  auto d = decoder();
  auto r = d.decode(envelope(
      "u", "null",
      R"({"tenant_id":42,"id":7,"name":"__debezium_unavailable_value","price":null,)"
      R"("blob":"X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==","at":null,)"
      R"("tags":["__debezium_unavailable_value"]})"));
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_EQ(r->change.op, common::ChangeOp::kUpdate);
  EXPECT_EQ(r->change.new_tuple[2], Datum::unchangedToast());
  EXPECT_EQ(r->change.new_tuple[4], Datum::unchangedToast());
  EXPECT_EQ(r->change.new_tuple[6], Datum::unchangedToast());
  EXPECT_EQ(r->change.new_tuple[3], Datum::null());
}

TEST(DebeziumEnvelope, CreateWithPlaceholderIsAnUpdate) {
  // The create half of a primary-key change of a row with unchanged TOAST values.
  auto d = decoder();
  auto r = d.decode(envelope("c", "null",
                             R"({"tenant_id":42,"id":8,"name":"__debezium_unavailable_value"})"),
                    RecordHeaders{false, true});
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(r->change.op, common::ChangeOp::kUpdate);
}

TEST(DebeziumEnvelope, DeleteCarriesKeyAndNewkeyHeader) {
  auto d = decoder();
  auto r = d.decode(envelope("d", R"({"tenant_id":42,"id":7,"name":null})", "null"),
                    RecordHeaders{true, false});
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_EQ(r->change.op, common::ChangeOp::kDelete);
  ASSERT_TRUE(r->change.old_tuple.has_value());
  EXPECT_FALSE(r->change.old_is_full);
  EXPECT_EQ((*r->change.old_tuple)[1], Datum::value("7"));
  EXPECT_TRUE(r->pk_change);
}

TEST(DebeziumEnvelope, OtherTenantsAndTablesAreSkipped) {
  auto d = decoder();
  auto r = d.decode(envelope("c", "null", R"({"tenant_id":43,"id":7})"));
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(r->kind, DebeziumRecord::Kind::kSkipped);
  std::string other = envelope("c", "null", R"({"x":1})");
  other.replace(other.find(R"("table":"items")"), 15, R"("table":"other")");
  r = d.decode(other);
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(r->kind, DebeziumRecord::Kind::kSkipped);
}

TEST(DebeziumEnvelope, TruncateAndMessage) {
  auto d = decoder();
  auto r = d.decode(envelope("t", "null", "null"));
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_EQ(r->change.op, common::ChangeOp::kTruncate);
  ASSERT_EQ(r->change.truncated.size(), 1u);
  EXPECT_EQ(r->change.truncated[0]->name, "items");
  auto m = d.decode(std::string(R"({"op":"m",)") + kSource +
                    R"(,"message":{"prefix":"stampmover_hb","content":"aGVsbG8="}})");
  ASSERT_TRUE(m.isOk()) << m.status().message();
  EXPECT_EQ(m->kind, DebeziumRecord::Kind::kMessage);
  EXPECT_EQ(m->message.prefix, "stampmover_hb");
  EXPECT_EQ(m->message.content, "hello");
}

TEST(DebeziumEnvelope, MalformedEventsAreErrors) {
  auto d = decoder();
  EXPECT_FALSE(d.decode("{not json").isOk());
  EXPECT_FALSE(d.decode(R"({"id":1,"name":"flattened by ExtractNewRecordState"})").isOk());
  EXPECT_FALSE(d.decode(envelope("x", "null", kRow)).isOk());
  // A key column missing.
  EXPECT_FALSE(d.decode(envelope("c", "null", R"({"tenant_id":42})")).isOk());
  // A field the table lacks (renamed by a transform).
  auto r = d.decode(envelope("c", "null", R"({"tenant_id":42,"id":1,"title":"x"})"));
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().errorClass(), common::ErrorClass::kRefused);
  // The tenant column absent from a delete's key.
  auto rel_no_tenant_key = d.decode(envelope("d", R"({"id":7})", "null"));
  EXPECT_FALSE(rel_no_tenant_key.isOk());
}

Datum val(const std::string& j, uint32_t oid, int32_t typmod = -1, DebeziumModes m = {},
          FieldSchema s = {}) {
  auto r = debeziumValueToDatum(j, oid, typmod, s, m);
  EXPECT_TRUE(r.isOk()) << j << ": " << r.status().message();
  return r.isOk() ? *r : Datum::value("<error>");
}

TEST(DebeziumValues, DecimalModes) {
  EXPECT_EQ(val(R"("BQ==")", 1700, (10 << 16 | 2) + 4), Datum::value("0.05"));
  EXPECT_EQ(val(R"("AA==")", 1700, (10 << 16 | 0) + 4), Datum::value("0"));
  EXPECT_EQ(val(R"({"scale":5,"value":"AY7pD/bDc+DuTj8K0g=="})", 1700),
            Datum::value("1234567890123456789012345.67890"));
  DebeziumModes str;
  str.decimal = DecimalMode::kString;
  EXPECT_EQ(val(R"("12.3400")", 1700, -1, str), Datum::value("12.3400"));
  EXPECT_FALSE(debeziumValueToDatum("1.5", 1700, -1, {}, {}).isOk());  // double mode: refused
}

TEST(DebeziumValues, TimePrecisionModes) {
  // adaptive: time(3) as milliseconds, time(6) as microseconds.
  EXPECT_EQ(val("3723004", 1083, 3), Datum::value("01:02:03.004000"));
  EXPECT_EQ(val("3723000004", 1083, 6), Datum::value("01:02:03.000004"));
  DebeziumModes micro;
  micro.time = TimePrecisionMode::kAdaptiveTimeMicroseconds;
  EXPECT_EQ(val("3723004", 1083, 3, micro), Datum::value("00:00:03.723004"));
  EXPECT_EQ(val("86400000000", 1083, 6), Datum::value("24:00:00.000000"));
  // timestamp(3) as milliseconds, timestamp(6) as microseconds, before 1970 too.
  EXPECT_EQ(val("-1", 1114, 6), Datum::value("1969-12-31 23:59:59.999999"));
  EXPECT_EQ(val("1500", 1114, 3), Datum::value("1970-01-01 00:00:01.500000"));
  EXPECT_EQ(val("19782", 1082), Datum::value("2024-02-29"));
  EXPECT_EQ(val("-719163", 1082), Datum::value("0001-12-31 BC"));
  FieldSchema nano{"int64", "io.debezium.time.NanoTimestamp", {}};
  EXPECT_EQ(val("1000001000", 1114, 6, {}, nano), Datum::value("1970-01-01 00:00:01.000001"));
  // Strings (timestamptz as ZonedTimestamp, interval as ISO 8601, isostring) pass through.
  EXPECT_EQ(val(R"("2024-01-02T03:04:05.123456Z")", 1184),
            Datum::value("2024-01-02T03:04:05.123456Z"));
  EXPECT_EQ(val(R"("P1Y2M3DT4H5M6.78S")", 1186), Datum::value("P1Y2M3DT4H5M6.78S"));
  FieldSchema connect{"int64", "org.apache.kafka.connect.data.Timestamp", {}};
  EXPECT_FALSE(debeziumValueToDatum("1", 1114, 6, connect, {}).isOk());
}

TEST(DebeziumValues, BinaryModes) {
  DebeziumModes m;
  EXPECT_EQ(val(R"("AAH+/w==")", 17, -1, m), Datum::value("\\x0001feff"));
  m.binary = BinaryMode::kHex;
  EXPECT_EQ(val(R"("0001FEff")", 17, -1, m), Datum::value("\\x0001feff"));
  m.binary = BinaryMode::kBase64UrlSafe;
  EXPECT_EQ(val(R"("-_8=")", 17, -1, m), Datum::value("\\xfbff"));
  // The placeholder in hex mode is the hex of its bytes.
  m.binary = BinaryMode::kHex;
  EXPECT_EQ(val(R"("5f5f646562657a69756d5f756e617661696c61626c655f76616c7565")", 17, -1, m),
            Datum::unchangedToast());
  // A configured hex: placeholder.
  DebeziumModes h;
  h.placeholder = "hex:00ff";
  EXPECT_EQ(val(R"("AP8=")", 17, -1, h), Datum::unchangedToast());
  EXPECT_EQ(val(R"("AP4=")", 17, -1, h), Datum::value("\\x00fe"));
}

TEST(DebeziumValues, ScalarsAndArrays) {
  EXPECT_EQ(val("true", 16), Datum::value("t"));
  EXPECT_EQ(val("-32768", 21), Datum::value("-32768"));
  EXPECT_EQ(val("9223372036854775807", 20), Datum::value("9223372036854775807"));
  EXPECT_EQ(val("0.1", 700), Datum::value("0.1"));
  EXPECT_EQ(val("0.30000000000000004", 701), Datum::value("0.30000000000000004"));
  EXPECT_EQ(val(R"("NaN")", 701), Datum::value("NaN"));
  EXPECT_EQ(val(R"("{\"a\": [1, 2]}")", 3802), Datum::value(R"({"a": [1, 2]})"));
  EXPECT_EQ(val("[1,null,3]", 1007), Datum::value(R"({"1",NULL,"3"})"));
  EXPECT_EQ(val("null", 25), Datum::null());
  EXPECT_EQ(val(R"("__debezium_unavailable_value")", 3802), Datum::unchangedToast());
  EXPECT_EQ(val(R"("happy")", 16390), Datum::value("happy"));  // an enum
  EXPECT_FALSE(debeziumValueToDatum(R"("x")", 23, -1, {}, {}).isOk());
}

}  // namespace
}  // namespace stampmover::cdc
