// The migration ledger against a real RocksDB directory: entries encode and decode, a bad
// value is an error not a crash, intend() is durable and idempotent and commits atomically
// with the batch it is given, erase() forgets one entry, and a reopened store still holds them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "orchestrator/ledger.h"

using namespace stampmover;
using orch::LedgerEntry;
using orch::LedgerKind;
using orch::LedgerServer;

namespace {

TEST(LedgerEntry, EncodesAndDecodesEveryKind) {
  for (auto kind : {LedgerKind::kSlot, LedgerKind::kPublication, LedgerKind::kOrigin,
                    LedgerKind::kReverseSlot, LedgerKind::kReversePublication,
                    LedgerKind::kReverseOrigin, LedgerKind::kFenceRef, LedgerKind::kStagingTable,
                    LedgerKind::kRoutingEntry, LedgerKind::kControlPlaneRow}) {
    for (auto server : {LedgerServer::kSource, LedgerServer::kDestination,
                        LedgerServer::kControlPlane}) {
      LedgerEntry e{kind, server, "name/with \"odd\" chars"};
      auto back = orch::decodeLedgerEntry(orch::encodeLedgerEntry(e));
      ASSERT_TRUE(back) << back.status().message();
      EXPECT_EQ(*back, e);
    }
  }
  EXPECT_NE(orch::ledgerKey({LedgerKind::kSlot, LedgerServer::kSource, "x"}),
            orch::ledgerKey({LedgerKind::kSlot, LedgerServer::kDestination, "x"}));
}

TEST(LedgerEntry, MalformedValuesAreErrors) {
  for (const char* bad : {"", "{", "{\"kind\":\"slot\"}",
                          "{\"kind\":\"wormhole\",\"server\":\"source\",\"name\":\"x\"}",
                          "{\"kind\":\"slot\",\"server\":\"moon\",\"name\":\"x\"}"}) {
    auto r = orch::decodeLedgerEntry(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.status().errorClass(), common::ErrorClass::kInternal);
    }
  }
}

class LedgerStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() /
            ("stampmover-ledger-test-" + std::to_string(::getpid()) + "-" +
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

TEST_F(LedgerStoreTest, IntendEraseAndReopen) {
  const std::string id = mover::migrationId("42", "stamp/a", "stamp-b");
  {
    auto store = open();
    auto ledger = orch::Ledger::open(*store, id);
    ASSERT_TRUE(ledger) << ledger.status().message();
    mover::MigrationRecord rec;
    rec.id = id;
    rec.tenant = "42";
    rec.phase = "starting";
    mover::CheckpointBatch with;
    with.putMigration(rec);
    auto fwd = orch::forwardLedgerEntries("stampmover_42_abc");
    ASSERT_TRUE((*ledger)->intend(fwd, &with).isOk());
    ASSERT_TRUE((*ledger)->intend(fwd).isOk());  // idempotent
    auto loaded = store->loadMigration(id);
    ASSERT_TRUE(loaded && loaded->has_value()) << "the record rode in the same batch";
    auto all = (*ledger)->entries();
    ASSERT_TRUE(all);
    EXPECT_EQ(all->size(), 3u);
    ASSERT_TRUE((*ledger)->erase(fwd[1]).isOk());
    ASSERT_TRUE((*ledger)->erase(fwd[1]).isOk());  // idempotent
    EXPECT_FALSE((*ledger)->contains(fwd[1]));
    EXPECT_TRUE((*ledger)->contains(fwd[0]));
    // Another migration's ledger is apart.
    auto other = orch::Ledger::open(*store, id + "x");
    ASSERT_TRUE(other);
    auto none = (*other)->entries();
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->empty());
  }
  auto store = open();
  auto ledger = orch::Ledger::open(*store, id);
  ASSERT_TRUE(ledger);
  auto all = (*ledger)->entries();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u) << "survives reopening";
  mover::CheckpointBatch del;
  del.deleteMigration(id);
  ASSERT_TRUE(store->write(del).isOk());
  all = (*ledger)->entries();
  ASSERT_TRUE(all);
  EXPECT_TRUE(all->empty()) << "deleteMigration takes the ledger with it";
}

}  // namespace
