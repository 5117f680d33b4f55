// Sequences that feed tenant tables (serial and identity columns, and column defaults calling
// nextval) are raised at the destination above the source's values, with headroom, at cutover:
// new ids issued by the destination never collide with rows that were moved.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "mover/catalog.h"

namespace stampmover::mover {

struct SequenceRaise {
  std::string sequence;    // qualified, as regclass text
  int64_t source_value = 0;
  int64_t dest_before = 0;
  int64_t dest_after = 0;
};

// Lists the sequences feeding `tables` on `conn` (owned-by dependencies and nextval defaults).
common::Result<std::vector<std::string>> tenantSequences(common::PgConnection& conn,
                                                         const std::vector<TableInfo>& tables);

// For each sequence: destination = max(destination, source + headroom). Never lowers a value.
// Errors: kRefused when the destination lacks a sequence the source has (named).
common::Result<std::vector<SequenceRaise>> raiseSequences(common::PgConnection& source,
                                                          common::PgConnection& destination,
                                                          const std::vector<TableInfo>& tables,
                                                          int64_t headroom);

}  // namespace stampmover::mover
