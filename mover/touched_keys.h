// The keys the applier changed, per table, for the cutover's re-check: each key once (by its
// primary-key values), whole tables where a key cannot be named (a TRUNCATE, a delete through a
// replica identity that is not the primary key), and, past a cap, only "overflowed" (the
// window then compares whole tables). Memory is bounded by the cap. Not thread-safe.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/pg.h"

namespace stampmover::mover {

// One map key for primary-key values, length-prefixed so that no two value lists collide.
std::string encodePrimaryKey(const std::vector<common::PgParam>& pk);
// Appends one value's part of that encoding (nullptr: NULL).
void appendPrimaryKeyPart(std::string& key, const std::string* value);

struct TouchedKeys {
  // "schema.table" -> encoded PK -> PK values (text)
  std::map<std::string, std::unordered_map<std::string, std::vector<common::PgParam>>> keys;
  std::map<std::string, bool> whole_table;  // compare the tenant's whole table
  bool overflowed = false;                  // more than the cap: do a full pass
  size_t count = 0;                         // keys held, over every table
};

class TouchedKeyTracker {
 public:
  // `enabled` false: touch() records nothing (whole-table marks are still kept: they are rare
  // and cheap). `cap`: keys held before only the overflow flag is kept.
  TouchedKeyTracker(bool enabled, size_t cap) : enabled_(enabled), cap_(cap) {}

  void touch(const std::string& table, const std::vector<common::PgParam>& pk);
  void touchTable(const std::string& table) { keys_.whole_table[table] = true; }
  const TouchedKeys& keys() const { return keys_; }
  // Hands the keys over and starts an empty set.
  TouchedKeys take();
  // Adds keys (and whole-table or overflow flags) back, e.g. those a re-check found different,
  // or those of an earlier applier (reconnects).
  void restore(TouchedKeys keys);

 private:
  void overflow();

  bool enabled_;
  size_t cap_;
  TouchedKeys keys_;
};

}  // namespace stampmover::mover
