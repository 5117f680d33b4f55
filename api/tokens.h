// API bearer tokens: a file of `<token> <role>` lines (roles `read` and `operate`; `#` starts a
// comment), checked in constant time. Tokens are secrets: they never reach a log or an error
// message (errors name the file and the line number only).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace stampmover::api {

enum class Role { kRead, kOperate };
const char* roleName(Role r);  // "read", "operate"

// Immutable after load(): safe to share between threads.
class TokenStore {
 public:
  // Reads `path`. Errors: kRefused when the file cannot be read, a line is not `token role`,
  // a role is unknown, a token is shorter than 16 characters, a token repeats, or the file
  // holds no token (each naming the file and line).
  static common::Result<TokenStore> load(const std::string& path);
  // From memory (tests); same rules as load().
  static common::Result<TokenStore> fromText(const std::string& text, const std::string& origin);

  // The role of `token`, or nullopt. Compares against every stored token with CRYPTO_memcmp on
  // SHA-256 digests, so neither the time taken nor an early exit tells how much of a guess
  // matched, or which entry.
  std::optional<Role> authenticate(const std::string& token) const;
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string digest;  // SHA-256 of the token, 32 bytes
    Role role;
  };
  std::vector<Entry> entries_;
};

}  // namespace stampmover::api
