// Narrowing of differing chunks to rows, live re-reads, and the other-tenants check: see narrow.h.
#include "verify/narrow.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <unordered_set>

namespace stampmover::verify {

using common::Lsn;
using common::PgConnection;
using common::PgParam;
using common::Result;
using common::Status;

namespace {

size_t kindIndex(DiffKind k) { return static_cast<size_t>(k); }

bool sameRow(const RowImage* a, const RowImage* b) {
  if (a == nullptr || b == nullptr) return a == b;
  return a->digest == b->digest;
}

const RowImage* find(const RowMap& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? nullptr : &it->second;
}

std::vector<size_t> differingColumns(const RowImage& a, const RowImage& b) {
  std::vector<size_t> out;
  for (size_t i = 0; i < a.column_hashes.size() && i < b.column_hashes.size(); ++i) {
    if (a.column_hashes[i] != b.column_hashes[i]) out.push_back(i);
  }
  return out;
}

KeyedDelta deltaFor(const std::string& key, const RowImage* src, const RowImage* dst) {
  KeyedDelta d;
  d.key = key;
  if (src != nullptr && dst == nullptr) {
    d.kind = DiffKind::kMissing;
    d.digest = src->digest;
  } else if (src == nullptr && dst != nullptr) {
    d.kind = DiffKind::kExtra;
    d.digest = dst->digest;
  } else if (src != nullptr && dst != nullptr) {
    d.kind = DiffKind::kDifferent;
    d.columns = differingColumns(*src, *dst);
    d.digest = src->digest;
  }
  return d;
}

void addDelta(NarrowResult* out, KeyedDelta d, uint32_t max_listed) {
  out->counts[kindIndex(d.kind)]++;
  if (out->deltas.size() < max_listed) out->deltas.push_back(std::move(d));
}

struct PageInfo {
  uint64_t rows = 0;
  std::optional<std::vector<std::string>> last;  // key values (no tenant column) of the last row
  Lsn lsn;                                       // live source reads: WAL position of the snapshot
};

struct ReadSpec {
  size_t chunk = 0;
  const std::optional<std::vector<std::string>>* after = nullptr;  // exclusive
  const std::optional<std::vector<std::string>>* upto = nullptr;   // inclusive
  uint64_t limit = 0;                                              // 0: no limit
  bool source_snapshot = false;  // REPEATABLE READ + pg_current_wal_lsn() + row versions
};

// Reads rows of one key range of a chunk, digesting each into `on_row`.
Result<PageInfo> readRange(PgConnection& conn, const NarrowContext& ctx, const ReadSpec& spec,
                           RowHasher& hasher,
                           const std::function<void(std::string&&, RowImage&&)>& on_row) {
  const PreparedTable& t = *ctx.table;
  std::string sql = "COPY (SELECT " + canonicalSelectList(t);
  if (spec.source_snapshot) sql += ", xmin::pg_catalog.text || '/' || ctid::pg_catalog.text";
  sql += " FROM " + t.quoted + " AS sm_t WHERE " + t.columns[t.tenant_position].quoted + " = " +
         sqlLiteral(ctx.options->tenant);
  std::string chunk = chunkPredicate(t, *ctx.plan, spec.chunk);
  if (!chunk.empty()) sql += " AND " + chunk;
  if (spec.after && *spec.after) sql += " AND " + keyComparison(t, ">", **spec.after);
  if (spec.upto && *spec.upto) sql += " AND " + keyComparison(t, "<=", **spec.upto);
  const bool keyed = !t.key_positions.empty();
  if (keyed && spec.limit > 0) {
    sql += " ORDER BY " + keyOrder(t, "sm_t") + " LIMIT " + std::to_string(spec.limit);
  }
  sql += ") TO STDOUT";

  PageInfo info;
  if (spec.source_snapshot) {
    // The table lock comes before the snapshot: TRUNCATE is not MVCC-safe, and a snapshot taken
    // before a TRUNCATE that commits before we lock the table would see the table empty, a state
    // the source never had. Locked first, a TRUNCATE has either committed before our snapshot or
    // waits for us. Then the first query takes the snapshot; the WAL insert position read
    // inside it is at or past the commit of every transaction the snapshot sees.
    SM_RETURN_IF_ERROR(conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; LOCK TABLE " +
                                 ctx.table->quoted + " IN ACCESS SHARE MODE"));
    auto lsn = conn.queryValue("SELECT pg_catalog.pg_current_wal_lsn()::pg_catalog.text");
    if (!lsn || !*lsn || !Lsn::parse(**lsn)) {
      conn.exec("ROLLBACK").ignore();  // the read failed; its error is what we report
      return lsn ? Status::internal("pg_current_wal_lsn() returned no position") : lsn.status();
    }
    info.lsn = *Lsn::parse(**lsn);
  }
  bool bad = false;
  std::vector<std::string_view> fields;
  Status st = copyOut(conn, sql, [&](std::string_view line) {
    std::string key;
    RowImage img;
    if (!parseRow(line, t, spec.source_snapshot, hasher, &key, &img)) {
      bad = true;
      return;
    }
    ++info.rows;
    if (keyed && spec.limit > 0) {
      splitCopyRow(line, &fields);
      std::vector<std::string> last;
      for (size_t p : t.key_positions) last.push_back(unescapeCopyField(fields[p]).value_or(""));
      info.last = std::move(last);
    }
    on_row(std::move(key), std::move(img));
  });
  if (spec.source_snapshot) {
    Status end = conn.exec(st.isOk() ? "COMMIT" : "ROLLBACK");
    if (st.isOk()) st = end;
  }
  SM_RETURN_IF_ERROR(st);
  if (bad) return Status::internal(conn.label() + ": unexpected row shape reading " + t.spec.key());
  if (spec.limit == 0 || info.rows < spec.limit) info.last.reset();  // the range is exhausted
  return info;
}

Status waitApplied(const NarrowContext& ctx, Lsn target) {
  auto deadline = std::chrono::steady_clock::now() + ctx.options->live_wait;
  auto pause = std::chrono::milliseconds(10);
  for (;;) {
    SM_ASSIGN_OR_RETURN(Lsn applied,
                        appliedPosition(*ctx.source, *ctx.dest, ctx.options->origin_name));
    if (applied >= target) return Status::ok();
    if (ctx.cancel && ctx.cancel->load()) return Status::cancelled("verify interrupted");
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::retryable(
          "the destination's applier did not reach source position " + target.toString() +
          " within " + std::to_string(ctx.options->live_wait.count() / 1000) +
          " s (applied: " + applied.toString() +
          "); is `stampmover migrate` running for this tenant? Rerun when it is");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(200));
  }
}

// Non-live: one read of each side; the destination is streamed against the source page.
Status narrowPageOnce(const NarrowContext& ctx, size_t chunk,
                      std::optional<std::vector<std::string>>* after, RowHasher& hasher,
                      NarrowResult* out, bool* more) {
  const uint32_t max_listed = ctx.options->max_listed;
  RowMap src;
  ReadSpec s;
  s.chunk = chunk;
  s.after = after;
  s.limit = ctx.table->key_positions.empty() ? 0 : ctx.options->chunk_rows;
  SM_ASSIGN_OR_RETURN(PageInfo si,
                      readRange(*ctx.source, ctx, s, hasher, [&](std::string&& k, RowImage&& r) {
                        src.emplace(std::move(k), std::move(r));
                      }));
  std::optional<std::vector<std::string>> upto = si.last;
  ReadSpec d;
  d.chunk = chunk;
  d.after = after;
  d.upto = &upto;
  // Counted as found, kept only up to the listing limit: a destination with a million extra
  // rows in one range must not hold them in memory.
  std::vector<KeyedDelta> found;
  auto note = [&](KeyedDelta delta) {
    out->counts[kindIndex(delta.kind)]++;
    if (found.size() < max_listed) found.push_back(std::move(delta));
  };
  SM_RETURN_IF_ERROR(readRange(*ctx.dest, ctx, d, hasher, [&](std::string&& k, RowImage&& r) {
                       auto it = src.find(k);
                       if (it == src.end()) {
                         note(deltaFor(k, nullptr, &r));
                       } else {
                         if (it->second.digest != r.digest) note(deltaFor(k, &it->second, &r));
                         src.erase(it);
                       }
                     }).status());
  for (const auto& [k, r] : src) note(deltaFor(k, &r, nullptr));
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
  for (auto& f : found) {
    if (out->deltas.size() < max_listed) out->deltas.push_back(std::move(f));
  }
  out->pages++;
  *more = upto.has_value();
  *after = std::move(upto);
  return Status::ok();
}

// Live: re-read until every difference is settled or proven, at most live_rounds rounds. Within
// a round, destination/source read pairs repeat while some differing source row keeps
// changing, for up to kRoundBudget: the destination lags by its batch interval, so within that
// time it shows a version of each hot row that one of the (much more frequent) source reads saw.
constexpr auto kRoundBudget = std::chrono::seconds(3);
constexpr uint32_t kMaxReadsPerRound = 1000;

Status narrowPageLive(const NarrowContext& ctx, size_t chunk,
                      std::optional<std::vector<std::string>>* after, RowHasher& hasher,
                      NarrowResult* out, bool* more) {
  const uint32_t max_listed = ctx.options->max_listed;
  const uint64_t dest_cap = std::max<uint64_t>(ctx.options->chunk_rows, 1) * 8;
  auto into = [](RowMap* m) {
    return [m](std::string&& k, RowImage&& r) { m->emplace(std::move(k), std::move(r)); };
  };
  RowMap first;
  ReadSpec s;
  s.chunk = chunk;
  s.after = after;
  s.limit = ctx.table->key_positions.empty() ? 0 : ctx.options->chunk_rows;
  s.source_snapshot = true;
  SM_ASSIGN_OR_RETURN(PageInfo fi, readRange(*ctx.source, ctx, s, hasher, into(&first)));
  const std::optional<std::vector<std::string>> upto = fi.last;
  ReadSpec again = s;  // the same key range as the first read, however many rows it holds now
  again.upto = &upto;
  again.limit = 0;
  ReadSpec d;
  d.chunk = chunk;
  d.after = after;
  d.upto = &upto;

  Lsn position = fi.lsn;
  LiveWindow window;
  window.addSource(std::move(first));
  std::unordered_set<std::string> settled, prev_stable;
  const uint32_t rounds = std::max<uint32_t>(ctx.options->live_rounds, 2);
  for (uint32_t round = 0;; ++round) {
    SM_RETURN_IF_ERROR(waitApplied(ctx, position));
    RowMap dest;
    std::vector<std::string> unresolved;
    uint64_t overflow = 0;
    std::vector<KeyedDelta> overflow_deltas;
    const auto round_end = std::chrono::steady_clock::now() + kRoundBudget;
    for (uint32_t read = 0;
         read < kMaxReadsPerRound && std::chrono::steady_clock::now() < round_end; ++read) {
      if (ctx.cancel && ctx.cancel->load()) return Status::cancelled("verify interrupted");
      dest.clear();
      overflow = 0;
      overflow_deltas.clear();
      SM_RETURN_IF_ERROR(readRange(*ctx.dest, ctx, d, hasher, [&](std::string&& k, RowImage&& r) {
                           if (dest.size() < dest_cap || window.latest().count(k)) {
                             dest.emplace(std::move(k), std::move(r));
                           } else {
                             // Eight times the source's rows in one key range is not lag: count
                             // the overflow as extra without keeping it in memory.
                             ++overflow;
                             if (overflow_deltas.size() < max_listed)
                               overflow_deltas.push_back(deltaFor(k, nullptr, &r));
                           }
                         }).status());
      RowMap src;
      SM_ASSIGN_OR_RETURN(PageInfo si, readRange(*ctx.source, ctx, again, hasher, into(&src)));
      window.addSource(std::move(src));
      position = si.lsn;
      out->rounds++;
      std::unordered_set<std::string> keys;
      window.keys(&keys);
      for (const auto& [k, r] : dest) keys.insert(k);
      unresolved.clear();
      bool all_stable = true;
      for (const auto& k : keys) {
        if (settled.count(k)) continue;
        if (window.matches(k, find(dest, k))) {
          settled.insert(k);
        } else {
          unresolved.push_back(k);
          all_stable = all_stable && window.sourceUnchanged(k);
        }
      }
      // More reads help only while some source row is changing (the destination may catch a
      // state the source shows us); a difference on an unchanged row needs the next round.
      if (unresolved.empty() || all_stable) break;
    }
    if (unresolved.empty() && overflow == 0) break;  // the page is clean
    std::vector<std::string> stable, moving, confirmed;
    for (const auto& k : unresolved) (window.sourceUnchanged(k) ? stable : moving).push_back(k);
    for (const auto& k : stable) {
      if (prev_stable.count(k)) confirmed.push_back(k);
    }
    const bool done = moving.empty() && confirmed.size() == stable.size();
    if (done || round + 1 >= rounds) {
      std::sort(confirmed.begin(), confirmed.end());
      const RowMap& latest = window.latest();
      for (const auto& k : confirmed)
        addDelta(out, deltaFor(k, find(latest, k), find(dest, k)), max_listed);
      for (auto& od : overflow_deltas) addDelta(out, std::move(od), max_listed);
      out->counts[kindIndex(DiffKind::kExtra)] +=
          overflow - std::min<uint64_t>(overflow, overflow_deltas.size());
      std::vector<std::string> unsettled;
      if (!done) {
        std::unordered_set<std::string> conf(confirmed.begin(), confirmed.end());
        for (const auto& k : unresolved) {
          if (!conf.count(k)) unsettled.push_back(k);
        }
      }
      std::sort(unsettled.begin(), unsettled.end());
      for (const auto& k : unsettled) {
        KeyedDelta u = deltaFor(k, find(latest, k), find(dest, k));
        u.kind = DiffKind::kUnsettled;
        addDelta(out, std::move(u), max_listed);
      }
      break;
    }
    prev_stable = std::unordered_set<std::string>(stable.begin(), stable.end());
    RowMap latest = window.latest();
    window.clear();
    window.addSource(std::move(latest));  // the next round starts where this one ended
  }
  out->pages++;
  *more = upto.has_value();
  *after = upto;
  return Status::ok();
}

}  // namespace

bool parseRow(std::string_view line, const PreparedTable& t, bool with_version, RowHasher& hasher,
              std::string* key, RowImage* image) {
  thread_local std::vector<std::string_view> fields;
  splitCopyRow(line, &fields);
  const size_t ncols = t.columns.size();
  if (fields.size() != ncols + (with_version ? 1 : 0)) return false;
  std::string_view canonical = line;
  if (!canonical.empty() && canonical.back() == '\n') canonical.remove_suffix(1);
  if (with_version) {
    image->version = std::string(fields.back());
    canonical = canonical.substr(0, canonical.size() - fields.back().size() - 1);
  }
  if (!hasher.digest(canonical, &image->digest)) return false;
  image->column_hashes.resize(ncols);
  for (size_t i = 0; i < ncols; ++i)
    image->column_hashes[i] = std::hash<std::string_view>()(fields[i]);
  key->clear();
  for (size_t i = 0; i < t.pk_positions.size(); ++i) {
    if (i) *key += '\t';
    *key += fields[t.pk_positions[i]];
  }
  return true;
}

Status copyOut(PgConnection& conn, const std::string& sql,
               const std::function<void(std::string_view)>& on_row) {
  common::PgResult res{PQexec(conn.raw(), sql.c_str())};
  if (!res || PQresultStatus(res.get()) != PGRES_COPY_OUT) {
    return conn.errorFrom(res.get(), "COPY TO STDOUT");
  }
  for (;;) {
    char* buf = nullptr;
    int n = PQgetCopyData(conn.raw(), &buf, 0);
    if (n < 0) break;  // -1: done, -2: error (reported by the final result)
    std::string_view row(buf, static_cast<size_t>(n));
    on_row(row);
    PQfreemem(buf);
  }
  common::PgResult end{PQgetResult(conn.raw())};
  if (!end || PQresultStatus(end.get()) != PGRES_COMMAND_OK) {
    Status st = conn.errorFrom(end.get(), "COPY TO STDOUT");
    while (common::PgResult more{PQgetResult(conn.raw())}) {
    }
    return st;
  }
  while (common::PgResult more{PQgetResult(conn.raw())}) {
  }
  return Status::ok();
}

std::vector<KeyedDelta> compareRows(const RowMap& source, const RowMap& dest) {
  std::vector<KeyedDelta> out;
  for (const auto& [k, r] : source) {
    const RowImage* d = find(dest, k);
    if (!sameRow(&r, d)) out.push_back(deltaFor(k, &r, d));
  }
  for (const auto& [k, r] : dest) {
    if (source.find(k) == source.end()) out.push_back(deltaFor(k, nullptr, &r));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
  return out;
}

// Distinct contents remembered per key in a live window.
constexpr size_t kMaxVersionsPerKey = 64;

void LiveWindow::addSource(RowMap read) {
  for (const auto& [k, r] : read) {
    auto [it, fresh] = seen_.try_emplace(k);
    Seen& s = it->second;
    if (fresh) {
      s.first_version = r.version;
      s.first_read = reads_;
      s.digests.push_back(r.digest);
    } else if (r.version != s.first_version) {
      s.changed = true;
    }
    if (std::find(s.digests.begin(), s.digests.end(), r.digest) == s.digests.end()) {
      // A hot row's oldest contents go first: the destination lags by well under 64 versions.
      if (s.digests.size() >= kMaxVersionsPerKey) s.digests.erase(s.digests.begin());
      s.digests.push_back(r.digest);
      s.changed = true;
    }
    s.present++;
  }
  ++reads_;
  latest_ = std::move(read);
}

void LiveWindow::clear() {
  seen_.clear();
  reads_ = 0;
  latest_.clear();
}

bool LiveWindow::matches(const std::string& key, const RowImage* dest) const {
  auto it = seen_.find(key);
  if (dest == nullptr) return reads_ > 0 && (it == seen_.end() || it->second.present < reads_);
  if (it == seen_.end()) return false;
  const auto& d = it->second.digests;
  return std::find(d.begin(), d.end(), dest->digest) != d.end();
}

bool LiveWindow::sourceUnchanged(const std::string& key) const {
  auto it = seen_.find(key);
  if (it == seen_.end()) return true;  // absent from every read
  const Seen& s = it->second;
  return !s.changed && s.present == reads_ && s.first_read == 0;
}

void LiveWindow::keys(std::unordered_set<std::string>* out) const {
  for (const auto& [k, s] : seen_) out->insert(k);
}

std::vector<std::optional<std::string>> keyValues(std::string_view key) {
  std::vector<std::string_view> fields;
  splitCopyRow(key, &fields);
  std::vector<std::optional<std::string>> out;
  for (auto f : fields) out.push_back(unescapeCopyField(f));
  return out;
}

Result<NarrowResult> narrowChunk(const NarrowContext& ctx, size_t chunk) {
  NarrowResult out;
  SM_ASSIGN_OR_RETURN(RowHasher hasher, RowHasher::create(""));
  std::optional<std::vector<std::string>> after;
  bool more = true;
  while (more) {
    if (ctx.cancel && ctx.cancel->load()) return Status::cancelled("verify interrupted");
    if (ctx.options->live) {
      SM_RETURN_IF_ERROR(narrowPageLive(ctx, chunk, &after, hasher, &out, &more));
    } else {
      SM_RETURN_IF_ERROR(narrowPageOnce(ctx, chunk, &after, hasher, &out, &more));
    }
  }
  return out;
}

Result<Lsn> appliedPosition(PgConnection& source, PgConnection& dest, const std::string& origin) {
  // A Kafka-sourced migration: its origin counts records, not source positions; the watermark
  // it keeps is the source position everything before which is applied.
  // (stampmover.kafka_applied, written by the migrate worker: mover/kafka_offsets.h).
  SM_ASSIGN_OR_RETURN(auto has_kafka, dest.queryValue(
                                          "SELECT to_regclass('stampmover.kafka_applied') IS NOT NULL"));
  if (has_kafka.value_or("f") == "t") {
    SM_ASSIGN_OR_RETURN(auto w, dest.queryValue("SELECT source_lsn::pg_catalog.text FROM "
                                                "stampmover.kafka_applied WHERE origin = $1",
                                                {origin}));
    if (w) {
      auto l = Lsn::parse(*w);
      if (!l) return Status::internal("unparseable stampmover.kafka_applied.source_lsn '" + *w + "'");
      return *l;
    }
  }
  Lsn best;
  bool found = false;
  auto o = dest.queryValue(
      "SELECT pg_catalog.pg_replication_origin_progress($1, true)::pg_catalog.text", {origin});
  if (o) {
    found = true;
    if (*o) {
      auto l = Lsn::parse(**o);
      if (l) best = std::max(best, *l);
    }
  } else if (o.status().errorClass() != common::ErrorClass::kRefused) {
    return o.status();  // connection trouble, not a missing origin
  }
  SM_ASSIGN_OR_RETURN(auto s,
                      source.queryValue("SELECT confirmed_flush_lsn::pg_catalog.text FROM "
                                        "pg_catalog.pg_replication_slots WHERE slot_name = $1",
                                        {origin}));
  if (s) {
    found = true;
    auto l = Lsn::parse(*s);
    if (l) best = std::max(best, *l);
  }
  if (!found) {
    return Status::refused("live verify: neither replication origin \"" + origin + "\" on " +
                           dest.label() + " nor slot \"" + origin + "\" on " + source.label() +
                           " exists; start `stampmover migrate` for this tenant, or verify "
                           "without --live once the tenant is quiet");
  }
  return best;
}

Result<OtherTenantRows> findOtherTenantRows(PgConnection& source, PgConnection& dest,
                                            const PreparedTable& t, const std::string& tenant,
                                            uint32_t max_listed) {
  OtherTenantRows out;
  const PreparedColumn& tc = t.columns[t.tenant_position];
  SM_ASSIGN_OR_RETURN(
      auto indexed,
      dest.queryValue(
          "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a "
          "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE i.indrelid = $1::regclass "
          "AND a.attname = $2 AND i.indpred IS NULL AND i.indisvalid)::pg_catalog.text",
          {t.quoted, tc.name}));
  std::string list_sql;
  if (indexed.value_or("false") == "true") {
    // Loose index scan: one index probe per distinct tenant on the destination.
    list_sql = "WITH RECURSIVE s(v) AS ((SELECT " + tc.quoted + " FROM " + t.quoted + " WHERE " +
               tc.quoted + " IS NOT NULL ORDER BY 1 LIMIT 1) UNION ALL SELECT (SELECT " +
               tc.quoted + " FROM " + t.quoted + " WHERE " + tc.quoted +
               " > s.v ORDER BY 1 LIMIT 1) "
               "FROM s WHERE s.v IS NOT NULL) SELECT v::pg_catalog.text FROM s WHERE v IS NOT NULL "
               "AND v <> $1::" +
               tc.cast_type;
  } else {
    list_sql = "SELECT DISTINCT " + tc.quoted + "::pg_catalog.text FROM " + t.quoted + " WHERE " +
               tc.quoted + " <> $1::" + tc.cast_type;
  }
  SM_ASSIGN_OR_RETURN(common::PgResult others, dest.query(list_sql, {tenant}));
  if (common::rowCount(others) == 0) return out;
  std::string arr = "{";
  for (int r = 0; r < common::rowCount(others); ++r) {
    std::string v = common::cell(others, r, 0);
    arr += (r ? ",\"" : "\"");
    for (char c : v) {
      if (c == '"' || c == '\\') arr += '\\';
      arr += c;
    }
    arr += "\"";
  }
  arr += "}";
  SM_ASSIGN_OR_RETURN(common::PgResult shared,
                      source.query("SELECT u.v FROM pg_catalog.unnest($1::pg_catalog.text[]) AS "
                                   "u(v) WHERE EXISTS (SELECT 1 FROM " +
                                       t.quoted + " WHERE " + tc.quoted +
                                       " = u.v::" + tc.cast_type + ") ORDER BY 1",
                                   {arr}));
  std::string pk_list, pk_order;
  for (size_t i = 0; i < t.pk_positions.size(); ++i) {
    const PreparedColumn& c = t.columns[t.pk_positions[i]];
    pk_list += (i ? ", " : "") + canonicalExpr(c.quoted, c.normalization) + "::pg_catalog.text";
    pk_order += (i ? ", " : "") + std::string("sm_t.") + c.quoted;
  }
  for (int r = 0; r < common::rowCount(shared); ++r) {
    std::string other = common::cell(shared, r, 0);
    SM_ASSIGN_OR_RETURN(auto n, dest.queryValue("SELECT count(*) FROM " + t.quoted + " WHERE " +
                                                    tc.quoted + " = $1::" + tc.cast_type,
                                                {other}));
    out.count += n ? std::strtoull(n->c_str(), nullptr, 10) : 0;
    if (out.rows.size() >= max_listed) continue;
    SM_ASSIGN_OR_RETURN(
        common::PgResult rows,
        dest.query("SELECT " + pk_list + " FROM " + t.quoted + " AS sm_t WHERE " + tc.quoted +
                       " = $1::" + tc.cast_type + " ORDER BY " + pk_order + " LIMIT $2",
                   {other, std::to_string(max_listed - out.rows.size())}));
    for (int i = 0; i < common::rowCount(rows); ++i) {
      std::vector<std::optional<std::string>> key;
      for (int c = 0; c < PQnfields(rows.get()); ++c) {
        key.push_back(common::cellIsNull(rows, i, c)
                          ? std::nullopt
                          : std::optional<std::string>(common::cell(rows, i, c)));
      }
      out.rows.emplace_back(other, std::move(key));
    }
  }
  return out;
}

}  // namespace stampmover::verify
