// JsonDocument: recursive descent over the input; a container's children are collected on a
// scratch stack and moved to the node array as one block when it closes, so every container's
// children are contiguous (kids_ is set once parsing has finished and the array no longer moves).
#include "cdc/json_view.h"

#include <charconv>
#include <cmath>
#include <cstddef>
#include <limits>

namespace stampmover::cdc {

int64_t JsonValue::asInt64() const {
  switch (type_) {
    case Type::kInt:
      return i_;
    case Type::kUint:
      return static_cast<int64_t>(u_);
    case Type::kDouble:
      return static_cast<int64_t>(d_);
    case Type::kBool:
      return b_ ? 1 : 0;
    default:
      return 0;
  }
}

uint64_t JsonValue::asUint64() const {
  switch (type_) {
    case Type::kInt:
      return static_cast<uint64_t>(i_);
    case Type::kUint:
      return u_;
    case Type::kDouble:
      return static_cast<uint64_t>(d_);
    case Type::kBool:
      return b_ ? 1 : 0;
    default:
      return 0;
  }
}

double JsonValue::asDouble() const {
  switch (type_) {
    case Type::kInt:
      return static_cast<double>(i_);
    case Type::kUint:
      return static_cast<double>(u_);
    case Type::kDouble:
      return d_;
    case Type::kBool:
      return b_ ? 1 : 0;
    default:
      return 0;
  }
}

const JsonValue* JsonValue::find(std::string_view name) const {
  if (type_ != Type::kObject) return nullptr;
  for (size_t i = count_; i-- > 0;) {
    if (kids_[i].key_ == name) return &kids_[i];
  }
  return nullptr;
}

const char* JsonValue::typeName() const {
  switch (type_) {
    case Type::kNull:
      return "null";
    case Type::kBool:
      return "boolean";
    case Type::kInt:
    case Type::kUint:
    case Type::kDouble:
      return "number";
    case Type::kString:
      return "string";
    case Type::kArray:
      return "array";
    case Type::kObject:
      return "object";
  }
  return "unknown";
}

namespace {
constexpr int kMaxDepth = 512;

void appendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Length of the well-formed UTF-8 sequence at s[0] (RFC 3629: no overlongs, no surrogates,
// at most U+10FFFF), or 0.
size_t utf8Length(const unsigned char* s, size_t avail) {
  const unsigned char c = s[0];
  auto cont = [&](size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return i < avail && s[i] >= lo && s[i] <= hi;
  };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0, 0xBF) && cont(2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90, 0xBF) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

// Bytes a string can hold as they are (printable ASCII other than '"' and '\\'): the scan
// skips runs of them without looking further.
struct PlainBytes {
  bool plain[256] = {};
  constexpr PlainBytes() {
    for (int c = 0x20; c < 0x80; ++c) plain[c] = c != '"' && c != '\\';
  }
};
constexpr PlainBytes kPlain;

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

bool JsonDocument::fail(const char* why) {
  error_ = std::string(why) + " at byte " + std::to_string(pos_);
  return false;
}

void JsonDocument::skipSpace() {
  while (pos_ < in_.size()) {
    const char c = in_[pos_];
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') break;
    ++pos_;
  }
}

bool JsonDocument::parse(std::string_view text) {
  in_ = text;
  pos_ = 0;
  nodes_.clear();
  scratch_.clear();
  owned_.clear();
  error_.clear();
  skipSpace();
  if (!value(0)) return false;
  skipSpace();
  if (pos_ != in_.size()) return fail("unexpected text after the value");
  nodes_.push_back(scratch_.back());
  scratch_.clear();
  for (auto& n : nodes_) {
    if (n.type_ == JsonValue::Type::kArray || n.type_ == JsonValue::Type::kObject)
      n.kids_ = nodes_.data() + n.first_;
  }
  return true;
}

// Reads a string (pos_ at its opening quote) into `out`: a view of the input when it has no
// escape, else of an unescaped copy.
bool JsonDocument::string(std::string_view& out) {
  ++pos_;  // the quote
  const size_t start = pos_;
  std::string* copy = nullptr;
  size_t run = start;  // start of the bytes not yet copied (when copying)
  const auto* bytes = reinterpret_cast<const unsigned char*>(in_.data());
  const size_t n_in = in_.size();
  while (true) {
    while (pos_ < n_in && kPlain.plain[bytes[pos_]]) ++pos_;
    if (pos_ >= n_in) return fail("unterminated string");
    const auto c = bytes[pos_];
    if (c == '"') break;
    if (c < 0x20) return fail("control character in a string");
    if (c >= 0x80) {
      const size_t n =
          utf8Length(reinterpret_cast<const unsigned char*>(in_.data()) + pos_, in_.size() - pos_);
      if (n == 0) return fail("ill-formed UTF-8 in a string");
      pos_ += n;
      continue;
    }
    if (c != '\\') {
      ++pos_;
      continue;
    }
    if (copy == nullptr) copy = &owned_.emplace_back();
    copy->append(in_.data() + run, pos_ - run);
    if (++pos_ >= in_.size()) return fail("unterminated string");
    const char e = in_[pos_++];
    switch (e) {
      case '"':
        copy->push_back('"');
        break;
      case '\\':
        copy->push_back('\\');
        break;
      case '/':
        copy->push_back('/');
        break;
      case 'b':
        copy->push_back('\b');
        break;
      case 'f':
        copy->push_back('\f');
        break;
      case 'n':
        copy->push_back('\n');
        break;
      case 'r':
        copy->push_back('\r');
        break;
      case 't':
        copy->push_back('\t');
        break;
      case 'u': {
        auto hex4 = [&](uint32_t& cp) {
          if (pos_ + 4 > in_.size()) return false;
          cp = 0;
          for (int i = 0; i < 4; ++i) {
            const int h = hexValue(in_[pos_ + static_cast<size_t>(i)]);
            if (h < 0) return false;
            cp = cp * 16 + static_cast<uint32_t>(h);
          }
          pos_ += 4;
          return true;
        };
        uint32_t cp = 0;
        if (!hex4(cp)) return fail("invalid \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          uint32_t lo = 0;
          if (pos_ + 2 > in_.size() || in_[pos_] != '\\' || in_[pos_ + 1] != 'u')
            return fail("unpaired UTF-16 surrogate");
          pos_ += 2;
          if (!hex4(lo) || lo < 0xDC00 || lo > 0xDFFF) return fail("unpaired UTF-16 surrogate");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return fail("unpaired UTF-16 surrogate");
        }
        appendUtf8(*copy, cp);
        break;
      }
      default:
        return fail("invalid escape in a string");
    }
    run = pos_;
  }
  if (copy == nullptr) {
    out = in_.substr(start, pos_ - start);
  } else {
    copy->append(in_.data() + run, pos_ - run);
    out = *copy;
  }
  ++pos_;  // the closing quote
  return true;
}

bool JsonDocument::number(JsonValue& v) {
  const size_t start = pos_;
  auto digit = [&]() { return pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9'; };
  if (pos_ < in_.size() && in_[pos_] == '-') ++pos_;
  if (!digit()) return fail("invalid number");
  if (in_[pos_] == '0') {
    ++pos_;
  } else {
    while (digit()) ++pos_;
  }
  bool integral = true;
  if (pos_ < in_.size() && in_[pos_] == '.') {
    integral = false;
    ++pos_;
    if (!digit()) return fail("invalid number");
    while (digit()) ++pos_;
  }
  if (pos_ < in_.size() && (in_[pos_] == 'e' || in_[pos_] == 'E')) {
    integral = false;
    ++pos_;
    if (pos_ < in_.size() && (in_[pos_] == '+' || in_[pos_] == '-')) ++pos_;
    if (!digit()) return fail("invalid number");
    while (digit()) ++pos_;
  }
  const char* b = in_.data() + start;
  const char* e = in_.data() + pos_;
  v.str_ = std::string_view(b, static_cast<size_t>(e - b));
  if (integral) {
    // As nlohmann: unsigned when not negative, signed when negative, a float when it does not
    // fit 64 bits.
    if (*b == '-') {
      int64_t i = 0;
      if (std::from_chars(b, e, i).ec == std::errc()) {
        v.type_ = JsonValue::Type::kInt;
        v.i_ = i;
        return true;
      }
    } else {
      uint64_t u = 0;
      if (std::from_chars(b, e, u).ec == std::errc()) {
        v.type_ = JsonValue::Type::kUint;
        v.u_ = u;
        return true;
      }
    }
  }
  double d = 0;
  auto r = std::from_chars(b, e, d);
  if (r.ec == std::errc::result_out_of_range) {
    // nlohmann refuses a number that overflows a double and reads an underflow as zero.
    size_t epos = v.str_.find_first_of("eE");
    const bool tiny = epos != std::string_view::npos && v.str_[epos + 1] == '-';
    if (!tiny) return fail("number overflows a double");
    d = *b == '-' ? -0.0 : 0.0;
  } else if (r.ec != std::errc() || r.ptr != e) {
    return fail("invalid number");
  }
  v.type_ = JsonValue::Type::kDouble;
  v.d_ = d;
  return true;
}

// Parses one value at pos_ and pushes it on scratch_.
bool JsonDocument::value(int depth) {
  if (depth > kMaxDepth) return fail("nested too deeply");
  if (pos_ >= in_.size()) return fail("unexpected end of input");
  JsonValue v;
  const char c = in_[pos_];
  auto literal = [&](std::string_view word) {
    if (in_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  };
  switch (c) {
    case '{':
    case '[': {
      const bool object = c == '{';
      const char close = object ? '}' : ']';
      ++pos_;
      const size_t base = scratch_.size();
      skipSpace();
      if (pos_ < in_.size() && in_[pos_] == close) {
        ++pos_;
      } else {
        while (true) {
          std::string_view key;
          if (object) {
            if (pos_ >= in_.size() || in_[pos_] != '"') return fail("expected a member name");
            if (!string(key)) return false;
            skipSpace();
            if (pos_ >= in_.size() || in_[pos_] != ':') return fail("expected ':'");
            ++pos_;
            skipSpace();
          }
          if (!value(depth + 1)) return false;
          scratch_.back().key_ = key;
          skipSpace();
          if (pos_ >= in_.size()) return fail("unexpected end of input");
          if (in_[pos_] == ',') {
            ++pos_;
            skipSpace();
            continue;
          }
          if (in_[pos_] == close) {
            ++pos_;
            break;
          }
          return fail(object ? "expected ',' or '}'" : "expected ',' or ']'");
        }
      }
      v.type_ = object ? JsonValue::Type::kObject : JsonValue::Type::kArray;
      v.first_ = nodes_.size();
      v.count_ = static_cast<uint32_t>(scratch_.size() - base);
      nodes_.insert(nodes_.end(), scratch_.begin() + static_cast<std::ptrdiff_t>(base),
                    scratch_.end());
      scratch_.resize(base);
      break;
    }
    case '"':
      v.type_ = JsonValue::Type::kString;
      if (!string(v.str_)) return false;
      break;
    case 't':
      if (!literal("true")) return fail("invalid literal");
      v.type_ = JsonValue::Type::kBool;
      v.b_ = true;
      break;
    case 'f':
      if (!literal("false")) return fail("invalid literal");
      v.type_ = JsonValue::Type::kBool;
      v.b_ = false;
      break;
    case 'n':
      if (!literal("null")) return fail("invalid literal");
      v.type_ = JsonValue::Type::kNull;
      break;
    default:
      if (c == '-' || (c >= '0' && c <= '9')) {
        if (!number(v)) return false;
        break;
      }
      return fail("unexpected character");
  }
  scratch_.push_back(v);
  return true;
}

}  // namespace stampmover::cdc
