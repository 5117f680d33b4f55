// Re-check of changed rows by primary key: see recheck.h. Rows are compared with the project's
// one row equality (verify/row_equality.h): the verifier's canonical lines, columns selected by
// name, so a destination with its columns in another order or a numeric spelled 1.50 there
// and 1.5 here is equal, as PostgreSQL's `=` says.
#include "orchestrator/recheck.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "common/session_settings.h"
#include "orchestrator/verify_job.h"
#include "verify/row_equality.h"

namespace stampmover::orch {

using common::PgConnection;
using common::PgParam;
using common::Result;
using common::Status;
using Clock = std::chrono::steady_clock;

namespace {

using KeyList = std::vector<const std::vector<PgParam>*>;

// One array literal per primary-key column of `keys` ($1..$n), and the unnest() of them.
std::vector<PgParam> keyArrays(const mover::TableInfo& t, const KeyList& keys,
                               std::string* unnest) {
  std::vector<PgParam> arrays;
  for (size_t k = 0; k < t.primary_key.size(); ++k) {
    std::string arr = "{";
    for (size_t i = 0; i < keys.size(); ++i) {
      const PgParam& v = (*keys[i])[k];
      if (i) arr += ",";
      if (!v) {
        arr += "NULL";
        continue;
      }
      arr += '"';
      for (char ch : *v) {
        if (ch == '"' || ch == '\\') arr += '\\';
        arr += ch;
      }
      arr += '"';
    }
    arr += "}";
    arrays.push_back(arr);
    const mover::ColumnInfo* col = t.column(t.primary_key[k]);
    const std::string type = col ? col->type : "text";
    *unnest += (k ? ", " : "") + std::string("$") + std::to_string(k + 1) + "::" + type + "[]";
  }
  return arrays;
}

// The join of the table (alias sm_t) with the key arrays (alias sm_k, columns sm_c<i>): names no
// table column can clash with, as unqualified canonical expressions would.
std::string keyMatch(const mover::TableInfo& t, std::string* cols) {
  std::string match;
  for (size_t k = 0; k < t.primary_key.size(); ++k) {
    match += (k ? " AND " : "") + std::string("sm_t.") + common::quoteIdent(t.primary_key[k]) +
             " = sm_k.sm_c" + std::to_string(k);
    *cols += (k ? ", sm_c" : "sm_c") + std::to_string(k);
  }
  return match;
}

// Rows of `table` for keys[i], as (i, canonical line), ordered by i; keys without a row are
// absent. Both sides are asked with the same arrays, so i names the same key on both, whatever
// the text form of its values. One statement per call, whatever the number of keys.
Result<std::vector<std::pair<int64_t, std::string>>> fetchByOrdinal(
    PgConnection& c, const mover::TableInfo& t, const verify::PreparedTable& enc,
    const KeyList& keys, const std::string& tenant) {
  std::string unnest, cols;
  std::vector<PgParam> arrays = keyArrays(t, keys, &unnest);
  const std::string match = keyMatch(t, &cols);
  arrays.push_back(tenant);
  const std::string sql = "SELECT sm_k.sm_n - 1, " + verify::canonicalSelectList(enc, "sm_t") +
                          " FROM " + t.quoted() + " AS sm_t JOIN unnest(" + unnest +
                          ") WITH ORDINALITY AS sm_k(" + cols + ", sm_n) ON " + match +
                          " WHERE sm_t." + common::quoteIdent(t.tenant_column) + " = $" +
                          std::to_string(arrays.size()) + " ORDER BY 1";
  SM_ASSIGN_OR_RETURN(auto res, c.query(sql, arrays));
  const int ncols = static_cast<int>(enc.columns.size());
  if (PQnfields(res.get()) != ncols + 1) {
    return Status::internal(c.label() + ": unexpected re-check row shape for " + t.key());
  }
  std::vector<std::pair<int64_t, std::string>> out;
  out.reserve(static_cast<size_t>(common::rowCount(res)));
  for (int r = 0; r < common::rowCount(res); ++r) {
    out.emplace_back(std::stoll(common::cell(res, r, 0)),
                     verify::canonicalLine(res.get(), r, 1, ncols));
  }
  return out;
}

enum class Difference { kMissing, kExtra, kDifferent };  // on the destination

// Walks source rows `a` and destination rows `b`, both (key, canonical line) ordered by key, and
// calls `on(key, difference)` for each key one side lacks or whose rows differ, while it returns
// true.
template <typename Key, typename On>
void forEachDifference(const std::vector<std::pair<Key, std::string>>& a,
                       const std::vector<std::pair<Key, std::string>>& b, On&& on) {
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    bool go = true;
    if (j >= b.size() || (i < a.size() && a[i].first < b[j].first)) {
      go = on(a[i++].first, Difference::kMissing);
    } else if (i >= a.size() || b[j].first < a[i].first) {
      go = on(b[j++].first, Difference::kExtra);
    } else {
      if (a[i].second != b[j].second) go = on(a[i].first, Difference::kDifferent);
      ++i;
      ++j;
    }
    if (!go) return;
  }
}

// "v1,v2" of a primary key, NULL for NULL, for difference descriptions.
std::string keyText(const std::vector<PgParam>& pk) {
  std::string out;
  for (size_t i = 0; i < pk.size(); ++i) out += (i ? "," : "") + pk[i].value_or("NULL");
  return out;
}

Status pinEncoding(PgConnection& src, PgConnection& dst) {
  SM_RETURN_IF_ERROR(src.exec(common::pinnedSettingsSql()));
  return dst.exec(common::pinnedSettingsSql());
}

}  // namespace

Result<std::vector<std::string>> recheckTouchedRows(PgConnection& src, PgConnection& dst,
                                                    const std::vector<mover::TableInfo>& tables,
                                                    const mover::TouchedKeys& touched,
                                                    const std::string& tenant,
                                                    uint64_t* rows_checked) {
  std::vector<std::string> diffs;
  SM_RETURN_IF_ERROR(pinEncoding(src, dst));
  SM_ASSIGN_OR_RETURN(auto encodings, rowEncodingsFor(src, tables));
  std::optional<verify::RowHasher> hasher;  // whole-table comparisons only
  for (size_t ti = 0; ti < tables.size(); ++ti) {
    const mover::TableInfo& t = tables[ti];
    const verify::PreparedTable& enc = encodings[ti];
    const bool whole = touched.overflowed || touched.whole_table.count(t.key()) > 0;
    if (whole) {
      if (!hasher) {
        SM_ASSIGN_OR_RETURN(std::string salt, verify::randomSalt());
        SM_ASSIGN_OR_RETURN(hasher, verify::RowHasher::create(salt));
      }
      SM_ASSIGN_OR_RETURN(auto a, verify::digestTenantRows(src, enc, tenant, *hasher));
      SM_ASSIGN_OR_RETURN(auto b, verify::digestTenantRows(dst, enc, tenant, *hasher));
      *rows_checked += a.rows;
      if (!(a == b)) {
        diffs.push_back(t.key() + ": tenant rows differ (" + std::to_string(a.rows) +
                        " rows on the source, " + std::to_string(b.rows) + " on the destination)");
      }
      continue;
    }
    auto it = touched.keys.find(t.key());
    if (it == touched.keys.end() || it->second.empty()) continue;
    KeyList keys;
    keys.reserve(it->second.size());
    for (const auto& [encoded, pk] : it->second) keys.push_back(&pk);
    auto t0 = Clock::now();
    SM_ASSIGN_OR_RETURN(auto a, fetchByOrdinal(src, t, enc, keys, tenant));
    auto t1 = Clock::now();
    SM_ASSIGN_OR_RETURN(auto b, fetchByOrdinal(dst, t, enc, keys, tenant));
    spdlog::debug("re-check {}: {} keys, source {:.1f} ms, destination {:.1f} ms", t.key(),
                  keys.size(), std::chrono::duration<double, std::milli>(t1 - t0).count(),
                  msSince(t1));
    *rows_checked += keys.size();
    static const char* const kWhat[] = {"missing on the destination", "extra on the destination",
                                        "different"};
    forEachDifference(a, b, [&](int64_t ord, Difference d) {
      diffs.push_back(t.key() + " (" + keyText(*keys[static_cast<size_t>(ord)]) +
                      "): " + kWhat[static_cast<int>(d)]);
      return diffs.size() <= 20;
    });
    if (diffs.size() > 20) return diffs;
  }
  return diffs;
}

Result<mover::TouchedKeys> pruneTouched(PgConnection& src, PgConnection& dst,
                                        const std::vector<mover::TableInfo>& tables,
                                        const mover::TouchedKeys& touched,
                                        const std::string& tenant, PruneStats* stats) {
  constexpr size_t kChunk = 10'000;  // keys per query: bounded statements and results
  mover::TouchedKeys kept;
  kept.whole_table = touched.whole_table;
  kept.overflowed = touched.overflowed;
  if (touched.overflowed) return kept;  // no keys held: the window compares whole tables
  SM_RETURN_IF_ERROR(pinEncoding(src, dst));
  SM_ASSIGN_OR_RETURN(auto encodings, rowEncodingsFor(src, tables));
  for (const auto& [table, entries] : touched.keys) {
    if (entries.empty() || touched.whole_table.count(table) > 0) continue;  // whole table anyway
    auto t = std::find_if(tables.begin(), tables.end(),
                          [&](const mover::TableInfo& ti) { return ti.key() == table; });
    if (t == tables.end()) {
      kept.keys[table] = entries;  // not a table we can compare here: keep every key
      continue;
    }
    const verify::PreparedTable& enc = encodings[static_cast<size_t>(t - tables.begin())];
    std::vector<const std::pair<const std::string, std::vector<PgParam>>*> all;
    all.reserve(entries.size());
    for (const auto& e : entries) all.push_back(&e);
    for (size_t from = 0; from < all.size(); from += kChunk) {
      const size_t n = std::min(kChunk, all.size() - from);
      KeyList keys;
      keys.reserve(n);
      for (size_t i = 0; i < n; ++i) keys.push_back(&all[from + i]->second);
      SM_ASSIGN_OR_RETURN(auto a, fetchByOrdinal(src, *t, enc, keys, tenant));
      SM_ASSIGN_OR_RETURN(auto b, fetchByOrdinal(dst, *t, enc, keys, tenant));
      forEachDifference(a, b, [&](int64_t ord, Difference) {
        const auto* e = all[from + static_cast<size_t>(ord)];
        kept.keys[table].emplace(e->first, e->second);
        return true;
      });
      stats->checked += n;
    }
  }
  for (const auto& [table, entries] : kept.keys) kept.count += entries.size();
  stats->kept = kept.count;
  return kept;
}

const char* keyedRowStateName(KeyedRowState s) {
  switch (s) {
    case KeyedRowState::kEqual:
      return "equal";
    case KeyedRowState::kMissing:
      return "missing";
    case KeyedRowState::kExtra:
      return "extra";
    case KeyedRowState::kDifferent:
      return "different";
    case KeyedRowState::kAbsent:
      return "absent";
  }
  return "unknown";
}

Result<std::vector<KeyedRowState>> compareRowsByKey(PgConnection& src, PgConnection& dst,
                                                    const mover::TableInfo& table,
                                                    const std::vector<std::vector<PgParam>>& keys,
                                                    const std::string& tenant) {
  std::vector<KeyedRowState> out(keys.size(), KeyedRowState::kAbsent);
  if (keys.empty()) return out;
  SM_RETURN_IF_ERROR(pinEncoding(src, dst));
  SM_ASSIGN_OR_RETURN(auto encodings, rowEncodingsFor(src, {table}));
  KeyList list;
  list.reserve(keys.size());
  for (const auto& k : keys) {
    if (k.size() != table.primary_key.size()) {
      return Status::internal("re-check of " + table.key() + ": a key of " +
                              std::to_string(k.size()) + " values for a primary key of " +
                              std::to_string(table.primary_key.size()) + " columns");
    }
    list.push_back(&k);
  }
  SM_ASSIGN_OR_RETURN(auto a, fetchByOrdinal(src, table, encodings[0], list, tenant));
  SM_ASSIGN_OR_RETURN(auto b, fetchByOrdinal(dst, table, encodings[0], list, tenant));
  for (const auto& row : a) out[static_cast<size_t>(row.first)] = KeyedRowState::kEqual;
  for (const auto& row : b) out[static_cast<size_t>(row.first)] = KeyedRowState::kEqual;
  forEachDifference(a, b, [&](int64_t ord, Difference d) {
    static constexpr KeyedRowState kState[] = {KeyedRowState::kMissing, KeyedRowState::kExtra,
                                               KeyedRowState::kDifferent};
    out[static_cast<size_t>(ord)] = kState[static_cast<int>(d)];
    return true;
  });
  return out;
}

Status pruneApplierTouched(PgConnection& src, PgConnection& dst,
                           const std::vector<mover::TableInfo>& tables, mover::PgApplier& applier,
                           const std::string& tenant, PruneStats* stats) {
  const auto t0 = Clock::now();
  mover::TouchedKeys taken = applier.takeTouched();
  auto kept = pruneTouched(src, dst, tables, taken, tenant, stats);
  if (!kept) {
    applier.restoreTouched(std::move(taken));  // nothing learned: everything is re-checked later
    return kept.status();
  }
  applier.restoreTouched(std::move(*kept));
  stats->ms = msSince(t0);
  return Status::ok();
}

}  // namespace stampmover::orch
