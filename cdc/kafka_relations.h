// The source catalog's description of the tables a Kafka-sourced migration moves, in the shape
// pgoutput's Relation messages give it (columns in attnum order with type OIDs and typmods,
// replica-identity key flags), so Debezium events decode to the same events pgoutput yields.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cdc/debezium_envelope.h"
#include "common/change.h"
#include "common/pg.h"

namespace stampmover::cdc {

// Describes each of `tables` ("schema.table", unquoted) from the source's catalog: relation OID,
// columns (generated and dropped ones left out, as pgoutput and Debezium do), part_of_key per
// the replica identity (primary key for DEFAULT, the index for USING INDEX, every column for
// FULL, none for NOTHING). Errors: kRefused naming a table that does not exist; as
// PgConnection::query otherwise.
common::Result<std::vector<std::shared_ptr<const common::Relation>>> describeSourceTables(
    common::PgConnection& source, const std::vector<std::string>& tables);

// A resolver over a fixed set of relations (tables outside it are not moved: nullptr).
RelationResolver fixedRelations(std::vector<std::shared_ptr<const common::Relation>> relations);

}  // namespace stampmover::cdc
