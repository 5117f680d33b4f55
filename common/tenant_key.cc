// Offline canonicalization of tenant keys: see tenant_key.h. The grammars follow PostgreSQL 15's
// int8in (pg_strtoint64) and uuid_in (string_to_uuid) so that the result equals the server's
// cast for every input they accept; anything else is left to the server (nullopt).
#include "common/tenant_key.h"

#include <cctype>
#include <cstdint>

namespace stampmover::common {

namespace {

bool isSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }
bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isHex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

std::optional<std::string> canonicalInteger(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && isSpace(s[i])) ++i;
  bool negative = false;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) negative = s[i++] == '-';
  const size_t digits_from = i;
  while (i < s.size() && isDigit(s[i])) ++i;
  const size_t digits_to = i;
  if (digits_to == digits_from) return std::nullopt;
  while (i < s.size() && isSpace(s[i])) ++i;
  if (i != s.size()) return std::nullopt;  // 0x.., 1_000, 1.0: not PostgreSQL 15's grammar
  std::string_view digits = s.substr(digits_from, digits_to - digits_from);
  while (digits.size() > 1 && digits.front() == '0') digits.remove_prefix(1);
  // Out of bigint's range: invalid for every integer type; the server would refuse it.
  constexpr std::string_view kMaxPos = "9223372036854775807";
  constexpr std::string_view kMaxNeg = "9223372036854775808";
  const std::string_view limit = negative ? kMaxNeg : kMaxPos;
  if (digits.size() > limit.size() || (digits.size() == limit.size() && digits > limit)) {
    return std::nullopt;
  }
  if (digits == "0") return std::string("0");  // -0 prints as 0
  return (negative ? "-" : "") + std::string(digits);
}

std::optional<std::string> canonicalUuid(std::string_view s) {
  size_t i = 0;
  bool braces = false;
  if (i < s.size() && s[i] == '{') {
    braces = true;
    ++i;
  }
  std::string hex;
  for (int byte = 0; byte < 16; ++byte) {
    if (i + 1 >= s.size() || !isHex(s[i]) || !isHex(s[i + 1])) return std::nullopt;
    hex += static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
    hex += static_cast<char>(std::tolower(static_cast<unsigned char>(s[i + 1])));
    i += 2;
    // uuid_in takes one optional hyphen after every second byte but the last.
    if (i < s.size() && s[i] == '-' && byte % 2 == 1 && byte < 15) ++i;
  }
  if (braces) {
    if (i >= s.size() || s[i] != '}') return std::nullopt;
    ++i;
  }
  if (i != s.size()) return std::nullopt;
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20);
}

}  // namespace

TenantKeyKind tenantKeyKind(std::string_view type) {
  if (type == "smallint" || type == "integer" || type == "bigint") return TenantKeyKind::kInteger;
  if (type == "uuid") return TenantKeyKind::kUuid;
  if (type == "text" || type == "character varying") return TenantKeyKind::kText;
  return TenantKeyKind::kOther;
}

std::optional<std::string> canonicalTenantTextOffline(std::string_view raw, TenantKeyKind kind) {
  switch (kind) {
    case TenantKeyKind::kInteger: return canonicalInteger(raw);
    case TenantKeyKind::kUuid: return canonicalUuid(raw);
    case TenantKeyKind::kText: return std::string(raw);
    case TenantKeyKind::kOther: return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace stampmover::common
