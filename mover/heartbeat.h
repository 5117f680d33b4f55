// A migration's heartbeat: a transactional logical message (pg_logical_emit_message) written on
// the stream's source. It proves catch-up (the applier committed everything before it), ends
// the cutover's drain, and measures the end-to-end lag. Logical messages reach EVERY slot of
// the database, so each stream has its own identity (migration, direction, and a nonce per
// worker run) and counts only its own heartbeats, matched by sequence number — never by the
// emission clock, which another migration's heartbeat would beat.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace stampmover::mover {

inline constexpr const char* kHeartbeatPrefix = "stampmover_heartbeat";

struct Heartbeat {
  std::string identity;    // no blanks
  uint64_t seq = 0;        // 1, 2, ... per identity, in emission order
  int64_t emitted_us = 0;  // µs since the PostgreSQL epoch, for the lag only
};

// "<identity> <seq> <emitted_us>"
std::string heartbeatContent(const Heartbeat& hb);
// nullopt for anything else (another format, a foreign message with our prefix).
std::optional<Heartbeat> parseHeartbeat(std::string_view content);

// A fresh identity for one stream of one migration in this process:
// "<migration_id>/<stream>/<16 hex digits of randomness>".
std::string newHeartbeatIdentity(const std::string& migration_id, const std::string& stream);

}  // namespace stampmover::mover
