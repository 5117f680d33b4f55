// The stamps file: which stamps exist (DSN, region, capacity), where passwords come from
// (a file or an environment variable, never required inline), the tenant column and per-table
// overrides, and the worker's state directory. Loaded from YAML; every error names the key
// and the file.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/status.h"
#include "mover/catalog.h"

namespace stampmover::orch {

struct StampConfig {
  std::string name;
  std::string dsn;                 // as written (no password)
  std::string password_file;       // Default: none
  std::string password_env;        // Default: none
  std::string region;              // Default: ""
  uint64_t capacity_bytes = 0;     // Default: 0 (unlimited)
  uint32_t capacity_tenants = 0;   // Default: 0 (unlimited)
};

struct Config {
  std::string path;                                // file it was loaded from ("" if none)
  std::map<std::string, StampConfig> stamps;
  mover::TenantColumnPolicy tenant_columns;        // Default: tenant_id, no overrides
  std::string state_dir;                           // Default: "" (see defaultStateDir())
};

// Parses a stamps file. Errors: kRefused "stamps.yaml: stamps.stamp-a.dsn: <problem>" naming
// the key and the fix.
common::Result<Config> loadConfig(const std::string& path);

// Resolves the DSN to connect with: the stamp's DSN plus its password read from
// password_file / password_env. Errors: kRefused naming the stamp and the missing secret.
// The returned string holds a secret: pass it to libpq only, never to a log.
common::Result<std::string> resolveDsn(const Config& config, const std::string& stamp);

// Adds `password` to a key=value or URI DSN (rewritten as key=value with proper quoting).
common::Result<std::string> dsnWithPassword(const std::string& dsn, const std::string& password);

// $STAMPMOVER_STATE_DIR, else $XDG_STATE_HOME/stampmover, else ~/.local/state/stampmover.
std::string defaultStateDir();

}  // namespace stampmover::orch
