// Decoded row changes: the only type cdc/ (which produces them) and mover/ (which applies
// them) share. A change stream is a sequence of events — Relation, Begin, Change..., Commit,
// Message — in source commit order; a transaction's changes are streamed, never held whole,
// so memory does not grow with transaction size.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/lsn.h"

namespace stampmover::common {

// One column of a relation as the source describes it (pgoutput Relation message).
struct RelationColumn {
  std::string name;
  uint32_t type_oid = 0;
  int32_t type_modifier = -1;
  bool part_of_key = false;  // part of the replica identity
};

struct Relation {
  uint32_t id = 0;  // source relation OID
  std::string schema;
  std::string name;
  char replica_identity = 'd';  // d, n, f, i
  std::vector<RelationColumn> columns;
  std::string key() const { return schema + "." + name; }
};

// One column value in a tuple.
struct Datum {
  enum class Kind : uint8_t { kNull, kUnchangedToast, kText };
  Kind kind = Kind::kNull;
  std::string text;  // the value's text form when kind == kText
  static Datum null() { return Datum{}; }
  static Datum unchangedToast() { return Datum{Kind::kUnchangedToast, {}}; }
  static Datum value(std::string v) { return Datum{Kind::kText, std::move(v)}; }
  bool operator==(const Datum&) const = default;
};

using Tuple = std::vector<Datum>;

enum class ChangeOp : uint8_t { kInsert, kUpdate, kDelete, kTruncate };

struct Change {
  ChangeOp op = ChangeOp::kInsert;
  std::shared_ptr<const Relation> relation;  // insert/update/delete
  Tuple new_tuple;                           // insert, update
  std::optional<Tuple> old_tuple;            // update (when the key changed or identity FULL), delete
  bool old_is_full = false;                  // old_tuple holds every column ('O'), not only the key ('K')
  std::vector<std::shared_ptr<const Relation>> truncated;  // truncate
  bool truncate_cascade = false;
  bool truncate_restart_identity = false;
};

struct TransactionInfo {
  uint32_t xid = 0;
  Lsn final_lsn;         // Begin: LSN of the commit record
  Lsn commit_lsn;        // Commit: LSN of the commit record
  Lsn end_lsn;           // Commit: end of the commit record; the position to resume after
  int64_t commit_time_us = 0;  // microseconds since 2000-01-01 (PostgreSQL epoch)
  std::string origin;    // replication origin name when the change came from a replica apply
};

// A logical decoding message (pg_logical_emit_message), e.g. our heartbeat.
struct LogicalMessage {
  bool transactional = false;
  Lsn lsn;
  std::string prefix;
  std::string content;
};

struct ChangeEvent {
  enum class Kind : uint8_t { kBegin, kChange, kCommit, kRelation, kMessage, kOrigin, kType };
  Kind kind = Kind::kBegin;
  TransactionInfo txn;                        // kBegin, kCommit (kOrigin: txn.origin)
  Change change;                              // kChange
  std::shared_ptr<const Relation> relation;   // kRelation
  LogicalMessage message;                     // kMessage
  Lsn wal_start;                              // position of the carrying XLogData (0 if none)
};

}  // namespace stampmover::common
