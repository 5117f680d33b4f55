// Row digests and the order-independent chunk digest without a server: SHA-256 through EVP,
// salting, the 256-bit modular sum (order independence, carries, merge) and its text form.
#include <gtest/gtest.h>

#include "verify/row_digest.h"

using namespace stampmover::verify;

namespace {
Digest digestOf(RowHasher& h, std::string_view row) {
  Digest d{};
  EXPECT_TRUE(h.digest(row, &d));
  return d;
}
}  // namespace

TEST(VerifyDigest, Sha256MatchesTheStandardVector) {
  auto d = sha256("abc");
  ASSERT_TRUE(d);
  EXPECT_EQ(toHex(std::string_view(reinterpret_cast<const char*>(d->data()), d->size())),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(VerifyDigest, SaltIsPrefixedAndChangesEveryDigest) {
  auto salted = RowHasher::create("salt");
  ASSERT_TRUE(salted);
  auto plain = sha256("saltrow");
  ASSERT_TRUE(plain);
  EXPECT_EQ(digestOf(*salted, "row"), *plain);
  auto other = RowHasher::create("pepper");
  ASSERT_TRUE(other);
  EXPECT_NE(digestOf(*salted, "row"), digestOf(*other, "row"));
  EXPECT_EQ(digestOf(*salted, "row"), digestOf(*salted, "row"));  // the context is reusable
}

TEST(VerifyDigest, NullEmptyAndNullTextRowsDigestDifferently) {
  auto h = RowHasher::create("s");
  ASSERT_TRUE(h);
  // The canonical COPY rows of (42, NULL), (42, '') and (42, 'null').
  Digest a = digestOf(*h, "42\t\\N"), b = digestOf(*h, "42\t"), c = digestOf(*h, "42\tnull");
  EXPECT_NE(a, b);
  EXPECT_NE(b, c);
  EXPECT_NE(a, c);
}

TEST(VerifyDigest, MultisetSumIgnoresOrderButNotContent) {
  auto h = RowHasher::create("s");
  ASSERT_TRUE(h);
  MultisetDigest x, y, z;
  for (const char* r : {"1\ta", "2\tb", "3\tc"}) x.add(digestOf(*h, r));
  for (const char* r : {"3\tc", "1\ta", "2\tb"}) y.add(digestOf(*h, r));
  for (const char* r : {"1\ta", "2\tb", "3\td"}) z.add(digestOf(*h, r));
  EXPECT_EQ(x, y);
  EXPECT_FALSE(x == z);
  EXPECT_EQ(x.rows, 3u);
  MultisetDigest twice;  // a duplicated row is not the same multiset as a single one
  twice.add(digestOf(*h, "1\ta"));
  twice.add(digestOf(*h, "1\ta"));
  MultisetDigest once;
  once.add(digestOf(*h, "1\ta"));
  EXPECT_FALSE(twice == once);
}

TEST(VerifyDigest, CarriesPropagateAndWrapModulo2To256) {
  Digest ones;
  ones.fill(0xff);
  Digest one{};
  one[31] = 1;
  MultisetDigest m;
  m.add(ones);
  m.add(one);  // 2^256 - 1 + 1 = 0 (mod 2^256)
  EXPECT_EQ(m.sum, (std::array<uint64_t, 4>{0, 0, 0, 0}));
  EXPECT_EQ(m.rows, 2u);
  Digest low{};
  low[31] = 0xff;
  MultisetDigest c;
  c.add(low);
  c.add(low);
  EXPECT_EQ(c.sum[0], 0x1feu);
  Digest limb{};
  for (size_t i = 24; i < 32; ++i) limb[i] = 0xff;  // 2^64 - 1 in the lowest limb
  MultisetDigest carry;
  carry.add(limb);
  carry.add(one);
  EXPECT_EQ(carry.sum[0], 0u);
  EXPECT_EQ(carry.sum[1], 1u);
}

TEST(VerifyDigest, MergeEqualsAddingEverything) {
  auto h = RowHasher::create("s");
  ASSERT_TRUE(h);
  MultisetDigest all, a, b;
  for (int i = 0; i < 100; ++i) {
    Digest d = digestOf(*h, "row " + std::to_string(i));
    all.add(d);
    (i % 3 ? a : b).add(d);
  }
  a.merge(b);
  EXPECT_EQ(a, all);
}

TEST(VerifyDigest, TextFormRoundTripsAndRejectsGarbage) {
  auto h = RowHasher::create("s");
  ASSERT_TRUE(h);
  MultisetDigest m;
  m.add(digestOf(*h, "x"));
  m.add(digestOf(*h, "y"));
  auto text = m.toString();
  EXPECT_EQ(text.size(), 66u);
  auto back = MultisetDigest::parse(text);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, m);
  EXPECT_FALSE(MultisetDigest::parse("xyz"));
  EXPECT_FALSE(MultisetDigest::parse(std::string(64, 'g') + ":1"));
  EXPECT_FALSE(MultisetDigest::parse(std::string(64, '0') + ":1x"));
}

TEST(VerifyDigest, RandomSaltsDiffer) {
  auto a = randomSalt(), b = randomSalt();
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  EXPECT_EQ(a->size(), 64u);
  EXPECT_NE(*a, *b);
}
