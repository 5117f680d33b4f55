// Heartbeat identity and content: see heartbeat.h.
#include "mover/heartbeat.h"

#include <charconv>
#include <cstdio>
#include <random>

namespace stampmover::mover {

std::string heartbeatContent(const Heartbeat& hb) {
  return hb.identity + " " + std::to_string(hb.seq) + " " + std::to_string(hb.emitted_us);
}

std::optional<Heartbeat> parseHeartbeat(std::string_view content) {
  const size_t a = content.find(' ');
  if (a == std::string_view::npos || a == 0) return std::nullopt;
  const size_t b = content.find(' ', a + 1);
  if (b == std::string_view::npos) return std::nullopt;
  Heartbeat hb;
  hb.identity = std::string(content.substr(0, a));
  const char* p = content.data();
  auto r1 = std::from_chars(p + a + 1, p + b, hb.seq);
  if (r1.ec != std::errc() || r1.ptr != p + b) return std::nullopt;
  auto r2 = std::from_chars(p + b + 1, p + content.size(), hb.emitted_us);
  if (r2.ec != std::errc() || r2.ptr != p + content.size()) return std::nullopt;
  return hb;
}

std::string newHeartbeatIdentity(const std::string& migration_id, const std::string& stream) {
  std::random_device rd;
  const uint64_t nonce = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(nonce));
  std::string id = migration_id + "/" + stream + "/" + hex;
  for (char& c : id) {
    if (c == ' ') c = '_';
  }
  return id;
}

}  // namespace stampmover::mover
