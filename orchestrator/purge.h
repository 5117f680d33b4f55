// Purge of a tenant's rows from the stamp it left, after a last comparison of both stamps.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "mover/catalog.h"

namespace stampmover::orch {

// Deletes the tenant's rows from the old stamp in small batches (children first), after a
// last comparison of both sides with the verifier's row equality (verify/row_equality.h; every
// row of the tenant is read once on each side). Errors: kDataLoss when the two sides differ
// (nothing purged); the servers' errors, class kept.
common::Result<uint64_t> purgeTenant(common::PgConnection& old_stamp, common::PgConnection& serving,
                                     const std::vector<mover::TableInfo>& tables,
                                     const std::string& tenant);

}  // namespace stampmover::orch
