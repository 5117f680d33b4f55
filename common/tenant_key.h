// The tenant key in its one canonical form: the text the source server prints for the key cast
// to the tenant column's type, `($1::type)::text`. Every step after preflight (migration ids,
// slot and publication names, the fence row, the routing entry, records and reports) takes this
// type, so `042` and `42` on a bigint column, or an upper- and a lower-case uuid, can never name
// two tenants. There is deliberately no implicit conversion from a string.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace stampmover::common {

class TenantKey {
 public:
  // No key yet (an options struct not filled in); empty() says so.
  TenantKey() = default;
  // A key the server canonicalized: `canonical` is `($1::type)::text` for the tenant column's
  // type (see mover::canonicalTenantKey, the only caller meant to use this).
  static TenantKey fromServerCast(std::string canonical) { return TenantKey(std::move(canonical)); }
  // A key read back from where a canonical key was stored by an earlier step (a migration
  // record, a routing entry, a control-plane row): trusted to be canonical already.
  static TenantKey fromStored(std::string canonical) { return TenantKey(std::move(canonical)); }

  const std::string& text() const { return text_; }
  bool empty() const { return text_.empty(); }
  bool operator==(const TenantKey&) const = default;

 private:
  explicit TenantKey(std::string text) : text_(std::move(text)) {}
  std::string text_;
};

// What can be known about a tenant column's type without a server: how its text form is
// canonicalized.
enum class TenantKeyKind {
  kInteger,  // smallint, integer, bigint
  kUuid,
  kText,     // text, character varying without a length: the cast is the identity
  kOther,    // everything else (numeric, varchar(n), char(n), domains...): only the server knows
};

// Kind of a format_type() name ("bigint", "uuid", "character varying(20)").
TenantKeyKind tenantKeyKind(std::string_view type);

// The canonical text of `raw` for a column of `kind`, computed without a server: exactly what
// PostgreSQL's `($1::type)::text` prints, or nullopt when that cannot be known exactly here
// (kOther; an input that is not valid for the kind; an integer form only newer servers accept,
// such as 0x1F or 1_000). Integers lose surrounding whitespace, '+' and leading zeros; uuids
// (braces and hyphens as uuid_in accepts them) become lower-case 8-4-4-4-12; text is unchanged.
// Thread-safe.
std::optional<std::string> canonicalTenantTextOffline(std::string_view raw, TenantKeyKind kind);

}  // namespace stampmover::common
