// libpq wrapper: see pg.h.
#include "common/pg.h"

#include <spdlog/spdlog.h>

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

std::string redactDsn(const std::string& dsn) {
  char* err = nullptr;
  ConninfoHandle opts(PQconninfoParse(dsn.c_str(), &err));
  if (err != nullptr) PQfreemem(err);
  if (!opts) return "<unparseable dsn>";
  std::string out;
  for (PQconninfoOption* o = opts.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr || o->val[0] == '\0') continue;
    if (!out.empty()) out += ' ';
    out += o->keyword;
    out += '=';
    if (std::strcmp(o->keyword, "password") == 0) {
      out += "****";
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
    const std::vector<std::pair<std::string, std::string>>& extra) {
  char* perr = nullptr;
  ConninfoHandle opts(PQconninfoParse(dsn.c_str(), &perr));
  if (!opts) {
    std::string why = trimmed(perr);
    if (perr != nullptr) PQfreemem(perr);
    return Status::refused(label + ": invalid DSN (" + why + "); fix the DSN syntax");
  }
  std::vector<const char*> keys;
  std::vector<const char*> vals;
  for (PQconninfoOption* o = opts.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    keys.push_back(o->keyword);
    vals.push_back(o->val);
  }
  bool has_timeout = false;
  bool has_appname = false;
  for (const char* k : keys) {
    if (std::strcmp(k, "connect_timeout") == 0) has_timeout = true;
    if (std::strcmp(k, "application_name") == 0) has_appname = true;
  }
  if (!has_timeout) {
    keys.push_back("connect_timeout");
    vals.push_back("10");
  }
  if (!has_appname) {
    keys.push_back("application_name");
    vals.push_back("stampmover");
  }
  for (const auto& [k, v] : extra) {
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
    ErrorClass cls = ErrorClass::kRetryable;
    if (why.find("password authentication failed") != std::string::npos ||
        why.find("does not exist") != std::string::npos ||
        why.find("no pg_hba.conf entry") != std::string::npos) {
      cls = ErrorClass::kRefused;
    }
    return Status::error(cls, "cannot connect to " + label + " (" + redactDsn(dsn) + "): " + why);
  }
  return PgConnection(std::move(conn), label);
}

Status PgConnection::errorFrom(const PGresult* res, std::string_view what) const {
  std::string msg;
  ErrorClass cls = ErrorClass::kInternal;
  if (res != nullptr) {
    msg = trimmed(PQresultErrorMessage(res));
    const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state != nullptr) cls = classifySqlState(state);
  }
  if (msg.empty()) msg = trimmed(PQerrorMessage(conn_.get()));
  if (PQstatus(conn_.get()) != CONNECTION_OK) cls = ErrorClass::kRetryable;
  return Status::error(cls, label_ + ": " + std::string(what) + ": " + msg);
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
