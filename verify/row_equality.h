// The project's one definition of "two rows are equal", shared by the verifier, the cutover's
// re-check by primary key and purge: two rows are equal exactly when their canonical lines are
// equal bytes. A canonical line is the text-format COPY line of the table's canonical SELECT
// list (canonicalSelectList(): columns by name in the source's column order, each normalised as
// canonical.h explains: trim_scale for numeric, -0 -> 0 for floats, justify_interval) read on a
// session that runs the one pinned set of settings (common/session_settings.h: every
// PgConnection gets it at connect; the comparing code re-asserts common::pinnedSettingsSql()).
//
// Consequences the callers rely on: a destination whose columns are in another order compares
// equal (columns are selected by name, never `t::text`), numeric 1.50 equals 1.5, float -0
// equals 0, '1 day' equals '24 hours', whatever DateStyle/TimeZone/extra_float_digits each
// server defaults to. The verifier's bulk pass hashes these lines as COPY sends them; keyed
// reads (which need parameters, so no COPY) rebuild the same bytes with canonicalLine().
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "verify/row_digest.h"
#include "verify/table_plan.h"
#include "verify/table_spec.h"

namespace stampmover::verify {

// Prepares `spec` for the canonical encoding without a server round trip. `base_type_oids[i]`
// is the type of spec.columns[i] with domains resolved (baseTypes()); an OID without a
// normalisation is printed as is. Errors: kRefused when the sizes differ, the tenant column or
// a primary-key column is not among the columns, or there is no primary key.
common::Result<PreparedTable> prepareTable(const VerifyTable& spec,
                                           const std::vector<uint32_t>& base_type_oids);

// The base type of each of `type_oids` (a domain resolves to the type it is ultimately over;
// other types to themselves), in one query. Built-in OIDs below 10000 are not domains and are
// answered without asking. Errors: the server's, class kept.
common::Result<std::map<uint32_t, uint32_t>> baseTypes(common::PgConnection& conn,
                                                       const std::vector<uint32_t>& type_oids);

// Appends one field in COPY text form: \N for NULL; backslash, \b, \f, \n, \r, \t and \v
// escaped with a backslash, every other byte as is (exactly what COPY TO's text format writes).
void appendCopyField(std::string* line, const char* value, size_t len, bool is_null);

// The canonical line of row `row` of a query result whose columns [first_col, first_col + n)
// are a canonical SELECT list: the same bytes as the verifier's COPY line for that row.
std::string canonicalLine(const PGresult* res, int row, int first_col, int n);

// Digest (rows and salted sum, the verifier's bulk encoding in a single piece) of every row of
// `tenant` in `table` on `conn`, read with one COPY in heap order. The session must run the
// pinned settings (common::pinnedSettingsSql()). Memory: one row. Errors: the server's, class
// kept; kInternal for a row of an unexpected shape.
common::Result<MultisetDigest> digestTenantRows(common::PgConnection& conn,
                                                const PreparedTable& table,
                                                const std::string& tenant, RowHasher& hasher);

}  // namespace stampmover::verify
