// Stamps file loading: see config.h. yaml-cpp throws on malformed input; every call into it is
// wrapped here and turned into a refusal naming the file.
#include "orchestrator/config.h"

#include <libpq-fe.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/handles.h"

namespace stampmover::orch {

using common::Result;
using common::Status;

namespace {

Status bad(const std::string& file, const std::string& key, const std::string& what) {
  return Status::refused(file + ": " + key + ": " + what);
}

Result<std::string> scalar(const YAML::Node& node, const std::string& file, const std::string& key) {
  if (!node.IsScalar()) return bad(file, key, "must be a string");
  return node.as<std::string>();
}

Result<uint64_t> number(const YAML::Node& node, const std::string& file, const std::string& key) {
  if (!node.IsScalar()) return bad(file, key, "must be a non-negative integer");
  try {
    const std::string s = node.as<std::string>();
    size_t pos = 0;
    uint64_t v = std::stoull(s, &pos);
    if (pos != s.size() || s.find('-') != std::string::npos) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception&) {
    return bad(file, key, "must be a non-negative integer, got '" + node.as<std::string>() + "'");
  }
}

}  // namespace

Result<Config> loadConfig(const std::string& path) {
  Config cfg;
  cfg.path = path;
  YAML::Node root;
  try {
    std::ifstream in(path);
    if (!in) return Status::refused(path + ": cannot open the stamps file (does it exist?)");
    root = YAML::Load(in);
  } catch (const YAML::Exception& e) {
    return Status::refused(path + ": line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  if (!root.IsMap()) return Status::refused(path + ": the top level must be a mapping");
  try {
    for (const auto& kv : root) {
      const std::string key = kv.first.as<std::string>();
      if (key == "stamps") {
        if (!kv.second.IsMap()) return bad(path, "stamps", "must map stamp names to settings");
        for (const auto& s : kv.second) {
          StampConfig sc;
          sc.name = s.first.as<std::string>();
          const std::string base = "stamps." + sc.name;
          if (!s.second.IsMap()) return bad(path, base, "must be a mapping with at least dsn");
          for (const auto& f : s.second) {
            const std::string fk = f.first.as<std::string>();
            const std::string k = base + "." + fk;
            if (fk == "dsn") {
              SM_ASSIGN_OR_RETURN(sc.dsn, scalar(f.second, path, k));
            } else if (fk == "password_file") {
              SM_ASSIGN_OR_RETURN(sc.password_file, scalar(f.second, path, k));
            } else if (fk == "password_env") {
              SM_ASSIGN_OR_RETURN(sc.password_env, scalar(f.second, path, k));
            } else if (fk == "region") {
              SM_ASSIGN_OR_RETURN(sc.region, scalar(f.second, path, k));
            } else if (fk == "capacity_bytes") {
              SM_ASSIGN_OR_RETURN(sc.capacity_bytes, number(f.second, path, k));
            } else if (fk == "capacity_tenants") {
              SM_ASSIGN_OR_RETURN(uint64_t n, number(f.second, path, k));
              sc.capacity_tenants = static_cast<uint32_t>(n);
            } else {
              return bad(path, k, "unknown key (expected dsn, password_file, password_env, "
                                  "region, capacity_bytes, capacity_tenants)");
            }
          }
          if (sc.dsn.empty()) return bad(path, base + ".dsn", "missing (the libpq DSN of the stamp)");
          char* err = nullptr;
          std::unique_ptr<PQconninfoOption, common::CDeleter<PQconninfoOption, PQconninfoFree>>
              opts(PQconninfoParse(sc.dsn.c_str(), &err));
          if (err) PQfreemem(err);  // unread: libpq quotes the fragment, maybe a password
          if (!opts) {
            return bad(path, base + ".dsn",
                       "not a valid libpq DSN: " + common::describeDsnParseError(sc.dsn));
          }
          if (!sc.password_file.empty() && !sc.password_env.empty()) {
            return bad(path, base, "set password_file or password_env, not both");
          }
          cfg.stamps[sc.name] = sc;
        }
      } else if (key == "tenant_column") {
        SM_ASSIGN_OR_RETURN(cfg.tenant_columns.default_column, scalar(kv.second, path, key));
      } else if (key == "state_dir") {
        SM_ASSIGN_OR_RETURN(cfg.state_dir, scalar(kv.second, path, key));
      } else if (key == "tables") {
        if (!kv.second.IsMap()) return bad(path, "tables", "must map schema.table to settings");
        for (const auto& t : kv.second) {
          const std::string table = t.first.as<std::string>();
          const std::string base = "tables." + table;
          if (table.find('.') == std::string::npos) {
            return bad(path, base, "table names are schema-qualified (e.g. public." + table + ")");
          }
          if (!t.second.IsMap() || !t.second["tenant_column"]) {
            return bad(path, base, "expected a mapping with tenant_column");
          }
          SM_ASSIGN_OR_RETURN(cfg.tenant_columns.per_table[table],
                              scalar(t.second["tenant_column"], path, base + ".tenant_column"));
        }
      } else if (key == "serve" || key == "planner" || key == "rebalance") {
        // Sections with loaders of their own (app/serve_command.cc, planner/inventory.h).
      } else {
        return bad(path, key, "unknown key (expected stamps, tenant_column, tables, state_dir, "
                              "serve, planner, rebalance)");
      }
    }
  } catch (const YAML::Exception& e) {
    return Status::refused(path + ": " + e.msg);
  }
  if (cfg.stamps.empty()) return bad(path, "stamps", "no stamp defined");
  return cfg;
}

Result<std::string> dsnWithPassword(const std::string& dsn, const std::string& password) {
  char* err = nullptr;
  std::unique_ptr<PQconninfoOption, common::CDeleter<PQconninfoOption, PQconninfoFree>> opts(
      PQconninfoParse(dsn.c_str(), &err));
  if (err) PQfreemem(err);
  if (!opts) return Status::refused("invalid DSN");
  auto quote = [](const std::string& v) {
    std::string out = "'";
    for (char c : v) {
      if (c == '\'' || c == '\\') out += '\\';
      out += c;
    }
    return out + "'";
  };
  std::string out;
  for (PQconninfoOption* o = opts.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr || std::string(o->keyword) == "password") continue;
    out += std::string(o->keyword) + "=" + quote(o->val) + " ";
  }
  out += "password=" + quote(password);
  return out;
}

Result<std::string> resolveDsn(const Config& cfg, const std::string& stamp) {
  auto it = cfg.stamps.find(stamp);
  if (it == cfg.stamps.end()) {
    std::string known;
    for (const auto& [name, _] : cfg.stamps) known += (known.empty() ? "" : ", ") + name;
    return Status::refused("unknown stamp '" + stamp + "' (" + cfg.path + " defines: " + known + ")");
  }
  const StampConfig& s = it->second;
  if (!s.password_file.empty()) {
    std::ifstream in(s.password_file);
    if (!in) {
      return Status::refused(cfg.path + ": stamps." + stamp + ".password_file: cannot read '" +
                             s.password_file + "'");
    }
    std::string pw;
    std::getline(in, pw);
    return dsnWithPassword(s.dsn, pw);
  }
  if (!s.password_env.empty()) {
    const char* pw = std::getenv(s.password_env.c_str());
    if (pw == nullptr) {
      return Status::refused(cfg.path + ": stamps." + stamp + ".password_env: environment variable " +
                             s.password_env + " is not set");
    }
    return dsnWithPassword(s.dsn, pw);
  }
  return s.dsn;
}

std::string defaultStateDir() {
  if (const char* d = std::getenv("STAMPMOVER_STATE_DIR")) return d;
  if (const char* x = std::getenv("XDG_STATE_HOME")) return std::string(x) + "/stampmover";
  if (const char* h = std::getenv("HOME")) return std::string(h) + "/.local/state/stampmover";
  return ".stampmover";
}

}  // namespace stampmover::orch
