// Canonical row encoding: see canonical.h for the equality choices.
#include "verify/canonical.h"

#include <cstdio>
#include <string>

#include "common/session_settings.h"

namespace stampmover::verify {

namespace {

// Built-in type OIDs (pg_type.h); identical on every PostgreSQL server.
constexpr uint32_t kFloat4Oid = 700;
constexpr uint32_t kFloat8Oid = 701;
constexpr uint32_t kIntervalOid = 1186;
constexpr uint32_t kNumericOid = 1700;

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

const char* pinnedSessionSql() {
  // The settings that change how values print are the one pinned set of every data session
  // (common/session_settings.h; connect() already sends them, re-asserted here). Verify's own:
  // jit off: per-chunk queries are short; compiling them costs more than it saves.
  // statement/idle timeouts off: a chunk of a big table may legitimately take minutes.
  static const std::string kSql = std::string(common::pinnedSettingsSql()) +
                                  "; SET jit = off; SET statement_timeout = 0; "
                                  "SET idle_in_transaction_session_timeout = 0; "
                                  "SET default_transaction_read_only = on";
  return kSql.c_str();
}

Normalization normalizationFor(uint32_t oid) {
  switch (oid) {
    case kNumericOid:
      return Normalization::kTrimScale;
    case kFloat4Oid:
      return Normalization::kFloat4;
    case kFloat8Oid:
      return Normalization::kFloat8;
    case kIntervalOid:
      return Normalization::kJustifyInterval;
    default:
      return Normalization::kNone;
  }
}

std::string canonicalExpr(const std::string& col, Normalization n) {
  switch (n) {
    case Normalization::kNone:
      return col;
    case Normalization::kTrimScale:
      return "pg_catalog.trim_scale(" + col + ")";
    case Normalization::kFloat4:
      return "(" + col + " OPERATOR(pg_catalog.+) 0::pg_catalog.float4)";
    case Normalization::kFloat8:
      return "(" + col + " OPERATOR(pg_catalog.+) 0::pg_catalog.float8)";
    case Normalization::kJustifyInterval:
      return "pg_catalog.justify_interval(" + col + ")";
  }
  return col;
}

void splitCopyRow(std::string_view row, std::vector<std::string_view>* fields) {
  fields->clear();
  if (!row.empty() && row.back() == '\n') row.remove_suffix(1);
  size_t start = 0;
  for (;;) {
    size_t tab = row.find('\t', start);
    if (tab == std::string_view::npos) {
      fields->push_back(row.substr(start));
      return;
    }
    fields->push_back(row.substr(start, tab - start));
    start = tab + 1;
  }
}

std::optional<std::string> unescapeCopyField(std::string_view raw) {
  if (isCopyNull(raw)) return std::nullopt;
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c != '\\' || i + 1 == raw.size()) {
      out += c;
      continue;
    }
    char e = raw[++i];
    switch (e) {
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'v':
        out += '\v';
        break;
      case 'x': {
        int v = 0, digits = 0;
        while (digits < 2 && i + 1 < raw.size() && hexValue(raw[i + 1]) >= 0) {
          v = v * 16 + hexValue(raw[++i]);
          ++digits;
        }
        if (digits == 0) {
          out += 'x';
        } else {
          out += static_cast<char>(v);
        }
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          int v = e - '0', digits = 1;
          while (digits < 3 && i + 1 < raw.size() && raw[i + 1] >= '0' && raw[i + 1] <= '7') {
            v = v * 8 + (raw[++i] - '0');
            ++digits;
          }
          out += static_cast<char>(v & 0xff);
        } else {
          out += e;  // \\ and any other escaped character stand for themselves
        }
    }
  }
  return out;
}

std::string displayValue(const std::optional<std::string>& value) {
  if (!value) return "NULL";
  std::string out;
  out.reserve(value->size());
  for (unsigned char c : *value) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace stampmover::verify
