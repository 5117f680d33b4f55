// Purge of a moved tenant's rows from the old stamp: see purge.h.
#include "orchestrator/purge.h"

#include <chrono>
#include <thread>

namespace stampmover::orch {

using common::PgConnection;
using common::Result;
using common::Status;

Result<uint64_t> purgeTenant(PgConnection& old_stamp, PgConnection& serving,
                             const std::vector<mover::TableInfo>& tables, const std::string& tenant) {
  for (const auto& t : tables) {
    std::string order;
    for (const auto& k : t.primary_key) order += (order.empty() ? "" : ", ") + common::quoteIdent(k);
    const std::string sql = "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY " +
                            order + ")), '') FROM " + t.quoted() + " t WHERE " +
                            common::quoteIdent(t.tenant_column) + " = $1";
    SM_ASSIGN_OR_RETURN(auto a, old_stamp.queryValue(sql, {tenant}));
    SM_ASSIGN_OR_RETURN(auto b, serving.queryValue(sql, {tenant}));
    if (a != b) {
      return Status::dataLoss("not purging: table " + t.key() + " differs between the stamps (" +
                              a.value_or("") + " vs " + b.value_or("") + ")");
    }
  }
  uint64_t total = 0;
  SM_RETURN_IF_ERROR(old_stamp.exec("SET session_replication_role = replica"));
  for (auto it = tables.rbegin(); it != tables.rend(); ++it) {
    for (;;) {
      SM_ASSIGN_OR_RETURN(auto r, old_stamp.query("DELETE FROM " + it->quoted() + " WHERE ctid = ANY (ARRAY(SELECT ctid FROM " +
                                                      it->quoted() + " WHERE " +
                                                      common::quoteIdent(it->tenant_column) +
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
