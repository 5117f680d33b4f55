// Row and chunk digests: a salted SHA-256 of each canonical row (OpenSSL EVP), summed modulo
// 2^256 into an order-independent multiset digest per chunk, so that the rows of a chunk can be
// read in whatever physical order each server stores them and in parallel pieces.
//
// Why SHA-256: it is collision resistant (an accidental or crafted difference cannot hide behind
// an equal digest) and, on CPUs with the SHA extensions (this one has sha_ni), it is the fastest
// digest OpenSSL offers per row, collision resistant or not. Measured on this 2-core machine,
// 1M rows of 100-150 bytes, one EVP_MD_CTX reused (a timing loop kept in git history until
// 27a7831, tests/unit/verify_digest_test.cc; timings belong in bench/, not in unit tests):
//   per row:   SHA-256 207 ns, SHA-1 310 ns, BLAKE2b-512 331 ns, BLAKE2s-256 382 ns, MD5 414 ns,
//              SHA-512 522 ns, SHA3-256 602 ns;
//   streaming: SHA-1 1156 MB/s, SHA-256 719 MB/s, BLAKE2b 677 MB/s, MD5 375 MB/s.
// MD5 and SHA-1 are broken for collisions and slower per row anyway; xxhash-class hashes are not
// in EVP and not collision resistant. At ~0.2 us a row, hashing 3M rows on each side costs the
// client ~1.2 s of CPU, split over the worker threads.
//
// Why client-side hashing: the alternative is to have each server hash its rows and send only
// digests. Measured server CPU for 1M rows of the demo's events table (COPY to /dev/null, same
// session, run twice): printing the canonical rows 1.14-1.16 s; printing and hashing them on
// the server with sha256(convert_to(ROW(...)::text, 'UTF8')) 3.4-4.1 s, with md5(ROW(...)::text)
// 2.8-3.3 s. A whole-tenant pass (1 query per server at a time) took 8.3 s with client-side
// hashing vs 29.8 s with per-chunk md5(string_agg(md5(t::text) ORDER BY pk)) on the servers.
// The servers are the bottleneck (they also serve the tenants), so they only print rows and
// the client hashes them; the price is moving the rows (~100 MB per 1M rows) instead of 32
// bytes a row.
//
// Why a salted sum: the sum of digests is the MSet-Add-Hash construction. Sums of unkeyed
// digests could be attacked with generalized-birthday (Wagner) searches by someone who can
// write many chosen rows; a random per-verify salt mixed into every row hash means nobody can
// precompute row digests, which defeats that. The row count is compared beside the sum.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

// OpenSSL's EVP types, forward-declared so that OpenSSL stays a private dependency.
struct evp_md_st;
struct evp_md_ctx_st;

namespace stampmover::verify {

using Digest = std::array<uint8_t, 32>;

// Computes salted SHA-256 digests. Not thread-safe: one hasher per thread.
class RowHasher {
 public:
  // Errors: kInternal when OpenSSL cannot provide SHA-256 (a broken installation).
  static common::Result<RowHasher> create(std::string_view salt);

  // Digest of salt || row. Returns false only if OpenSSL fails mid-way (out of memory).
  bool digest(std::string_view row, Digest* out);

 private:
  struct Free {
    void operator()(evp_md_st* p) const noexcept;
    void operator()(evp_md_ctx_st* p) const noexcept;
  };
  std::unique_ptr<evp_md_st, Free> md_;
  using MdCtx = std::unique_ptr<evp_md_ctx_st, Free>;
  MdCtx salted_;  // state after absorbing the salt; copied for every row
  MdCtx work_;
};

// Unsalted SHA-256 of `data` (for row identity in narrowing and for unit tests). Errors:
// kInternal when OpenSSL fails.
common::Result<Digest> sha256(std::string_view data);

// The order-independent digest of a multiset of rows: the sum of their digests mod 2^256 and
// their count. Not thread-safe; merge() partial digests from different threads under a lock.
struct MultisetDigest {
  std::array<uint64_t, 4> sum{};  // little-endian limbs of a 256-bit integer
  uint64_t rows = 0;

  void add(const Digest& d);
  void merge(const MultisetDigest& other);
  bool operator==(const MultisetDigest&) const = default;
  // 64 hex digits of the sum, then ':' and the row count ("00ab...ff:1234").
  std::string toString() const;
  static std::optional<MultisetDigest> parse(std::string_view text);
};

// Lower-case hex of bytes.
std::string toHex(std::string_view bytes);
// 32 random bytes from OpenSSL's CSPRNG, hex encoded. Errors: kInternal.
common::Result<std::string> randomSalt();

}  // namespace stampmover::verify
