// Apply statements: see apply_sql.h.
#include "mover/apply_sql.h"

#include <algorithm>

#include "common/pg.h"

namespace stampmover::mover {

using common::quoteIdent;

bool ApplyShape::tenantInKey() const {
  return std::find(pk.begin(), pk.end(), tenant) != pk.end();
}

namespace {

std::string param(size_t n) { return "$" + std::to_string(n); }

bool isPk(const ApplyShape& s, size_t i) {
  return std::find(s.pk.begin(), s.pk.end(), i) != s.pk.end();
}

// "a" = $1 AND "b" = $2 for the columns at `idx`, then the tenant predicate when needed.
std::string keyWhere(const ApplyShape& s, const std::vector<size_t>& idx) {
  std::string where;
  for (size_t k = 0; k < idx.size(); ++k) {
    where += (k ? " AND " : "") + quoteIdent(s.columns[idx[k]]) + " = " + param(k + 1);
  }
  if (!s.tenantInKey()) {
    where += " AND " + quoteIdent(s.columns[s.tenant]) + " = " + param(idx.size() + 1);
  }
  return where;
}

}  // namespace

ApplyStatements buildApplyStatements(const ApplyShape& s) {
  ApplyStatements out;
  std::string cols, values, set, pk_cols;
  for (size_t i = 0; i < s.columns.size(); ++i) {
    cols += (i ? ", " : "") + quoteIdent(s.columns[i]);
    values += (i ? ", " : "") + param(i + 1);
    if (!isPk(s, i)) {
      set += (set.empty() ? "" : ", ") + quoteIdent(s.columns[i]) + " = EXCLUDED." +
             quoteIdent(s.columns[i]);
    }
  }
  for (size_t k = 0; k < s.pk.size(); ++k) pk_cols += (k ? ", " : "") + quoteIdent(s.columns[s.pk[k]]);
  // The target is aliased x so the conflict's WHERE can name the existing row.
  std::string on_conflict = " ON CONFLICT (" + pk_cols + ") DO ";
  if (set.empty()) {
    on_conflict += "NOTHING";  // every column is in the PK, the tenant column too
  } else {
    on_conflict += "UPDATE SET " + set;
    if (!s.tenantInKey()) {
      const std::string tc = quoteIdent(s.columns[s.tenant]);
      on_conflict += " WHERE x." + tc + " = EXCLUDED." + tc;
    }
  }
  const std::string into = "INSERT INTO " + s.table + " AS x (" + cols + ") ";
  // Checked forms: a row skipped by the conflict's WHERE (another tenant's key) makes the
  // statement fail with division_by_zero (22012) on the server, which aborts the transaction —
  // a check made by the client after reading the answer would come too late in a pipeline whose
  // COMMIT is already sent.
  auto checked = [&](const std::string& insert, const std::string& expected) {
    if (s.tenantInKey() || set.empty()) return insert;
    return "WITH w AS (" + insert + " RETURNING 1) SELECT 1 / (count(*) = " + expected +
           ")::int FROM w";
  };
  out.upsert = checked(into + "VALUES (" + values + ")" + on_conflict, "1");
  out.delete_pk = "DELETE FROM " + s.table + " WHERE " + keyWhere(s, s.pk);
  if (!s.key.empty()) out.delete_key = "DELETE FROM " + s.table + " WHERE " + keyWhere(s, s.key);
  out.delete_tenant =
      "DELETE FROM " + s.table + " WHERE " + quoteIdent(s.columns[s.tenant]) + " = $1";
  if (s.casts.size() != s.columns.size()) return out;
  // Multi-row forms: one array parameter per column, rows in array order, unnested in the
  // select list (the arrays have equal lengths, so the unnests run in lockstep). There they
  // stream row by row; in FROM (ROWS FROM) they were first materialized in a tuplestore,
  // ~7% of the destination's CPU. Each column needs its own unnest, so no argument limit.
  // Keys in a group are distinct, so the delete's join needs no de-duplication.
  auto unnested = [&](const std::vector<size_t>& idx, std::string* match) {
    std::string select;
    for (size_t k = 0; k < idx.size(); ++k) {
      const ColumnCast& cc = s.casts[idx[k]];
      const std::string alias = "c" + std::to_string(k + 1);
      select += (k ? ", unnest(" : "unnest(") + param(k + 1) + "::" + cc.array_type + ")" +
                cc.elem_cast + " AS " + alias;
      *match += std::string(k ? " AND " : "") + "x." + quoteIdent(s.columns[idx[k]]) + " = u." +
                alias;
    }
    return "SELECT " + select;
  };
  std::vector<size_t> all(s.columns.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  std::string match_all, match_pk;
  const std::string rows_all = unnested(all, &match_all);
  const std::string rows_pk = unnested(s.pk, &match_pk);
  out.upsert_many = checked(into + rows_all + on_conflict, param(s.columns.size() + 1) + "::bigint");
  out.insert_plain_many = "INSERT INTO " + s.table + " (" + cols + ") " + rows_all;
  out.insert_plain = "INSERT INTO " + s.table + " (" + cols + ") VALUES (" + values + ")";
  out.delete_many = "DELETE FROM " + s.table + " AS x USING (" + rows_pk + ") AS u WHERE " +
                    match_pk;
  if (!s.tenantInKey()) {
    out.delete_many += " AND x." + quoteIdent(s.columns[s.tenant]) + " = " + param(s.pk.size() + 1);
  }
  return out;
}

std::string toastUpdateSql(const ApplyShape& s, const std::string& mask) {
  std::string set;
  size_t n = s.pk.size();
  for (size_t i = 0; i < s.columns.size() && i < mask.size(); ++i) {
    if (mask[i] == 'u' || isPk(s, i)) continue;
    set += (set.empty() ? "" : ", ") + quoteIdent(s.columns[i]) + " = " + param(++n);
  }
  std::string where;
  for (size_t k = 0; k < s.pk.size(); ++k) {
    where += (k ? " AND " : "") + quoteIdent(s.columns[s.pk[k]]) + " = " + param(k + 1);
  }
  if (!s.tenantInKey()) where += " AND " + quoteIdent(s.columns[s.tenant]) + " = " + param(n + 1);
  return "UPDATE " + s.table + " SET " + set + " WHERE " + where;
}

}  // namespace stampmover::mover
