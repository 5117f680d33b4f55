// Statements that ride inside every destination transaction that writes a tenant's rows (the
// applier's batches, its origin advances, the copy's chunks), sent just before COMMIT so they
// commit or fail atomically with the data: the owner check of a queued move (a paused ex-owner's
// transaction fails instead of writing), a Kafka source's next offsets per partition.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/pg.h"

namespace stampmover::mover {

struct TxnStatement {
  std::string sql;                         // one statement, parameters as $1..$n
  std::vector<common::PgParam> params;     // values, never spliced into `sql`
};

// Called once per destination transaction, just before its COMMIT is sent; the statements it
// returns are sent in order inside that transaction. Any error they raise rolls the transaction
// back and fails the writer with that error (class from its SQLSTATE; a fencing rejection should
// raise a SQLSTATE the caller maps to kRefused). Called on the writer's thread, and by the copy's
// workers concurrently: it must be thread-safe and must not block. An empty function sends
// nothing.
using TxnStatementsFn = std::function<std::vector<TxnStatement>()>;

}  // namespace stampmover::mover
