// Replication stream over libpq CopyBoth: see pgoutput_source.h. Wire layout of the
// replication sub-protocol: XLogData 'w' (dataStart, walEnd, sendTime: int64 each, then the
// pgoutput message), primary keepalive 'k' (walEnd, sendTime, replyRequested byte), and our
// standby status update 'r' (write, flush, apply, clock: int64 each, reply byte).
#include "cdc/pgoutput_source.h"

#include <poll.h>

#include <chrono>
#include <cstring>

namespace stampmover::cdc {

using common::Lsn;
using common::Result;
using common::Status;

namespace {

constexpr int64_t kPgEpochOffsetUs = 946684800LL * 1000000LL;  // 1970 -> 2000

uint64_t readU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void writeU64(char* p, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    p[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

}  // namespace

int64_t pgEpochMicrosNow() {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count();
  return us - kPgEpochOffsetUs;
}

Result<std::unique_ptr<PgoutputSource>> PgoutputSource::start(const PgoutputSourceOptions& o) {
  std::unique_ptr<PgoutputSource> s(new PgoutputSource(o));
  // The walsender prints every value pgoutput sends with this session's settings, so the
  // pinned ones (common/session_settings.h, which connect() sends by default) matter most here.
  SM_ASSIGN_OR_RETURN(s->conn_, common::PgConnection::connect(o.dsn, o.label + " (replication)",
                                                              {{"replication", "database"}},
                                                              common::SessionSettings::kPinned));
  SM_ASSIGN_OR_RETURN(std::string pub, s->conn_.escapeLiteral(o.publication));
  std::string sql = "START_REPLICATION SLOT " + common::quoteIdent(o.slot) + " LOGICAL " +
                    o.start.toString() + " (proto_version '1', publication_names " + pub +
                    ", messages 'true')";
  common::PgResult res{PQexec(s->conn_.raw(), sql.c_str())};
  if (PQresultStatus(res.get()) != PGRES_COPY_BOTH) {
    Status st = s->conn_.errorFrom(res.get(), "START_REPLICATION on slot " + o.slot);
    // 42704 undefined_object: the slot does not exist; 55006 object_in_use: the slot is active
    // for another pid. The SQLSTATE stays on the status for the caller to tell them apart.
    if (st.sqlState() == "42704" || st.sqlState() == "55006") {
      return st.withClass(common::ErrorClass::kRefused);
    }
    return st;
  }
  s->acknowledged_ = o.start;
  s->last_status_ = std::chrono::steady_clock::now();
  return s;
}

Status PgoutputSource::sendStatus(bool reply_requested) {
  char msg[1 + 8 * 4 + 1];
  msg[0] = 'r';
  uint64_t write_pos = std::max(received_, acknowledged_).value();
  writeU64(msg + 1, write_pos);
  writeU64(msg + 9, acknowledged_.value());   // flush: only what is durable downstream
  writeU64(msg + 17, acknowledged_.value());  // apply
  writeU64(msg + 25, static_cast<uint64_t>(pgEpochMicrosNow()));
  msg[33] = reply_requested ? 1 : 0;
  if (PQputCopyData(conn_.raw(), msg, sizeof msg) != 1 || PQflush(conn_.raw()) != 0) {
    return Status::retryable(options_.label + ": sending standby status: " +
                             std::string(PQerrorMessage(conn_.raw())));
  }
  last_status_ = std::chrono::steady_clock::now();
  return Status::ok();
}

Status PgoutputSource::acknowledge(Lsn flushed) {
  if (flushed <= acknowledged_) return Status::ok();
  acknowledged_ = flushed;
  return sendStatus(false);
}

Result<std::optional<common::ChangeEvent>> PgoutputSource::next(std::chrono::milliseconds timeout) {
  std::optional<std::chrono::steady_clock::time_point> deadline;
  for (;;) {
    // While messages flow the clock is read every 256 of them (status updates are due every few
    // seconds, and a clock read per message cost ~3% of the client's CPU), and whenever nothing
    // is buffered.
    if (++since_clock_ >= 256) {
      since_clock_ = 0;
      if (std::chrono::steady_clock::now() - last_status_ >= options_.status_interval) {
        SM_RETURN_IF_ERROR(sendStatus(false));
      }
    }
    char* buf = nullptr;
    int n = PQgetCopyData(conn_.raw(), &buf, 1);
    if (n == 0) {
      since_clock_ = 0;
      auto now = std::chrono::steady_clock::now();
      if (received_any_ || last_receive_ == std::chrono::steady_clock::time_point{}) {
        received_any_ = false;
        last_receive_ = now;
        asked_reply_ = false;
      }
      // A half-open connection (peer gone without a FIN) looks idle until the kernel gives up,
      // hours later: the server sends a keepalive at least every wal_sender_timeout / 2, so a
      // silence past the deadline is a lost connection. Half-way, ask for a reply.
      const auto silent = now - last_receive_;
      if (options_.receive_timeout.count() > 0) {
        if (silent >= options_.receive_timeout) {
          return Status::retryable(
              options_.label + ": no message on the replication connection for " +
              std::to_string(std::chrono::duration_cast<std::chrono::seconds>(silent).count()) +
              " s (connection lost without notice?)");
        }
        if (!asked_reply_ && silent >= options_.receive_timeout / 2) {
          asked_reply_ = true;
          SM_RETURN_IF_ERROR(sendStatus(true));
        }
      }
      if (now - last_status_ >= options_.status_interval) SM_RETURN_IF_ERROR(sendStatus(false));
      if (!deadline) deadline = now + timeout;
      if (now >= *deadline) return std::optional<common::ChangeEvent>();
      auto wait = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - now),
                           options_.status_interval);
      pollfd pfd{PQsocket(conn_.raw()), POLLIN, 0};
      int pr = poll(&pfd, 1, static_cast<int>(std::max<int64_t>(wait.count(), 1)));
      if (pr < 0 && errno != EINTR) {
        return Status::retryable(options_.label + ": poll: " + std::strerror(errno));
      }
      if (PQconsumeInput(conn_.raw()) == 0) {
        return Status::retryable(options_.label + ": replication connection lost: " +
                                 std::string(PQerrorMessage(conn_.raw())));
      }
      continue;
    }
    if (n == -1) {
      // The server ended the COPY: read why (slot dropped, shutdown, ...).
      common::PgResult res{PQgetResult(conn_.raw())};
      if (res && PQresultStatus(res.get()) == PGRES_COMMAND_OK) {
        return Status::retryable(options_.label +
                                 ": the server ended the replication stream (shutting down or "
                                 "restarting?)");
      }
      Status st = conn_.errorFrom(res.get(), "replication stream ended");
      // 42704: the slot was dropped under us; anything else (shutdown, lost connection) is
      // retried. The SQLSTATE is kept for the caller.
      if (st.sqlState() == "42704") return st.withClass(common::ErrorClass::kRefused);
      return st.withClass(common::ErrorClass::kRetryable);
    }
    if (n < 0) {
      return Status::retryable(options_.label + ": replication connection lost: " +
                               std::string(PQerrorMessage(conn_.raw())));
    }
    std::unique_ptr<char, decltype(&PQfreemem)> holder(buf, PQfreemem);
    received_any_ = true;
    const size_t len = static_cast<size_t>(n);
    if (buf[0] == 'k') {
      if (len < 18) return Status::internal(options_.label + ": short keepalive message");
      Lsn end(readU64(buf + 1));
      if (end > server_wal_end_) server_wal_end_ = end;
      if (end > keepalive_end_) keepalive_end_ = end;
      if (buf[17] != 0) SM_RETURN_IF_ERROR(sendStatus(false));
      continue;
    }
    if (buf[0] == 'w') {
      if (len < 25) return Status::internal(options_.label + ": short XLogData message");
      Lsn start(readU64(buf + 1));
      Lsn end(readU64(buf + 9));
      if (end > server_wal_end_) server_wal_end_ = end;
      if (start > received_) received_ = start;
      auto ev = decoder_.decode(std::string_view(buf + 25, len - 25), start);
      if (!ev) return ev.status().withContext(options_.label + " at " + start.toString());
      if (!ev->has_value()) continue;
      return std::move(*ev);
    }
    return Status::internal(options_.label + ": unknown replication message type " +
                            std::to_string(static_cast<unsigned char>(buf[0])));
  }
}

}  // namespace stampmover::cdc
