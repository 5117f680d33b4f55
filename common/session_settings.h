// The one definition of the session settings every stampmover session runs with.
//
// Values cross between servers as text: COPY TO STDOUT and pgoutput print them with the
// *sending* session's settings, and the receiving session parses them with *its* own. Stamps may
// have any defaults (postgresql.conf, ALTER DATABASE/ROLE SET), so with the source at
// DateStyle 'SQL, DMY' a date 13/01/2024 is out of range for an MDY destination and 03/02/2024
// silently becomes 2 March; with extra_float_digits = 0 a float8 loses digits. PostgreSQL's own
// subscriber (src/backend/replication/libpqwalreceiver) forces datestyle, intervalstyle and
// extra_float_digits through the `options` connection keyword for the same reason.
//
// common::PgConnection::connect sends these in the startup packet (`options=-c name=value ...`)
// on every connection it makes, replication connections included, unless the caller asks for
// the server's defaults (SessionSettings::kServerDefaults). Startup-packet settings take
// precedence over ALTER DATABASE / ALTER ROLE defaults and postgresql.conf, and every one of
// them is user-settable (PGC_USERSET), so a non-superuser role may pass them, and a walsender
// (replication=database) accepts them too. pinnedSettingsSql() gives the same list as SET
// statements for sessions that want to re-assert it (verify does).
#pragma once

#include <string>
#include <string_view>

namespace stampmover::common {

struct PinnedSetting {
  const char* name;   // GUC name as PostgreSQL spells it in SHOW
  const char* value;  // value as SHOW prints it once set (checked after connecting)
  bool reported;      // GUC_REPORT: the server reports it (PQparameterStatus) after connect
};

// Every setting that changes how a value of a built-in type is printed or parsed as text.
// Not here on purpose: timeouts, jit, read-only (per-role choices of each kind of session),
// session_replication_role (apply sessions only), search_path (every name we send is qualified).
inline constexpr PinnedSetting kPinnedSessionSettings[] = {
    // Dates print YYYY-MM-DD; YMD only matters for parsing ambiguous input, which ISO is not.
    {"DateStyle", "ISO, YMD", true},
    // "-1 days -02:03:04" carries a sign per field; sql_standard's "-1 2:03:04" means
    // -1 day +2:03:04 to any other IntervalStyle.
    {"IntervalStyle", "postgres", true},
    // Shortest exact round-trip output for float4/float8 (0 would print 15 digits).
    {"extra_float_digits", "3", false},
    // timestamptz prints with an offset either way; UTC keeps both sides' text identical.
    {"TimeZone", "UTC", true},
    // bytea input accepts both forms, but hex is exact and what verify hashes.
    {"bytea_output", "hex", false},
    // money is printed and parsed with lc_monetary's currency symbol and separators.
    {"lc_monetary", "C", false},
    // No type prints with lc_numeric or xmlbinary; pinned so that expressions evaluated in our
    // sessions (column defaults, ENABLE ALWAYS triggers, verify's expressions) cannot depend on
    // the stamp either (to_char/to_number, xmlelement of bytea).
    {"lc_numeric", "C", false},
    {"xmlbinary", "base64", false},
    // xml input: a fragment (content) is refused under xmloption = document.
    {"xmloption", "content", false},
    // Backslashes in '...' literals are literal; our literals are written for that.
    {"standard_conforming_strings", "on", true},
    // Text crosses in one encoding: the source converts to UTF8, the destination from it.
    // (A SQL_ASCII database holding bytes that are not UTF8 cannot be moved as text.)
    {"client_encoding", "UTF8", true},
};

// How a connection's session settings are chosen.
enum class SessionSettings {
  kPinned,          // kPinnedSessionSettings, whatever the server's defaults (the default)
  kServerDefaults,  // whatever the server, database and role say (tests, diagnostics)
};

// "-c DateStyle=ISO,\ YMD -c IntervalStyle=postgres ..." for libpq's `options` keyword (spaces
// in values backslash-escaped, as libpq's options syntax wants).
const std::string& pinnedStartupOptions();

// `user_options` (a DSN's or PGOPTIONS' `options`, may be empty) followed by
// pinnedStartupOptions(): the server applies -c switches in order, so the pinned values win
// over a user's -c for the same setting, and the user's other switches are kept.
std::string mergeStartupOptions(std::string_view user_options);

// "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; ..." (no trailing semicolon).
const char* pinnedSettingsSql();

}  // namespace stampmover::common
