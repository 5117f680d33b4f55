// Bearer tokens from a file, compared in constant time (see tokens.h).
#include "api/tokens.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <fstream>
#include <set>
#include <sstream>

namespace stampmover::api {

namespace {
std::string sha256(const std::string& s) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), md);
  return std::string(reinterpret_cast<const char*>(md), sizeof md);
}
}  // namespace

const char* roleName(Role r) { return r == Role::kOperate ? "operate" : "read"; }

common::Result<TokenStore> TokenStore::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return common::Status::refused("tokens file " + path +
                                   ": cannot be read (create it with one `<token> <role>` line "
                                   "per client; roles read, operate)");
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return fromText(ss.str(), path);
}

common::Result<TokenStore> TokenStore::fromText(const std::string& text, const std::string& origin) {
  TokenStore store;
  std::set<std::string> seen;
  std::istringstream lines(text);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    ++n;
    auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream fields(line);
    std::string token, role, extra;
    if (!(fields >> token)) continue;  // blank or comment line
    const std::string where = origin + " line " + std::to_string(n);
    if (!(fields >> role) || (fields >> extra)) {
      return common::Status::refused(where + ": expected `<token> <role>` (role read or operate)");
    }
    Role r;
    if (role == "read") {
      r = Role::kRead;
    } else if (role == "operate") {
      r = Role::kOperate;
    } else {
      return common::Status::refused(where + ": unknown role '" + role + "' (read or operate)");
    }
    if (token.size() < 16) {
      return common::Status::refused(where + ": token shorter than 16 characters (use e.g. "
                                             "`openssl rand -hex 32`)");
    }
    std::string digest = sha256(token);
    if (!seen.insert(digest).second) {
      return common::Status::refused(where + ": token repeats an earlier line");
    }
    store.entries_.push_back({std::move(digest), r});
  }
  if (store.entries_.empty()) {
    return common::Status::refused(origin + ": no token (one `<token> <role>` line per client)");
  }
  return store;
}

std::optional<Role> TokenStore::authenticate(const std::string& token) const {
  const std::string digest = sha256(token);
  std::optional<Role> found;
  // No early exit: every entry is compared, whatever matched.
  for (const auto& e : entries_) {
    if (CRYPTO_memcmp(e.digest.data(), digest.data(), digest.size()) == 0) found = e.role;
  }
  return found;
}

}  // namespace stampmover::api
