// Table description, chunk planning by keyset pagination, and the SQL that reads chunks: see
// table_plan.h.
#include "verify/table_plan.h"

#include <algorithm>
#include <cstdlib>

namespace stampmover::verify {

using common::PgConnection;
using common::PgParam;
using common::PgResult;
using common::Result;
using common::Status;

namespace {

// Minimum heap blocks per block-range piece (1 MiB).
constexpr uint64_t kMinBlocksPerPiece = 128;
// At most this many pieces per side, so that a huge table's resumable partial sums (one per
// chunk per piece) stay a few MB in the state store.
constexpr uint64_t kMaxPieces = 64;
// A tenant holding less than this fraction of its table's rows is read in key ranges (bitmap
// scans), not block ranges: block ranges would read the other tenants' pages as well.
constexpr double kKeyPiecesBelow = 0.25;
// A first-column value holding more rows than this many chunks' worth cannot be a chunk
// boundary: the table is planned on whole keys instead.
constexpr uint64_t kMaxRunChunks = 8;

std::string arrayElement(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

const PreparedColumn& keyColumn(const PreparedTable& t, size_t i) {
  return t.columns[t.key_positions[i]];
}

std::string typedLiteral(const PreparedColumn& c, const std::string& v) {
  return sqlLiteral(v) + "::" + c.cast_type;
}

std::string keyTuple(const PreparedTable& t, size_t n) {
  std::string out = "(";
  for (size_t i = 0; i < n; ++i) out += (i ? ", " : "") + keyColumn(t, i).quoted;
  return out + ")";
}

std::string valueTuple(const PreparedTable& t, const std::vector<std::string>& values) {
  std::string out = "(";
  for (size_t i = 0; i < values.size(); ++i) {
    out += (i ? ", " : "") + typedLiteral(keyColumn(t, i), values[i]);
  }
  return out + ")";
}

// `bound` compared with the key (prefix plans compare the first column only).
std::string boundComparison(const PreparedTable& t, const ChunkPlan& plan, const char* op,
                            const std::vector<std::string>& bound) {
  if (plan.prefix)
    return keyColumn(t, 0).quoted + " " + op + " " + typedLiteral(keyColumn(t, 0), bound[0]);
  return keyTuple(t, t.key_positions.size()) + " " + op + " " + valueTuple(t, bound);
}

struct HeapSize {
  uint64_t blocks = 0;
  double tuples = -1;  // planner estimate; -1 when never analyzed
};

Result<HeapSize> heapSize(PgConnection& conn, const std::string& quoted) {
  SM_ASSIGN_OR_RETURN(common::PgResult res,
                      conn.query("SELECT pg_catalog.pg_relation_size(c.oid) / "
                                 "pg_catalog.current_setting('block_size')::int8, c.reltuples "
                                 "FROM pg_catalog.pg_class c WHERE c.oid = $1::regclass",
                                 {quoted}));
  HeapSize h;
  if (common::rowCount(res) == 1) {
    h.blocks = std::strtoull(common::cell(res, 0, 0).c_str(), nullptr, 10);
    h.tuples = std::strtod(common::cell(res, 0, 1).c_str(), nullptr);
  }
  return h;
}

}  // namespace

std::string sqlLiteral(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

Result<PreparedTable> describeTable(PgConnection& conn, const VerifyTable& spec) {
  PreparedTable t;
  t.spec = spec;
  t.quoted = common::qualifiedName(spec.schema, spec.name);
  auto res = conn.query(
      "SELECT a.attname, pg_catalog.format_type(a.atttypid, NULL), "
      "  pg_catalog.format_type(a.atttypid, a.atttypmod), "
      "  (WITH RECURSIVE b(oid, base) AS ("
      "     SELECT ty.oid, ty.typbasetype FROM pg_catalog.pg_type ty WHERE ty.oid = a.atttypid "
      "     UNION ALL SELECT ty.oid, ty.typbasetype FROM pg_catalog.pg_type ty JOIN b ON ty.oid = "
      "b.base) "
      "   SELECT b.oid FROM b WHERE b.base = 0 LIMIT 1)::int8 "
      "FROM pg_catalog.pg_attribute a "
      "WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
      {t.quoted});
  if (!res) {
    if (res.status().errorClass() == common::ErrorClass::kRefused) {
      return Status::refused(conn.label() + ": table " + spec.key() + " cannot be read (" +
                             res.status().message() + "); create it or exclude it, then rerun");
    }
    return res.status();
  }
  struct Seen {
    std::string cast_type, full_type;
    uint32_t base = 0;
  };
  std::vector<std::pair<std::string, Seen>> seen;
  for (int r = 0; r < common::rowCount(*res); ++r) {
    Seen s;
    s.cast_type = common::cell(*res, r, 1);
    s.full_type = common::cell(*res, r, 2);
    s.base = static_cast<uint32_t>(std::strtoul(common::cell(*res, r, 3).c_str(), nullptr, 10));
    seen.emplace_back(common::cell(*res, r, 0), s);
  }
  for (const auto& col : spec.columns) {
    auto it =
        std::find_if(seen.begin(), seen.end(), [&](const auto& p) { return p.first == col.name; });
    if (it == seen.end()) {
      return Status::refused(conn.label() + ": table " + spec.key() + " has no column \"" +
                             col.name + "\"; add it (same type as on the other side) and rerun");
    }
    PreparedColumn pc;
    pc.name = col.name;
    pc.quoted = common::quoteIdent(col.name);
    pc.cast_type = it->second.cast_type;
    pc.normalization = normalizationFor(it->second.base);
    t.columns.push_back(pc);
    // Keep the server's full type for the shape check; `type` from the caller is informational.
    t.spec.columns[t.columns.size() - 1].type = it->second.full_type;
  }
  SM_RETURN_IF_ERROR(locateKeyColumns(&t));
  return t;
}

Status locateKeyColumns(PreparedTable* t) {
  const VerifyTable& spec = t->spec;
  auto pos = [&](const std::string& name) -> std::optional<size_t> {
    for (size_t i = 0; i < t->columns.size(); ++i) {
      if (t->columns[i].name == name) return i;
    }
    return std::nullopt;
  };
  auto tc = pos(spec.tenant_column);
  if (!tc) {
    return Status::refused("table " + spec.key() + ": tenant column \"" + spec.tenant_column +
                           "\" is not among its compared columns");
  }
  t->tenant_position = *tc;
  if (spec.primary_key.empty()) {
    return Status::refused("table " + spec.key() +
                           " has no primary key: rows cannot be matched by key; add one and rerun");
  }
  t->pk_positions.clear();
  t->key_positions.clear();
  for (const auto& k : spec.primary_key) {
    auto p = pos(k);
    if (!p) {
      return Status::refused("table " + spec.key() + ": primary key column \"" + k +
                             "\" is not among its compared columns");
    }
    t->pk_positions.push_back(*p);
    if (k != spec.tenant_column) t->key_positions.push_back(*p);
  }
  return Status::ok();
}

Status checkSameShape(const PreparedTable& s, const PreparedTable& d, const std::string& sl,
                      const std::string& dl) {
  for (size_t i = 0; i < s.columns.size(); ++i) {
    if (s.spec.columns[i].type != d.spec.columns[i].type) {
      return Status::refused("table " + s.spec.key() + " column \"" + s.columns[i].name + "\" is " +
                             s.spec.columns[i].type + " on " + sl + " but " +
                             d.spec.columns[i].type + " on " + dl +
                             ": make the types equal, then rerun");
    }
  }
  return Status::ok();
}

Result<ChunkPlan> planChunks(PgConnection& src, PgConnection& dst, const PreparedTable& t,
                             const std::string& tenant, uint64_t chunk_rows,
                             uint64_t rows_per_piece) {
  ChunkPlan plan;
  chunk_rows = std::max<uint64_t>(chunk_rows, 1);
  uint64_t total_rows = 0;
  const size_t nkeys = t.key_positions.size();
  HeapSize heap[2];
  SM_ASSIGN_OR_RETURN(heap[0], heapSize(src, t.quoted));
  SM_ASSIGN_OR_RETURN(heap[1], heapSize(dst, t.quoted));
  // Any keys make valid bounds (chunks cover the whole key space either way), so the keys are
  // walked on the server with the smaller heap — usually the destination, which holds only the
  // tenants moved to it, while the source keeps serving all of its tenants. (On the idle demo
  // pair it makes no measurable difference: 5.35 s either way, mean of 5 runs each.)
  PgConnection& walker = heap[1].blocks <= heap[0].blocks ? dst : src;
  if (nkeys > 0) {
    // Keyset pagination over the key index, sampled on the server: each statement walks at most
    // `page` keys after the last one seen (index-only scan) and returns only every
    // chunk_rows-th key and the page's last key, so planning 1M keys costs the server ~0.5 s
    // and moves ~100 rows. Pages are whole multiples of chunk_rows, so sample positions are
    // global positions.
    const uint64_t page = chunk_rows * std::max<uint64_t>(1, 1'000'000 / chunk_rows);
    std::string inner_cols, outer_cols, window;
    for (size_t i = 0; i < nkeys; ++i) {
      inner_cols += (i ? ", " : "") + keyColumn(t, i).quoted;
      outer_cols +=
          (i ? ", " : "") + std::string("s.") + keyColumn(t, i).quoted + "::pg_catalog.text";
    }
    const std::string select = "SELECT " + outer_cols + ", s.sm_rn FROM (SELECT " + inner_cols +
                               ", pg_catalog.row_number() OVER (ORDER BY " + keyOrder(t, "sm_t") +
                               ") AS sm_rn FROM " + t.quoted + " AS sm_t WHERE " +
                               t.columns[t.tenant_position].quoted + " = $1";
    const std::string tail = " ORDER BY " + keyOrder(t, "sm_t") + " LIMIT " + std::to_string(page) +
                             ") AS s WHERE (s.sm_rn - 1) % " + std::to_string(chunk_rows) +
                             " = 0 OR s.sm_rn = " + std::to_string(page) + " ORDER BY s.sm_rn";
    plan.prefix = true;  // a single key column is its own prefix
    for (;;) {           // once, or twice when a prefix plan meets a run it cannot split
      plan.bounds.clear();
      total_rows = 0;
      bool restart = false;
      std::optional<std::vector<std::string>> last;
      uint64_t run = 0;  // consecutive samples with the same first-column value
      while (!restart) {
        std::string sql = select;
        std::vector<PgParam> params{tenant};
        if (last) {
          sql += " AND " + keyTuple(t, nkeys) + " > (";
          for (size_t i = 0; i < nkeys; ++i) {
            params.emplace_back((*last)[i]);
            sql += (i ? ", " : "") + std::string("$") + std::to_string(params.size()) +
                   "::" + keyColumn(t, i).cast_type;
          }
          sql += ")";
        }
        SM_ASSIGN_OR_RETURN(PgResult res, walker.query(sql + tail, params));
        const int n = common::rowCount(res);
        bool full = false;
        uint64_t seen = 0;
        for (int r = 0; r < n; ++r) {
          const uint64_t pos =
              std::strtoull(common::cell(res, r, static_cast<int>(nkeys)).c_str(), nullptr, 10);
          seen = std::max(seen, pos);
          if (pos == page) {
            full = true;
            std::vector<std::string> l;
            for (size_t i = 0; i < nkeys; ++i)
              l.push_back(common::cell(res, r, static_cast<int>(i)));
            last = std::move(l);
          }
          if ((pos - 1) % chunk_rows != 0 || (total_rows == 0 && pos == 1))
            continue;  // not a bound
          std::vector<std::string> b;
          const size_t width = plan.prefix ? 1 : nkeys;
          for (size_t i = 0; i < width; ++i) b.push_back(common::cell(res, r, static_cast<int>(i)));
          if (plan.prefix && !plan.bounds.empty() && plan.bounds.back()[0] == b[0]) {
            // The same first-column value again: the chunk grows instead of splitting.
            if (++run >= kMaxRunChunks) {
              plan.prefix = false;  // one value too big to stay in one chunk: split whole keys
              restart = true;
              break;
            }
            continue;
          }
          run = 0;
          plan.bounds.push_back(std::move(b));
        }
        total_rows += full ? page : seen;
        if (restart || !full) break;
      }
      if (!restart) break;
    }
  }
  for (int side = 0; side < 2; ++side) {
    const HeapSize& h = heap[side];
    plan.blocks[side] = h.blocks;
    rows_per_piece = std::max<uint64_t>(rows_per_piece, 1);
    const uint64_t by_rows = (total_rows + rows_per_piece - 1) / rows_per_piece;
    const uint64_t by_blocks = std::max<uint64_t>(1, h.blocks / kMinBlocksPerPiece);
    plan.key_pieces[side] =
        h.tuples > 0 && static_cast<double>(total_rows) < kKeyPiecesBelow * h.tuples;
    const uint64_t most =
        std::min<uint64_t>(plan.key_pieces[side] ? plan.chunks() : by_blocks, kMaxPieces);
    plan.scan_tasks[side] =
        static_cast<uint32_t>(std::clamp<uint64_t>(by_rows, 1, std::max<uint64_t>(most, 1)));
  }
  return plan;
}

std::string canonicalSelectList(const PreparedTable& t, const std::string& alias) {
  const std::string prefix = alias.empty() ? "" : alias + ".";
  std::string out;
  for (size_t i = 0; i < t.columns.size(); ++i) {
    out +=
        (i ? ", " : "") + canonicalExpr(prefix + t.columns[i].quoted, t.columns[i].normalization);
  }
  return out;
}

std::string bucketExpr(const PreparedTable& t, const ChunkPlan& plan) {
  if (t.key_positions.empty() || plan.bounds.empty()) return "0";
  if (plan.prefix) {
    std::string arr = "{";
    for (size_t i = 0; i < plan.bounds.size(); ++i)
      arr += (i ? "," : "") + arrayElement(plan.bounds[i][0]);
    arr += "}";
    return "pg_catalog.width_bucket(" + keyColumn(t, 0).quoted + ", " + sqlLiteral(arr) +
           "::" + keyColumn(t, 0).cast_type + "[])";
  }
  std::string out =
      "pg_catalog.width_bucket(ROW" + keyTuple(t, t.key_positions.size()) + ", ARRAY[";
  for (size_t i = 0; i < plan.bounds.size(); ++i)
    out += (i ? ", ROW" : "ROW") + valueTuple(t, plan.bounds[i]);
  return out + "])";
}

std::string chunkRangePredicate(const PreparedTable& t, const ChunkPlan& plan, size_t first,
                                size_t end) {
  std::string out;
  if (first > 0 && first - 1 < plan.bounds.size()) {
    out = boundComparison(t, plan, ">=", plan.bounds[first - 1]);
  }
  if (end >= 1 && end - 1 < plan.bounds.size()) {
    out += (out.empty() ? "" : " AND ") + boundComparison(t, plan, "<", plan.bounds[end - 1]);
  }
  return out;
}

std::string chunkPredicate(const PreparedTable& t, const ChunkPlan& plan, size_t chunk) {
  return chunkRangePredicate(t, plan, chunk, chunk + 1);
}

std::string keyComparison(const PreparedTable& t, const char* op,
                          const std::vector<std::string>& values) {
  return keyTuple(t, values.size()) + " " + op + " " + valueTuple(t, values);
}

std::string keyOrder(const PreparedTable& t, const std::string& alias) {
  std::string out;
  for (size_t i = 0; i < t.key_positions.size(); ++i) {
    out += (i ? ", " : "") + (alias.empty() ? "" : alias + ".") + keyColumn(t, i).quoted;
  }
  return out;
}

std::pair<uint64_t, uint64_t> pieceBlocks(const ChunkPlan& plan, int side, uint32_t piece) {
  const uint32_t n = std::max<uint32_t>(plan.scan_tasks[side], 1);
  const uint64_t per = plan.blocks[side] / n;
  uint64_t first = per * piece;
  uint64_t end = piece + 1 == n ? 0 : per * (piece + 1);  // the last piece takes what grew since
  return {first, end};
}

std::pair<size_t, size_t> pieceChunks(const ChunkPlan& plan, int side, uint32_t piece) {
  const size_t n = std::max<uint32_t>(plan.scan_tasks[side], 1);
  const size_t chunks = plan.chunks();
  return {chunks * piece / n, chunks * (piece + 1) / n};
}

std::string scanCopySql(const PreparedTable& t, const ChunkPlan& plan, int side, uint32_t piece,
                        const std::string& tenant) {
  std::string sql = "COPY (SELECT " + bucketExpr(t, plan) + ", " + canonicalSelectList(t) +
                    " FROM " + t.quoted + " WHERE " + t.columns[t.tenant_position].quoted + " = " +
                    sqlLiteral(tenant);
  if (plan.scan_tasks[side] > 1 && plan.key_pieces[side]) {
    auto [first, end] = pieceChunks(plan, side, piece);
    std::string range = chunkRangePredicate(t, plan, first, end);
    if (!range.empty()) sql += " AND " + range;
  } else if (plan.scan_tasks[side] > 1) {
    auto [first, end] = pieceBlocks(plan, side, piece);
    if (first > 0) sql += " AND ctid >= '(" + std::to_string(first) + ",0)'::pg_catalog.tid";
    if (end > 0) sql += " AND ctid < '(" + std::to_string(end) + ",0)'::pg_catalog.tid";
  }
  return sql + ") TO STDOUT";
}

}  // namespace stampmover::verify
