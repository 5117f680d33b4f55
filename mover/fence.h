// The write fence at a stamp: a small table of fenced tenants (stampmover.fence) and triggers on
// every tenant table that reject writes of a fenced tenant, statement-level TRUNCATE included.
// Installing it is DDL (CREATE TRIGGER takes a table lock), so it happens outside any cutover
// window, with lock_timeout and retries; fencing a tenant inside the window is then one row
// write. Apply sessions (session_replication_role = replica) are not fenced: the reverse
// stream writes through.
//
// The fence belongs to the stamp, not to a migration: every unfinished migration that uses it
// is recorded in stampmover.fence_users (acquireFence / releaseFence), and the triggers go only
// when the last user releases them and no tenant is fenced.
//
// Cost to tenants that are not fenced. The row trigger is installed dormant (disabled: a write
// pays next to nothing, ~1% on bench/cutover) and armed (enabled, DDL) only right before a
// freeze, by checkFenceInPlace()/armFence(); it stays armed until the last user releases the
// fence. Armed, it is an AFTER trigger whose WHEN clause reads one sequence
// (stampmover.fence_mask, a 64-bit Bloom mask of the fenced tenants, NULL when none is fenced),
// so while nobody is fenced a write pays the WHEN (compiled per statement, plus a sequence read)
// and the trigger function is never called; while some tenant is fenced the function first
// tests the writer's bit of the mask and only queries stampmover.fence for a tenant whose bit
// is set. fenceTenant() refuses while any fence row trigger of the stamp is not armed.
// Being an AFTER trigger, the fence refuses at the end of the statement: a write of a fenced
// tenant that also breaks a constraint checked earlier reports that constraint instead.
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
  std::chrono::milliseconds lock_timeout{2000};  // Default: 2 s per DDL attempt on a table
  uint32_t attempts = 10;                        // Default: 10 attempts per table
  std::chrono::milliseconds backoff{500};        // Default: 0.5 s, doubled per attempt
};

// SQLSTATE raised by the fence triggers; routers and clients treat it as "retry shortly".
inline constexpr const char* kFenceSqlState = "55P04";

// Names of the fence's triggers on every tenant table: an AFTER INSERT OR UPDATE OR DELETE row
// trigger and a BEFORE TRUNCATE statement trigger. checkFenceInPlace() requires both.
inline constexpr const char* kFenceTriggerNames[] = {"stampmover_fence_row",
                                                     "stampmover_fence_truncate"};

// Records `migration_id` as a user of the fence on `tables` (stampmover.fence_users) and makes
// the fence complete there: creates the schema objects if missing and both triggers on each
// table that lacks one (or has its TRUNCATE trigger disabled; the trigger of an older
// stampmover version is replaced). New row triggers take the stamp's state: dormant, unless
// the stamp is armed; an existing row trigger keeps its state. Arm before fencing. Idempotent; safe
// against concurrent acquire/release by other workers (a stamp-wide advisory lock serializes them).
// Each table's DDL is its own transaction with `lock_timeout`, retried with backoff, so a long
// transaction on a table delays us, never the table's writers. Errors: kRefused for an empty
// migration_id; kRetryable when a table stays locked past every attempt (the message names it; the
// user row is kept, so release() cleans up either way). Not thread-safe on one connection.
common::Status acquireFence(common::PgConnection& conn, const std::vector<TableInfo>& tables,
                            const std::string& migration_id, const FenceInstallOptions& options);

// Removes `migration_id` from the fence's users, then drops the triggers from every table it
// used (and from `tables`) that no other user needs, but only while no tenant is fenced; when
// no user, no trigger and no live fence row is left, the fence table, users table, mask
// sequence and functions go too (schema "stampmover" stays). Idempotent: running it again
// after a failure finishes the job. Errors: kRetryable when a table stays locked (the user row
// is already gone; rerun to drop the triggers).
common::Status releaseFence(common::PgConnection& conn, const std::string& migration_id,
                            const std::vector<TableInfo>& tables,
                            const FenceInstallOptions& options);

// To be called immediately before each freeze (outside the window): OK when the fence table and
// mask exist, every table of `tables` carries both fence triggers (the TRUNCATE one enabled),
// and the stamp is armed: it arms the stamp (armFence) when needed, which is DDL with
// `options`' lock_timeout and retries. Errors: kRefused naming each table and its missing or
// disabled triggers and the fix (acquireFence again, i.e. rerun the cutover), or when our role
// cannot see other roles' sessions in pg_stat_activity (needs pg_read_all_stats; the wait
// would be blind); kRetryable when arming a table stays locked. If a live fence row's bit is
// missing from the mask (the sequence was reset by hand) the mask is recomputed and a warning
// logged.
common::Status checkFenceInPlace(common::PgConnection& conn, const std::vector<TableInfo>& tables,
                                 const FenceInstallOptions& options = {});

// Arms the stamp: enables every fence row trigger of the stamp that is not enabled for
// ordinary sessions (ALTER TABLE ... ENABLE TRIGGER, one transaction per table with
// lock_timeout and retries; never inside a window). Idempotent; OK when nothing is installed.
// Errors: kRetryable when a table stays locked past every attempt (the message names it).
common::Status armFence(common::PgConnection& conn, const FenceInstallOptions& options = {});

// The migrations recorded as users of the fence on this stamp, sorted; empty when none (or the
// fence was never installed).
common::Result<std::vector<std::string>> fenceUsers(common::PgConnection& conn);

// Fences the tenant (one row write, committed) and returns the fencing transaction's id.
// Refused (nothing written) while a fence row trigger of the stamp is not armed (see
// armFence), since the fence would not be enforced there. The
// fence expires by itself after `ttl` (a worker killed inside the window must not leave the
// tenant unwritable); extendFence() makes it permanent once the flip is certain. The mask is
// updated in the same transaction, before its commit.
common::Result<uint64_t> fenceTenant(common::PgConnection& source, const std::string& tenant,
                                     uint64_t epoch, std::chrono::milliseconds ttl);
// Makes the tenant's fence permanent (until unfenceTenant): done just before the flip, so a
// stale router can never write to the old primary after it.
common::Status extendFence(common::PgConnection& source, const std::string& tenant);

struct FenceWaitOptions {
  // Our own sessions on this stamp that may sit inside a transaction during the wait and are
  // known not to write the tenant. The waiting session itself is always excluded.
  std::vector<int32_t> exclude_pids;  // Default: none
  std::chrono::milliseconds poll{2};  // Default: 2 ms between looks at pg_stat_activity
  uint32_t max_named = 5;             // Default: the error names up to 5 blocking sessions
};

// Call right after fenceTenant() returned `fence_xid` (committed), on the same connection.
// Returns once no session of this database can still write the tenant unseen by the fence or
// commit a write the drain would miss, i.e. no backend (walsenders, autovacuum and logical
// replication workers excepted, see fence.cc) holds
//   - a snapshot taken before the fence committed: backend_xmin <= fence_xid (a REPEATABLE
//     READ / SERIALIZABLE transaction that has only read, idle in transaction or not, would
//     not see the fence row when it writes), or
//   - a transaction id assigned before the fence committed: backend_xid < an xid taken after
//     the commit (it may have written the tenant before the fence was visible and commit
//     after the drain's position), also when that xid is newer than fence_xid;
// nor is a prepared transaction of this database from before the commit still pending.
// Errors: kRetryable when such sessions remain after `timeout`, naming them (pid,
// application_name, state, transaction age, why); the caller rolls the window back.
// kRefused when our role is neither superuser nor in pg_read_all_stats (other roles' sessions
// would look idle).
common::Status waitForOlderTransactions(common::PgConnection& source, uint64_t fence_xid,
                                        std::chrono::milliseconds timeout,
                                        const FenceWaitOptions& options = {});

// Removes the tenant from the fence (unfreeze) and then clears its bit from the mask.
// Idempotent; OK when the fence was never installed.
common::Status unfenceTenant(common::PgConnection& source, const std::string& tenant);

// Older entry points, kept for callers not yet moved to acquireFence/releaseFence:
// installFence() makes the fence complete and armed on `tables` without recording a user;
// uninstallFence() drops the triggers from `tables` that no recorded user needs while no
// tenant is fenced, and the fence's objects when nothing uses them. Same errors as above.
common::Status installFence(common::PgConnection& source, const std::vector<TableInfo>& tables,
                            const FenceInstallOptions& options);
common::Status uninstallFence(common::PgConnection& source, const std::vector<TableInfo>& tables,
                              const FenceInstallOptions& options);

// True when both fence triggers are installed on `table` (the row trigger armed or dormant,
// the TRUNCATE trigger enabled).
common::Result<bool> fenceInstalled(common::PgConnection& source, const TableInfo& table);

}  // namespace stampmover::mover
