// PgoutputSource: a ChangeSource over a libpq replication connection. Starts logical
// replication from a slot at a position, decodes pgoutput v1, answers keepalive requests and
// sends standby status updates that carry only positions the caller acknowledged as durable.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "cdc/change_source.h"
#include "cdc/pgoutput_decoder.h"
#include "common/pg.h"

namespace stampmover::cdc {

struct PgoutputSourceOptions {
  std::string dsn;                 // Default: none (required); holds a secret, never logged
  std::string label = "source";    // Default: "source" (names the server in errors)
  std::string slot;                // Default: none (required)
  std::string publication;         // Default: none (required)
  common::Lsn start;               // Default: 0 = the slot's confirmed position
  std::chrono::milliseconds status_interval{5000};  // Default: 5 s between status updates
  // No message at all from the server for this long (not even a keepalive, which it sends
  // every wal_sender_timeout / 2 and on request) ends the stream as retryable. 0 = never.
  std::chrono::milliseconds receive_timeout{90'000};  // Default: 90 s
};

// Not thread-safe: one thread drives next() and acknowledge().
class PgoutputSource final : public ChangeSource {
 public:
  // Connects (session settings pinned: the walsender prints values with them) and issues
  // START_REPLICATION. Errors: kRetryable (unreachable), kRefused (slot missing: sqlState()
  // "42704"; slot in use by another process: "55006"; publication missing).
  static common::Result<std::unique_ptr<PgoutputSource>> start(const PgoutputSourceOptions& options);

  common::Result<std::optional<common::ChangeEvent>> next(std::chrono::milliseconds timeout) override;
  common::Status acknowledge(common::Lsn flushed) override;

  // Highest WAL position the server reported sending (XLogData/keepalive walEnd).
  common::Lsn serverWalEnd() const { return server_wal_end_; }
  // Highest position received in XLogData.
  common::Lsn received() const { return received_; }
  // Highest walEnd of a primary keepalive: every transaction committed before it was sent.
  // Acknowledging it is only safe when everything received is durably applied and no
  // transaction is open (this is what PostgreSQL's own subscriber does when idle; without it a
  // source shutdown waits forever for a confirmation past trailing non-commit WAL).
  common::Lsn keepaliveWalEnd() const { return keepalive_end_; }

 private:
  explicit PgoutputSource(PgoutputSourceOptions options) : options_(std::move(options)) {}
  common::Status sendStatus(bool reply_requested);

  PgoutputSourceOptions options_;
  common::PgConnection conn_;
  PgoutputDecoder decoder_;
  common::Lsn server_wal_end_;
  common::Lsn received_;
  common::Lsn acknowledged_;
  common::Lsn keepalive_end_;
  std::chrono::steady_clock::time_point last_status_{};
  uint32_t since_clock_ = 0;  // messages handled since the clock was last read
  bool received_any_ = false;  // a message arrived since last_receive_ was set
  bool asked_reply_ = false;   // a reply was requested during the current silence
  std::chrono::steady_clock::time_point last_receive_{};
};

// PostgreSQL epoch (2000-01-01) microseconds for now.
int64_t pgEpochMicrosNow();

}  // namespace stampmover::cdc
