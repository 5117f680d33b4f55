// Touched-key tracking: see touched_keys.h.
#include "mover/touched_keys.h"

#include <cstdint>

namespace stampmover::mover {

void appendPrimaryKeyPart(std::string& k, const std::string* v) {
  if (v == nullptr) {
    k += '\xff';  // NULL (never in a primary key; kept distinct anyway)
    return;
  }
  const uint32_t n = static_cast<uint32_t>(v->size());
  k.append(reinterpret_cast<const char*>(&n), sizeof n);
  k += *v;
}

std::string encodePrimaryKey(const std::vector<common::PgParam>& pk) {
  std::string k;
  for (const auto& v : pk) appendPrimaryKeyPart(k, v ? &*v : nullptr);
  return k;
}

void TouchedKeyTracker::touch(const std::string& table, const std::vector<common::PgParam>& pk) {
  if (!enabled_ || keys_.overflowed) return;
  auto& entries = keys_.keys[table];
  if (!entries.try_emplace(encodePrimaryKey(pk), pk).second) return;  // touched before
  if (++keys_.count > cap_) overflow();
}

void TouchedKeyTracker::overflow() {
  keys_.overflowed = true;
  keys_.keys.clear();
  keys_.count = 0;
}

TouchedKeys TouchedKeyTracker::take() {
  TouchedKeys out = std::move(keys_);
  keys_ = TouchedKeys();
  return out;
}

void TouchedKeyTracker::restore(TouchedKeys keys) {
  for (const auto& [table, whole] : keys.whole_table) {
    if (whole) keys_.whole_table[table] = true;
  }
  if (keys.overflowed || keys_.overflowed) return overflow();
  for (auto& [table, entries] : keys.keys) {
    auto& mine = keys_.keys[table];
    for (auto& [encoded, pk] : entries) {
      if (mine.try_emplace(encoded, std::move(pk)).second) keys_.count++;
    }
  }
  if (keys_.count > cap_) overflow();
}

}  // namespace stampmover::mover
