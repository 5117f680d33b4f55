// libpq wrapper: see pg.h.
#include "common/pg.h"

#include <spdlog/spdlog.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

namespace stampmover::common {

const char* errorClassName(ErrorClass c) {
  switch (c) {
    case ErrorClass::kRetryable: return "retryable";
    case ErrorClass::kRefused: return "refused";
    case ErrorClass::kDataLoss: return "data-loss";
    case ErrorClass::kCancelled: return "cancelled";
    case ErrorClass::kInternal: return "internal";
  }
  return "unknown";
}

using ConninfoHandle = std::unique_ptr<PQconninfoOption, CDeleter<PQconninfoOption, PQconninfoFree>>;

bool isSecretDsnKeyword(std::string_view keyword) {
  if (keyword == "password" || keyword == "sslpassword") return true;
  // libpq marks secret options with dispchar "*" ("password field - hide value"); asking it
  // covers keywords a newer libpq adds (e.g. an OAuth client secret).
  static const std::set<std::string, std::less<>>* kMarked = [] {
    auto* out = new std::set<std::string, std::less<>>;  // never freed: process lifetime
    ConninfoHandle all(PQconndefaults());
    for (PQconninfoOption* o = all.get(); o != nullptr && o->keyword != nullptr; ++o) {
      if (o->dispchar != nullptr && std::strchr(o->dispchar, '*') != nullptr) out->insert(o->keyword);
    }
    return out;
  }();
  return kMarked->count(keyword) != 0;
}

namespace {

// True when `s` starts like a connection string rather than a name (libpq would expand such a
// dbname when asked to; we never ask, but an operator may have put one there).
bool looksLikeConnectionString(std::string_view s) {
  return s.find('=') != std::string_view::npos || s.rfind("postgresql://", 0) == 0 ||
         s.rfind("postgres://", 0) == 0;
}

// libpq keywords (PQconndefaults), which are safe to name in a message.
bool isKnownDsnKeyword(std::string_view keyword) {
  static const std::set<std::string, std::less<>>* kKnown = [] {
    auto* out = new std::set<std::string, std::less<>>;  // never freed: process lifetime
    ConninfoHandle all(PQconndefaults());
    for (PQconninfoOption* o = all.get(); o != nullptr && o->keyword != nullptr; ++o) {
      out->insert(o->keyword);
    }
    return out;
  }();
  return kKnown->count(keyword) != 0;
}

bool isSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::string at(size_t pos) { return "character " + std::to_string(pos + 1); }

// The key=value grammar of libpq's conninfo_parse, walked to find where it fails.
std::string describeKeyValueError(const std::string& dsn) {
  const std::string form = "key=value form: ";
  std::string last_key;  // last keyword parsed, only kept when it is a known (nameable) one
  size_t i = 0;
  const size_t n = dsn.size();
  while (i < n) {
    if (isSpace(dsn[i])) {
      ++i;
      continue;
    }
    const size_t key_start = i;
    while (i < n && dsn[i] != '=' && !isSpace(dsn[i])) ++i;
    const std::string key = dsn.substr(key_start, i - key_start);
    while (i < n && isSpace(dsn[i])) ++i;
    if (i >= n || dsn[i] != '=') {
      std::string out = form + "the text at " + at(key_start) + " is not a keyword=value pair";
      if (!last_key.empty()) {
        out += " (it follows the value of \"" + last_key +
               "\": a value containing spaces must be single-quoted, e.g. " + last_key + "='...')";
      }
      return out;
    }
    ++i;  // '='
    while (i < n && isSpace(dsn[i])) ++i;
    const size_t value_start = i;
    if (i < n && dsn[i] == '\'') {
      ++i;
      bool closed = false;
      while (i < n) {
        if (dsn[i] == '\\') {
          i += 2;
          continue;
        }
        if (dsn[i] == '\'') {
          closed = true;
          ++i;
          break;
        }
        ++i;
      }
      if (!closed) {
        return form + "the quoted value " +
               (isKnownDsnKeyword(key) ? "of \"" + key + "\" " : std::string()) + "starting at " +
               at(value_start) + " has no closing quote (write \\' for a quote inside a value)";
      }
    } else {
      while (i < n && !isSpace(dsn[i])) i += dsn[i] == '\\' ? 2 : 1;
    }
    if (!isKnownDsnKeyword(key)) {
      std::string out = form + "the keyword at " + at(key_start) + " is not a libpq keyword";
      if (!last_key.empty()) out += " (it follows the value of \"" + last_key + "\": does that value need quoting?)";
      return out;
    }
    last_key = key;
  }
  return "";
}

bool isHex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

// First bad percent-encoding ("%zz", "%4", "%00") in dsn[begin, end), or npos.
size_t badPercent(const std::string& dsn, size_t begin, size_t end) {
  for (size_t i = begin; i < end; ++i) {
    if (dsn[i] != '%') continue;
    if (i + 2 >= end) return i;  // fewer than two characters follow
    if (!isHex(dsn[i + 1]) || !isHex(dsn[i + 2])) return i;
    if (dsn[i + 1] == '0' && dsn[i + 2] == '0') return i;
    i += 2;
  }
  return std::string::npos;
}

// The URI grammar of libpq's conninfo_uri_parse_options, walked to find where it fails.
std::string describeUriError(const std::string& dsn, size_t prefix_len) {
  const std::string form = "URI form: ";
  const size_t n = dsn.size();
  size_t start = prefix_len;
  size_t p = start;
  while (p < n && dsn[p] != '@' && dsn[p] != '/') ++p;
  if (p < n && dsn[p] == '@') {
    size_t colon = dsn.find(':', start);
    if (colon == std::string::npos || colon > p) colon = p;
    if (size_t b = badPercent(dsn, start, colon); b != std::string::npos) {
      return form + "invalid percent-encoding at " + at(b) + " in the user name";
    }
    if (size_t b = badPercent(dsn, colon, p); b != std::string::npos) {
      return form + "invalid percent-encoding at " + at(b) +
             " in the password (write a % in a password as %25)";
    }
    start = p + 1;
  }
  const size_t query = dsn.find('?', start);
  const size_t host_end = std::min(dsn.find('/', start), query);
  const size_t path_end = query == std::string::npos ? n : query;
  if (size_t b = badPercent(dsn, start, std::min(host_end, n)); b != std::string::npos) {
    return form + "invalid percent-encoding at " + at(b) + " in the host list";
  }
  if (host_end < path_end) {
    if (size_t b = badPercent(dsn, host_end, path_end); b != std::string::npos) {
      return form + "invalid percent-encoding at " + at(b) + " in the database name";
    }
  }
  if (query != std::string::npos) {
    size_t i = query + 1;
    while (i <= n) {
      size_t amp = dsn.find('&', i);
      if (amp == std::string::npos) amp = n;
      const size_t eq = dsn.find('=', i);
      if (amp > i) {
        if (eq == std::string::npos || eq >= amp) {
          return form + "the query parameter at " + at(i) + " has no \"=\"";
        }
        if (size_t eq2 = dsn.find('=', eq + 1); eq2 != std::string::npos && eq2 < amp) {
          return form + "the query parameter at " + at(i) +
                 " has a second \"=\" at " + at(eq2) + " (write it as %3D)";
        }
        const std::string key = dsn.substr(i, eq - i);
        const bool known = isKnownDsnKeyword(key) || key == "ssl";
        if (size_t b = badPercent(dsn, i, amp); b != std::string::npos) {
          return form + "invalid percent-encoding at " + at(b) + " in the query parameter" +
                 (known ? " \"" + key + "\"" : std::string()) + " (write a % as %25)";
        }
        if (!known) return form + "the query parameter at " + at(i) + " is not a libpq keyword";
      }
      i = amp + 1;
    }
  }
  return form + "libpq cannot parse the host list or its structure";
}

}  // namespace

std::string describeDsnParseError(const std::string& dsn) {
  char* err = nullptr;
  ConninfoHandle opts(PQconninfoParse(dsn.c_str(), &err));
  // libpq's text is dropped unread: it quotes the offending fragment, which may be a secret.
  if (err != nullptr) PQfreemem(err);
  if (opts) return "";
  std::string why;
  for (const char* prefix : {"postgresql://", "postgres://"}) {
    if (dsn.rfind(prefix, 0) == 0) why = describeUriError(dsn, std::strlen(prefix));
  }
  if (why.empty() && dsn.find("://") == std::string::npos) why = describeKeyValueError(dsn);
  if (why.empty()) why = "libpq cannot parse it";
  return why + " (the DSN is not shown: it may hold a password)";
}

std::string redactDsn(const std::string& dsn) {
  char* err = nullptr;
  ConninfoHandle opts(PQconninfoParse(dsn.c_str(), &err));
  if (err != nullptr) PQfreemem(err);  // may quote a secret: never shown
  if (!opts) return "<unparseable dsn>";
  std::string out;
  for (PQconninfoOption* o = opts.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr || o->val[0] == '\0') continue;
    if (!out.empty()) out += ' ';
    out += o->keyword;
    out += '=';
    if (isSecretDsnKeyword(o->keyword)) {
      out += "****";
    } else if (std::strcmp(o->keyword, "dbname") == 0 && looksLikeConnectionString(o->val)) {
      out += "'" + redactDsn(o->val) + "'";
    } else {
      out += o->val;
    }
  }
  return out;
}

std::string dsnLocation(const std::string& dsn) {
  char* err = nullptr;
  ConninfoHandle opts(PQconninfoParse(dsn.c_str(), &err));
  if (err != nullptr) PQfreemem(err);
  if (!opts) return "dsn";
  std::string host = "localhost", port = "5432", db, user;
  for (PQconninfoOption* o = opts.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr || o->val[0] == '\0') continue;
    std::string k = o->keyword;
    if (k == "host" || (k == "hostaddr" && host == "localhost")) host = o->val;
    if (k == "port") port = o->val;
    if (k == "dbname") db = o->val;
    if (k == "user") user = o->val;
  }
  if (db.empty()) db = user.empty() ? "postgres" : user;
  return host + ":" + port + "/" + db;
}

std::string quoteIdent(std::string_view ident) {
  std::string out;
  out.reserve(ident.size() + 2);
  out += '"';
  for (char c : ident) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string qualifiedName(std::string_view schema, std::string_view table) {
  return quoteIdent(schema) + "." + quoteIdent(table);
}

ErrorClass classifySqlState(std::string_view s) {
  if (s.size() != 5) return ErrorClass::kInternal;
  if (s.substr(0, 2) == "08") return ErrorClass::kRetryable;            // connection exception
  if (s == "40001" || s == "40P01") return ErrorClass::kRetryable;      // serialization, deadlock
  if (s.substr(0, 3) == "57P") return ErrorClass::kRetryable;           // admin/crash shutdown
  if (s == "55P03" || s == "53300") return ErrorClass::kRetryable;      // lock timeout, too many conns
  if (s == "57014") return ErrorClass::kCancelled;                      // query_canceled
  if (s.substr(0, 2) == "42" || s.substr(0, 2) == "22" || s.substr(0, 2) == "23" ||
      s.substr(0, 2) == "28" || s.substr(0, 2) == "3D" || s.substr(0, 2) == "55") {
    return ErrorClass::kRefused;  // syntax/undefined object, data, constraint, auth, state
  }
  return ErrorClass::kInternal;
}

static std::string trimmed(const char* msg) {
  std::string s = msg ? msg : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  // libpq error texts span lines ("DETAIL: ..."); keep them on one line for logs.
  for (char& c : s) {
    if (c == '\n') c = ' ';
  }
  return s;
}

namespace {

// The label a connection's notices are logged under, as a string that lives as long as the
// process. libpq copies a connection's notice hooks, argument included, into every PGresult made
// on it and reports through them too (e.g. PQgetvalue out of range), so a result that outlives
// its PgConnection would otherwise pass the receiver a freed label. One entry per distinct
// label; labels name servers and roles ("source stamp 'stamp-a' (replication)"), a small set.
// Thread-safe.
const std::string* internedLabel(const std::string& label) {
  static auto* mu = new std::mutex;                 // never destroyed: no exit-order hazard
  static auto* labels = new std::set<std::string>;  // never freed: see above
  std::lock_guard lock(*mu);
  return &*labels->insert(label).first;
}

// libpq notice receiver: `arg` is an internedLabel(). Runs on the thread using the connection
// (or the result); must not throw into libpq.
void logNotice(void* arg, const PGresult* res) noexcept {
  try {
    const auto& label = *static_cast<const std::string*>(arg);
    const char* severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const std::string_view sev = severity != nullptr ? severity : "";
    std::string msg = trimmed(PQresultErrorMessage(res));  // "NOTICE:  ... skipping"
    if (sev == "NOTICE" || sev == "INFO" || sev == "LOG" || sev == "DEBUG") {
      spdlog::debug("{}: {}", label, msg);
    } else {
      spdlog::warn("{}: {}", label, msg);  // WARNING, or a severity we do not know
    }
  } catch (...) {
    // Swallowed: a notice that cannot be logged (out of memory) is not worth failing the query.
  }
}

}  // namespace

PgConnection::PgConnection(PgConnHandle conn, std::string label)
    : conn_(std::move(conn)), label_(std::move(label)) {
  // Notices sent during the connection handshake (PQconnectdbParams) came before this and went
  // to libpq's default printer; everything after, on this connection or its results, comes here.
  if (conn_) {
    // libpq takes a void*; the receiver only reads the label.
    PQsetNoticeReceiver(conn_.get(), logNotice, const_cast<std::string*>(internedLabel(label_)));
  }
}

Result<PgConnection> PgConnection::connect(
    const std::string& dsn, const std::string& label,
    const std::vector<std::pair<std::string, std::string>>& extra, SessionSettings settings) {
  char* perr = nullptr;
  ConninfoHandle opts(PQconninfoParse(dsn.c_str(), &perr));
  // libpq's parse error quotes the offending fragment of the DSN (maybe the password): freed
  // unread; describeDsnParseError says where the problem is without echoing anything.
  if (perr != nullptr) PQfreemem(perr);
  if (!opts) {
    return Status::refused(label + ": invalid DSN: " + describeDsnParseError(dsn) +
                           "; fix the DSN syntax");
  }
  const bool pinned = settings == SessionSettings::kPinned;
  std::vector<std::pair<std::string, std::string>> params;
  std::optional<std::string> user_options;
  for (PQconninfoOption* o = opts.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    if (pinned && std::strcmp(o->keyword, "options") == 0) {
      user_options = o->val;  // merged below, the pinned settings after it
      continue;
    }
    // Pinned below: a client_encoding keyword is sent apart from `options` and would win.
    if (pinned && std::strcmp(o->keyword, "client_encoding") == 0) continue;
    params.emplace_back(o->keyword, o->val);
  }
  auto has = [&](std::string_view key) {
    for (const auto& [k, v] : params) {
      if (k == key) return true;
    }
    return false;
  };
  if (!has("connect_timeout")) params.emplace_back("connect_timeout", "10");
  if (!has("application_name")) params.emplace_back("application_name", "stampmover");
  // A peer that vanished without a FIN (host down, network partition) would look idle for the
  // kernel's default keepalive period, two hours: probe after 30 s of silence, drop after three
  // unanswered probes 10 s apart, and drop data the peer has not acknowledged within 60 s.
  // Ignored on Unix sockets; a DSN's own values win.
  if (!has("keepalives")) params.emplace_back("keepalives", "1");
  if (!has("keepalives_idle")) params.emplace_back("keepalives_idle", "30");
  if (!has("keepalives_interval")) params.emplace_back("keepalives_interval", "10");
  if (!has("keepalives_count")) params.emplace_back("keepalives_count", "3");
  if (!has("tcp_user_timeout")) params.emplace_back("tcp_user_timeout", "60000");
  for (const auto& [k, v] : extra) {
    if (pinned && k == "options") {
      user_options = user_options ? *user_options + " " + v : v;
      continue;
    }
    params.emplace_back(k, v);
  }
  if (pinned) {
    // libpq would fall back to PGOPTIONS only when no `options` keyword is given; we always
    // give one, so honour PGOPTIONS here the way libpq would have.
    if (!user_options) {
      if (const char* env = std::getenv("PGOPTIONS"); env != nullptr) user_options = env;
    }
    params.emplace_back("options", mergeStartupOptions(user_options.value_or("")));
    for (const PinnedSetting& p : kPinnedSessionSettings) {
      if (std::strcmp(p.name, "client_encoding") == 0) params.emplace_back("client_encoding", p.value);
    }
  }
  std::vector<const char*> keys;
  std::vector<const char*> vals;
  for (const auto& [k, v] : params) {
    keys.push_back(k.c_str());
    vals.push_back(v.c_str());
  }
  keys.push_back(nullptr);
  vals.push_back(nullptr);
  PgConnHandle conn(PQconnectdbParams(keys.data(), vals.data(), 0));
  if (!conn) return Status::retryable(label + ": out of memory creating a libpq connection");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    // libpq's messages name host and port, never the password; the DSN is redacted anyway.
    std::string why = trimmed(PQerrorMessage(conn.get()));
    // libpq gives no SQLSTATE for a failed connection attempt and its text is translated, so
    // the only cause told apart is the one libpq reports as a fact: the server asked for a
    // password and none was given. Everything else is retryable (see pg.h).
    if (PQconnectionNeedsPassword(conn.get()) != 0) {
      return Status::refused("cannot connect to " + label + " (" + redactDsn(dsn) +
                             "): the server requires a password and none was given (add "
                             "password=... or a passfile to the DSN): " + why);
    }
    return Status::retryable("cannot connect to " + label + " (" + redactDsn(dsn) + "): " + why);
  }
  if (pinned) {
    for (const PinnedSetting& p : kPinnedSessionSettings) {
      if (!p.reported) continue;
      const char* got = PQparameterStatus(conn.get(), p.name);
      if (got != nullptr && std::strcmp(got, p.value) != 0) {
        return Status::refused(label + ": the session setting " + p.name + " is '" + got +
                               "', not the pinned '" + p.value +
                               "' (PGDATESTYLE or PGTZ in the environment overrides it; unset "
                               "them)");
      }
    }
  }
  return PgConnection(std::move(conn), label);
}

Status PgConnection::errorFrom(const PGresult* res, std::string_view what) const {
  std::string msg;
  std::string state;
  ErrorClass cls = ErrorClass::kInternal;
  if (res != nullptr) {
    msg = trimmed(PQresultErrorMessage(res));
    const char* s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (s != nullptr) {
      state = s;
      cls = classifySqlState(state);
    }
  }
  if (msg.empty()) msg = trimmed(PQerrorMessage(conn_.get()));
  if (PQstatus(conn_.get()) != CONNECTION_OK) cls = ErrorClass::kRetryable;
  return Status::error(cls, label_ + ": " + std::string(what) + ": " + msg).withSqlState(state);
}

Status PgConnection::exec(const std::string& sql) {
  if (!PQsendQuery(conn_.get(), sql.c_str())) return errorFrom(nullptr, "send query");
  Status st;
  while (PgResult res{PQgetResult(conn_.get())}) {
    ExecStatusType t = PQresultStatus(res.get());
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK && st.isOk()) {
      st = errorFrom(res.get(), "query failed");
    }
  }
  return st;
}

Result<PgResult> PgConnection::query(const std::string& sql, const std::vector<PgParam>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  PgResult res{PQexecParams(conn_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr,
                            values.data(), nullptr, nullptr, 0)};
  if (!res) return errorFrom(nullptr, "query failed");
  ExecStatusType t = PQresultStatus(res.get());
  if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) return errorFrom(res.get(), "query failed");
  return res;
}

Result<std::optional<std::string>> PgConnection::queryValue(const std::string& sql,
                                                            const std::vector<PgParam>& params) {
  SM_ASSIGN_OR_RETURN(PgResult res, query(sql, params));
  if (rowCount(res) == 0 || PQnfields(res.get()) == 0 || cellIsNull(res, 0, 0)) {
    return std::optional<std::string>();
  }
  return std::optional<std::string>(cell(res, 0, 0));
}

Result<std::string> PgConnection::escapeLiteral(std::string_view value) {
  char* lit = PQescapeLiteral(conn_.get(), value.data(), value.size());
  if (lit == nullptr) return errorFrom(nullptr, "escape literal");
  std::string out(lit);
  PQfreemem(lit);
  return out;
}

}  // namespace stampmover::common
