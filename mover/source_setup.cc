// Publication and slot management on the source: see source_setup.h.
#include "mover/source_setup.h"

#include <openssl/evp.h>

#include <chrono>
#include <cstdio>
#include <thread>

namespace stampmover::mover {

using common::PgConnection;
using common::Result;
using common::Status;

std::string replicationNameForTenant(const std::string& tenant, const std::string& database) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  std::string input = database.empty() ? tenant : tenant + std::string(1, '\0') + database;
  EVP_Digest(input.data(), input.size(), digest, &len, EVP_sha256(), nullptr);
  char hex[9];
  std::snprintf(hex, sizeof hex, "%02x%02x%02x%02x", digest[0], digest[1], digest[2], digest[3]);
  std::string clean;
  for (char c : tenant) {
    if (clean.size() >= 32) break;
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      clean += c;
    } else if (c >= 'A' && c <= 'Z') {
      clean += static_cast<char>(c - 'A' + 'a');
    } else {
      clean += '_';
    }
  }
  return "stampmover_" + clean + "_" + hex;
}

Status createTenantPublication(PgConnection& src, const std::string& name,
                               const std::vector<TableInfo>& tables, const std::string& tenant) {
  SM_ASSIGN_OR_RETURN(std::string lit, src.escapeLiteral(tenant));
  std::string sql = "CREATE PUBLICATION " + common::quoteIdent(name) + " FOR TABLE ";
  for (size_t i = 0; i < tables.size(); ++i) {
    if (i) sql += ", ";
    sql += tables[i].quoted() + " WHERE (" + common::quoteIdent(tables[i].tenant_column) + " = " +
           lit + ")";
  }
  sql += " WITH (publish = 'insert, update, delete, truncate')";
  return src.exec(sql).withContext("create publication " + name);
}

Result<SlotWithSnapshot> createSlotWithSnapshot(const std::string& dsn, const std::string& label,
                                                const std::string& slot_name) {
  SlotWithSnapshot out;
  // Session settings pinned like every data session's (common/session_settings.h): this
  // connection prints nothing itself, but it is a replication connection like the stream's.
  SM_ASSIGN_OR_RETURN(out.connection,
                      PgConnection::connect(dsn, label + " (replication)", {{"replication", "database"}},
                                            common::SessionSettings::kPinned));
  // Creating a logical slot waits for every transaction running on the source to end; this
  // happens before any fence exists, so it only delays us.
  common::PgResult res{PQexec(out.connection.raw(),
                              ("CREATE_REPLICATION_SLOT " + common::quoteIdent(slot_name) +
                               " LOGICAL pgoutput (SNAPSHOT 'export')")
                                  .c_str())};
  if (!res || PQresultStatus(res.get()) != PGRES_TUPLES_OK || common::rowCount(res) != 1) {
    return out.connection.errorFrom(res.get(), "create replication slot " + slot_name);
  }
  out.slot_name = common::cell(res, 0, 0);
  auto lsn = common::Lsn::parse(common::cell(res, 0, 1));
  if (!lsn) return Status::internal("unparseable consistent point " + common::cell(res, 0, 1));
  out.consistent_point = *lsn;
  out.snapshot_name = common::cell(res, 0, 2);
  return out;
}

Result<bool> slotExists(PgConnection& src, const std::string& slot_name) {
  SM_ASSIGN_OR_RETURN(auto v, src.queryValue("SELECT count(*) FROM pg_replication_slots "
                                             "WHERE slot_name = $1",
                                             {slot_name}));
  return v.value_or("0") != "0";
}

Result<bool> publicationExists(PgConnection& src, const std::string& name) {
  SM_ASSIGN_OR_RETURN(
      auto v, src.queryValue("SELECT count(*) FROM pg_publication WHERE pubname = $1", {name}));
  return v.value_or("0") != "0";
}

Status dropSlotIfExists(PgConnection& src, const std::string& slot_name) {
  // A walsender whose client just disconnected releases the slot a moment later: wait a little
  // before calling the slot busy.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  common::PgResult active;
  for (;;) {
    SM_ASSIGN_OR_RETURN(active, src.query("SELECT active, active_pid FROM pg_replication_slots "
                                          "WHERE slot_name = $1",
                                          {slot_name}));
    if (common::rowCount(active) != 1 || common::cell(active, 0, 0) != "t" ||
        std::chrono::steady_clock::now() >= deadline) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (common::rowCount(active) == 1) {
    if (common::cell(active, 0, 0) == "t") {
      return Status::refused("replication slot \"" + slot_name + "\" on " + src.label() +
                             " is in use by pid " + common::cell(active, 0, 1) +
                             "; stop the running stampmover first");
    }
    Status dropped = src.query("SELECT pg_drop_replication_slot($1)", {slot_name}).status();
    // 42704 undefined_object: the slot went away since we looked (another cleanup): dropped.
    if (!dropped.isOk() && dropped.sqlState() != "42704") return dropped;
  }
  return Status::ok();
}

Status dropPublicationIfExists(PgConnection& src, const std::string& publication_name) {
  return src.exec("DROP PUBLICATION IF EXISTS " + common::quoteIdent(publication_name));
}

Status dropSlotAndPublication(PgConnection& src, const std::string& slot_name,
                              const std::string& publication_name) {
  SM_RETURN_IF_ERROR(dropSlotIfExists(src, slot_name));
  return dropPublicationIfExists(src, publication_name);
}

}  // namespace stampmover::mover
