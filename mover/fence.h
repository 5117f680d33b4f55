// The write fence at the source stamp: a small table of fenced tenants and a row trigger on
// each tenant table that rejects writes of a fenced tenant. Installing it is DDL (CREATE
// TRIGGER takes a table lock), so it happens before any cutover, with lock_timeout and
// retries; fencing a tenant inside the cutover window is then one row write. Apply sessions
// (session_replication_role = replica) are not fenced: the reverse stream writes through.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/pg.h"
#include "common/status.h"
#include "mover/catalog.h"

namespace stampmover::mover {

struct FenceInstallOptions {
  std::chrono::milliseconds lock_timeout{2000};  // Default: 2 s per CREATE TRIGGER attempt
  uint32_t attempts = 10;                        // Default: 10 attempts per table
  std::chrono::milliseconds backoff{500};        // Default: 0.5 s, doubled per attempt
};

// SQLSTATE raised by the fence trigger; routers and clients treat it as "retry shortly".
inline constexpr const char* kFenceSqlState = "55P04";

// Creates schema "stampmover", table stampmover.fence and a trigger on every table
// (idempotent). Errors: kRetryable when a table stays locked past every attempt (the message
// names it; nothing else is left half-done: each table's trigger is one transaction).
common::Status installFence(common::PgConnection& source, const std::vector<TableInfo>& tables,
                            const FenceInstallOptions& options);

// Fences the tenant (one row write, committed) and returns the fencing transaction's id. The
// fence expires by itself after `ttl` (a worker killed inside the window must not leave the
// tenant unwritable); extendFence() makes it permanent once the flip is certain.
common::Result<uint64_t> fenceTenant(common::PgConnection& source, const std::string& tenant,
                                     uint64_t epoch, std::chrono::milliseconds ttl);
// Makes the tenant's fence permanent (until unfenceTenant): done just before the flip, so a
// stale router can never write to the old primary after it.
common::Status extendFence(common::PgConnection& source, const std::string& tenant);

// Waits until every transaction that was running when `fence_xid` committed has ended
// (a REPEATABLE READ transaction started before the fence would not see it). Errors:
// kRetryable on timeout, naming the oldest blocking backend's pid.
common::Status waitForOlderTransactions(common::PgConnection& source, uint64_t fence_xid,
                                        std::chrono::milliseconds timeout);

// Removes the tenant from the fence (unfreeze). Idempotent.
common::Status unfenceTenant(common::PgConnection& source, const std::string& tenant);

// Drops the triggers and functions from `tables` when no tenant is fenced any more, and the
// fence table when no trigger is left. Idempotent; uses the same lock_timeout and retries.
common::Status uninstallFence(common::PgConnection& source, const std::vector<TableInfo>& tables,
                              const FenceInstallOptions& options);

// True when the fence trigger is installed on `table`.
common::Result<bool> fenceInstalled(common::PgConnection& source, const TableInfo& table);

}  // namespace stampmover::mover
