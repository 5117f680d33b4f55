// The change-sink seam: something that applies change events to a destination, batching
// source transactions into its own transactions, and tells which source position is durably
// applied. PgApplier is the PostgreSQL implementation.
#pragma once

#include "common/change.h"
#include "common/lsn.h"
#include "common/status.h"

namespace stampmover::mover {

class ChangeSink {
 public:
  virtual ~ChangeSink() = default;
  // Applies one event, in source order. May commit a batch when its limits are reached.
  // Errors: kRetryable (connection, deadlock: restart from durableLsn()), kRefused (schema
  // drift: the message names table and columns), kDataLoss (a row of another tenant).
  virtual common::Status apply(const common::ChangeEvent& event) = 0;
  // Commits the open batch now, if any complete source transaction is in it.
  virtual common::Status commitPending() = 0;
  // Source position (a commit's end LSN) whose changes are committed AND flushed at the
  // destination: the only position that may be checkpointed and acknowledged.
  virtual common::Result<common::Lsn> durableLsn() = 0;
  // Source position of the last committed batch (maybe not yet flushed).
  virtual common::Lsn committedLsn() const = 0;
  // True while a source transaction is open (between Begin and Commit).
  virtual bool inTransaction() const = 0;
};

}  // namespace stampmover::mover
