// The RocksDB checkpoint store against a real RocksDB directory: typed records round-trip,
// batches are atomic, a migration's records are deleted together, state survives reopening,
// and a second process on the same directory is refused with a clear message.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <unistd.h>

#include <filesystem>

#include "mover/checkpoint_store.h"

using namespace stampmover;
using mover::CheckpointBatch;

namespace {

class CheckpointStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() /
            ("stampmover-ckpt-test-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<mover::CheckpointStore> open() {
    auto s = mover::openRocksDbCheckpointStore({dir_, true});
    EXPECT_TRUE(s) << s.status().message();
    return s ? std::move(*s) : nullptr;
  }
  std::string dir_;
};

mover::MigrationRecord record(const std::string& tenant) {
  mover::MigrationRecord r;
  r.id = mover::migrationId(tenant, "stamp/a", "stamp-b");
  r.tenant = tenant;
  r.source = "stamp/a";
  r.destination = "stamp-b";
  r.phase = "copying";
  r.slot_name = "slot";
  r.publication_name = "pub";
  r.consistent_point = common::Lsn(0x1234);
  r.plan = {{"public.orders", 0, 0, 100}, {"public.orders", 1, 100, 0}, {"public.a", 0, 0, 0}};
  r.created_unix_ms = 1;
  r.updated_unix_ms = 2;
  r.tenant_types = {"bigint", "integer"};
  r.source_identity = {"7301234567890123456", 16384};
  r.destination_identity = {"7309876543210987654", 16390};
  return r;
}

}  // namespace

TEST_F(CheckpointStoreTest, RecordsRoundTripAndSurviveReopen) {
  auto rec = record("42");
  {
    auto store = open();
    CheckpointBatch b;
    b.putMigration(rec);
    b.putChunkDone(rec.id, {"public.orders", 1, 10, 100});
    b.putChunkDone(rec.id, {"public.orders", 0, 5, 50});
    b.putStreamPosition(rec.id, {"forward", common::Lsn(77), 0, "slot"});
    ASSERT_TRUE(store->write(b).isOk());
  }
  auto store = open();
  auto loaded = store->loadMigration(rec.id);
  ASSERT_TRUE(loaded);
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ(**loaded, rec);
  auto chunks = store->loadChunksDone(rec.id);
  ASSERT_TRUE(chunks);
  ASSERT_EQ(chunks->size(), 2u);
  EXPECT_EQ((*chunks)[0], (mover::ChunkDone{"public.orders", 0, 5, 50}));  // ordered by index
  auto pos = store->loadStreamPosition(rec.id, "forward");
  ASSERT_TRUE(pos);
  ASSERT_TRUE(pos->has_value());
  EXPECT_EQ((*pos)->lsn, common::Lsn(77));
  auto none = store->loadStreamPosition(rec.id, "reverse");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
}

TEST_F(CheckpointStoreTest, DeleteMigrationRemovesOnlyItsRecords) {
  auto store = open();
  auto a = record("4");
  auto b = record("42");  // id shares a prefix with a's: must survive a's deletion
  CheckpointBatch w;
  w.putMigration(a);
  w.putMigration(b);
  w.putChunkDone(a.id, {"public.orders", 0, 1, 1});
  w.putChunkDone(b.id, {"public.orders", 0, 2, 2});
  ASSERT_TRUE(store->write(w).isOk());
  CheckpointBatch d;
  d.deleteMigration(a.id);
  ASSERT_TRUE(store->write(d).isOk());
  EXPECT_FALSE(store->loadMigration(a.id)->has_value());
  EXPECT_TRUE(store->loadChunksDone(a.id)->empty());
  EXPECT_TRUE(store->loadMigration(b.id)->has_value());
  EXPECT_EQ(store->loadChunksDone(b.id)->size(), 1u);
  EXPECT_EQ(store->listMigrations()->size(), 1u);
}

TEST_F(CheckpointStoreTest, SecondOpenOfSameDirectoryIsRefused) {
  auto first = open();
  auto second = mover::openRocksDbCheckpointStore({dir_, true});
  ASSERT_FALSE(second);
  EXPECT_EQ(second.status().errorClass(), common::ErrorClass::kRefused);
  EXPECT_NE(second.status().message().find(dir_), std::string::npos);
}

TEST_F(CheckpointStoreTest, MissingDirectoryWithoutCreateIsRefused) {
  auto s = mover::openRocksDbCheckpointStore({dir_ + "/absent", false});
  ASSERT_FALSE(s);
  EXPECT_NE(s.status().message().find("absent"), std::string::npos);
}

// A record written before stamp identities and tenant column types were kept loads with both
// unknown (the copy job then adopts the current identities), not as an error.
TEST_F(CheckpointStoreTest, RecordWithoutIdentityLoadsAsUnknown) {
  {
    rocksdb::Options opts;
    opts.create_if_missing = true;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(opts, dir_, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    const std::string v0_2 =
        R"({"id":"42@a->b","tenant":"42","source":"a","destination":"b","phase":"copied",)"
        R"("slot":"s","publication":"p","consistent_point":5,"upsert_through":0,"plan":[],)"
        R"("created":1,"updated":2})";
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), "m/42@a->b", v0_2).ok());
  }
  auto store = open();
  auto loaded = store->loadMigration("42@a->b");
  ASSERT_TRUE(loaded) << loaded.status().message();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_FALSE((*loaded)->source_identity.known());
  EXPECT_FALSE((*loaded)->destination_identity.known());
  EXPECT_TRUE((*loaded)->tenant_types.empty());
  EXPECT_EQ((*loaded)->phase, "copied");
}

TEST_F(CheckpointStoreTest, MigrationIdOfATenantKeyIsThatOfItsCanonicalText) {
  EXPECT_EQ(mover::migrationId(common::TenantKey::fromStored("42"), "a", "b"),
            mover::migrationId("42", "a", "b"));
}
