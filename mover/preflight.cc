// Preflight checks: see preflight.h. Order matters for the operator: server settings first
// (they are cheapest to read and fix), then schema, then the tenant's data.
#include "mover/preflight.h"

#include <algorithm>

namespace stampmover::mover {

using common::PgConnection;
using common::quoteIdent;
using common::Result;
using common::Status;

namespace {

std::string joinNames(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

Status checkServer(PgConnection& src, PreflightReport& report, const PreflightOptions& o) {
  SM_ASSIGN_OR_RETURN(auto v, src.queryValue("SELECT current_setting('server_version_num')"));
  report.server_version_num = v ? std::stoi(*v) : 0;
  if (report.server_version_num < 150000) {
    return Status::refused(src.label() + " runs PostgreSQL " + v.value_or("?") +
                           "; row-filtered publications need PostgreSQL 15 or later");
  }
  SM_ASSIGN_OR_RETURN(auto wal, src.queryValue("SELECT current_setting('wal_level')"));
  if (wal.value_or("") != "logical") {
    return Status::refused(src.label() + " has wal_level=" + wal.value_or("?") +
                           "; logical decoding needs wal_level=logical "
                           "(ALTER SYSTEM SET wal_level = logical, then restart the server)");
  }
  SM_ASSIGN_OR_RETURN(
      auto res, src.query("SELECT current_setting('max_replication_slots')::int, "
                          "(SELECT count(*) FROM pg_replication_slots)::int, "
                          "(SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user)"));
  int max_slots = std::stoi(common::cell(res, 0, 0));
  int used = std::stoi(common::cell(res, 0, 1));
  bool can_replicate = common::cell(res, 0, 2) == "t";
  report.free_slots = max_slots - used;
  // A source that is followed through its Debezium topics (Kafka) gets no slot from us.
  if (!o.needs_slot) return Status::ok();
  if (!can_replicate) {
    return Status::refused(src.label() + ": the connecting role lacks REPLICATION; "
                           "ALTER ROLE <role> REPLICATION (or connect as a superuser)");
  }
  if (!o.slot_name.empty()) {
    SM_ASSIGN_OR_RETURN(auto exists, src.queryValue("SELECT count(*) FROM pg_replication_slots "
                                                    "WHERE slot_name = $1",
                                                    {o.slot_name}));
    if (exists.value_or("0") != "0" && !o.resuming) {
      return Status::refused(src.label() + " already has replication slot \"" + o.slot_name +
                             "\" for tenant " + o.tenant.text() +
                             " (an earlier migration?); run `stampmover cleanup --tenant " +
                             o.tenant.text() + "` first");
    }
    if (exists.value_or("0") != "0") return Status::ok();  // resuming: the slot is ours
  }
  if (report.free_slots < 1) {
    return Status::refused(src.label() + " has no free replication slot (" + std::to_string(used) +
                           " of " + std::to_string(max_slots) +
                           " used); raise max_replication_slots or drop unused slots");
  }
  return Status::ok();
}

Status checkTable(const TableInfo& t, const std::string& src_label) {
  if (t.primary_key.empty()) {
    return Status::refused("table " + t.key() + " on " + src_label +
                           " has no primary key; stampmover needs one to apply changes "
                           "idempotently: ALTER TABLE " + t.quoted() + " ADD PRIMARY KEY (...)");
  }
  if (t.replica_identity == 'n') {
    return Status::refused("table " + t.key() + " on " + src_label +
                           " has REPLICA IDENTITY NOTHING; updates and deletes cannot be "
                           "replicated: ALTER TABLE " + t.quoted() + " REPLICA IDENTITY DEFAULT");
  }
  if (t.replica_identity != 'f' &&
      std::find(t.replica_identity_columns.begin(), t.replica_identity_columns.end(),
                t.tenant_column) == t.replica_identity_columns.end()) {
    // A row filter on a column outside the replica identity makes every UPDATE/DELETE of the
    // table fail on the source once the publication exists: refuse before creating it.
    return Status::refused(
        "table " + t.key() + " on " + src_label + ": tenant column \"" + t.tenant_column +
        "\" is not part of its replica identity (" +
        (t.replica_identity_columns.empty() ? std::string("none")
                                            : joinNames(t.replica_identity_columns)) +
        "); row filters need it: include it in the primary key or ALTER TABLE " + t.quoted() +
        " REPLICA IDENTITY FULL");
  }
  return Status::ok();
}

Status compareWithDestination(const TableInfo& s, const std::optional<TableInfo>& d,
                              const std::string& dst_label) {
  if (!d) {
    return Status::refused(dst_label + " has no table " + s.key() +
                           "; create it with the source's schema "
                           "(pg_dump --schema-only -t " + s.quoted() + ")");
  }
  for (const auto& c : s.columns) {
    if (c.generated) continue;
    const ColumnInfo* dc = d->column(c.name);
    if (dc == nullptr) {
      return Status::refused("table " + s.key() + " on " + dst_label + " lacks column " +
                             quoteIdent(c.name) + " (" + c.type + "): ALTER TABLE " + s.quoted() +
                             " ADD COLUMN " + quoteIdent(c.name) + " " + c.type);
    }
    if (dc->type != c.type) {
      return Status::refused("column " + s.key() + "." + quoteIdent(c.name) + " is " + c.type +
                             " on the source but " + dc->type + " on " + dst_label +
                             "; make the types equal before migrating");
    }
    if (dc->generated) {
      return Status::refused("column " + s.key() + "." + quoteIdent(c.name) + " is generated on " +
                             dst_label + " but not on the source; make the definitions equal");
    }
  }
  for (const auto& dc : d->columns) {
    if (s.column(dc.name) == nullptr && dc.not_null && !dc.has_default && !dc.generated) {
      return Status::refused("table " + s.key() + " on " + dst_label + " has column " +
                             quoteIdent(dc.name) +
                             " NOT NULL without a default and absent on the source; "
                             "give it a default or drop it");
    }
  }
  if (d->primary_key != s.primary_key) {
    return Status::refused("table " + s.key() + ": primary key (" + joinNames(s.primary_key) +
                           ") on the source but (" + joinNames(d->primary_key) + ") on " +
                           dst_label + "; make them equal");
  }
  return Status::ok();
}

Status refuseNoTenantTables(const PgConnection& src, const TenantColumnPolicy& policy) {
  return Status::refused("no table on " + src.label() + " has the tenant column \"" +
                         policy.default_column +
                         "\"; set --tenant-column (or tables.<schema.table>.tenant_column "
                         "in the config)");
}

}  // namespace

Result<CanonicalTenant> canonicalTenantKey(PgConnection& src, const std::vector<TableInfo>& tables,
                                           const std::string& raw) {
  if (raw.empty()) return Status::refused("no tenant given: pass --tenant <key>");
  // One cast per distinct type; the server is the only exact parser of its own types (domains,
  // numeric, PostgreSQL 16's 0x.. integers), so no canonical form is guessed here.
  struct Cast {
    std::string type;
    std::string text;
    std::vector<std::string> tables;
  };
  std::vector<Cast> casts;
  for (const auto& t : tables) {
    const ColumnInfo* c = t.column(t.tenant_column);
    if (c == nullptr) return Status::internal("table " + t.key() + " lost its tenant column");
    auto it = std::find_if(casts.begin(), casts.end(), [&](const Cast& k) { return k.type == c->type; });
    if (it != casts.end()) {
      it->tables.push_back(t.key());
      continue;
    }
    auto r = src.queryValue("SELECT ($1::" + c->type + ")::text", {raw});
    if (!r) {
      if (r.status().errorClass() != common::ErrorClass::kRefused) return r.status();
      return Status::refused("tenant key '" + raw + "' is not a valid " + c->type + " (column " +
                             t.key() + "." + quoteIdent(t.tenant_column) + ")");
    }
    if (!r->has_value()) return Status::internal("cast of the tenant key to " + c->type + " gave NULL");
    casts.push_back({c->type, **r, {t.key()}});
  }
  if (casts.empty()) return Status::refused("no tenant table to canonicalize tenant key '" + raw + "' for");
  for (const auto& k : casts) {
    if (k.text == casts.front().text) continue;
    std::string what;
    for (const auto& x : casts) {
      what += (what.empty() ? "" : "; ") + x.type + " '" + x.text + "' (" + joinNames(x.tables) + ")";
    }
    return Status::refused("tenant key '" + raw + "' names different tenants in different tables: " +
                           what + "; make the tenant columns' types agree, or pass the key in the "
                           "form every table prints");
  }
  CanonicalTenant out;
  out.key = common::TenantKey::fromServerCast(casts.front().text);
  for (const auto& k : casts) out.types.push_back(k.type);
  return out;
}

Result<CanonicalTenant> canonicalTenantKey(PgConnection& src, const TenantColumnPolicy& policy,
                                           const std::string& raw) {
  if (raw.empty()) return Status::refused("no tenant given: pass --tenant <key>");
  SM_ASSIGN_OR_RETURN(auto tables, discoverTenantTables(src, policy));
  if (tables.empty()) return refuseNoTenantTables(src, policy);
  return canonicalTenantKey(src, tables, raw);
}

Result<PreflightReport> runPreflight(PgConnection& src, PgConnection& dst,
                                     const PreflightOptions& o) {
  PreflightReport report;
  if (o.tenant.empty()) return Status::refused("no tenant given: pass --tenant <key>");
  report.tenant = o.tenant;
  const std::string& tenant = o.tenant.text();
  SM_RETURN_IF_ERROR(checkServer(src, report, o));

  SM_ASSIGN_OR_RETURN(report.tables, discoverTenantTables(src, o.tenant_columns));
  if (report.tables.empty()) return refuseNoTenantTables(src, o.tenant_columns);
  for (const auto& t : report.tables) SM_RETURN_IF_ERROR(checkTable(t, src.label()));

  // The key was canonicalized against these tables' types; a canonical key is its own
  // canonical form, so this also catches a table whose type changed since.
  SM_ASSIGN_OR_RETURN(auto again, canonicalTenantKey(src, report.tables, tenant));
  if (again.key != o.tenant) {
    return Status::refused("tenant key '" + tenant + "' is not canonical for the tenant columns (" +
                           joinNames(again.types) + "): it reads as '" + again.key.text() +
                           "'; did a tenant column's type change during preflight?");
  }

  for (const auto& t : report.tables) {
    SM_ASSIGN_OR_RETURN(auto d, describeTable(dst, t.schema, t.name, t.tenant_column));
    SM_RETURN_IF_ERROR(compareWithDestination(t, d, dst.label()));
  }

  bool any = false;
  for (auto& t : report.tables) {
    SM_RETURN_IF_ERROR(estimateTenantSize(src, t, tenant));
    report.est_rows += static_cast<uint64_t>(t.est_tenant_rows);
    report.est_bytes += t.est_tenant_bytes;
    if (!any) {
      SM_ASSIGN_OR_RETURN(any, tenantHasRows(src, t, tenant));
    }
  }
  if (!any) {
    return Status::refused("tenant " + tenant + " has no rows in any of the " +
                           std::to_string(report.tables.size()) + " tenant tables on " +
                           src.label() + "; check the tenant key and --from");
  }
  if (!o.resuming) {
    for (const auto& t : report.tables) {
      SM_ASSIGN_OR_RETURN(bool present, tenantHasRows(dst, t, tenant));
      if (present) {
        return Status::refused("tenant " + tenant + " already has rows on " + dst.label() +
                               " (table " + t.key() +
                               "); a previous migration was finished or abandoned: delete them "
                               "there, or resume with the same state directory");
      }
    }
  }
  return report;
}

}  // namespace stampmover::mover
