// Source catalog reads for the Kafka path (see kafka_relations.h).
#include "cdc/kafka_relations.h"

#include <cstdlib>
#include <map>

namespace stampmover::cdc {

using common::Result;
using common::Status;

Result<std::vector<std::shared_ptr<const common::Relation>>> describeSourceTables(
    common::PgConnection& source, const std::vector<std::string>& tables) {
  std::vector<std::shared_ptr<const common::Relation>> out;
  for (const auto& t : tables) {
    auto dot = t.find('.');
    if (dot == std::string::npos) return Status::refused("table " + t + " is not schema-qualified");
    SM_ASSIGN_OR_RETURN(
        auto res,
        source.query(
            "SELECT c.oid, c.relreplident, a.attname, a.atttypid, a.atttypmod, "
            "  CASE c.relreplident WHEN 'f' THEN true "
            "    WHEN 'd' THEN COALESCE(a.attnum = ANY(pk.indkey::int2[]), false) "
            "    WHEN 'i' THEN COALESCE(a.attnum = ANY(ri.indkey::int2[]), false) "
            "    ELSE false END "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "  AND a.attgenerated = '' "
            "LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary "
            "LEFT JOIN pg_index ri ON ri.indrelid = c.oid AND ri.indisreplident "
            "WHERE n.nspname = $1 AND c.relname = $2 ORDER BY a.attnum",
            {t.substr(0, dot), t.substr(dot + 1)}));
    if (PQntuples(res.get()) == 0)
      return Status::refused("table " + t + " does not exist on the source");
    auto rel = std::make_shared<common::Relation>();
    rel->id = static_cast<uint32_t>(std::strtoul(common::cell(res, 0, 0).c_str(), nullptr, 10));
    rel->schema = t.substr(0, dot);
    rel->name = t.substr(dot + 1);
    rel->replica_identity = common::cell(res, 0, 1).empty() ? 'd' : common::cell(res, 0, 1)[0];
    for (int r = 0; r < PQntuples(res.get()); ++r) {
      common::RelationColumn col;
      col.name = common::cell(res, r, 2);
      col.type_oid = static_cast<uint32_t>(std::strtoul(common::cell(res, r, 3).c_str(), nullptr, 10));
      col.type_modifier = static_cast<int32_t>(std::strtol(common::cell(res, r, 4).c_str(), nullptr, 10));
      col.part_of_key = common::cell(res, r, 5) == "t";
      rel->columns.push_back(std::move(col));
    }
    out.push_back(std::move(rel));
  }
  return out;
}

RelationResolver fixedRelations(std::vector<std::shared_ptr<const common::Relation>> relations) {
  auto index = std::make_shared<std::map<std::string, std::shared_ptr<const common::Relation>>>();
  for (auto& r : relations) (*index)[r->schema + "." + r->name] = r;
  return [index](const std::string& schema,
                 const std::string& table) -> Result<std::shared_ptr<const common::Relation>> {
    auto it = index->find(schema + "." + table);
    if (it == index->end()) return std::shared_ptr<const common::Relation>();
    return it->second;
  };
}

}  // namespace stampmover::cdc
