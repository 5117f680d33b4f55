// Catalog discovery: see catalog.h.
#include "mover/catalog.h"

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

namespace stampmover::mover {

using common::cell;
using common::PgConnection;
using common::Result;
using common::rowCount;
using common::Status;

namespace {
// FirstNormalObjectId: OIDs below it are assigned at initdb and identical on every server.
constexpr uint32_t kFirstNormalObjectId = 16384;
}  // namespace

std::string TenantColumnPolicy::columnFor(const std::string& table_key) const {
  auto it = per_table.find(table_key);
  return it == per_table.end() ? default_column : it->second;
}

const ColumnInfo* TableInfo::column(const std::string& n) const {
  for (const auto& c : columns) {
    if (c.name == n) return &c;
  }
  return nullptr;
}

std::vector<const ColumnInfo*> TableInfo::copyColumns() const {
  std::vector<const ColumnInfo*> out;
  for (const auto& c : columns) {
    if (!c.generated) out.push_back(&c);
  }
  return out;
}

bool TableInfo::binaryCopyable() const {
  return std::all_of(columns.begin(), columns.end(),
                     [](const ColumnInfo& c) { return c.generated || c.builtin_type; });
}

std::string columnList(const TableInfo& t) {
  std::string out;
  for (const ColumnInfo* c : t.copyColumns()) {
    if (!out.empty()) out += ", ";
    out += common::quoteIdent(c->name);
  }
  return out;
}

namespace {

Result<std::vector<std::string>> indexColumns(PgConnection& conn, uint32_t oid,
                                              const char* flag) {
  SM_ASSIGN_OR_RETURN(
      auto res,
      conn.query(std::string("SELECT a.attname FROM pg_index i "
                             "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
                             "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                             "WHERE i.indrelid = $1 AND i.") +
                     flag + " ORDER BY k.ord",
                 {std::to_string(oid)}));
  std::vector<std::string> out;
  for (int r = 0; r < rowCount(res); ++r) out.push_back(cell(res, r, 0));
  return out;
}

Status fillTable(PgConnection& conn, TableInfo& t) {
  SM_ASSIGN_OR_RETURN(
      auto cols,
      conn.query("SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid, a.attnotnull, "
                 "a.atthasdef, a.attgenerated <> '', "
                 "(t.oid < $2 AND (t.typelem = 0 OR t.typelem < $2) AND t.typtype <> 'd')"
                 " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                 "WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                 {std::to_string(t.oid), std::to_string(kFirstNormalObjectId)}));
  t.columns.clear();
  for (int r = 0; r < rowCount(cols); ++r) {
    ColumnInfo c;
    c.name = cell(cols, r, 0);
    c.type = cell(cols, r, 1);
    c.type_oid = static_cast<uint32_t>(std::stoul(cell(cols, r, 2)));
    c.not_null = cell(cols, r, 3) == "t";
    c.has_default = cell(cols, r, 4) == "t";
    c.generated = cell(cols, r, 5) == "t";
    c.builtin_type = cell(cols, r, 6) == "t";
    t.columns.push_back(std::move(c));
  }
  SM_ASSIGN_OR_RETURN(t.primary_key, indexColumns(conn, t.oid, "indisprimary"));
  if (t.replica_identity == 'd') {
    t.replica_identity_columns = t.primary_key;
  } else if (t.replica_identity == 'i') {
    SM_ASSIGN_OR_RETURN(t.replica_identity_columns, indexColumns(conn, t.oid, "indisreplident"));
  }
  SM_ASSIGN_OR_RETURN(
      auto fks, conn.query("SELECT DISTINCT pn.nspname, pc.relname FROM pg_constraint con "
                           "JOIN pg_class pc ON pc.oid = con.confrelid "
                           "JOIN pg_namespace pn ON pn.oid = pc.relnamespace "
                           "WHERE con.conrelid = $1 AND con.contype = 'f' AND con.confrelid <> $1",
                           {std::to_string(t.oid)}));
  t.parents.clear();
  for (int r = 0; r < rowCount(fks); ++r) t.parents.push_back(cell(fks, r, 0) + "." + cell(fks, r, 1));
  return Status::ok();
}

constexpr const char* kTableSelect =
    "SELECT c.oid, n.nspname, c.relname, c.relreplident, pg_relation_size(c.oid), "
    "current_setting('block_size')::bigint FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' ";

TableInfo tableFromRow(const common::PgResult& res, int r) {
  TableInfo t;
  t.oid = static_cast<uint32_t>(std::stoul(cell(res, r, 0)));
  t.schema = cell(res, r, 1);
  t.name = cell(res, r, 2);
  t.replica_identity = cell(res, r, 3).empty() ? 'd' : cell(res, r, 3)[0];
  t.heap_bytes = std::stoull(cell(res, r, 4));
  t.block_size = std::stoull(cell(res, r, 5));
  return t;
}

}  // namespace

Result<std::vector<TableInfo>> discoverTenantTables(PgConnection& conn,
                                                    const TenantColumnPolicy& policy) {
  SM_ASSIGN_OR_RETURN(
      auto res, conn.query(std::string(kTableSelect) +
                           "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'stampmover') "
                           "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY n.nspname, c.relname"));
  std::vector<TableInfo> found;
  for (int r = 0; r < rowCount(res); ++r) {
    TableInfo t = tableFromRow(res, r);
    SM_RETURN_IF_ERROR(fillTable(conn, t));
    t.tenant_column = policy.columnFor(t.key());
    if (t.column(t.tenant_column) == nullptr) continue;
    found.push_back(std::move(t));
  }
  // Topological order, parents first; FK cycles keep their discovery order (the copy skips FK
  // checks with session_replication_role = replica, as native replication does).
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < found.size(); ++i) index[found[i].key()] = i;
  std::vector<int> state(found.size(), 0);
  std::vector<TableInfo> ordered;
  std::function<void(size_t)> visit = [&](size_t i) {
    if (state[i] != 0) return;
    state[i] = 1;
    for (const auto& p : found[i].parents) {
      auto it = index.find(p);
      if (it != index.end()) visit(it->second);
    }
    state[i] = 2;
    ordered.push_back(found[i]);
  };
  for (size_t i = 0; i < found.size(); ++i) visit(i);
  return ordered;
}

Result<std::optional<TableInfo>> describeTable(PgConnection& conn, const std::string& schema,
                                               const std::string& name,
                                               const std::string& tenant_column) {
  SM_ASSIGN_OR_RETURN(auto res, conn.query(std::string(kTableSelect) +
                                               "AND n.nspname = $1 AND c.relname = $2",
                                           {schema, name}));
  if (rowCount(res) == 0) return std::optional<TableInfo>();
  TableInfo t = tableFromRow(res, 0);
  SM_RETURN_IF_ERROR(fillTable(conn, t));
  t.tenant_column = tenant_column;
  return std::optional<TableInfo>(std::move(t));
}

Status estimateTenantSize(PgConnection& conn, TableInfo& t, const std::string& tenant) {
  SM_ASSIGN_OR_RETURN(auto plan,
                      conn.queryValue("EXPLAIN (FORMAT JSON) SELECT * FROM " + t.quoted() +
                                          " WHERE " + common::quoteIdent(t.tenant_column) + " = $1",
                                      {tenant}));
  if (!plan) return Status::internal("EXPLAIN returned nothing for " + t.key());
  try {
    auto j = nlohmann::json::parse(*plan);
    const auto& p = j.at(0).at("Plan");
    t.est_tenant_rows = p.at("Plan Rows").get<double>();
    t.est_tenant_bytes =
        static_cast<uint64_t>(t.est_tenant_rows * (p.at("Plan Width").get<double>() + 24));
  } catch (const std::exception& e) {
    return Status::internal("unexpected EXPLAIN output for " + t.key() + ": " + e.what());
  }
  return Status::ok();
}

Result<bool> tenantHasRows(PgConnection& conn, const TableInfo& t, const std::string& tenant) {
  SM_ASSIGN_OR_RETURN(auto v, conn.queryValue("SELECT EXISTS (SELECT 1 FROM " + t.quoted() +
                                                  " WHERE " + common::quoteIdent(t.tenant_column) +
                                                  " = $1)",
                                              {tenant}));
  return v.has_value() && *v == "t";
}

Result<StampIdentity> readStampIdentity(PgConnection& conn) {
  auto res = conn.query(
      "SELECT (SELECT system_identifier::text FROM pg_control_system()), "
      "(SELECT oid::text FROM pg_database WHERE datname = current_database())");
  if (!res) {
    if (res.status().errorClass() != common::ErrorClass::kRefused) return res.status();
    return Status::refused(conn.label() + ": cannot read the server's system identifier (" +
                           res.status().message() +
                           "); GRANT EXECUTE ON FUNCTION pg_control_system() TO <role>");
  }
  if (rowCount(*res) != 1 || common::cellIsNull(*res, 0, 0) || common::cellIsNull(*res, 0, 1)) {
    return Status::internal(conn.label() + ": no system identifier or database oid");
  }
  StampIdentity id;
  id.system_identifier = cell(*res, 0, 0);
  id.database_oid = static_cast<uint32_t>(std::stoul(cell(*res, 0, 1)));
  return id;
}

}  // namespace stampmover::mover
