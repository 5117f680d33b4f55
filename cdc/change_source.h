// The change-source seam: something that yields decoded change events in source commit order
// (PgoutputSource over a replication connection; KafkaDebeziumSource later) and accepts
// acknowledgements of positions that are durably applied downstream.
#pragma once

#include <chrono>
#include <optional>

#include "common/change.h"
#include "common/lsn.h"
#include "common/status.h"

namespace stampmover::cdc {

class ChangeSource {
 public:
  virtual ~ChangeSource() = default;
  // Returns the next event, or nullopt when none arrived within `timeout` (the source keeps
  // itself alive meanwhile: keepalives are answered inside). Errors: kRetryable when the
  // connection is lost (reconnecting is the caller's decision), kRefused when the slot or
  // publication is gone, kInternal on malformed wire data.
  virtual common::Result<std::optional<common::ChangeEvent>> next(
      std::chrono::milliseconds timeout) = 0;
  // Reports that every change up to and including `flushed` is durable at the destination;
  // the source may then release WAL before it. Never call with a position not yet durable.
  virtual common::Status acknowledge(common::Lsn flushed) = 0;
};

}  // namespace stampmover::cdc
