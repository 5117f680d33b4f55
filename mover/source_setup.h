// What a migration creates on the source stamp: a publication whose row filter selects the
// tenant, and a logical replication slot (pgoutput) that exports the snapshot the copy reads
// under. Names are derived from the tenant so `cleanup` finds them without local state.
#pragma once

#include <string>
#include <vector>

#include "common/lsn.h"
#include "common/pg.h"
#include "common/status.h"
#include "mover/catalog.h"

namespace stampmover::mover {

// "stampmover_<sanitised tenant>_<8 hex of sha256(tenant, database)>": a valid slot and
// publication name for any tenant text (lower-case letters, digits and underscores, at most 63
// bytes). Slots are cluster-wide, so the source database is part of the hash.
std::string replicationNameForTenant(const std::string& tenant, const std::string& database = "");

// CREATE PUBLICATION <name> FOR TABLE t1 WHERE (tenant_col = '<tenant>'), ... The tenant is
// escaped by libpq (DDL takes no parameters). Errors: kRefused when it already exists.
common::Status createTenantPublication(common::PgConnection& source, const std::string& name,
                                       const std::vector<TableInfo>& tables,
                                       const std::string& tenant);

// A logical slot created over a replication connection, with its exported snapshot. The
// snapshot stays importable (SET TRANSACTION SNAPSHOT) while `connection` is open and idle.
struct SlotWithSnapshot {
  common::PgConnection connection;
  std::string slot_name;
  common::Lsn consistent_point;
  std::string snapshot_name;
};
common::Result<SlotWithSnapshot> createSlotWithSnapshot(const std::string& source_dsn,
                                                        const std::string& source_label,
                                                        const std::string& slot_name);

// Drops the slot and the publication when they exist. Errors: kRefused when the slot is in
// use by a running process (the message names its pid).
common::Status dropSlotAndPublication(common::PgConnection& source, const std::string& slot_name,
                                      const std::string& publication_name);

// The two halves of dropSlotAndPublication(), each idempotent (absent is success).
common::Status dropSlotIfExists(common::PgConnection& conn, const std::string& slot_name);
common::Status dropPublicationIfExists(common::PgConnection& conn, const std::string& name);

// True when the named slot / publication exists.
common::Result<bool> slotExists(common::PgConnection& source, const std::string& slot_name);
common::Result<bool> publicationExists(common::PgConnection& source, const std::string& name);

}  // namespace stampmover::mover
