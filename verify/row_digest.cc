// Salted SHA-256 row digests and their multiset sum: see row_digest.h.
#include "verify/row_digest.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cinttypes>
#include <cstdio>

namespace stampmover::verify {

using common::Result;
using common::Status;

void RowHasher::Free::operator()(evp_md_st* p) const noexcept { EVP_MD_free(p); }
void RowHasher::Free::operator()(evp_md_ctx_st* p) const noexcept { EVP_MD_CTX_free(p); }

Result<RowHasher> RowHasher::create(std::string_view salt) {
  RowHasher h;
  h.md_.reset(EVP_MD_fetch(nullptr, "SHA256", nullptr));
  h.salted_.reset(EVP_MD_CTX_new());
  h.work_.reset(EVP_MD_CTX_new());
  if (!h.md_ || !h.salted_ || !h.work_ ||
      EVP_DigestInit_ex(h.salted_.get(), h.md_.get(), nullptr) != 1 ||
      EVP_DigestUpdate(h.salted_.get(), salt.data(), salt.size()) != 1) {
    return Status::internal("OpenSSL: SHA-256 is not available");
  }
  return h;
}

bool RowHasher::digest(std::string_view row, Digest* out) {
  unsigned int len = 0;
  return EVP_MD_CTX_copy_ex(work_.get(), salted_.get()) == 1 &&
         EVP_DigestUpdate(work_.get(), row.data(), row.size()) == 1 &&
         EVP_DigestFinal_ex(work_.get(), out->data(), &len) == 1 && len == out->size();
}

Result<Digest> sha256(std::string_view data) {
  SM_ASSIGN_OR_RETURN(RowHasher h, RowHasher::create(""));
  Digest d{};
  if (!h.digest(data, &d)) return Status::internal("OpenSSL: SHA-256 failed");
  return d;
}

namespace {

// sum += v (256-bit little-endian limbs), carrying across limbs.
void add256(std::array<uint64_t, 4>& sum, const std::array<uint64_t, 4>& v) {
  uint64_t carry = 0;
  for (size_t limb = 0; limb < 4; ++limb) {
    uint64_t a = sum[limb];
    uint64_t s = a + v[limb];
    uint64_t c1 = s < a ? 1 : 0;
    uint64_t s2 = s + carry;
    uint64_t c2 = s2 < s ? 1 : 0;
    sum[limb] = s2;
    carry = c1 + c2;
  }
}

}  // namespace

void MultisetDigest::add(const Digest& d) {
  // The digest as a big-endian 256-bit integer, in little-endian limbs.
  std::array<uint64_t, 4> v{};
  for (size_t limb = 0; limb < 4; ++limb) {
    uint64_t x = 0;
    for (size_t b = 0; b < 8; ++b) x = (x << 8) | d[24 - limb * 8 + b];
    v[limb] = x;
  }
  add256(sum, v);
  ++rows;
}

void MultisetDigest::merge(const MultisetDigest& o) {
  add256(sum, o.sum);
  rows += o.rows;
}

std::string MultisetDigest::toString() const {
  char buf[96];
  std::snprintf(buf, sizeof buf,
                "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 ":%" PRIu64, sum[3], sum[2],
                sum[1], sum[0], rows);
  return buf;
}

std::optional<MultisetDigest> MultisetDigest::parse(std::string_view text) {
  if (text.size() < 66 || text[64] != ':') return std::nullopt;
  MultisetDigest m;
  for (size_t limb = 0; limb < 4; ++limb) {
    uint64_t v = 0;
    for (size_t i = 0; i < 16; ++i) {
      char c = text[(3 - limb) * 16 + i];
      int h = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
      if (h < 0) return std::nullopt;
      v = (v << 4) | static_cast<uint64_t>(h);
    }
    m.sum[limb] = v;
  }
  uint64_t rows = 0;
  for (size_t i = 65; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return std::nullopt;
    rows = rows * 10 + static_cast<uint64_t>(text[i] - '0');
  }
  m.rows = rows;
  return m;
}

std::string toHex(std::string_view bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

Result<std::string> randomSalt() {
  unsigned char buf[32];
  if (RAND_bytes(buf, sizeof buf) != 1) return Status::internal("OpenSSL: RAND_bytes failed");
  return toHex(std::string_view(reinterpret_cast<const char*>(buf), sizeof buf));
}

}  // namespace stampmover::verify
