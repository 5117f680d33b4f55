// Demo schema and interleaved multi-tenant data: see seed.h.
#include "harness/seed.h"

#include <algorithm>

namespace stampmover::harness {

using common::Status;

Status createDemoSchema(common::PgConnection& conn) {
  return conn.exec(R"SQL(
CREATE TABLE IF NOT EXISTS currencies (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
  tenant_id bigint NOT NULL, account_id bigint NOT NULL, name text NOT NULL, email text,
  balance numeric(20,4), created_at timestamptz NOT NULL, tags text[], profile jsonb, avatar bytea,
  PRIMARY KEY (tenant_id, account_id));
CREATE TABLE IF NOT EXISTS orders (
  tenant_id bigint NOT NULL, order_id bigint NOT NULL, account_id bigint NOT NULL,
  status text NOT NULL, total numeric, placed_at timestamptz, notes text, ratio double precision,
  PRIMARY KEY (tenant_id, order_id),
  FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, account_id));
CREATE TABLE IF NOT EXISTS order_items (
  tenant_id bigint NOT NULL, order_id bigint NOT NULL, line int NOT NULL, sku text NOT NULL,
  qty int NOT NULL, price numeric(12,2), attrs jsonb,
  PRIMARY KEY (tenant_id, order_id, line),
  FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, order_id));
CREATE TABLE IF NOT EXISTS documents (
  tenant_id bigint NOT NULL, doc_key text NOT NULL, title text, body text, meta jsonb,
  updated_at timestamp, PRIMARY KEY (tenant_id, doc_key));
CREATE TABLE IF NOT EXISTS events (
  tenant_id bigint NOT NULL, event_id uuid NOT NULL, kind text NOT NULL, at timestamptz NOT NULL,
  payload jsonb, amount numeric, PRIMARY KEY (tenant_id, event_id));
)SQL");
}

uint64_t seededTenantRows(uint64_t items) {
  return items + items * 8 / 10 + items * 2 / 10 + items + std::max<uint64_t>(1, items / 50);
}

Status seedTenants(common::PgConnection& conn, const SeedOptions& o) {
  // Build the tenant array: the moved tenant appears as often as all others together, so it
  // holds about half of every page.
  std::vector<std::pair<int64_t, uint64_t>> plan;  // (tenant, items)
  plan.emplace_back(o.tenant, o.tenant_items);
  for (int64_t t : o.others) {
    plan.emplace_back(t, o.others.empty() ? 0 : o.other_items / o.others.size());
  }
  // Interleave by generating, for each g, one row per tenant that still has rows at that index.
  std::string tenants = "{";
  std::string counts = "{";
  for (size_t i = 0; i < plan.size(); ++i) {
    tenants += (i ? "," : "") + std::to_string(plan[i].first);
    counts += (i ? "," : "") + std::to_string(plan[i].second);
  }
  tenants += "}";
  counts += "}";
  SM_RETURN_IF_ERROR(conn.exec(
      "INSERT INTO currencies VALUES ('EUR','Euro'),('USD','US dollar'),('JPY','Yen') "
      "ON CONFLICT DO NOTHING"));
  // t(tenant, n): tenant and its item count; rows where g < n*factor are emitted, ordered by g
  // first so that consecutive heap tuples belong to different tenants.
  const std::string base =
      "WITH t AS (SELECT unnest($1::bigint[]) AS tenant, unnest($2::bigint[]) AS n) ";
  auto run = [&](const std::string& sql) -> Status {
    auto r = conn.query(sql, {tenants, counts});
    return r ? Status::ok() : r.status();
  };
  SM_RETURN_IF_ERROR(run(base +
      "INSERT INTO accounts SELECT t.tenant, g, 'Account ' || g || E' \\u00e9\\t\"q\"\\\\', "
      "CASE WHEN g % 7 = 0 THEN NULL WHEN g % 11 = 0 THEN '' ELSE 'user' || g || '@example.com' END, "
      "(g * 12.3456)::numeric(20,4), timestamptz '2024-01-01 00:00:00+00' + g * interval '37 seconds', "
      "CASE WHEN g % 5 = 0 THEN NULL ELSE ARRAY['a' || g, 'b,c', E'd\\ne', NULL] END, "
      "jsonb_build_object('level', g % 10, 'name', 'n' || g, 'nested', jsonb_build_object('x', g)), "
      "CASE WHEN g % 3 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END "
      "FROM generate_series(1, (SELECT max(n) FROM t) * 2 / 10) g JOIN t ON g <= t.n * 2 / 10 "
      "ORDER BY g, t.tenant"));
  SM_RETURN_IF_ERROR(run(base +
      "INSERT INTO orders SELECT t.tenant, g, 1 + (g % GREATEST(t.n * 2 / 10, 1)), "
      "(ARRAY['new','paid','shipped','cancelled'])[1 + g % 4], (g % 1000) * 1.50, "
      "timestamptz '2024-03-01 12:00:00+00' + g * interval '1 minute', "
      "CASE WHEN g % 9 = 0 THEN NULL ELSE E'note\\twith tab\\nand newline ' || g END, "
      "CASE WHEN g % 13 = 0 THEN 'NaN'::float8 WHEN g % 17 = 0 THEN -0.0 ELSE g / 7.0 END "
      "FROM generate_series(1, (SELECT max(n) FROM t) * 8 / 10) g JOIN t ON g <= t.n * 8 / 10 "
      "ORDER BY g, t.tenant"));
  SM_RETURN_IF_ERROR(run(base +
      "INSERT INTO order_items SELECT t.tenant, 1 + (g % GREATEST(t.n * 8 / 10, 1)), "
      "1 + g / GREATEST(t.n * 8 / 10, 1), 'SKU-' || (g % 5000), 1 + g % 9, (g % 300) * 0.25, "
      "CASE WHEN g % 4 = 0 THEN NULL ELSE jsonb_build_object('color', 'c' || g % 12, 'gift', g % 2 = 0) END "
      "FROM generate_series(1, (SELECT max(n) FROM t)) g JOIN t ON g <= t.n "
      "ORDER BY g, t.tenant"));
  SM_RETURN_IF_ERROR(run(base +
      "INSERT INTO documents SELECT t.tenant, 'doc/' || g || E'/\\u2603', 'Title ' || g, "
      "CASE WHEN g % 3 = 0 THEN repeat(md5(g::text), (40 + g % 100)::int) ELSE 'short body ' || g END, "
      "jsonb_build_object('v', g), timestamp '2024-05-01' + g * interval '1 hour' "
      "FROM generate_series(1, GREATEST((SELECT max(n) FROM t) / 50, 1)) g "
      "JOIN t ON g <= GREATEST(t.n / 50, 1) ORDER BY g, t.tenant"));
  SM_RETURN_IF_ERROR(run(base +
      "INSERT INTO events SELECT t.tenant, md5(t.tenant::text || '/' || g)::uuid, "
      "(ARRAY['login','click','purchase'])[1 + g % 3], "
      "timestamptz '2024-06-01 00:00:00+00' + g * interval '1 second', "
      "CASE WHEN g % 6 = 0 THEN NULL ELSE jsonb_build_object('i', g, 'arr', jsonb_build_array(g, g+1)) END, "
      "CASE WHEN g % 10 = 0 THEN NULL ELSE g * 0.001 END "
      "FROM generate_series(1, (SELECT max(n) FROM t)) g JOIN t ON g <= t.n ORDER BY g, t.tenant"));
  return conn.exec("ANALYZE");
}

}  // namespace stampmover::harness
