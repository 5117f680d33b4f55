// Purge of a moved tenant's rows from the old stamp: see purge.h. The last comparison uses the
// project's one row equality (verify/row_equality.h), the verifier's canonical rows summed into
// one salted multiset digest per table and side: columns by name (a destination with its columns
// in another order is equal), numeric/float/interval compared as PostgreSQL's `=` does, and no
// ORDER BY whose collation could differ between the stamps.
#include "orchestrator/purge.h"

#include <chrono>
#include <thread>

#include "common/session_settings.h"
#include "orchestrator/verify_job.h"
#include "verify/row_digest.h"
#include "verify/row_equality.h"

namespace stampmover::orch {

using common::PgConnection;
using common::Result;
using common::Status;

Result<uint64_t> purgeTenant(PgConnection& old_stamp, PgConnection& serving,
                             const std::vector<mover::TableInfo>& tables,
                             const std::string& tenant) {
  SM_RETURN_IF_ERROR(old_stamp.exec(common::pinnedSettingsSql()));
  SM_RETURN_IF_ERROR(serving.exec(common::pinnedSettingsSql()));
  SM_ASSIGN_OR_RETURN(auto encodings, rowEncodingsFor(old_stamp, tables));
  SM_ASSIGN_OR_RETURN(std::string salt, verify::randomSalt());
  SM_ASSIGN_OR_RETURN(verify::RowHasher hasher, verify::RowHasher::create(salt));
  for (size_t i = 0; i < tables.size(); ++i) {
    SM_ASSIGN_OR_RETURN(auto a, verify::digestTenantRows(old_stamp, encodings[i], tenant, hasher));
    SM_ASSIGN_OR_RETURN(auto b, verify::digestTenantRows(serving, encodings[i], tenant, hasher));
    if (!(a == b)) {
      return Status::dataLoss("not purging: table " + tables[i].key() +
                              " differs between the stamps (" + std::to_string(a.rows) +
                              " rows of tenant " + tenant + " on " + old_stamp.label() + ", " +
                              std::to_string(b.rows) + " on " + serving.label() +
                              "); run `stampmover verify` to list the rows");
    }
  }
  uint64_t total = 0;
  SM_RETURN_IF_ERROR(old_stamp.exec("SET session_replication_role = replica"));
  for (auto it = tables.rbegin(); it != tables.rend(); ++it) {
    for (;;) {
      SM_ASSIGN_OR_RETURN(
          auto r, old_stamp.query("DELETE FROM " + it->quoted() +
                                      " WHERE ctid = ANY (ARRAY(SELECT ctid FROM " + it->quoted() +
                                      " WHERE " + common::quoteIdent(it->tenant_column) +
                                      " = $1 LIMIT 1000))",
                                  {tenant}));
      uint64_t n = std::stoull(PQcmdTuples(r.get()));
      total += n;
      if (n == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // rate limit: spare the stamp
    }
  }
  SM_RETURN_IF_ERROR(old_stamp.exec("RESET session_replication_role"));
  return total;
}

}  // namespace stampmover::orch
