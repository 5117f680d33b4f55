// Lsn parsing and printing: the server's "X/Y" text form, and refusal of malformed input.
#include "common/lsn.h"

#include <gtest/gtest.h>

using stampmover::common::Lsn;

TEST(Lsn, ParsesAndPrintsServerForm) {
  auto l = Lsn::parse("16/B374D848");
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->value(), (uint64_t{0x16} << 32) | 0xB374D848u);
  EXPECT_EQ(l->toString(), "16/B374D848");
  EXPECT_EQ(Lsn::parse("0/0")->value(), 0u);
}

TEST(Lsn, RejectsMalformedInput) {
  for (const char* bad : {"", "/", "1/", "/1", "x/1", "1/x", "1/2/3", "123", "1 /2", "100000000/0"}) {
    EXPECT_FALSE(Lsn::parse(bad).has_value()) << bad;
  }
}

TEST(Lsn, Orders) {
  EXPECT_LT(*Lsn::parse("0/FFFFFFFF"), *Lsn::parse("1/0"));
  EXPECT_EQ(*Lsn::parse("A/1"), *Lsn::parse("a/1"));
}
