// The applier's merging of changes into multi-row statements, against real clusters: a
// pgoutput stream from a slot is applied by PgApplier (grouped, with tiny groups, and row by
// row) after a backlog of edge cases — a key inserted, updated and deleted within one source
// transaction, primary-key changes followed by reuse of the old key, equal numeric keys spelled
// differently, unchanged-TOAST updates, quotes, backslashes, braces, NULLs and the string
// 'NULL' in text, arrays and jsonb, array, enum, composite, domain and box columns, a unique
// index besides the primary key, a TRUNCATE between inserts, and a 10,000-row transaction.
// Both sides are compared with ordered SELECT t::text (independent of the applier), then the
// whole stream is replayed over the result, which must not change it (idempotence).
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "cdc/pgoutput_source.h"
#include "harness/seed.h"
#include "mover/catalog.h"
#include "mover/heartbeat.h"
#include "mover/pg_applier.h"
#include "mover/source_setup.h"
#include "tests/support/test_support.h"

using namespace stampmover::testing;
using stampmover::common::Lsn;
using stampmover::common::PgConnection;
using stampmover::common::Result;
using stampmover::common::Status;
namespace harness = stampmover::harness;
namespace mover = stampmover::mover;
namespace cdc = stampmover::cdc;

namespace {

constexpr const char* kExtraSchema = R"SQL(
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE oddities (
  tenant_id bigint NOT NULL, id int NOT NULL, tags text[], grid int[], moods mood[], m mood,
  p pair, pn posint, bx box, note text, doc jsonb, label varchar(12), code char(3),
  PRIMARY KEY (tenant_id, id));
CREATE TABLE uniq (
  tenant_id bigint NOT NULL, id int NOT NULL, email text NOT NULL,
  PRIMARY KEY (tenant_id, id), UNIQUE (tenant_id, email));
CREATE TABLE nkeys (tenant_id bigint NOT NULL, k numeric NOT NULL, v text, PRIMARY KEY (tenant_id, k));
CREATE TABLE churn (tenant_id bigint NOT NULL, id int NOT NULL, v text, PRIMARY KEY (tenant_id, id));
-- A primary key without the tenant column (allowed under REPLICA IDENTITY FULL).
CREATE TABLE shared_keys (id int PRIMARY KEY, tenant_id bigint NOT NULL, v text);
ALTER TABLE shared_keys REPLICA IDENTITY FULL;
)SQL";

const std::pair<const char*, const char*> kTables[] = {{"accounts", "account_id"},
                                                       {"orders", "order_id"},
                                                       {"order_items", "order_id, line"},
                                                       {"documents", "doc_key"},
                                                       {"events", "event_id"},
                                                       {"oddities", "id"},
                                                       {"uniq", "id"},
                                                       {"nkeys", "k"},
                                                       {"churn", "id"}};

// A value stored out of line (TOAST) even after compression.
constexpr const char* kBig =
    "(SELECT string_agg(md5(g::text || 'big'), '') FROM generate_series(1, 400) g)";

uint64_t heartbeat_seq = 0;  // this binary's heartbeats, one identity for every applier

struct Env {
  std::string db;
  std::string name;  // slot, publication and origin
  PgConnection src;
  PgConnection dst;
};

std::unique_ptr<Env> setUp() {
  auto e = std::make_unique<Env>();
  e->db = freshDatabase();
  e->name = mover::replicationNameForTenant("42", e->db);
  e->src = connectOrDie(sourceCluster().dsn(e->db));
  e->dst = connectOrDie(destCluster().dsn(e->db));
  for (auto* c : {&e->src, &e->dst}) {
    EXPECT_TRUE(harness::createDemoSchema(*c).isOk());
    execOrDie(*c, kExtraSchema);
  }
  auto tables = mover::discoverTenantTables(e->src, {});
  EXPECT_TRUE(tables.isOk()) << tables.status().message();
  EXPECT_TRUE(mover::createTenantPublication(e->src, e->name, *tables, "42").isOk());
  auto slot = mover::createSlotWithSnapshot(sourceCluster().dsn(e->db), "source", e->name);
  EXPECT_TRUE(slot.isOk()) << slot.status().message();
  return e;
}

struct CatchUpStats {
  mover::ApplierStats stats;  // of the attempt that succeeded
  int conflicts = 0;          // attempts ended by a plain insert meeting an existing row
};

Result<mover::ApplierStats> catchUpOnce(Env& e, uint32_t max_group_rows, Lsn start,
                                        Lsn upsert_through, Lsn* conflict_through);

// Streams from the slot (from `start`, or from the destination's recorded position when 0)
// into a PgApplier until a heartbeat emitted now is committed at the destination. Inserts are
// upserts through `upsert_through`; a plain insert that meets an existing row ends the attempt,
// and the next one upserts through the position it reports, as the migrate job does.
Result<CatchUpStats> catchUp(Env& e, uint32_t max_group_rows, Lsn start = Lsn(),
                             Lsn upsert_through = Lsn()) {
  CatchUpStats out;
  for (;;) {
    Lsn conflict;
    auto r = catchUpOnce(e, max_group_rows, start, upsert_through, &conflict);
    if (r) {
      out.stats = *r;
      return out;
    }
    if (conflict.isZero() || conflict <= upsert_through || ++out.conflicts > 10) return r.status();
    upsert_through = conflict;
  }
}

Result<mover::ApplierStats> catchUpOnce(Env& e, uint32_t max_group_rows, Lsn start,
                                        Lsn upsert_through, Lsn* conflict_through) {
  mover::ApplierOptions ao;
  ao.dest_dsn = destCluster().dsn(e.db);
  ao.source_dsn = sourceCluster().dsn(e.db);
  ao.origin_name = e.name;
  ao.tenant = "42";
  ao.max_group_rows = max_group_rows;
  ao.upsert_through = upsert_through;
  ao.heartbeat_identity = "applier-test";
  SM_ASSIGN_OR_RETURN(auto applier, mover::PgApplier::open(ao));
  struct Report {
    mover::PgApplier& a;
    Lsn* out;
    ~Report() { *out = a.conflictThrough(); }
  } report{*applier, conflict_through};
  if (start.isZero()) {
    SM_ASSIGN_OR_RETURN(start, applier->originProgress());
  }
  cdc::PgoutputSourceOptions so;
  so.dsn = sourceCluster().dsn(e.db);
  so.slot = e.name;
  so.publication = e.name;
  so.start = start;  // never acknowledged: 0 and older positions mean the slot's creation
  SM_ASSIGN_OR_RETURN(auto source, cdc::PgoutputSource::start(so));
  // Another stream's heartbeat (a later clock, our prefix) first: it must not end the wait.
  SM_RETURN_IF_ERROR(e.src
                         .query("SELECT pg_logical_emit_message(true, $1, $2)",
                                {std::string(mover::kHeartbeatPrefix),
                                 mover::heartbeatContent({"someone-else", 99,
                                                          cdc::pgEpochMicrosNow() + 3600000000})})
                         .status());
  const mover::Heartbeat hb{ao.heartbeat_identity, ++heartbeat_seq, cdc::pgEpochMicrosNow()};
  SM_RETURN_IF_ERROR(e.src
                         .query("SELECT pg_logical_emit_message(true, $1, $2)",
                                {std::string(mover::kHeartbeatPrefix), mover::heartbeatContent(hb)})
                         .status());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (applier->lastHeartbeatSeq() < hb.seq) {
    if (std::chrono::steady_clock::now() > deadline) return Status::internal("catch-up timed out");
    SM_ASSIGN_OR_RETURN(auto ev, source->next(std::chrono::milliseconds(20)));
    if (ev) {
      SM_RETURN_IF_ERROR(applier->apply(*ev));
    } else {
      SM_RETURN_IF_ERROR(applier->commitPending());
    }
  }
  SM_RETURN_IF_ERROR(applier->commitPending());
  SM_ASSIGN_OR_RETURN(Lsn durable, applier->durableLsn());
  (void)durable;
  return applier->stats();
}

void expectTenantEqual(Env& e, const std::string& when) {
  for (const auto& [table, order] : kTables) {
    auto a = tenantRows(e.src, table, "42", order);
    auto b = tenantRows(e.dst, table, "42", order);
    ASSERT_EQ(a.size(), b.size()) << table << " " << when;
    for (size_t i = 0; i < a.size(); ++i)
      ASSERT_EQ(a[i], b[i]) << table << " row " << i << " " << when;
    EXPECT_EQ(
        scalar(e.dst, std::string("SELECT count(*) FROM ") + table + " WHERE tenant_id <> 42"), "0")
        << "other tenants' rows reached the destination in " << table << " " << when;
  }
}

// Rows that later changes find in place at the destination.
void baseRows(PgConnection& src) {
  harness::SeedOptions seed;
  seed.tenant_items = 200;
  seed.other_items = 200;
  ASSERT_TRUE(harness::seedTenants(src, seed).isOk());
  execOrDie(src, std::string(R"SQL(
BEGIN;
INSERT INTO documents VALUES (42, 'big0', 'old title', )SQL") +
                     kBig + R"SQL(, '{"v": 0}', now()),
  (42, 'big2', 'to be renamed', )SQL" +
                     kBig + R"SQL(, NULL, now()),
  (1, 'big0', 'other tenant', )SQL" +
                     kBig + R"SQL(, NULL, now());
INSERT INTO uniq VALUES (42, 1, 'a'), (42, 2, 'b'), (1, 1, 'a');
INSERT INTO nkeys VALUES (42, 1.0, 'one'), (42, 7, 'seven');
COMMIT;
)SQL");
}

// The edge cases, each in its own source transaction, interleaved with other tenants' writes.
void edgeCases(PgConnection& src) {
  // Many inserts, then updates of the same keys, then deletes of some, in one transaction.
  execOrDie(src, R"SQL(
BEGIN;
INSERT INTO events SELECT 42, md5('t1/' || g)::uuid, 'new', timestamptz '2025-01-01 00:00:00+00',
  jsonb_build_object('g', g), g FROM generate_series(1, 600) g;
UPDATE events SET kind = 'updated once', amount = amount * 2
  WHERE tenant_id = 42 AND payload ? 'g' AND (payload->>'g')::int <= 600;
UPDATE events SET payload = payload || '{"twice": true}'
  WHERE tenant_id = 42 AND payload ? 'g' AND (payload->>'g')::int % 2 = 0;
DELETE FROM events WHERE tenant_id = 42 AND payload ? 'g' AND (payload->>'g')::int % 3 = 0;
INSERT INTO events VALUES (1, md5('other')::uuid, 'other tenant', now(), NULL, 1);
COMMIT;
)SQL");
  // Insert, delete, insert of the same key; insert then delete of another.
  execOrDie(src, R"SQL(
BEGIN;
INSERT INTO orders VALUES (42, 900001, 1, 'new', 1, now(), 'first', 0.5);
DELETE FROM orders WHERE tenant_id = 42 AND order_id = 900001;
INSERT INTO orders VALUES (42, 900001, 2, 'paid', 2, now(), 'second', 1.5);
INSERT INTO orders VALUES (42, 900002, 1, 'new', 1, now(), 'gone', 0.5);
DELETE FROM orders WHERE tenant_id = 42 AND order_id = 900002;
UPDATE orders SET notes = 'seeded, updated' WHERE tenant_id = 42 AND order_id BETWEEN 1 AND 30;
DELETE FROM order_items WHERE tenant_id = 42 AND order_id = 5;
INSERT INTO order_items VALUES (42, 5, 1, 'SKU-back', 1, 1.00, '{"back": true}');
COMMIT;
)SQL");
  // A primary-key change, then an insert of the old key; a key moved and moved back.
  execOrDie(src, R"SQL(
BEGIN;
INSERT INTO accounts (tenant_id, account_id, name, created_at) VALUES (42, 700001, 'moving', now()),
  (42, 700003, 'round trip', now());
UPDATE accounts SET account_id = 700002 WHERE tenant_id = 42 AND account_id = 700001;
INSERT INTO accounts (tenant_id, account_id, name, created_at) VALUES (42, 700001, 'reused key', now());
UPDATE accounts SET account_id = 700004, name = 'away' WHERE tenant_id = 42 AND account_id = 700003;
UPDATE accounts SET account_id = 700003, name = 'back' WHERE tenant_id = 42 AND account_id = 700004;
COMMIT;
)SQL");
  // Values that array literals and parameters get wrong when escaped badly.
  execOrDie(src, R"SQL(
BEGIN;
INSERT INTO accounts (tenant_id, account_id, name, email, created_at, tags, profile, avatar) VALUES
  (42, 710001, 'NULL', NULL, now(), ARRAY['NULL', NULL, '"', '\', '{', '}', ',', ' ', '', 'ünï ☃', 'a"b\c'],
   '{"a": "NULL", "b": "\"\\{,}", "c": null, "u": "ü☃", "arr": [1, "{", null]}', '\x00ff5c22'),
  (42, 710002, '"quoted"', 'NULL', now(), '{}', 'null', ''),
  (42, 710003, E'back\\slash', ',', now(), ARRAY[NULL]::text[], '"NULL"', NULL),
  (42, 710004, '{braces}', E'tab\there', now(), ARRAY['{a,b}', '(x)', E'new\nline'], '[]', '\x');
UPDATE accounts SET tags = tags || ARRAY['appended, "quoted"'] WHERE tenant_id = 42 AND account_id = 710001;
INSERT INTO oddities VALUES
  (42, 1, ARRAY['NULL', NULL, '"', '\'], '{1,2,NULL}', '{sad,happy}', 'ok', ROW(1, 'a,"b"\c'), 5,
   '((0,0),(1,1))', E'line\nbreak\t"tab"', '{"k": [1, "{", null], "s": "NULL"}', 'NULL', 'ab'),
  (42, 2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (42, 3, '{}', '{}', '{}', 'sad', ROW(NULL, NULL), 1, '((2,2),(-1,-1.5))', '', '{}', '', ''),
  (42, 4, ARRAY['ü☃', '}{'], ARRAY[-1], ARRAY['happy']::mood[], 'happy', ROW(-3, ''), 3,
   '((0,0),(0,0))', 'NULL', '"NULL"', 'x,y', '"\'),
  (1, 1, ARRAY['other'], NULL, NULL, NULL, NULL, NULL, NULL, 'other tenant', NULL, NULL, NULL);
UPDATE oddities SET note = note || ' (updated)', m = 'sad' WHERE tenant_id = 42 AND id IN (1, 3);
INSERT INTO documents VALUES (42, 'quotes "and" \back\slash', '"', E'\\', '"NULL"', NULL),
  (42, 'NULL', 'NULL', 'NULL', 'null', NULL);
COMMIT;
)SQL");
  // Unchanged-TOAST updates: merged into a pending row, applied in place, and after a key change.
  execOrDie(src, std::string(R"SQL(
BEGIN;
INSERT INTO documents VALUES (42, 'big1', 'fresh', )SQL") +
                     kBig + R"SQL(, '{"v": 1}', now());
UPDATE documents SET title = 'fresh, retitled' WHERE tenant_id = 42 AND doc_key = 'big1';
UPDATE documents SET title = 'retitled in place', meta = '{"v": 2}' WHERE tenant_id = 42 AND doc_key = 'big0';
UPDATE documents SET doc_key = 'big2-renamed', title = 'renamed' WHERE tenant_id = 42 AND doc_key = 'big2';
UPDATE documents SET title = 'other tenant retitled' WHERE tenant_id = 1 AND doc_key = 'big0';
COMMIT;
)SQL");
  // A unique index besides the key (row by row, in order): emails swapped through a temporary.
  execOrDie(src, R"SQL(
BEGIN;
UPDATE uniq SET email = 'tmp' WHERE tenant_id = 42 AND id = 1;
UPDATE uniq SET email = 'a' WHERE tenant_id = 42 AND id = 2;
UPDATE uniq SET email = 'b' WHERE tenant_id = 42 AND id = 1;
INSERT INTO uniq SELECT 42, g, 'e' || g FROM generate_series(10, 60) g;
DELETE FROM uniq WHERE tenant_id = 42 AND id BETWEEN 10 AND 40;
INSERT INTO uniq VALUES (42, 100, 'e10');
COMMIT;
)SQL");
  // Equal numeric keys spelled differently: 1.0 becomes 1.00 (a key change to an equal value).
  execOrDie(src, R"SQL(
BEGIN;
UPDATE nkeys SET k = 1.00, v = 'one, rescaled' WHERE tenant_id = 42 AND k = 1.0;
INSERT INTO nkeys VALUES (42, 2.5, 'two and a half');
DELETE FROM nkeys WHERE tenant_id = 42 AND k = 2.5;
INSERT INTO nkeys VALUES (42, 2.50, 'two and a half, again');
DELETE FROM nkeys WHERE tenant_id = 42 AND k = 7;
INSERT INTO nkeys VALUES (42, 7.000, 'seven, rescaled');
COMMIT;
)SQL");
  // A TRUNCATE between inserts of the same keys.
  execOrDie(src, R"SQL(
BEGIN;
INSERT INTO churn SELECT t, g, 'before' FROM unnest(ARRAY[42, 1]) t, generate_series(1, 100) g;
TRUNCATE churn;
INSERT INTO churn SELECT 42, g, 'after' FROM generate_series(50, 60) g;
INSERT INTO churn VALUES (1, 1, 'other tenant after');
COMMIT;
)SQL");
  // Many small transactions touching the same rows across tables.
  for (int i = 0; i < 40; ++i) {
    const std::string n = std::to_string(i);
    execOrDie(src, "BEGIN; INSERT INTO orders VALUES (42, " + std::to_string(910000 + i) +
                       ", 1, 'new', " + n + ", now(), 'small " + n +
                       "', 0); "
                       "UPDATE orders SET total = coalesce(total, 0) + 1 WHERE tenant_id = 42 AND "
                       "order_id = " +
                       std::to_string(910000 + i / 2) +
                       "; "
                       "DELETE FROM events WHERE tenant_id = 42 AND event_id = md5('t1/" +
                       std::to_string(i * 7 + 1) +
                       "')::uuid; "
                       "INSERT INTO orders VALUES (1, " +
                       std::to_string(910000 + i) + ", 1, 'other', 0, now(), NULL, 0); COMMIT;");
  }
  // One 10,000-row transaction, with updates of rows it inserted.
  execOrDie(src, R"SQL(
BEGIN;
INSERT INTO events SELECT 42, md5('big/' || g)::uuid, 'bulk', timestamptz '2025-01-02 00:00:00+00',
  jsonb_build_object('bulk', g, 's', 'NULL'), g / 7.0 FROM generate_series(1, 10000) g;
UPDATE events SET kind = 'bulk, updated' WHERE tenant_id = 42 AND payload ? 'bulk'
  AND (payload->>'bulk')::int % 5 = 0;
COMMIT;
)SQL");
}

class ApplierTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(ApplierTest, EdgeCasesMatchTheSourceAndReplayChangesNothing) {
  const uint32_t group_rows = GetParam();
  auto e = setUp();
  baseRows(e->src);
  auto first = catchUp(*e, group_rows);
  ASSERT_TRUE(first.isOk()) << first.status().message();
  EXPECT_EQ(first->conflicts, 0);
  expectTenantEqual(*e, "after the base rows");

  edgeCases(e->src);
  auto caught = catchUp(*e, group_rows);
  ASSERT_TRUE(caught.isOk()) << caught.status().message();
  EXPECT_EQ(caught->conflicts, 0) << "a plain insert met a row on a mirrored destination";
  const mover::ApplierStats* second = &caught->stats;
  expectTenantEqual(*e, "after the edge cases");
  EXPECT_GT(second->changes, 10000u);
  EXPECT_GE(second->toast_repairs, 1u) << "the renamed document is read back from the source";
  if (group_rows >= 100) {
    EXPECT_GT(second->merged_rows, 10000u);
    EXPECT_LT(second->statements, second->changes / 20) << "changes were not grouped";
  } else if (group_rows > 1) {
    EXPECT_GT(second->merged_rows, 10000u);
  } else {
    EXPECT_EQ(second->merged_rows, 0u);
  }

  // The slot was never acknowledged: from its start, the whole stream again, over the result.
  // (Old values of a second unique key can collide with newer rows when history is replayed
  // over a later state — stampmover resumes from the origin's position, never earlier — so
  // that constraint goes for this part.)
  execOrDie(e->dst, "ALTER TABLE uniq DROP CONSTRAINT uniq_tenant_id_email_key");
  // Replayed inserts are upserts only in the range the applier is told to upsert through.
  auto replay = catchUp(*e, group_rows, Lsn(1), Lsn(~uint64_t{0}));
  ASSERT_TRUE(replay.isOk()) << replay.status().message();
  EXPECT_EQ(replay->conflicts, 0);
  EXPECT_GT(replay->stats.changes, second->changes);
  expectTenantEqual(*e, "after replaying the whole stream");
}

// The destination holds a row the source then inserts (written there behind the migration's
// back): the plain insert fails, its batch and every later one roll back, and the retry
// upserts through the reported position. Nothing is lost either side of the conflict.
TEST(ApplierConflict, AnInsertedRowAlreadyAtTheDestinationIsUpsertedOnRetry) {
  auto e = setUp();
  baseRows(e->src);
  auto first = catchUp(*e, 1000);
  ASSERT_TRUE(first.isOk()) << first.status().message();
  execOrDie(e->dst, "INSERT INTO churn VALUES (42, 7, 'written at the destination')");
  for (int i = 1; i <= 20; ++i) {
    execOrDie(e->src, "INSERT INTO churn VALUES (42, " + std::to_string(i) + ", 'source " +
                          std::to_string(i) + "')");
  }
  execOrDie(e->src, "UPDATE orders SET notes = 'after the conflict' WHERE tenant_id = 42");
  auto second = catchUp(*e, 1000);
  ASSERT_TRUE(second.isOk()) << second.status().message();
  EXPECT_GE(second->conflicts, 1) << "the existing row went unnoticed";
  expectTenantEqual(*e, "after the conflict and the retry");
  EXPECT_EQ(scalar(e->dst, "SELECT v FROM churn WHERE tenant_id = 42 AND id = 7"), "source 7");
}

// Batches are committed without waiting for the destination's answer. When a COMMIT fails (here:
// a deferred constraint trigger that exists only at the destination), the batches sent after it
// must not commit either, or the origin would move past changes that were never applied.
TEST(ApplierFailure, ACommitThatFailsStopsEveryLaterBatch) {
  auto e = setUp();
  execOrDie(e->dst, R"SQL(
CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.v = 'boom' THEN RAISE EXCEPTION 'boom at commit'; END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER boom AFTER INSERT OR UPDATE ON churn DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION boom();
ALTER TABLE churn ENABLE ALWAYS TRIGGER boom;
)SQL");
  execOrDie(e->src, "INSERT INTO churn VALUES (42, 1, 'fine')");
  execOrDie(e->src, "INSERT INTO churn VALUES (42, 2, 'boom')");
  for (int i = 3; i <= 200; ++i) {
    execOrDie(e->src, "INSERT INTO churn VALUES (42, " + std::to_string(i) + ", 'after')");
  }
  mover::ApplierOptions ao;
  ao.dest_dsn = destCluster().dsn(e->db);
  ao.source_dsn = sourceCluster().dsn(e->db);
  ao.origin_name = e->name;
  ao.tenant = "42";
  ao.max_batch_changes = 1;  // one source transaction per batch: many commits in flight
  auto applier = mover::PgApplier::open(ao);
  ASSERT_TRUE(applier.isOk()) << applier.status().message();
  cdc::PgoutputSourceOptions so;
  so.dsn = sourceCluster().dsn(e->db);
  so.slot = e->name;
  so.publication = e->name;
  auto source = cdc::PgoutputSource::start(so);
  ASSERT_TRUE(source.isOk()) << source.status().message();
  Status st;
  for (int idle = 0; st.isOk() && idle < 50;) {
    auto ev = (*source)->next(std::chrono::milliseconds(20));
    ASSERT_TRUE(ev.isOk()) << ev.status().message();
    if (*ev) {
      st = (*applier)->apply(**ev);
    } else {
      st = (*applier)->commitPending();
      idle++;
    }
  }
  ASSERT_FALSE(st.isOk()) << "the failing commit went unnoticed";
  EXPECT_NE(st.message().find("boom at commit"), std::string::npos) << st.message();
  EXPECT_FALSE((*applier)->commitPending().isOk()) << "a failed applier stays failed";
  EXPECT_EQ(scalar(e->dst, "SELECT string_agg(id::text, ',' ORDER BY id) FROM churn"), "1");
}

// Statements carried by every apply transaction (a queued move's owner check): while they pass they
// commit with the rows; once one fails (another worker took the move) nothing of that
// transaction lands, and the origin does not move either.
Status streamInto(Env& e, const mover::TxnStatementsFn& stmts, uint32_t max_batch_changes) {
  mover::ApplierOptions ao;
  ao.dest_dsn = destCluster().dsn(e.db);
  ao.source_dsn = sourceCluster().dsn(e.db);
  ao.origin_name = e.name;
  ao.tenant = "42";
  ao.max_batch_changes = max_batch_changes;
  ao.commit_statements = stmts;
  SM_ASSIGN_OR_RETURN(auto applier, mover::PgApplier::open(ao));
  cdc::PgoutputSourceOptions so;
  so.dsn = sourceCluster().dsn(e.db);
  so.slot = e.name;
  so.publication = e.name;
  SM_ASSIGN_OR_RETURN(Lsn from, applier->durableLsn());
  so.start = from;
  SM_ASSIGN_OR_RETURN(auto source, cdc::PgoutputSource::start(so));
  Status st;
  for (int idle = 0; st.isOk() && idle < 40;) {
    SM_ASSIGN_OR_RETURN(auto ev, source->next(std::chrono::milliseconds(20)));
    if (ev) {
      st = applier->apply(*ev);
    } else {
      st = applier->commitPending();
      idle++;
    }
  }
  return st;
}

TEST(ApplierCommitStatements, RideEveryBatchAndAFailingOneRollsItBack) {
  auto e = setUp();
  execOrDie(e->dst, R"SQL(
CREATE TABLE owner_row (epoch bigint NOT NULL, commits bigint NOT NULL DEFAULT 0);
INSERT INTO owner_row VALUES (1);
CREATE FUNCTION check_owner(e bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  UPDATE owner_row SET commits = commits + 1 WHERE epoch = e;
  IF NOT FOUND THEN RAISE EXCEPTION 'move owned by another epoch' USING ERRCODE = '55P05'; END IF;
END $$;
)SQL");
  for (int i = 1; i <= 30; ++i) {
    execOrDie(e->src, "INSERT INTO churn VALUES (42, " + std::to_string(i) + ", 'first')");
  }
  mover::TxnStatementsFn ours = [] {
    return std::vector<mover::TxnStatement>{{"SELECT check_owner($1::bigint)", {stampmover::common::PgParam("1")}}};
  };
  Status st = streamInto(*e, ours, 10);
  ASSERT_TRUE(st.isOk()) << st.message();
  EXPECT_EQ(scalar(e->dst, "SELECT count(*) FROM churn WHERE tenant_id = 42"), "30");
  EXPECT_NE(scalar(e->dst, "SELECT commits FROM owner_row"), "0")
      << "the statements were not sent inside the apply transactions";
  std::string origin_before = scalar(
      e->dst, "SELECT remote_lsn::text FROM pg_replication_origin_status s JOIN "
              "pg_replication_origin o ON o.roident = s.local_id WHERE o.roname = '" + e->name + "'");

  execOrDie(e->dst, "UPDATE owner_row SET epoch = 2");  // another worker took the move
  for (int i = 31; i <= 40; ++i) {
    execOrDie(e->src, "INSERT INTO churn VALUES (42, " + std::to_string(i) + ", 'stale')");
  }
  st = streamInto(*e, ours, 10);
  ASSERT_FALSE(st.isOk()) << "a stale owner's batch committed";
  EXPECT_EQ(st.sqlState(), "55P05") << st.message();
  EXPECT_EQ(scalar(e->dst, "SELECT count(*) FROM churn WHERE tenant_id = 42"), "30");
  EXPECT_EQ(scalar(e->dst, "SELECT remote_lsn::text FROM pg_replication_origin_status s JOIN "
                           "pg_replication_origin o ON o.roident = s.local_id WHERE o.roname = '" +
                               e->name + "'"),
            origin_before);
}

INSTANTIATE_TEST_SUITE_P(GroupRows, ApplierTest, ::testing::Values(1000u, 3u, 1u),
                         [](const ::testing::TestParamInfo<uint32_t>& i) {
                           return i.param == 1 ? std::string("RowByRow")
                                               : "Groups" + std::to_string(i.param);
                         });

}  // namespace

// `UPDATE ... SET tenant_id = 42` on another tenant's row reaches the slot (through the row
// filter) as an INSERT whose unchanged out-of-line values are markers, not values: the applier
// must read the row from the source, not write NULL there.
TEST_P(ApplierTest, ARowMovedIntoTheTenantKeepsItsToastedValues) {
  auto e = setUp();
  execOrDie(e->src, std::string("INSERT INTO documents VALUES (1, 'moving', 'title', ") + kBig +
                        ", '{\"m\": 1}', now()), (1, 'moving2', 'title 2', " + kBig +
                        ", NULL, now()), (1, 'stays', 'other', " + kBig + ", NULL, now())");
  auto first = catchUp(*e, GetParam());
  ASSERT_TRUE(first.isOk()) << first.status().message();
  execOrDie(e->src, "UPDATE documents SET tenant_id = 42 WHERE tenant_id = 1 AND doc_key = 'moving'");
  execOrDie(e->src, "BEGIN; UPDATE documents SET tenant_id = 42, title = 'renamed' WHERE "
                    "tenant_id = 1 AND doc_key = 'moving2'; UPDATE documents SET title = 'again' "
                    "WHERE tenant_id = 42 AND doc_key = 'moving2'; COMMIT");
  auto second = catchUp(*e, GetParam());
  ASSERT_TRUE(second.isOk()) << second.status().message();
  EXPECT_EQ(scalar(e->dst, "SELECT count(*) FROM documents WHERE tenant_id = 42 AND body IS NULL"),
            "0")
      << "a moved row lost its TOASTed body";
  EXPECT_EQ(scalar(e->dst, "SELECT count(*) FROM documents WHERE tenant_id = 42"), "2");
  expectTenantEqual(*e, "after rows moved into the tenant");
}

// A table whose primary key lacks the tenant column: the destination holds key 5 for tenant 7
// (its own customer), and the source inserts key 5 for tenant 42. That is a data conflict that
// stops the stream naming the row; tenant 7's row stays as it was (today's retry with upserts
// overwrote it).
TEST(ApplierTenantScope, AKeyOfAnotherTenantIsAConflictNotAnOverwrite) {
  auto e = setUp();
  execOrDie(e->dst, "INSERT INTO shared_keys VALUES (5, 7, 'tenant 7 lives here'), (9, 7, 'nine')");
  execOrDie(e->src, "INSERT INTO shared_keys VALUES (6, 42, 'fine')");
  auto first = catchUp(*e, 1000);
  ASSERT_TRUE(first.isOk()) << first.status().message();
  // An update whose row the destination lacks is an upsert: the same collision.
  execOrDie(e->src, "INSERT INTO shared_keys VALUES (5, 42, 'mine'), (7, 42, 'also mine')");
  auto second = catchUp(*e, 1000);
  ASSERT_FALSE(second.isOk()) << "a key of another tenant was overwritten";
  EXPECT_EQ(second.status().errorClass(), stampmover::common::ErrorClass::kDataLoss)
      << second.status().message();
  EXPECT_NE(second.status().message().find("(5) of tenant 7"), std::string::npos)
      << second.status().message();
  EXPECT_EQ(scalar(e->dst, "SELECT tenant_id || ':' || v FROM shared_keys WHERE id = 5"),
            "7:tenant 7 lives here");
  EXPECT_EQ(scalar(e->dst, "SELECT tenant_id || ':' || v FROM shared_keys WHERE id = 9"), "7:nine");
  // Row by row as well (a delete of the tenant's own row never touches tenant 7's).
  execOrDie(e->src, "DELETE FROM shared_keys WHERE id = 5");
  execOrDie(e->dst, "DELETE FROM shared_keys WHERE id = 5");
  execOrDie(e->dst, "INSERT INTO shared_keys VALUES (5, 7, 'tenant 7 again')");
  auto third = catchUp(*e, 1);
  ASSERT_FALSE(third.isOk()) << scalar(e->dst, "SELECT string_agg(id || ':' || tenant_id || ':' || v, ' ') FROM shared_keys");
  EXPECT_EQ(third.status().errorClass(), stampmover::common::ErrorClass::kDataLoss)
      << third.status().message();
  EXPECT_EQ(scalar(e->dst, "SELECT tenant_id || ':' || v FROM shared_keys WHERE id = 5"),
            "7:tenant 7 again");
}

// A session that still holds the replication origin (the backend of a connection that has just
// been closed exits a moment later) delays open() instead of failing it; a session that keeps
// holding it is another applier, and open() names the origin.
TEST(ApplierOpen, WaitsForAClosingSessionToReleaseTheOriginButNotForever) {
  auto e = setUp();
  execOrDie(e->dst, "SELECT pg_replication_origin_create('" + e->name + "')");
  mover::ApplierOptions ao;
  ao.dest_dsn = destCluster().dsn(e->db);
  ao.source_dsn = sourceCluster().dsn(e->db);
  ao.origin_name = e->name;
  ao.tenant = "42";
  {
    auto holder = connectOrDie(destCluster().dsn(e->db));
    execOrDie(holder, "SELECT pg_replication_origin_session_setup('" + e->name + "')");
    std::thread release([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(700));
      execOrDie(holder, "SELECT pg_replication_origin_session_reset()");
    });
    auto applier = mover::PgApplier::open(ao);
    release.join();
    ASSERT_TRUE(applier.isOk()) << applier.status().message();
  }
  // The applier above has just disconnected: its backend may hold the origin a moment longer.
  auto holder = connectOrDie(destCluster().dsn(e->db));
  bool held = false;
  for (int i = 0; i < 100 && !held; ++i) {
    held = holder.exec("SELECT pg_replication_origin_session_setup('" + e->name + "')").isOk();
    if (!held) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(held);
  const auto t0 = std::chrono::steady_clock::now();
  auto second = mover::PgApplier::open(ao);
  ASSERT_FALSE(second.isOk()) << "two sessions applying one origin";
  EXPECT_NE(second.status().message().find(e->name), std::string::npos) << second.status().message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
}
