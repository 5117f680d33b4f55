// What the verifier needs to know about one tenant table, as plain structs of its own: verify
// depends on common/ only, so the orchestrator fills these from the mover's catalog discovery.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace stampmover::verify {

struct VerifyColumn {
  std::string name;
  std::string type;  // format_type() text, for messages ("numeric(12,2)")
};

struct VerifyTable {
  std::string schema;
  std::string name;
  std::string tenant_column;
  std::vector<std::string> primary_key;  // PK columns in key order (may include the tenant column)
  std::vector<VerifyColumn> columns;     // compared columns, attnum order (all, even generated)
  uint64_t est_rows = 0;                 // Default: 0; the tenant's rows, for progress and ETA

  std::string key() const { return schema + "." + name; }  // unquoted, for messages
};

}  // namespace stampmover::verify
