// Log sequence numbers: PostgreSQL WAL positions as a strong 64-bit type, parsed from and
// printed as the server's "X/Y" text form.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace stampmover::common {

class Lsn {
 public:
  constexpr Lsn() = default;
  constexpr explicit Lsn(uint64_t v) : v_(v) {}
  constexpr uint64_t value() const { return v_; }
  constexpr bool isZero() const { return v_ == 0; }
  auto operator<=>(const Lsn&) const = default;

  // Parses "16/B374D848". Returns nullopt on malformed input (input is never trusted).
  static std::optional<Lsn> parse(std::string_view text);
  std::string toString() const;

 private:
  uint64_t v_ = 0;
};

}  // namespace stampmover::common
