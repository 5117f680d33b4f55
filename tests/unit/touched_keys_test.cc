// The applier's touched-key tracking, alone: each key once, whole-table marks, the cap, and
// handing keys over and back (as across reconnects and re-checks).
#include "mover/touched_keys.h"

#include <gtest/gtest.h>

namespace mover = stampmover::mover;
using stampmover::common::PgParam;

TEST(TouchedKeys, EachKeyOnceAndNoCollisionsBetweenValueLists) {
  mover::TouchedKeyTracker t(true, 100);
  t.touch("public.a", {PgParam("1"), PgParam("23")});
  t.touch("public.a", {PgParam("12"), PgParam("3")});
  t.touch("public.a", {PgParam("1"), PgParam("23")});
  t.touch("public.a", {PgParam("1"), PgParam()});
  EXPECT_EQ(t.keys().count, 3u);
  EXPECT_EQ(t.keys().keys.at("public.a").size(), 3u);
}

TEST(TouchedKeys, DisabledRecordsOnlyWholeTables) {
  mover::TouchedKeyTracker t(false, 100);
  t.touch("public.a", {PgParam("1")});
  t.touchTable("public.b");
  EXPECT_EQ(t.keys().count, 0u);
  EXPECT_TRUE(t.keys().whole_table.at("public.b"));
}

TEST(TouchedKeys, OverflowKeepsOnlyTheFlag) {
  mover::TouchedKeyTracker t(true, 2);
  for (int i = 0; i < 3; ++i) t.touch("public.a", {PgParam(std::to_string(i))});
  EXPECT_TRUE(t.keys().overflowed);
  EXPECT_EQ(t.keys().count, 0u);
  t.touch("public.a", {PgParam("9")});
  EXPECT_EQ(t.keys().count, 0u);
}

TEST(TouchedKeys, TakeAndRestoreMerge) {
  mover::TouchedKeyTracker t(true, 10);
  t.touch("public.a", {PgParam("1")});
  t.touchTable("public.c");
  mover::TouchedKeys taken = t.take();
  EXPECT_EQ(t.keys().count, 0u);
  EXPECT_TRUE(t.keys().whole_table.empty());
  t.touch("public.a", {PgParam("1")});
  t.touch("public.a", {PgParam("2")});
  t.restore(std::move(taken));
  EXPECT_EQ(t.keys().count, 2u);
  EXPECT_TRUE(t.keys().whole_table.at("public.c"));
  mover::TouchedKeys overflowing;
  overflowing.overflowed = true;
  t.restore(std::move(overflowing));
  EXPECT_TRUE(t.keys().overflowed);
}
