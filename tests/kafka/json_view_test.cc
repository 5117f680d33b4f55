// Unit tests of the Debezium decoder's JSON reader (cdc/json_view.h): each value kind, escapes
// and surrogate pairs, number kinds as nlohmann gives them, duplicate keys, and rejected input,
// checked against nlohmann::json parsing the same text.
#include "cdc/json_view.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace stampmover::cdc {
namespace {

TEST(JsonView, ValuesAndStructure) {
  JsonDocument doc;
  ASSERT_TRUE(doc.parse(R"( {"a": [1, -2, 18446744073709551615, 1.5e3, true, null],
                              "b": {"c": "x"}, "e": {}, "f": []} )"))
      << doc.error();
  const JsonValue& r = doc.root();
  ASSERT_TRUE(r.isObject());
  ASSERT_EQ(r.size(), 4u);
  const JsonValue* a = r.find("a");
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->isArray());
  ASSERT_EQ(a->size(), 6u);
  EXPECT_EQ((*a)[0].type(), JsonValue::Type::kUint);
  EXPECT_EQ((*a)[1].type(), JsonValue::Type::kInt);
  EXPECT_EQ((*a)[1].asInt64(), -2);
  EXPECT_EQ((*a)[2].type(), JsonValue::Type::kUint);
  EXPECT_EQ((*a)[2].asUint64(), 18446744073709551615ull);
  EXPECT_EQ((*a)[3].type(), JsonValue::Type::kDouble);
  EXPECT_EQ((*a)[3].asDouble(), 1500.0);
  EXPECT_TRUE((*a)[4].isBool() && (*a)[4].boolean());
  EXPECT_TRUE((*a)[5].isNull());
  EXPECT_EQ(r.find("b")->find("c")->str(), "x");
  EXPECT_EQ(r.find("e")->size(), 0u);
  EXPECT_TRUE(r.find("f")->isArray());
  EXPECT_EQ(r.find("zz"), nullptr);
  EXPECT_EQ(a->find("x"), nullptr) << "find on an array";
}

TEST(JsonView, StringsAsNlohmannDecodesThem) {
  for (const char* text : {R"("plain")", R"("q\"b\\s\/\b\f\n\r\t")", R"("\u00e9\u4e2d")",
                           R"("\ud83d\ude00 smile")", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\""}) {
    JsonDocument doc;
    ASSERT_TRUE(doc.parse(text)) << text << ": " << doc.error();
    EXPECT_EQ(std::string(doc.root().str()), nlohmann::json::parse(text).get<std::string>())
        << text;
  }
}

TEST(JsonView, NumbersAsNlohmannClassifiesThem) {
  for (const char* text : {"0", "-0", "9223372036854775807", "9223372036854775808",
                           "-9223372036854775808", "-9223372036854775809", "18446744073709551616",
                           "0.1", "-1.25e-3", "1E2", "1e-400", "-1e-400"}) {
    JsonDocument doc;
    ASSERT_TRUE(doc.parse(text)) << text << ": " << doc.error();
    nlohmann::json n = nlohmann::json::parse(text);
    const JsonValue& v = doc.root();
    EXPECT_EQ(v.isInteger(), n.is_number_integer()) << text;
    EXPECT_EQ(v.isUnsigned(), n.is_number_unsigned()) << text;
    if (n.is_number_float()) {
      EXPECT_EQ(v.asDouble(), n.get<double>()) << text;
    } else {
      EXPECT_EQ(v.asInt64(), n.get<int64_t>()) << text;
    }
  }
}

TEST(JsonView, LastDuplicateKeyWinsAsInNlohmann) {
  JsonDocument doc;
  ASSERT_TRUE(doc.parse(R"({"k": 1, "k": 2})"));
  EXPECT_EQ(doc.root().find("k")->asInt64(), nlohmann::json::parse(R"({"k": 1, "k": 2})")["k"]);
}

TEST(JsonView, RejectsWhatNlohmannRejects) {
  for (const char* text : {"",
                           "{",
                           "{\"a\" 1}",
                           "{\"a\":1,}",
                           "[1,]",
                           "01",
                           "1.",
                           "-",
                           "+1",
                           "tru",
                           "nul",
                           "\"unterminated",
                           "\"bad \\x escape\"",
                           "\"\\ud800 lone\"",
                           "\"\\udc00\"",
                           "\"ctl \x01\"",
                           "\"bad utf8 \xc3\x28\"",
                           "\"overlong \xc0\xaf\"",
                           "{\"a\":1} x",
                           "[1 2]",
                           "{1:2}",
                           "1e400",
                           "-1e400"}) {
    JsonDocument doc;
    EXPECT_FALSE(doc.parse(text)) << text;
    EXPECT_FALSE(doc.error().empty()) << text;
    EXPECT_TRUE(nlohmann::json::parse(text, nullptr, false).is_discarded()) << text;
  }
  std::string deep(600, '[');
  JsonDocument doc;
  EXPECT_FALSE(doc.parse(deep + std::string(600, ']'))) << "nesting is bounded";
}

TEST(JsonView, ReusedDocumentForgetsThePreviousValue) {
  JsonDocument doc;
  ASSERT_TRUE(doc.parse(R"({"a": "x\ny", "b": [1, 2, 3]})"));
  ASSERT_TRUE(doc.parse(R"(["z"])"));
  ASSERT_TRUE(doc.root().isArray());
  EXPECT_EQ(doc.root()[0].str(), "z");
}

}  // namespace
}  // namespace stampmover::cdc
