// Decoder of PostgreSQL's pgoutput logical replication protocol, version 1: turns the payload
// of one XLogData message into a ChangeEvent, keeping the Relation cache that later messages
// refer to. Every length and count read from the wire is checked: malformed input is an
// error, never a crash or an out-of-bounds read.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "common/change.h"
#include "common/status.h"

namespace stampmover::cdc {

// Not thread-safe: one decoder per replication stream.
class PgoutputDecoder {
 public:
  // Decodes one pgoutput message. `wal_start` is the XLogData's dataStart, copied into the
  // event. Returns nullopt for messages that carry nothing for the applier (e.g. Type).
  // Errors: kInternal naming the message type and what was wrong (truncated, unknown kind,
  // change for a relation never described).
  common::Result<std::optional<common::ChangeEvent>> decode(std::string_view message,
                                                            common::Lsn wal_start);

  // The relation last described for `id`, or null.
  std::shared_ptr<const common::Relation> relation(uint32_t id) const;

 private:
  std::unordered_map<uint32_t, std::shared_ptr<const common::Relation>> relations_;
};

}  // namespace stampmover::cdc
