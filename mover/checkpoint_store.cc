// RocksDB-backed CheckpointStore: records are JSON values under typed key prefixes
// ("m/<id>", "c/<id>/<table>/<index>", "s/<id>/<stream>", "n/<id>/<name>", "l/<id>/<key>"); every batch is written with
// WriteOptions::sync so an acknowledged write survives kill -9 and power loss.
#include "mover/checkpoint_store.h"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <cstdio>
#include <nlohmann/json.hpp>

namespace stampmover::mover {

using common::Result;
using common::Status;
using nlohmann::json;

namespace {

// Escapes '/' and '%' so ids and table names cannot collide across key components.
std::string keyPart(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '/' || c == '%') {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

// Inverse of keyPart().
std::string unKeyPart(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string migrationKey(const std::string& id) { return "m/" + keyPart(id); }
std::string chunkPrefix(const std::string& id) { return "c/" + keyPart(id) + "/"; }
std::string streamPrefix(const std::string& id) { return "s/" + keyPart(id) + "/"; }
std::string notePrefix(const std::string& id) { return "n/" + keyPart(id) + "/"; }
std::string ledgerPrefix(const std::string& id) { return "l/" + keyPart(id) + "/"; }

json toJson(const MigrationRecord& r) {
  json plan = json::array();
  for (const auto& c : r.plan) {
    plan.push_back({{"table", c.table}, {"index", c.index}, {"start", c.start_block},
                    {"end", c.end_block}});
  }
  json j = {{"id", r.id}, {"tenant", r.tenant}, {"source", r.source},
            {"destination", r.destination}, {"phase", r.phase}, {"slot", r.slot_name},
            {"publication", r.publication_name}, {"consistent_point", r.consistent_point.value()},
            {"upsert_through", r.upsert_through.value()}, {"plan", plan},
            {"created", r.created_unix_ms}, {"updated", r.updated_unix_ms}};
  if (!r.tenant_types.empty()) j["tenant_types"] = r.tenant_types;
  auto identity = [](const StampIdentity& i) {
    return json{{"system_identifier", i.system_identifier}, {"database_oid", i.database_oid}};
  };
  if (r.source_identity.known()) j["source_identity"] = identity(r.source_identity);
  if (r.destination_identity.known()) j["destination_identity"] = identity(r.destination_identity);
  return j;
}

// Absent in records written before identities were kept: left unknown for the caller to adopt.
StampIdentity identityFromJson(const json& j, const char* name) {
  StampIdentity i;
  if (!j.contains(name)) return i;
  const json& v = j.at(name);
  i.system_identifier = v.at("system_identifier").get<std::string>();
  i.database_oid = v.at("database_oid").get<uint32_t>();
  return i;
}

MigrationRecord migrationFromJson(const json& j) {
  MigrationRecord r;
  r.id = j.at("id").get<std::string>();
  r.tenant = j.at("tenant").get<std::string>();
  r.source = j.at("source").get<std::string>();
  r.destination = j.at("destination").get<std::string>();
  r.phase = j.at("phase").get<std::string>();
  r.slot_name = j.at("slot").get<std::string>();
  r.publication_name = j.at("publication").get<std::string>();
  r.consistent_point = common::Lsn(j.at("consistent_point").get<uint64_t>());
  r.upsert_through = common::Lsn(j.value("upsert_through", uint64_t{0}));  // absent before v0.2
  for (const auto& c : j.at("plan")) {
    r.plan.push_back(ChunkSpec{c.at("table").get<std::string>(), c.at("index").get<uint32_t>(),
                               c.at("start").get<uint64_t>(), c.at("end").get<uint64_t>()});
  }
  r.created_unix_ms = j.at("created").get<uint64_t>();
  r.updated_unix_ms = j.at("updated").get<uint64_t>();
  if (j.contains("tenant_types")) r.tenant_types = j.at("tenant_types").get<std::vector<std::string>>();
  r.source_identity = identityFromJson(j, "source_identity");
  r.destination_identity = identityFromJson(j, "destination_identity");
  return r;
}

Status fromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::ok();
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return Status::refused(what + ": " + s.ToString() +
                           " (another stampmover process is using this state directory)");
  }
  if (s.IsCorruption()) return Status::internal(what + ": corruption: " + s.ToString());
  return Status::refused(what + ": " + s.ToString());
}

class RocksDbCheckpointStore final : public CheckpointStore {
 public:
  explicit RocksDbCheckpointStore(std::unique_ptr<rocksdb::DB> db) : db_(std::move(db)) {}

  Status write(const CheckpointBatch& batch) override {
    rocksdb::WriteBatch wb;
    for (const auto& op : batch.ops()) {
      if (op.kind == CheckpointBatch::Op::Kind::kPut) {
        wb.Put(op.key, op.value);
      } else if (op.kind == CheckpointBatch::Op::Kind::kDelete) {
        wb.Delete(op.key);
      } else {
        // Prefix delete: collect the keys (a migration has at most thousands of records).
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
        for (it->Seek(op.key); it->Valid() && it->key().starts_with(op.key); it->Next()) {
          wb.Delete(it->key());
        }
        SM_RETURN_IF_ERROR(fromRocks(it->status(), "checkpoint store scan"));
      }
    }
    rocksdb::WriteOptions wo;
    wo.sync = true;
    return fromRocks(db_->Write(wo, &wb), "checkpoint store write");
  }

  Result<std::optional<MigrationRecord>> loadMigration(const std::string& id) override {
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), migrationKey(id), &value);
    if (s.IsNotFound()) return std::optional<MigrationRecord>();
    SM_RETURN_IF_ERROR(fromRocks(s, "checkpoint store read"));
    return parse<MigrationRecord>(value, [](const json& j) { return migrationFromJson(j); });
  }

  Result<std::vector<MigrationRecord>> listMigrations() override {
    std::vector<MigrationRecord> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek("m/"); it->Valid() && it->key().starts_with("m/"); it->Next()) {
      auto r = parse<MigrationRecord>(it->value().ToString(),
                                      [](const json& j) { return migrationFromJson(j); });
      if (!r) return r.status();
      out.push_back(std::move(**r));
    }
    SM_RETURN_IF_ERROR(fromRocks(it->status(), "checkpoint store scan"));
    return out;
  }

  Result<std::vector<ChunkDone>> loadChunksDone(const std::string& id) override {
    std::vector<ChunkDone> out;
    std::string prefix = chunkPrefix(id);
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      auto r = parse<ChunkDone>(it->value().ToString(), [](const json& j) {
        return ChunkDone{j.at("table").get<std::string>(), j.at("index").get<uint32_t>(),
                         j.at("rows").get<uint64_t>(), j.at("bytes").get<uint64_t>()};
      });
      if (!r) return r.status();
      out.push_back(std::move(**r));
    }
    SM_RETURN_IF_ERROR(fromRocks(it->status(), "checkpoint store scan"));
    return out;
  }

  Result<std::optional<StreamPosition>> loadStreamPosition(const std::string& id,
                                                           const std::string& stream) override {
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), streamPrefix(id) + keyPart(stream), &value);
    if (s.IsNotFound()) return std::optional<StreamPosition>();
    SM_RETURN_IF_ERROR(fromRocks(s, "checkpoint store read"));
    return parse<StreamPosition>(value, [](const json& j) {
      return StreamPosition{j.at("stream").get<std::string>(),
                            common::Lsn(j.at("lsn").get<uint64_t>()),
                            j.at("offset").get<uint64_t>(), j.at("identity").get<std::string>()};
    });
  }

  Result<std::optional<std::string>> loadNote(const std::string& id,
                                              const std::string& name) override {
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), notePrefix(id) + keyPart(name), &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    SM_RETURN_IF_ERROR(fromRocks(s, "checkpoint store read"));
    return std::optional<std::string>(value);
  }

  Result<std::vector<std::pair<std::string, std::string>>> loadLedger(
      const std::string& id) override {
    std::vector<std::pair<std::string, std::string>> out;
    const std::string prefix = ledgerPrefix(id);
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      out.emplace_back(unKeyPart(it->key().ToString().substr(prefix.size())),
                       it->value().ToString());
    }
    SM_RETURN_IF_ERROR(fromRocks(it->status(), "checkpoint store scan"));
    return out;
  }

 private:
  // JSON decoding is input handling: a malformed record is reported, never thrown through.
  template <class T, class F>
  static Result<std::optional<T>> parse(const std::string& value, F&& f) {
    try {
      return std::optional<T>(f(json::parse(value)));
    } catch (const std::exception& e) {
      return Status::internal(std::string("checkpoint store: malformed record: ") + e.what());
    }
  }

  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace

std::string migrationId(const std::string& tenant, const std::string& source,
                        const std::string& destination) {
  return tenant + "@" + source + "->" + destination;
}

void CheckpointBatch::putMigration(const MigrationRecord& rec) {
  ops_.push_back({Op::Kind::kPut, migrationKey(rec.id), toJson(rec).dump()});
}

void CheckpointBatch::putChunkDone(const std::string& id, const ChunkDone& c) {
  char idx[16];
  std::snprintf(idx, sizeof idx, "%08u", c.index);
  json j = {{"table", c.table}, {"index", c.index}, {"rows", c.rows}, {"bytes", c.bytes}};
  ops_.push_back({Op::Kind::kPut, chunkPrefix(id) + keyPart(c.table) + "/" + idx, j.dump()});
}

void CheckpointBatch::putStreamPosition(const std::string& id, const StreamPosition& p) {
  json j = {{"stream", p.stream}, {"lsn", p.lsn.value()}, {"offset", p.offset},
            {"identity", p.identity}};
  ops_.push_back({Op::Kind::kPut, streamPrefix(id) + keyPart(p.stream), j.dump()});
}

void CheckpointBatch::putNote(const std::string& id, const std::string& name,
                              const std::string& value) {
  ops_.push_back({Op::Kind::kPut, notePrefix(id) + keyPart(name), value});
}

void CheckpointBatch::putLedgerEntry(const std::string& id, const std::string& key,
                                     const std::string& value) {
  ops_.push_back({Op::Kind::kPut, ledgerPrefix(id) + keyPart(key), value});
}

void CheckpointBatch::deleteLedgerEntry(const std::string& id, const std::string& key) {
  ops_.push_back({Op::Kind::kDelete, ledgerPrefix(id) + keyPart(key), ""});
}

void CheckpointBatch::deleteMigration(const std::string& id) {
  ops_.push_back({Op::Kind::kDeletePrefix, ledgerPrefix(id), ""});
  ops_.push_back({Op::Kind::kDeletePrefix, notePrefix(id), ""});
  ops_.push_back({Op::Kind::kDeletePrefix, chunkPrefix(id), ""});
  ops_.push_back({Op::Kind::kDeletePrefix, streamPrefix(id), ""});
  ops_.push_back({Op::Kind::kDelete, migrationKey(id), ""});
}

Result<std::unique_ptr<CheckpointStore>> openRocksDbCheckpointStore(const RocksDbOptions& o) {
  if (o.path.empty()) return Status::refused("checkpoint store: no state directory given");
  rocksdb::Options opts;
  opts.create_if_missing = o.create_if_missing;
  opts.paranoid_checks = true;
  opts.keep_log_file_num = 3;
  rocksdb::DB* raw = nullptr;
  auto s = o.read_only ? rocksdb::DB::OpenForReadOnly(opts, o.path, &raw)
                       : rocksdb::DB::Open(opts, o.path, &raw);
  if (!s.ok()) return fromRocks(s, "cannot open state directory '" + o.path + "'");
  return std::unique_ptr<CheckpointStore>(
      new RocksDbCheckpointStore(std::unique_ptr<rocksdb::DB>(raw)));
}

}  // namespace stampmover::mover
