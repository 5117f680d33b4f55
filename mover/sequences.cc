// Sequence raising at cutover: see sequences.h.
#include "mover/sequences.h"

#include <set>

namespace stampmover::mover {

using common::PgConnection;
using common::Result;
using common::Status;

Result<std::vector<std::string>> tenantSequences(PgConnection& conn,
                                                 const std::vector<TableInfo>& tables) {
  std::set<std::string> out;
  for (const auto& t : tables) {
    SM_ASSIGN_OR_RETURN(
        auto res,
        conn.query("SELECT DISTINCT s.oid::regclass::text FROM pg_depend d "
                   "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
                   "WHERE d.refobjid = $1::regclass AND d.classid = 'pg_class'::regclass "
                   "AND d.deptype IN ('a', 'i') "
                   "UNION SELECT DISTINCT s.oid::regclass::text FROM pg_attrdef ad "
                   "JOIN pg_depend d ON d.objid = ad.oid AND d.classid = 'pg_attrdef'::regclass "
                   "JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S' "
                   "WHERE ad.adrelid = $1::regclass",
                   {t.quoted()}));
    for (int r = 0; r < common::rowCount(res); ++r) out.insert(common::cell(res, r, 0));
  }
  return std::vector<std::string>(out.begin(), out.end());
}

Result<std::vector<SequenceRaise>> raiseSequences(PgConnection& src, PgConnection& dst,
                                                  const std::vector<TableInfo>& tables,
                                                  int64_t headroom) {
  std::vector<SequenceRaise> out;
  SM_ASSIGN_OR_RETURN(auto seqs, tenantSequences(src, tables));
  for (const auto& seq : seqs) {
    // regclass text is already quoted where needed; it names a catalog object, not user input,
    // and is passed as a parameter where the SQL allows one.
    SM_ASSIGN_OR_RETURN(auto sv, src.queryValue("SELECT last_value FROM pg_sequences WHERE "
                                                "format('%I.%I', schemaname, sequencename)::regclass = $1::regclass",
                                                {seq}));
    SM_ASSIGN_OR_RETURN(auto exists, dst.queryValue("SELECT to_regclass($1)::text", {seq}));
    if (!exists) {
      return Status::refused("sequence " + seq + " feeds a tenant table on the source but does not "
                             "exist on the destination; create it there");
    }
    SequenceRaise r;
    r.sequence = seq;
    r.source_value = sv ? std::stoll(*sv) : 0;
    SM_ASSIGN_OR_RETURN(auto before, dst.queryValue("SELECT coalesce(last_value, 0) FROM pg_sequences WHERE "
                                                    "format('%I.%I', schemaname, sequencename)::regclass = $1::regclass",
                                                    {seq}));
    r.dest_before = before ? std::stoll(*before) : 0;
    int64_t target = std::max(r.dest_before, r.source_value + headroom);
    SM_ASSIGN_OR_RETURN(auto after, dst.queryValue("SELECT setval($1::regclass, $2::bigint, true)",
                                                   {seq, std::to_string(target)}));
    r.dest_after = after ? std::stoll(*after) : target;
    out.push_back(r);
  }
  return out;
}

}  // namespace stampmover::mover
