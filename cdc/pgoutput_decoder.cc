// pgoutput protocol version 1 decoder: see pgoutput_decoder.h. Every read goes through a
// bounds-checked cursor, so a truncated or corrupted message becomes a kInternal Status naming
// the message kind and the field, never an out-of-bounds read or an oversized allocation.
#include "cdc/pgoutput_decoder.h"

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace stampmover::cdc {

using common::ChangeEvent;
using common::ChangeOp;
using common::Datum;
using common::Lsn;
using common::Relation;
using common::RelationColumn;
using common::Result;
using common::Status;
using common::Tuple;

namespace {

// Truncate option bits (pgoutput's TRUNCATE_CASCADE / TRUNCATE_RESTART_SEQS).
constexpr uint8_t kTruncateCascade = 1;
constexpr uint8_t kTruncateRestartIdentity = 2;
// Relation column flag: the column is part of the replica identity.
constexpr uint8_t kColumnFlagKey = 1;
// Message flag: the logical decoding message is transactional.
constexpr uint8_t kMessageFlagTransactional = 1;

// A forward-only, bounds-checked cursor over one message. Errors name the message kind (set
// once per message) and the field being read, with the offset, so a bad capture is locatable.
class Cursor {
 public:
  Cursor(std::string_view data, const char* kind) : data_(data), kind_(kind) {}

  size_t remaining() const { return data_.size() - pos_; }

  Status error(const std::string& what) const {
    return Status::internal(std::string("pgoutput ") + kind_ + " message: " + what + " (offset " +
                            std::to_string(pos_) + " of " + std::to_string(data_.size()) + ")");
  }

  Status u8(uint8_t* out, const char* field) {
    SM_RETURN_IF_ERROR(need(1, field));
    *out = static_cast<uint8_t>(data_[pos_]);
    pos_ += 1;
    return Status::ok();
  }
  Status i16(int16_t* out, const char* field) {
    uint64_t v = 0;
    SM_RETURN_IF_ERROR(bigEndian(2, field, &v));
    *out = static_cast<int16_t>(static_cast<uint16_t>(v));
    return Status::ok();
  }
  Status u32(uint32_t* out, const char* field) {
    uint64_t v = 0;
    SM_RETURN_IF_ERROR(bigEndian(4, field, &v));
    *out = static_cast<uint32_t>(v);
    return Status::ok();
  }
  Status i32(int32_t* out, const char* field) {
    uint32_t v = 0;
    SM_RETURN_IF_ERROR(u32(&v, field));
    *out = static_cast<int32_t>(v);
    return Status::ok();
  }
  Status u64(uint64_t* out, const char* field) { return bigEndian(8, field, out); }
  Status i64(int64_t* out, const char* field) {
    uint64_t v = 0;
    SM_RETURN_IF_ERROR(bigEndian(8, field, &v));
    *out = static_cast<int64_t>(v);
    return Status::ok();
  }
  Status lsn(Lsn* out, const char* field) {
    uint64_t v = 0;
    SM_RETURN_IF_ERROR(u64(&v, field));
    *out = Lsn(v);
    return Status::ok();
  }

  // A NUL-terminated string; the terminator must lie inside the message.
  Status cstring(std::string* out, const char* field) {
    size_t nul = data_.find('\0', pos_);
    if (nul == std::string_view::npos) {
      return error(std::string("truncated reading ") + field + " (no NUL terminator)");
    }
    out->assign(data_.substr(pos_, nul - pos_));
    pos_ = nul + 1;
    return Status::ok();
  }

  // An Int32 length (which must be >= 0 and fit in what is left) followed by that many bytes.
  Status lengthPrefixed(std::string* out, const char* field) {
    int32_t len = 0;
    SM_RETURN_IF_ERROR(i32(&len, field));
    if (len < 0)
      return error(std::string("negative length ") + std::to_string(len) + " of " + field);
    SM_RETURN_IF_ERROR(need(static_cast<size_t>(len), field));
    out->assign(data_.substr(pos_, static_cast<size_t>(len)));
    pos_ += static_cast<size_t>(len);
    return Status::ok();
  }

  // A complete message must be consumed exactly: anything after it means we misread it.
  Status finish() const {
    if (remaining() != 0) {
      return error(std::to_string(remaining()) + " trailing bytes after a complete message");
    }
    return Status::ok();
  }

 private:
  Status need(size_t n, const char* field) const {
    if (remaining() < n) {
      return error(std::string("truncated reading ") + field + " (need " + std::to_string(n) +
                   " bytes, have " + std::to_string(remaining()) + ")");
    }
    return Status::ok();
  }
  Status bigEndian(size_t n, const char* field, uint64_t* out) {
    SM_RETURN_IF_ERROR(need(n, field));
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(data_[pos_ + i]);
    pos_ += n;
    *out = v;
    return Status::ok();
  }

  std::string_view data_;
  const char* kind_;
  size_t pos_ = 0;
};

// Printable form of a type byte for error messages: 'X' (0x58).
std::string describeByte(uint8_t b) {
  char buf[16];
  if (b >= 0x20 && b < 0x7f) {
    std::snprintf(buf, sizeof buf, "'%c' (0x%02X)", static_cast<char>(b), b);
  } else {
    std::snprintf(buf, sizeof buf, "0x%02X", b);
  }
  return buf;
}

// TupleData: Int16 column count (must equal the relation's), then one kind byte per column.
Status readTuple(Cursor& in, const Relation& rel, Tuple* out) {
  int16_t ncols = 0;
  SM_RETURN_IF_ERROR(in.i16(&ncols, "tuple column count"));
  if (ncols < 0 || static_cast<size_t>(ncols) != rel.columns.size()) {
    return in.error("tuple has " + std::to_string(ncols) + " columns but relation " + rel.key() +
                    " (id " + std::to_string(rel.id) + ") has " +
                    std::to_string(rel.columns.size()));
  }
  out->clear();
  out->reserve(static_cast<size_t>(ncols));
  for (int16_t i = 0; i < ncols; ++i) {
    uint8_t kind = 0;
    SM_RETURN_IF_ERROR(in.u8(&kind, "tuple column kind"));
    switch (kind) {
      case 'n':
        out->push_back(Datum::null());
        break;
      case 'u':
        out->push_back(Datum::unchangedToast());
        break;
      case 't':
      case 'b': {  // binary is never requested; if it comes, its bytes are kept as they are
        std::string value;
        SM_RETURN_IF_ERROR(in.lengthPrefixed(&value, "tuple column value"));
        out->push_back(Datum::value(std::move(value)));
        break;
      }
      default:
        return in.error("unknown tuple column kind " + describeByte(kind) + " in column " +
                        std::to_string(i) + " of " + rel.key());
    }
  }
  return Status::ok();
}

}  // namespace

std::shared_ptr<const Relation> PgoutputDecoder::relation(uint32_t id) const {
  auto it = relations_.find(id);
  return it == relations_.end() ? nullptr : it->second;
}

Result<std::optional<ChangeEvent>> PgoutputDecoder::decode(std::string_view message,
                                                           Lsn wal_start) {
  if (message.empty()) return Status::internal("pgoutput message: empty message");
  const uint8_t type = static_cast<uint8_t>(message[0]);
  ChangeEvent ev;
  ev.wal_start = wal_start;

  // Looks up the relation a change refers to; a change for a relation never described means
  // the stream was entered mid-way or the decoder lost its cache: never guess the columns.
  auto lookup = [this](Cursor& in, std::shared_ptr<const Relation>* rel) -> Status {
    uint32_t id = 0;
    SM_RETURN_IF_ERROR(in.u32(&id, "relation id"));
    *rel = relation(id);
    if (!*rel) return in.error("unknown relation id " + std::to_string(id));
    return Status::ok();
  };

  switch (type) {
    case 'B': {
      Cursor in(message.substr(1), "Begin");
      ev.kind = ChangeEvent::Kind::kBegin;
      SM_RETURN_IF_ERROR(in.lsn(&ev.txn.final_lsn, "final LSN"));
      SM_RETURN_IF_ERROR(in.i64(&ev.txn.commit_time_us, "commit timestamp"));
      SM_RETURN_IF_ERROR(in.u32(&ev.txn.xid, "xid"));
      SM_RETURN_IF_ERROR(in.finish());
      return std::optional<ChangeEvent>(std::move(ev));
    }
    case 'C': {
      Cursor in(message.substr(1), "Commit");
      ev.kind = ChangeEvent::Kind::kCommit;
      uint8_t flags = 0;  // unused in protocol 1
      SM_RETURN_IF_ERROR(in.u8(&flags, "flags"));
      SM_RETURN_IF_ERROR(in.lsn(&ev.txn.commit_lsn, "commit LSN"));
      SM_RETURN_IF_ERROR(in.lsn(&ev.txn.end_lsn, "end LSN"));
      SM_RETURN_IF_ERROR(in.i64(&ev.txn.commit_time_us, "commit timestamp"));
      SM_RETURN_IF_ERROR(in.finish());
      return std::optional<ChangeEvent>(std::move(ev));
    }
    case 'O': {
      Cursor in(message.substr(1), "Origin");
      ev.kind = ChangeEvent::Kind::kOrigin;
      // The commit LSN on the origin server is read (to validate the layout) but not kept:
      // TransactionInfo has no field for it and the reverse stream filters by name only.
      Lsn origin_lsn;
      SM_RETURN_IF_ERROR(in.lsn(&origin_lsn, "origin commit LSN"));
      SM_RETURN_IF_ERROR(in.cstring(&ev.txn.origin, "origin name"));
      SM_RETURN_IF_ERROR(in.finish());
      return std::optional<ChangeEvent>(std::move(ev));
    }
    case 'R': {
      Cursor in(message.substr(1), "Relation");
      auto rel = std::make_shared<Relation>();
      SM_RETURN_IF_ERROR(in.u32(&rel->id, "relation id"));
      SM_RETURN_IF_ERROR(in.cstring(&rel->schema, "namespace"));
      SM_RETURN_IF_ERROR(in.cstring(&rel->name, "relation name"));
      uint8_t identity = 0;
      SM_RETURN_IF_ERROR(in.u8(&identity, "replica identity"));
      if (identity != 'd' && identity != 'n' && identity != 'f' && identity != 'i') {
        return in.error("unknown replica identity " + describeByte(identity));
      }
      rel->replica_identity = static_cast<char>(identity);
      int16_t ncols = 0;
      SM_RETURN_IF_ERROR(in.i16(&ncols, "column count"));
      if (ncols < 0) return in.error("negative column count " + std::to_string(ncols));
      rel->columns.reserve(static_cast<size_t>(ncols));
      for (int16_t i = 0; i < ncols; ++i) {
        RelationColumn col;
        uint8_t flags = 0;
        SM_RETURN_IF_ERROR(in.u8(&flags, "column flags"));
        col.part_of_key = (flags & kColumnFlagKey) != 0;
        SM_RETURN_IF_ERROR(in.cstring(&col.name, "column name"));
        SM_RETURN_IF_ERROR(in.u32(&col.type_oid, "column type OID"));
        SM_RETURN_IF_ERROR(in.i32(&col.type_modifier, "column type modifier"));
        rel->columns.push_back(std::move(col));
      }
      SM_RETURN_IF_ERROR(in.finish());
      // Replace, never mutate: changes already decoded keep the description they were read with.
      std::shared_ptr<const Relation> frozen = std::move(rel);
      relations_[frozen->id] = frozen;
      ev.kind = ChangeEvent::Kind::kRelation;
      ev.relation = std::move(frozen);
      return std::optional<ChangeEvent>(std::move(ev));
    }
    case 'Y': {
      // Type descriptions are only needed for binary transfer, which we never request; the
      // message is still fully decoded so that a malformed one is noticed.
      Cursor in(message.substr(1), "Type");
      uint32_t oid = 0;
      std::string ns;
      std::string name;
      SM_RETURN_IF_ERROR(in.u32(&oid, "type OID"));
      SM_RETURN_IF_ERROR(in.cstring(&ns, "namespace"));
      SM_RETURN_IF_ERROR(in.cstring(&name, "type name"));
      SM_RETURN_IF_ERROR(in.finish());
      return std::optional<ChangeEvent>();
    }
    case 'I': {
      Cursor in(message.substr(1), "Insert");
      ev.kind = ChangeEvent::Kind::kChange;
      ev.change.op = ChangeOp::kInsert;
      SM_RETURN_IF_ERROR(lookup(in, &ev.change.relation));
      uint8_t marker = 0;
      SM_RETURN_IF_ERROR(in.u8(&marker, "new tuple marker"));
      if (marker != 'N')
        return in.error("expected 'N' before the new tuple, got " + describeByte(marker));
      SM_RETURN_IF_ERROR(readTuple(in, *ev.change.relation, &ev.change.new_tuple));
      SM_RETURN_IF_ERROR(in.finish());
      return std::optional<ChangeEvent>(std::move(ev));
    }
    case 'U': {
      Cursor in(message.substr(1), "Update");
      ev.kind = ChangeEvent::Kind::kChange;
      ev.change.op = ChangeOp::kUpdate;
      SM_RETURN_IF_ERROR(lookup(in, &ev.change.relation));
      uint8_t marker = 0;
      SM_RETURN_IF_ERROR(in.u8(&marker, "tuple marker"));
      if (marker == 'K' || marker == 'O') {
        Tuple old;
        SM_RETURN_IF_ERROR(readTuple(in, *ev.change.relation, &old));
        ev.change.old_tuple = std::move(old);
        ev.change.old_is_full = marker == 'O';
        SM_RETURN_IF_ERROR(in.u8(&marker, "new tuple marker"));
      }
      if (marker != 'N') {
        return in.error("expected 'K', 'O' or 'N' tuple marker, got " + describeByte(marker));
      }
      SM_RETURN_IF_ERROR(readTuple(in, *ev.change.relation, &ev.change.new_tuple));
      SM_RETURN_IF_ERROR(in.finish());
      return std::optional<ChangeEvent>(std::move(ev));
    }
    case 'D': {
      Cursor in(message.substr(1), "Delete");
      ev.kind = ChangeEvent::Kind::kChange;
      ev.change.op = ChangeOp::kDelete;
      SM_RETURN_IF_ERROR(lookup(in, &ev.change.relation));
      uint8_t marker = 0;
      SM_RETURN_IF_ERROR(in.u8(&marker, "old tuple marker"));
      if (marker != 'K' && marker != 'O') {
        return in.error("expected 'K' or 'O' tuple marker, got " + describeByte(marker));
      }
      Tuple old;
      SM_RETURN_IF_ERROR(readTuple(in, *ev.change.relation, &old));
      ev.change.old_tuple = std::move(old);
      ev.change.old_is_full = marker == 'O';
      SM_RETURN_IF_ERROR(in.finish());
      return std::optional<ChangeEvent>(std::move(ev));
    }
    case 'T': {
      Cursor in(message.substr(1), "Truncate");
      ev.kind = ChangeEvent::Kind::kChange;
      ev.change.op = ChangeOp::kTruncate;
      int32_t nrels = 0;
      SM_RETURN_IF_ERROR(in.i32(&nrels, "relation count"));
      uint8_t options = 0;
      SM_RETURN_IF_ERROR(in.u8(&options, "options"));
      // Checked before reserving, so a corrupt count cannot ask for gigabytes.
      if (nrels < 0 || static_cast<size_t>(nrels) > in.remaining() / 4) {
        return in.error("relation count " + std::to_string(nrels) + " does not fit in " +
                        std::to_string(in.remaining()) + " remaining bytes");
      }
      ev.change.truncate_cascade = (options & kTruncateCascade) != 0;
      ev.change.truncate_restart_identity = (options & kTruncateRestartIdentity) != 0;
      ev.change.truncated.reserve(static_cast<size_t>(nrels));
      for (int32_t i = 0; i < nrels; ++i) {
        std::shared_ptr<const Relation> rel;
        SM_RETURN_IF_ERROR(lookup(in, &rel));
        ev.change.truncated.push_back(std::move(rel));
      }
      SM_RETURN_IF_ERROR(in.finish());
      return std::optional<ChangeEvent>(std::move(ev));
    }
    case 'M': {
      Cursor in(message.substr(1), "Message");
      ev.kind = ChangeEvent::Kind::kMessage;
      uint8_t flags = 0;
      SM_RETURN_IF_ERROR(in.u8(&flags, "flags"));
      ev.message.transactional = (flags & kMessageFlagTransactional) != 0;
      SM_RETURN_IF_ERROR(in.lsn(&ev.message.lsn, "LSN"));
      SM_RETURN_IF_ERROR(in.cstring(&ev.message.prefix, "prefix"));
      SM_RETURN_IF_ERROR(in.lengthPrefixed(&ev.message.content, "content"));
      SM_RETURN_IF_ERROR(in.finish());
      return std::optional<ChangeEvent>(std::move(ev));
    }
    default:
      return Status::internal("pgoutput message: unknown message type " + describeByte(type) +
                              " (protocol version 1 decoder)");
  }
}

}  // namespace stampmover::cdc
