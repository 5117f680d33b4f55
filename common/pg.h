// A thin, error-classifying wrapper around libpq: connections and results as RAII handles,
// parameterised queries, identifier/literal quoting, and DSN redaction so that passwords
// never reach a log line or an error message.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/handles.h"
#include "common/session_settings.h"
#include "common/status.h"

namespace stampmover::common {

using PgConnHandle = std::unique_ptr<PGconn, CDeleter<PGconn, PQfinish>>;
using PgResult = std::unique_ptr<PGresult, CDeleter<PGresult, PQclear>>;
using PgParam = std::optional<std::string>;  // nullopt is SQL NULL

// Returns `dsn` with the value of every secret keyword replaced by "****": password,
// sslpassword, and any keyword libpq itself marks as secret (PQconninfoOption::dispchar "*"),
// so a keyword a newer libpq adds is covered; a `dbname` that is itself a connection string is
// redacted the same way. Accepts key=value and URI forms. A DSN libpq cannot parse is returned
// as "<unparseable dsn>" (it might hold a secret).
std::string redactDsn(const std::string& dsn);

// True when libpq keyword `keyword` holds a secret (see redactDsn).
bool isSecretDsnKeyword(std::string_view keyword);

// Why libpq cannot parse `dsn`, without echoing any of it: libpq's own message quotes the
// offending fragment (a password with a space or a stray %), so it must never reach an error or
// a log. Names the form (URI or key=value), the character position (1-based) and, where known,
// the keyword or URI part concerned, e.g. "key=value form: the value of \"password\" starting at
// character 31 is followed by text that is not a keyword=value pair (quote values containing
// spaces: password='...')". "" when libpq parses it.
std::string describeDsnParseError(const std::string& dsn);

// "host:port/dbname" of a DSN (defaults filled as libpq would: localhost, 5432, user name).
std::string dsnLocation(const std::string& dsn);

// Double-quotes an identifier ("my""table"); safe for any input.
std::string quoteIdent(std::string_view ident);
// "schema"."table"
std::string qualifiedName(std::string_view schema, std::string_view table);

// Maps a SQLSTATE to what the caller should do (08xxx, 40001, 40P01, 57P0x -> retryable ...).
ErrorClass classifySqlState(std::string_view sqlstate);

// One libpq connection. Not thread-safe: one thread uses a connection at a time.
//
// Server notices on the connection (including replication connections) go to the log, not to
// libpq's default of printing them on stderr: NOTICE, INFO, LOG and DEBUG at debug level,
// WARNING (and anything unrecognised) at warn, each prefixed with the label, never the DSN.
class PgConnection {
 public:
  PgConnection() = default;
  // Takes ownership of `conn` and routes its notices to the log as described above.
  PgConnection(PgConnHandle conn, std::string label);

  // Connects to `dsn`. `label` names the server in errors ("source stamp 'stamp-a'").
  // `extra` adds connection keywords (e.g. {"replication","database"}).
  //
  // Session settings: with kPinned (the default) the session runs with
  // kPinnedSessionSettings (common/session_settings.h), sent in the startup packet through the
  // `options` keyword after the DSN's own `options` (or PGOPTIONS), so they hold whatever the
  // server, database or role defaults are; client_encoding is forced the same way. They are
  // checked on arrival where the server reports them (DateStyle, IntervalStyle, TimeZone,
  // client_encoding, standard_conforming_strings): PGDATESTYLE / PGTZ in the environment make
  // libpq send a competing value that would win. Control-plane connections get them too (they
  // are harmless there, and one rule is simpler to trust than a list of exceptions).
  //
  // Errors (the message never contains a secret or any fragment of the DSN):
  //  - kRefused: the DSN does not parse (describeDsnParseError); the server asks for a password
  //    and the DSN has none (PQconnectionNeedsPassword); a pinned setting was overridden.
  //  - kRetryable: every other failed connection attempt. libpq exposes no SQLSTATE for a
  //    failed connection, and its text is translated (client and server lc_messages), so a wrong
  //    password, an unknown database or role, or a pg_hba.conf rejection is not told apart from
  //    an unreachable or starting server: the caller's bounded retry (give_up_after) ends it,
  //    and libpq's message (which names host and port, never the password) says which it was.
  static Result<PgConnection> connect(const std::string& dsn, const std::string& label,
                                      const std::vector<std::pair<std::string, std::string>>&
                                          extra = {},
                                      SessionSettings settings = SessionSettings::kPinned);

  bool valid() const { return conn_ != nullptr; }
  PGconn* raw() const { return conn_.get(); }
  const std::string& label() const { return label_; }
  // Name of the connected database.
  std::string database() const { return conn_ ? PQdb(conn_.get()) : ""; }

  // Runs one or more statements without parameters; fails unless every result is OK.
  Status exec(const std::string& sql);
  // Runs a parameterised query (text parameters, text results) and returns its result.
  Result<PgResult> query(const std::string& sql, const std::vector<PgParam>& params = {});
  // Convenience: the first column of the first row, or nullopt when no row / NULL.
  Result<std::optional<std::string>> queryValue(const std::string& sql,
                                                const std::vector<PgParam>& params = {});
  // Escapes `value` as a SQL literal via libpq ('it''s'); only for statements that cannot take
  // parameters (DDL, COPY). Errors: kInternal when libpq cannot escape (bad encoding).
  Result<std::string> escapeLiteral(std::string_view value);

  // Builds a Status from a failed result (or the connection's last error when res is null):
  // class from the SQLSTATE (classifySqlState; kRetryable when the connection is gone), the
  // SQLSTATE itself in Status::sqlState() ("" when the result carries none).
  Status errorFrom(const PGresult* res, std::string_view what) const;

 private:
  PgConnHandle conn_;
  std::string label_;
};

// Accessors for result cells (text format).
inline std::string cell(const PgResult& r, int row, int col) {
  return std::string(PQgetvalue(r.get(), row, col), PQgetlength(r.get(), row, col));
}
inline bool cellIsNull(const PgResult& r, int row, int col) {
  return PQgetisnull(r.get(), row, col) != 0;
}
inline int rowCount(const PgResult& r) { return PQntuples(r.get()); }

}  // namespace stampmover::common
