// Lsn text form: see lsn.h.
#include "common/lsn.h"

#include <charconv>
#include <cstdio>

namespace stampmover::common {

std::optional<Lsn> Lsn::parse(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 >= text.size()) return std::nullopt;
  uint32_t hi = 0;
  uint32_t lo = 0;
  auto a = std::from_chars(text.data(), text.data() + slash, hi, 16);
  if (a.ec != std::errc() || a.ptr != text.data() + slash) return std::nullopt;
  auto b = std::from_chars(text.data() + slash + 1, text.data() + text.size(), lo, 16);
  if (b.ec != std::errc() || b.ptr != text.data() + text.size()) return std::nullopt;
  return Lsn((static_cast<uint64_t>(hi) << 32) | lo);
}

std::string Lsn::toString() const {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%X/%X", static_cast<uint32_t>(v_ >> 32),
                static_cast<uint32_t>(v_ & 0xffffffffu));
  return buf;
}

}  // namespace stampmover::common
