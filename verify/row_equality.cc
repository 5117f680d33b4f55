// The one row equality of the project: see row_equality.h.
#include "verify/row_equality.h"

#include <cstdlib>

#include "verify/canonical.h"
#include "verify/narrow.h"

namespace stampmover::verify {

using common::PgConnection;
using common::Result;
using common::Status;

namespace {

// Every type OID below this is a built-in base type (pg_type.h, FirstGenbkiObjectId); domains
// created by initdb (information_schema) and by users are above it.
constexpr uint32_t kFirstPossibleDomainOid = 10000;

}  // namespace

Result<PreparedTable> prepareTable(const VerifyTable& spec,
                                   const std::vector<uint32_t>& base_type_oids) {
  if (base_type_oids.size() != spec.columns.size()) {
    return Status::refused("table " + spec.key() + ": " + std::to_string(spec.columns.size()) +
                           " columns but " + std::to_string(base_type_oids.size()) + " types");
  }
  PreparedTable t;
  t.spec = spec;
  t.quoted = common::qualifiedName(spec.schema, spec.name);
  for (size_t i = 0; i < spec.columns.size(); ++i) {
    PreparedColumn pc;
    pc.name = spec.columns[i].name;
    pc.quoted = common::quoteIdent(pc.name);
    pc.cast_type = spec.columns[i].type;
    pc.normalization = normalizationFor(base_type_oids[i]);
    t.columns.push_back(std::move(pc));
  }
  SM_RETURN_IF_ERROR(locateKeyColumns(&t));
  return t;
}

Result<std::map<uint32_t, uint32_t>> baseTypes(PgConnection& conn,
                                               const std::vector<uint32_t>& type_oids) {
  std::map<uint32_t, uint32_t> out;
  std::string ask = "{";
  for (uint32_t oid : type_oids) {
    if (oid < kFirstPossibleDomainOid) {
      out[oid] = oid;
    } else if (!out.count(oid)) {
      out[oid] = oid;  // until the server says otherwise (a type dropped meanwhile: as is)
      ask += (ask.size() > 1 ? "," : "") + std::to_string(oid);
    }
  }
  if (ask.size() == 1) return out;  // only built-in types: no round trip
  ask += "}";
  SM_ASSIGN_OR_RETURN(
      common::PgResult res,
      conn.query("WITH RECURSIVE b(orig, oid, base) AS ("
                 "  SELECT ty.oid, ty.oid, ty.typbasetype FROM pg_catalog.pg_type ty"
                 "   WHERE ty.oid = ANY ($1::pg_catalog.oid[])"
                 "  UNION ALL SELECT b.orig, ty.oid, ty.typbasetype FROM pg_catalog.pg_type ty"
                 "   JOIN b ON ty.oid = b.base) "
                 "SELECT b.orig::pg_catalog.int8, b.oid::pg_catalog.int8 FROM b WHERE b.base = 0",
                 {ask}));
  for (int r = 0; r < common::rowCount(res); ++r) {
    out[static_cast<uint32_t>(std::strtoul(common::cell(res, r, 0).c_str(), nullptr, 10))] =
        static_cast<uint32_t>(std::strtoul(common::cell(res, r, 1).c_str(), nullptr, 10));
  }
  return out;
}

void appendCopyField(std::string* line, const char* value, size_t len, bool is_null) {
  if (is_null) {
    *line += "\\N";
    return;
  }
  for (size_t i = 0; i < len; ++i) {
    const char c = value[i];
    switch (c) {
      case '\\':
        *line += "\\\\";
        break;
      case '\b':
        *line += "\\b";
        break;
      case '\f':
        *line += "\\f";
        break;
      case '\n':
        *line += "\\n";
        break;
      case '\r':
        *line += "\\r";
        break;
      case '\t':
        *line += "\\t";
        break;
      case '\v':
        *line += "\\v";
        break;
      default:
        *line += c;
    }
  }
}

std::string canonicalLine(const PGresult* res, int row, int first_col, int n) {
  std::string line;
  for (int c = first_col; c < first_col + n; ++c) {
    if (c > first_col) line += '\t';
    appendCopyField(&line, PQgetvalue(res, row, c), static_cast<size_t>(PQgetlength(res, row, c)),
                    PQgetisnull(res, row, c) != 0);
  }
  return line;
}

Result<MultisetDigest> digestTenantRows(PgConnection& conn, const PreparedTable& table,
                                        const std::string& tenant, RowHasher& hasher) {
  // One chunk, one piece: the bulk pass's query without bounds or block ranges, so the lines
  // are "0<TAB>canonical row", exactly what the verifier hashes.
  const ChunkPlan whole;
  MultisetDigest out;
  bool bad = false;
  Digest d{};
  Status st = copyOut(conn, scanCopySql(table, whole, 0, 0, tenant), [&](std::string_view row) {
    if (row.size() < 2 || row[0] != '0' || row[1] != '\t') {
      bad = true;
      return;
    }
    row.remove_prefix(2);
    if (!row.empty() && row.back() == '\n') row.remove_suffix(1);
    if (!hasher.digest(row, &d)) {
      bad = true;
      return;
    }
    out.add(d);
  });
  SM_RETURN_IF_ERROR(st);
  if (bad) return Status::internal(conn.label() + ": unexpected row reading " + table.spec.key());
  return out;
}

}  // namespace stampmover::verify
