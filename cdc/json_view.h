// A strict RFC 8259 JSON reader for the Debezium decoder's hot path: one pass over the record
// value into a flat array of nodes whose strings point into the input (unescaped copies only
// for strings with escapes), instead of a tree of maps and heap strings. Values keep
// nlohmann::json's semantics where the decoder relies on them (integer vs unsigned vs float,
// the last of duplicate keys wins, UTF-8 validated, type names in messages).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace stampmover::cdc {

class JsonValue {
 public:
  enum class Type : uint8_t { kNull, kBool, kInt, kUint, kDouble, kString, kArray, kObject };

  Type type() const { return type_; }
  bool isNull() const { return type_ == Type::kNull; }
  bool isBool() const { return type_ == Type::kBool; }
  bool isString() const { return type_ == Type::kString; }
  bool isObject() const { return type_ == Type::kObject; }
  bool isArray() const { return type_ == Type::kArray; }
  // As nlohmann: an integer (no fraction, no exponent, fits 64 bits): unsigned when not
  // negative, signed when negative.
  bool isInteger() const { return type_ == Type::kInt || type_ == Type::kUint; }
  bool isUnsigned() const { return type_ == Type::kUint; }
  bool isNumber() const { return isInteger() || type_ == Type::kDouble; }
  bool isPrimitive() const { return !isObject() && !isArray(); }

  bool boolean() const { return b_; }
  std::string_view str() const { return str_; }
  // As nlohmann's get<int64_t>/get<uint64_t>/get<double> of a number (a cast between kinds).
  int64_t asInt64() const;
  uint64_t asUint64() const;
  double asDouble() const;
  // The text a number had in the input (for domains over numeric types).
  std::string_view numberText() const { return str_; }

  // Members (objects, in input order) or elements (arrays).
  size_t size() const { return count_; }
  const JsonValue* begin() const { return kids_; }
  const JsonValue* end() const { return kids_ + count_; }
  const JsonValue& operator[](size_t i) const { return kids_[i]; }
  // The member's name (members of an object only).
  std::string_view key() const { return key_; }
  // The member named `name` (the last one, as nlohmann keeps), or nullptr (also for non-objects).
  const JsonValue* find(std::string_view name) const;
  // "null", "boolean", "number", "string", "array", "object" (nlohmann's type_name()).
  const char* typeName() const;

 private:
  friend class JsonDocument;
  Type type_ = Type::kNull;
  bool b_ = false;
  uint32_t count_ = 0;
  union {
    int64_t i_;
    uint64_t u_;
    double d_ = 0;
  };
  std::string_view str_;  // string value, or a number's text
  std::string_view key_;
  size_t first_ = 0;  // index of the first child while parsing
  const JsonValue* kids_ = nullptr;
};

// Owns the nodes and the unescaped strings; the input text must outlive the document for as
// long as its values are read (strings without escapes point into it). Not thread-safe;
// reusable: parse() replaces the previous document.
class JsonDocument {
 public:
  // Parses `text` (one JSON value, surrounding whitespace allowed). False with error() set
  // (position and reason) when it is not valid JSON or nests deeper than 512 levels.
  bool parse(std::string_view text);
  const JsonValue& root() const { return nodes_.back(); }
  const std::string& error() const { return error_; }

 private:
  bool value(int depth);
  bool string(std::string_view& out);
  bool number(JsonValue& v);
  bool fail(const char* why);
  void skipSpace();

  std::string_view in_;
  size_t pos_ = 0;
  std::vector<JsonValue> nodes_;    // finished children, contiguous per container
  std::vector<JsonValue> scratch_;  // values of containers still open
  std::deque<std::string> owned_;   // unescaped strings
  std::string error_;
};

}  // namespace stampmover::cdc
