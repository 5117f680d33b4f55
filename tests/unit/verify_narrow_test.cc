// Row-level comparison rules without a server: parsing canonical rows into keyed images, the
// missing/extra/different classification with the differing columns, and live mode's window
// rule (settled when the destination equals a state the source had inside the window; a
// difference only when the source row stayed unchanged).
#include <gtest/gtest.h>

#include "verify/narrow.h"

using namespace stampmover::verify;

namespace {

PreparedTable table() {
  PreparedTable t;
  t.spec.schema = "public";
  t.spec.name = "accounts";
  for (const char* n : {"tenant_id", "account_id", "email", "name"}) {
    PreparedColumn c;
    c.name = n;
    c.quoted = std::string("\"") + n + "\"";
    c.cast_type = "text";
    t.columns.push_back(c);
  }
  t.tenant_position = 0;
  t.pk_positions = {0, 1};
  t.key_positions = {1};
  return t;
}

RowMap rows(std::initializer_list<std::pair<const char*, const char*>> lines,
            bool versions = false) {
  RowMap m;
  auto h = RowHasher::create("");
  for (const auto& [line, version] : lines) {
    std::string key;
    RowImage img;
    std::string l = line;
    if (versions) l += std::string("\t") + version;
    EXPECT_TRUE(parseRow(l + "\n", table(), versions, *h, &key, &img)) << line;
    m.emplace(key, img);
  }
  return m;
}

}  // namespace

TEST(VerifyNarrow, ParsesKeyDigestColumnsAndVersion) {
  auto h = RowHasher::create("");
  ASSERT_TRUE(h);
  std::string key;
  RowImage a, b;
  ASSERT_TRUE(parseRow("42\t7\t\\N\tAnn\t100/(0,1)\n", table(), true, *h, &key, &a));
  EXPECT_EQ(key, "42\t7");
  EXPECT_EQ(a.version, "100/(0,1)");
  ASSERT_TRUE(parseRow("42\t7\t\\N\tAnn\n", table(), false, *h, &key, &b));
  EXPECT_EQ(a.digest, b.digest) << "the version is not part of the row";
  EXPECT_EQ(a.column_hashes, b.column_hashes);
  EXPECT_FALSE(parseRow("42\t7\tonly three\n", table(), false, *h, &key, &b));
  EXPECT_EQ(keyValues("42\tdoc\\t1"), (std::vector<std::optional<std::string>>{"42", "doc\t1"}));
}

TEST(VerifyNarrow, ClassifiesMissingExtraAndDifferentColumns) {
  RowMap src = rows({{"42\t1\ta@x\tA", ""}, {"42\t2\t\\N\tB", ""}, {"42\t3\tc@x\tC", ""}});
  RowMap dst = rows({{"42\t2\t\tB", ""}, {"42\t3\tc@x\tC", ""}, {"42\t4\td@x\tD", ""}});
  auto d = compareRows(src, dst);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0].kind, DiffKind::kMissing);
  EXPECT_EQ(d[0].key, "42\t1");
  EXPECT_EQ(d[1].kind, DiffKind::kDifferent);  // NULL vs '' in email
  EXPECT_EQ(d[1].key, "42\t2");
  EXPECT_EQ(d[1].columns, std::vector<size_t>{2});
  EXPECT_EQ(d[2].kind, DiffKind::kExtra);
  EXPECT_EQ(d[2].key, "42\t4");
  EXPECT_TRUE(compareRows(src, src).empty());
}

TEST(VerifyNarrow, LiveWindowSettlesWhenTheDestinationShowsAnyStateOfTheWindow) {
  LiveWindow w;
  w.addSource(rows({{"42\t1\tv1\tA", "10/(0,1)"}}, true));
  w.addSource(rows({{"42\t1\tv2\tA", "11/(0,2)"}}, true));
  w.addSource(rows({{"42\t1\tv3\tA", "12/(0,3)"}}, true));
  RowMap dest = rows({{"42\t1\tv2\tA", ""}});  // the applier is between two source states
  EXPECT_TRUE(w.matches("42\t1", &dest.at("42\t1")));
  EXPECT_FALSE(w.sourceUnchanged("42\t1"));
  RowMap stale = rows({{"42\t1\tv0\tA", ""}});  // older than the window: a lost update
  EXPECT_FALSE(w.matches("42\t1", &stale.at("42\t1")));
}

TEST(VerifyNarrow, LiveWindowTellsDifferencesFromLag) {
  LiveWindow w;
  w.addSource(rows({{"42\t1\tsame\tA", "10/(0,1)"}}, true));
  w.addSource(rows({{"42\t1\tsame\tA", "10/(0,1)"}}, true));
  RowMap dest = rows({{"42\t1\ttampered\tA", ""}});
  EXPECT_FALSE(w.matches("42\t1", &dest.at("42\t1")));
  EXPECT_TRUE(w.sourceUnchanged("42\t1")) << "unchanged source row: the difference is real";
  // A row absent on the source in every read but present on the destination: extra.
  EXPECT_FALSE(w.matches("42\t9", &dest.at("42\t1")));
  EXPECT_TRUE(w.sourceUnchanged("42\t9"));
  // A row absent on both: nothing to report.
  EXPECT_TRUE(w.matches("42\t9", nullptr));
  // Deleted on the source inside the window, still on the destination: lag, not settled yet.
  LiveWindow del;
  del.addSource(rows({{"42\t1\tsame\tA", "10/(0,1)"}}, true));
  del.addSource(RowMap{});
  EXPECT_TRUE(del.matches("42\t1", &dest.at("42\t1")) == false);
  EXPECT_FALSE(del.sourceUnchanged("42\t1"));
  EXPECT_TRUE(del.matches("42\t1", nullptr)) << "the destination already applied the delete";
  std::unordered_set<std::string> keys;
  w.keys(&keys);
  EXPECT_EQ(keys.size(), 1u);
}
