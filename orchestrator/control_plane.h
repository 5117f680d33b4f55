// The control plane's migrations table: one row per tenant migration, written by the worker
// that runs it (phase, last cutover window, liveness) and read by `status`; and the channel
// through which `stampmover cutover|rollback|finalize` ask that worker to act.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"

namespace stampmover::orch {

struct MigrationRow {
  std::string tenant;
  std::string source_stamp;
  std::string destination_stamp;
  std::string phase;
  std::optional<double> last_window_ms;
  std::string last_cutover;
  std::optional<std::string> requested_action;
  double age_seconds = 0;  // since the worker last wrote the row
};

// Not thread-safe: one connection.
class MigrationBoard {
 public:
  // Connects and makes sure the routing schema (which holds the table) is current.
  static common::Result<MigrationBoard> open(const std::string& dsn);

  // Upserts the worker's row (liveness: updated_at = now()).
  common::Status report(const std::string& tenant, const std::string& source,
                        const std::string& destination, const std::string& phase,
                        std::optional<double> window_ms = std::nullopt,
                        const std::string& last_cutover = "");
  // Takes (and clears) the pending operator request, if any.
  common::Result<std::optional<std::string>> takeRequest(const std::string& tenant);
  // Files a request for the worker. Errors: kRefused when no migration of the tenant exists.
  common::Status request(const std::string& tenant, const std::string& action);
  common::Result<std::optional<MigrationRow>> get(const std::string& tenant);
  common::Result<std::vector<MigrationRow>> list();

 private:
  common::PgConnection conn_;
};

std::string formatMigrationRows(const std::vector<MigrationRow>& rows);

}  // namespace stampmover::orch
