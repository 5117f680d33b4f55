// The canonical row encoding both sides are hashed in: pinned session settings, a per-type
// normalising SELECT expression, and helpers for the text COPY rows the servers send. Two rows
// encode to the same bytes exactly when PostgreSQL's `=` holds column by column, with the
// deviations listed below (all of them stricter than `=`, never looser).
//
// Equality choices, as PostgreSQL's `=` behaves (each one tested in verify_canonical_test and
// verify_test):
//  - NULL vs '' vs 'null': all three differ. COPY text writes NULL as \N, '' as an empty
//    field and 'null' as the four letters, so the encodings differ (NULL is not = anything, but
//    a copy that turned NULL into '' changed the data, and `IS NOT DISTINCT FROM` is the
//    comparison that matters for a copy).
//  - numeric trailing zeros: 1.50 = 1.5 in PostgreSQL, so numeric is encoded through
//    trim_scale() (1.5 either way). NaN = NaN in PostgreSQL (unlike IEEE): 'NaN' either way.
//  - float4/float8 -0.0 = 0.0 in PostgreSQL: encoded as (x + 0), which turns -0 into +0 and
//    leaves everything else alone; NaN = NaN (PostgreSQL sorts all NaNs equal) and prints as
//    'NaN'; extra_float_digits = 3 prints the shortest exact round-trip form, so two different
//    doubles never print alike.
//  - jsonb: key order and whitespace are not part of the value (jsonb stores keys sorted and
//    deduplicated), so '{"b":1,"a":2}' and '{"a":2,"b":1}' print identically. Numbers inside
//    jsonb keep their written scale (1.50 vs 1.5): jsonb `=` says equal, we say different
//    (stricter; only a rewrite of the value produces it, never a faithful copy).
//  - json (not jsonb) has no `=` operator: compared as its exact text.
//  - interval: '1 day' = '24 hours' in PostgreSQL (it compares 30-day months and 24-hour
//    days), so intervals are encoded through justify_interval().
//  - timestamptz prints in UTC (TimeZone pinned), so servers with different TimeZone defaults
//    agree; date/timestamp print in ISO (DateStyle pinned); bytea in hex.
//  - arrays, composites and ranges are compared by their text (elements are not normalised:
//    '{1.50}' vs '{1.5}' and '{-0}' vs '{0}' are reported; stricter than `=`).
//  - text under a non-deterministic (ICU case-insensitive) collation is compared bytewise:
//    stricter than `=`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stampmover::verify {

// SET statements run on every verify session of both servers, so that the text output of
// every type is the same whatever each server's defaults are: common::pinnedSettingsSql() (the
// one pinned set), then verify's own (read-only by default, jit and timeouts off).
const char* pinnedSessionSql();

// How a column's base type (domains resolved) is normalised before it is printed.
enum class Normalization {
  kNone,             // printed as is
  kTrimScale,        // numeric: trim_scale(x)
  kFloat4,           // real: x + 0::float4 (-0 -> 0)
  kFloat8,           // double precision: x + 0::float8 (-0 -> 0)
  kJustifyInterval,  // interval: justify_interval(x)
};

// Picks the normalisation for a base type OID (built-in OIDs are the same on every server).
Normalization normalizationFor(uint32_t base_type_oid);

// The SELECT-list expression that prints `quoted_column` canonically, e.g.
// "pg_catalog.trim_scale(\"price\")". The column must already be quoted.
std::string canonicalExpr(const std::string& quoted_column, Normalization n);

// Splits one text-format COPY row (fields separated by tabs, a trailing newline) into its raw,
// still escaped fields. Never fails: malformed input yields whatever fields it has.
void splitCopyRow(std::string_view row, std::vector<std::string_view>* fields);

// True when a raw COPY field is the NULL marker (\N).
inline bool isCopyNull(std::string_view raw) { return raw == "\\N"; }

// Undoes COPY text escaping (\\, \t, \n, \r, \b, \f, \v, octal \ooo and hex \xhh). nullopt for
// the NULL marker.
std::optional<std::string> unescapeCopyField(std::string_view raw);

// A value as shown in reports: NULL for SQL NULL, else the text (control characters escaped so
// that one difference stays on one line).
std::string displayValue(const std::optional<std::string>& value);

}  // namespace stampmover::verify
